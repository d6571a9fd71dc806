//! psql through the gateway prints exactly what it prints connected directly: results of every
//! common type, errors (also in the middle of a transaction), notices, COPY and the `\d` family
//! of meta-commands, which run catalog queries of their own.

use crate::util::*;

/// Runs `script` with psql (echoing each line, not stopping at errors) directly and through
/// the gateway, and asserts both runs printed the same.
fn assert_script_matches(fx: &Fixture, what: &str, script: &str) {
    let args = ["-a", "-v", "ON_ERROR_STOP=0", "-f", "-"];
    let direct = fx.direct(SHOP).psql(&args, Some(script.as_bytes()));
    let gateway = fx.gateway(SHOP).psql(&args, Some(script.as_bytes()));
    assert_success(&direct, &format!("{what}: psql directly"));
    assert_same_output(what, &direct, &gateway);
}

const TYPES_SCRIPT: &str = r#"
\pset null '(null)'
SELECT 1 AS one, 'two'::text AS two, NULL::int AS nothing;
SELECT 12345678901234567890.123456789::numeric AS big, 'NaN'::numeric AS nan, -0.000001::numeric(10,6) AS tiny,
       1e300::float8 AS huge, 'Infinity'::float8 AS inf, 3.14::real AS pi, 255::smallint, (-2)^62 AS pow;
SELECT timestamptz '2024-02-29 23:59:59.999999+05:30' AS tstz, timestamp '1999-12-31 23:59:59',
       date '4713-01-01 BC' AS ancient, time '24:00', interval '1 year 2 mons 3 days 04:05:06.789' AS iv;
SELECT '\xdeadbeef00ff'::bytea AS b, ''::bytea AS empty, convert_to('héllo', 'UTF8') AS encoded;
SELECT ARRAY[1, 2, NULL, 4] AS ints, ARRAY[['a', 'b'], ['c', 'd']] AS matrix, '{}'::int[] AS none,
       ARRAY['with,comma', 'with "quote"', NULL, 'back\slash']::text[] AS texts;
SELECT '{"a": [1, 2.5, null, true], "b": {"ü": "ß"}}'::json AS j, '{"b": 1, "a": [1, 2]}'::jsonb AS jb,
       jsonb_pretty('{"x": {"y": [1, 2]}}') AS pretty;
SELECT 'Zoë Ångström' AS latin, '山田 太郎' AS cjk, '🦀 crab' AS emoji, E'tab\there\nnew line' AS escapes,
       'a'::char(5) || '|' AS padded, length('🦀🦀') AS chars, octet_length('🦀🦀') AS bytes;
SELECT * FROM e2e_types ORDER BY id;
SELECT * FROM customers ORDER BY id LIMIT 12;
SELECT * FROM products ORDER BY id;
SELECT * FROM customer_totals ORDER BY spent DESC, customer_id LIMIT 5;
SELECT status, count(*), sum(total), min(ordered_at), max(ordered_at) FROM orders GROUP BY status ORDER BY status;
SELECT g, md5(g::text) FROM generate_series(1, 2000) AS g WHERE g % 97 = 0;
SELECT count(*), sum(length(repeat(md5(g::text), 10))) FROM generate_series(1, 50000) AS g;
SELECT repeat('wide row ', 20000) AS wide;
\x on
SELECT * FROM e2e_types WHERE id IN (1, 4) ORDER BY id;
\x off
\pset format csv
SELECT * FROM e2e_types ORDER BY id;
\pset format aligned
"#;

#[test]
fn results_of_every_type_match_direct() {
    let fx = Fixture::start();
    assert_script_matches(&fx, "types script", TYPES_SCRIPT);
}

const ERRORS_SCRIPT: &str = r#"
SELECT 1/0;
SELECT 'still connected' AS after_error;
BEGIN;
CREATE TEMP TABLE scratch (x int PRIMARY KEY);
INSERT INTO scratch VALUES (1), (2);
INSERT INTO scratch VALUES (2);
SELECT 'ignored until the end of the transaction';
COMMIT;
SELECT count(*) FROM pg_class WHERE relname = 'scratch';
BEGIN;
SAVEPOINT s1;
SELECT 'x'::int;
ROLLBACK TO SAVEPOINT s1;
SELECT 'recovered with a savepoint' AS msg;
COMMIT;
\set VERBOSITY verbose
SELECT * FROM no_such_table;
SELECT no_such_column FROM customers;
INSERT INTO orders (customer_id, product_id, quantity, total, ordered_at) VALUES (9999, 1, 1, 1, now());
\set VERBOSITY default
DO $$ BEGIN RAISE NOTICE 'notice with % and %', 'argument', 42; RAISE WARNING 'a warning'; END $$;
DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = 'P0042', DETAIL = 'some detail', HINT = 'a hint'; END $$;
SELECT 'after the exception' AS msg;
COPY (SELECT id, name, email FROM customers ORDER BY id LIMIT 5) TO STDOUT WITH (FORMAT csv, HEADER);
SELECT 1 AS a; SELECT 2 AS b; SELECT 3 AS c
\g
PREPARE by_id(bigint) AS SELECT name FROM customers WHERE id = $1;
EXECUTE by_id(2);
EXECUTE by_id(3);
DEALLOCATE by_id;
SELECT pg_sleep(0.1);
"#;

