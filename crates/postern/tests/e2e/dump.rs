//! A backup taken through the gateway is a real backup: `pg_dump -Fc` through the gateway,
//! `pg_restore` into a fresh database directly, and the restored database dumps to exactly the
//! same SQL as the original.

use std::time::Duration;

use crate::util::*;

fn plain_dump(conn: &Conn) -> String {
    let mut cmd = conn.command("pg_dump");
    cmd.args(["--no-password", "-Fp"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(120));
    assert_success(&out, &format!("pg_dump {}", conn.describe()));
    // Since 15.14 (and 13.22, 14.19, ...) a plain dump is wrapped in \restrict KEY ...
    // \unrestrict KEY with a random key; that line differs between any two dumps.
    stdout(&out)
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn dump_through_gateway_restores_to_an_identical_database() {
    let fx = Fixture::start();
    // A few more kinds of object than the sample has, so the dump exercises more catalog reads.
    fx.direct(SHOP).query(
        "CREATE SCHEMA reporting; \
         CREATE TYPE reporting.mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE reporting.feedback (id serial PRIMARY KEY, mood reporting.mood, note text, \
             at timestamptz DEFAULT '2024-01-01'); \
         INSERT INTO reporting.feedback (mood, note) VALUES ('happy', 'ünïcödé'), ('sad', NULL), ('ok', E'multi\\nline'); \
         CREATE MATERIALIZED VIEW reporting.spend AS SELECT * FROM customer_totals; \
         CREATE FUNCTION reporting.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.at := now(); RETURN NEW; END $$; \
         CREATE TRIGGER feedback_touch BEFORE UPDATE ON reporting.feedback FOR EACH ROW EXECUTE FUNCTION reporting.touch(); \
         COMMENT ON COLUMN customers.email IS 'personal data'",
    );
    fx.pg.create_database("restored").unwrap();

    let archive = fx.gw.scratch().join("shop.dump");
    let mut dump = fx.gateway(SHOP).command("pg_dump");
    dump.args(["--no-password", "-Fc", "-f"]).arg(&archive);
    let out = run_with_timeout(dump, None, Duration::from_secs(180));
    assert_success(&out, "pg_dump -Fc through the gateway");
    assert!(
        std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0) > 1000,
        "the archive is missing or suspiciously small"
    );

    let mut restore = fx.direct("restored").command("pg_restore");
    restore
        .args(["--no-password", "--exit-on-error", "-d", "restored"])
        .arg(&archive);
    let out = run_with_timeout(restore, None, Duration::from_secs(180));
    assert_success(&out, "pg_restore (direct)");

    let original = plain_dump(&fx.direct(SHOP));
    let restored = plain_dump(&fx.direct("restored"));
    assert!(
        original.contains("COPY public.customers"),
        "the original dump has no data"
    );
    assert_same_text(
        "pg_dump of the original vs the restored copy",
        &original,
        &restored,
    );

    // A plain dump taken through the gateway is the same text as a direct one.
    let through = plain_dump(&fx.gateway(SHOP));
    assert_same_text(
        "plain pg_dump directly vs through the gateway",
        &original,
        &through,
    );
}
