//! The audit trail: a session leaves `session_opened` and `session_closed` rows in the SQLite
//! store (subject, target, client address, byte counts, duration), refusals leave
//! `auth_failed` / `access_denied` / `upstream_failed` rows, and the same events appear as JSON
//! lines in the gateway's log.

use std::time::Duration;

use postern_testkit::free_port;
use serde_json::{Map, Value};

use crate::util::*;

type Row = Map<String, Value>;

fn events(gw: &Gateway, kind: &str) -> Vec<Row> {
    sqlite_rows(
        &gw.store_path(),
        &format!(
            "SELECT kind, session_id, subject, target, client_addr, bytes_in, bytes_out, duration_ms, detail \
             FROM audit_events WHERE kind = '{kind}' ORDER BY id"
        ),
    )
}

fn wait_for_events(gw: &Gateway, kind: &str, n: usize) -> Vec<Row> {
    eventually(Duration::from_secs(10), || {
        let rows = events(gw, kind);
        (rows.len() >= n).then_some(rows)
    })
    .unwrap_or_else(|| {
        panic!(
            "fewer than {n} {kind} events after 10 s: {:?}",
            events(gw, kind)
        )
    })
}

fn int(row: &Row, key: &str) -> i64 {
    row.get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{key} is not a number in {row:?}"))
}

fn text<'a>(row: &'a Row, key: &str) -> &'a str {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is not text in {row:?}"))
}

#[test]
fn a_session_is_recorded_with_subject_target_and_bytes() {
    let dead_port = free_port();
    let fx = Fixture::with(|pg| {
        GatewayConfig::shop(pg)
            .target(Target::new("dba_only", pg.url(SHOP)).allow(Allow {
                groups: vec!["dba".into()],
                ..Allow::default()
            }))
            .target(Target::new(
                "nowhere",
                format!("postgres://postgres@127.0.0.1:{dead_port}/{SHOP}"),
            ))
    });
    let conn = fx.gateway(SHOP);
    let sql = "SELECT repeat('x', 100000), pg_sleep(0.3)";
    let out = conn.psql(&["-A", "-t", "-c", sql], None);
    assert_success(&out, "psql through the gateway");
    assert!(out.stdout.len() > 100_000);

    let opened = wait_for_events(&fx.gw, "session_opened", 1);
    let closed = wait_for_events(&fx.gw, "session_closed", 1);
    assert_eq!(opened.len(), 1, "one psql run, one session: {opened:?}");
    assert_eq!(closed.len(), 1, "one psql run, one session: {closed:?}");
    let (o, c) = (&opened[0], &closed[0]);
    for row in [o, c] {
        assert_eq!(text(row, "subject"), ALICE, "{row:?}");
        assert_eq!(text(row, "target"), SHOP, "{row:?}");
        assert!(text(row, "client_addr").starts_with("127.0.0.1"), "{row:?}");
    }
    assert_eq!(
        text(o, "session_id"),
        text(c, "session_id"),
        "opened and closed rows of one session"
    );
    assert!(
        int(c, "bytes_in") >= sql.len() as i64,
        "bytes_in {} < the query's length",
        int(c, "bytes_in")
    );
    assert!(
        int(c, "bytes_out") >= 100_000,
        "bytes_out {} < the result's size",
        int(c, "bytes_out")
    );
    assert!(
        int(c, "bytes_out") < 10_000_000,
        "bytes_out {} is implausible",
        int(c, "bytes_out")
    );
    assert!(
        int(c, "duration_ms") >= 300,
        "duration_ms {} < the 0.3 s sleep",
        int(c, "duration_ms")
    );
    assert!(
        int(c, "duration_ms") < 60_000,
        "duration_ms {} is implausible",
        int(c, "duration_ms")
    );

    // Refusals are recorded too.
    let bad = conn
        .clone()
        .password(Some("not-a-token"))
        .psql(&["-c", "select 1"], None);
    assert!(!bad.status.success());
    let denied = conn
        .clone()
        .dbname("dba_only")
        .psql(&["-c", "select 1"], None);
    assert!(!denied.status.success());
    let down = conn
        .clone()
        .dbname("nowhere")
        .psql(&["-c", "select 1"], None);
    assert!(!down.status.success());
    let auth_failed = wait_for_events(&fx.gw, "auth_failed", 1);
    assert!(
        !text(&auth_failed[0], "detail").contains("not-a-token"),
        "the detail repeats the credential"
    );
    let access_denied = wait_for_events(&fx.gw, "access_denied", 1);
    assert_eq!(text(&access_denied[0], "subject"), ALICE);
    assert_eq!(text(&access_denied[0], "target"), "dba_only");
    let upstream_failed = wait_for_events(&fx.gw, "upstream_failed", 1);
    assert_eq!(text(&upstream_failed[0], "target"), "nowhere");
    // Refused connections never opened sessions.
    assert_eq!(events(&fx.gw, "session_opened").len(), 1);

    // The same events as JSON log lines.
    let log = fx.gw.log();
    let json_lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!json_lines.is_empty(), "the log has no JSON lines:\n{log}");
    for kind in [
        "session_opened",
        "session_closed",
        "auth_failed",
        "access_denied",
        "upstream_failed",
    ] {
        assert!(
            json_lines
                .iter()
                .any(|v| v.to_string().contains(&format!("\"{kind}\""))),
            "no JSON log line for {kind}:\n{log}"
        );
    }
    let closed_line = json_lines
        .iter()
        .find(|v| v.to_string().contains("\"session_closed\""))
        .unwrap()
        .to_string();
    assert!(
        closed_line.contains(ALICE) && closed_line.contains(SHOP),
        "{closed_line}"
    );

    // Who tried to get into what: an auth failure names the target that was asked for.
    assert_eq!(
        auth_failed[0].get("target").and_then(Value::as_str),
        Some(SHOP),
        "auth_failed rows should name the target asked for: {auth_failed:?}"
    );
}