#[test]
fn errors_notices_and_transactions_match_direct() {
    let fx = Fixture::start();
    assert_script_matches(&fx, "errors script", ERRORS_SCRIPT);
}

const META_SCRIPT: &str = r#"
\d
\d customers
\d+ products
\d orders
\dt
\dt+ public.*
\dv
\di
\ds
\df order_count
\df+ order_count
\dn
\dT
\du postgres
\dp customers
\dx
\sf order_count
\sv customer_totals
\dd customers
\d no_such_relation
"#;

#[test]
fn meta_commands_match_direct() {
    let fx = Fixture::start();
    assert_script_matches(&fx, "meta-commands", META_SCRIPT);
}

#[test]
fn several_statements_in_one_command_match_direct() {
    let fx = Fixture::start();
    for sql in [
        "SELECT 1 AS a; SELECT 'two' AS b; SELECT NULL::int AS c",
        "CREATE TEMP TABLE t (x int); INSERT INTO t SELECT generate_series(1, 10); SELECT sum(x) FROM t",
        "SELECT 1; SELECT 1/0; SELECT 3",
        "BEGIN; SELECT 1; COMMIT; SELECT 'after commit'",
        "SELECT 'unterminated",
    ] {
        let direct = fx.direct(SHOP).psql(&["-c", sql], None);
        let gateway = fx.gateway(SHOP).psql(&["-c", sql], None);
        assert_same_output(&format!("psql -c {sql:?}"), &direct, &gateway);
    }
}

/// Settings a client sends in its startup packet (application_name, TimeZone via PGTZ,
/// DateStyle via PGDATESTYLE, client_encoding) take effect on the upstream session.
#[test]
fn startup_parameters_reach_the_upstream() {
    let fx = Fixture::start();
    let sql = "SELECT current_setting('application_name'), current_setting('TimeZone'), \
               current_setting('DateStyle'), current_setting('client_encoding'), \
               timestamptz '2024-06-01 12:00:00+00'";
    let run = |conn: Conn| {
        let mut cmd = conn.command("psql");
        cmd.env("PGAPPNAME", "e2e-app")
            .env("PGTZ", "Asia/Tokyo")
            .env("PGDATESTYLE", "SQL, DMY")
            .env("PGCLIENTENCODING", "LATIN1")
            .args(["-X", "-A", "-t", "-c", sql]);
        run_with_timeout(cmd, None, std::time::Duration::from_secs(60))
    };
    let direct = run(fx.direct(SHOP));
    assert_success(&direct, "psql directly");
    assert_eq!(
        stdout(&direct).trim(),
        "e2e-app|Asia/Tokyo|SQL, DMY|LATIN1|01/06/2024 21:00:00 JST",
        "the direct run itself is not what this test expects"
    );
    let gateway = run(fx.gateway(SHOP));
    assert_same_output("startup parameters", &direct, &gateway);
}

/// psql's `\lo_import` and `\lo_export` use libpq's large-object functions, which travel as
/// FunctionCall ('F') messages (the "fast-path" interface); pg_dump uses the same calls for
/// databases with large objects.
#[test]
fn large_objects_round_trip_through_fastpath_calls() {
    let fx = Fixture::start();
    let scratch = fx.gw.scratch();
    let original = scratch.join("blob.in");
    let exported = scratch.join("blob.out");
    // 3 MiB of varied bytes (all 256 values, no long runs).
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&original, &data).unwrap();

    let conn = fx.gateway(SHOP);
    let out = conn.psql(
        &["-c", &format!(r"\lo_import '{}'", original.display())],
        None,
    );
    assert_success(&out, "\\lo_import through the gateway");
    let text = stdout(&out);
    let oid: u32 = text
        .trim()
        .strip_prefix("lo_import ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected \\lo_import output: {text:?}"));
    assert_eq!(
        fx.direct(SHOP)
            .query(&format!("SELECT length(lo_get({oid}))")),
        data.len().to_string(),
        "the large object on the server"
    );
    let out = conn.psql(
        &["-c", &format!(r"\lo_export {oid} '{}'", exported.display())],
        None,
    );
    assert_success(&out, "\\lo_export through the gateway");
    assert!(
        std::fs::read(&exported).unwrap() == data,
        "the exported large object differs from the imported file"
    );
}
