//! A small, deterministic "shop" database: the sample data of `postern demo` and of the
//! end-to-end tests.
//!
//! It is meant to look like something a gateway protects: people with e-mail addresses, phone
//! and card numbers (for masking), a foreign key, a view, a function, a sequence, several column
//! types (numeric, timestamptz, arrays, jsonb, bytea, unicode text). Every value is computed
//! from `generate_series`, so two loads produce byte-identical tables and dumps.

/// The tables that [`SAMPLE_SQL`] creates, in dependency order.
pub const SAMPLE_TABLES: &[&str] = &["customers", "products", "orders"];

/// SQL that creates and fills the sample schema in the current database (run it once, in an
/// empty database; [`crate::TempPostgres::load_sample`] does that).
pub const SAMPLE_SQL: &str = r#"
CREATE TABLE customers (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    ssn         text,
    phone       text,
    card        text,
    created_at  timestamptz NOT NULL
);
COMMENT ON TABLE customers IS 'People who buy things; email, ssn, phone and card are personal data.';

CREATE TABLE products (
    id      integer PRIMARY KEY,
    sku     text NOT NULL UNIQUE,
    title   text NOT NULL,
    price   numeric(10,2) NOT NULL CHECK (price >= 0),
    tags    text[] NOT NULL DEFAULT '{}',
    attrs   jsonb NOT NULL DEFAULT '{}',
    picture bytea
);

CREATE SEQUENCE order_numbers START 1000;

CREATE TABLE orders (
    id          bigint PRIMARY KEY DEFAULT nextval('order_numbers'),
    customer_id bigint NOT NULL REFERENCES customers(id),
    product_id  integer NOT NULL REFERENCES products(id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    total       numeric(12,2) NOT NULL,
    status      text NOT NULL DEFAULT 'new',
    ordered_at  timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);

INSERT INTO customers
SELECT i,
       CASE i WHEN 1 THEN 'Zoë Ångström' WHEN 2 THEN '山田 太郎' WHEN 3 THEN 'Ηλέκτρα Παπαδοπούλου'
              ELSE 'Customer ' || i END,
       'customer' || i || '@example.com',
       '123-45-' || lpad((6000 + i)::text, 4, '0'),
       '+1-555-' || lpad((100 + i)::text, 4, '0'),
       CASE WHEN i % 3 = 0 THEN NULL ELSE '4111 1111 1111 ' || lpad((1000 + i)::text, 4, '0') END,
       timestamptz '2024-01-01 09:00:00+00' + i * interval '1 day 37 minutes'
FROM generate_series(1, 50) AS i;

INSERT INTO products
SELECT i,
       'SKU-' || lpad(i::text, 4, '0'),
       'Product ' || i || CASE WHEN i % 5 = 0 THEN ' — deluxe' ELSE '' END,
       round((i * 7.35)::numeric, 2),
       ARRAY['tag' || (i % 3), 'tag' || (i % 4)],
       jsonb_build_object('weight_g', i * 10, 'color', (ARRAY['red','green','blue'])[1 + i % 3]),
       CASE WHEN i % 2 = 0 THEN decode(md5(i::text), 'hex') END
FROM generate_series(1, 20) AS i;

INSERT INTO orders (customer_id, product_id, quantity, total, status, ordered_at)
SELECT 1 + (i * 7) % 50,
       1 + (i * 3) % 20,
       1 + i % 4,
       (1 + i % 4) * round(((1 + (i * 3) % 20) * 7.35)::numeric, 2),
       (ARRAY['new','paid','shipped','cancelled'])[1 + i % 4],
       timestamptz '2024-03-01 12:00:00+00' + i * interval '5 hours 11 minutes'
FROM generate_series(1, 200) AS i;

CREATE VIEW customer_totals AS
SELECT c.id AS customer_id, c.name, count(o.id) AS orders, coalesce(sum(o.total), 0) AS spent
FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
GROUP BY c.id, c.name;

CREATE FUNCTION order_count(customer bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT count(*) FROM orders WHERE customer_id = customer $$;

ANALYZE;
"#;
