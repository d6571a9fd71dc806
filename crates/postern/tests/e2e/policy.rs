//! The policy example of docs/policy.md through real clients: destructive statements from an
//! agent are refused with SQLSTATE 42501 naming the rule, wherever PostgreSQL would report the
//! error (simple query, extended protocol, inside a transaction), the table is untouched, and the
//! session stays usable; ordinary reads and pgbench's extended/prepared modes pass.

use crate::util::*;
use tokio_postgres::error::SqlState;

/// The example of issue 4 / docs/policy.md, as written.
pub(crate) const EXAMPLE: &str = r#"
[[rules]]
name = "agents-no-ddl"
when = { kind = "agent", targets = ["shop"], statements = ["ddl", "privilege", "admin", "unknown"] }
action = "block"

[[rules]]
name = "no-unbounded-writes"
when = { kind = "agent", statements = ["unbounded_write"] }
action = "block"

[[rules]]
name = "agent-writes-need-approval"
when = { kind = "agent", statements = ["write"] }
action = "approve"
approvers = ["dba"]            # groups allowed to decide
timeout = "5m"

[[masks]]
name = "customer-pii"
when = { kind = "agent", targets = ["shop"] }
columns = ["customers.ssn", "customers.email", "customers.card"]
detectors = ["email", "credit_card", "us_ssn", "iban", "phone"]
strategy = "redact"            # also "partial" (keep last 4) and "hash" (keyed, stable)
"#;

const AGENT: &str = "agent-7";

/// A gateway with the example policy, and an agent's connection through it.
pub(crate) fn fixture() -> (Fixture, Conn) {
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).raw(EXAMPLE));
    let token = fx
        .gw
        .issue(&["--subject", AGENT, "--group", "agents", "--kind", "agent"]);
    let agent = fx.gw.conn_with(SHOP, AGENT, &token, fx.pg.bin_dir());
    (fx, agent)
}

/// What psql prints for a refused statement: the error and its rule.
fn refused(conn: &Conn, sql: &str) -> String {
    let out = conn.psql(
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            sql,
        ],
        None,
    );
    assert!(
        !out.status.success(),
        "{sql:?} was not refused: {}",
        stdout(&out)
    );
    stderr(&out)
}

#[test]
fn destructive_statements_are_refused_and_change_nothing() {
    let (fx, agent) = fixture();
    let before = fx.direct(SHOP).query("SELECT count(*) FROM orders");
    for (sql, rule) in [
        ("DROP TABLE orders", "agents-no-ddl"),
        ("dRoP/**/TABLE \"orders\"", "agents-no-ddl"),
        ("DELETE FROM orders", "no-unbounded-writes"),
        ("TRUNCATE orders", "no-unbounded-writes"),
        ("select 1; delete from orders", "no-unbounded-writes"),
        (
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d",
            "no-unbounded-writes",
        ),
        ("EXPLAIN ANALYZE DELETE FROM orders", "no-unbounded-writes"),
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$",
            "agents-no-ddl",
        ),
        ("PREPARE wipe AS DELETE FROM orders", "no-unbounded-writes"),
        ("COPY (SELECT 1) TO PROGRAM 'true'", "agents-no-ddl"),
        ("SELECT pg_read_file('/etc/passwd')", "agents-no-ddl"),
        ("SET ROLE postgres", "agents-no-ddl"),
    ] {
        let err = refused(&agent, sql);
        assert!(
            err.contains("42501"),
            "{sql:?}: expected SQLSTATE 42501, got {err}"
        );
        assert!(
            err.contains(rule),
            "{sql:?}: expected rule {rule}, got {err}"
        );
    }
    // (A write with a WHERE is held for approval instead: see approval_flow.rs.)
    assert_eq!(fx.direct(SHOP).query("SELECT count(*) FROM orders"), before);
}

#[test]
fn reads_pass_and_humans_are_not_held_to_agent_rules() {
    let (fx, agent) = fixture();
    assert_eq!(
        agent.query("SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id"),
        fx.direct(SHOP)
            .query("SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id")
    );
    let out = agent.psql(&["-c", "\\d customers", "-c", "\\dt", "-c", "\\l"], None);
    assert_success(&out, "psql meta-commands as an agent");
    // Agents get masked columns masked; a human, not covered by the mask, reads them.
    assert_eq!(
        agent.query("SELECT email FROM customers WHERE id = 1"),
        "[masked]"
    );
    assert_eq!(
        fx.gateway(SHOP)
            .query("SELECT email FROM customers WHERE id = 1"),
        "customer1@example.com"
    );
    assert!(
        fx.gateway(SHOP)
            .query("DELETE FROM orders WHERE id = 1000")
            .is_empty()
    );
}

#[tokio::test]
async fn extended_protocol_errors_land_where_postgres_puts_them() {
    let (fx, agent) = fixture();
    let (client, _messages) = agent.client().await;
    // Refused at Parse: the error comes back for that statement and the session goes on.
    let err = client.execute("DELETE FROM orders", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(
        db.message().contains("no-unbounded-writes"),
        "{}",
        db.message()
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);

    // Inside a transaction the refusal aborts it, exactly as a server error would.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.execute("DROP TABLE orders", &[]).await.is_err());
    let aborted = client.query_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(aborted.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        fx.direct(SHOP).query("SELECT count(*) > 0 FROM orders"),
        "t"
    );
}

#[test]
fn pgbench_select_only_passes_in_every_protocol_mode() {
    let (fx, agent) = fixture();
    let out = fx.direct(SHOP).psql(&["-c", "SELECT 1"], None);
    assert_success(&out, "direct");
    fx.direct(SHOP).pgbench_init();
    for mode in ["simple", "extended", "prepared"] {
        let run = agent
            .command("pgbench")
            .args(["-n", "-S", "-t", "50", "-c", "2", "-M", mode])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "pgbench -M {mode}: {}\n{}",
            text,
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "pgbench -M {mode}: {text}"
        );
    }
}
