//! An admin terminates a live psql session through the API: psql reports who ended it
//! (FATAL, SQLSTATE 57P01), and the recording, the sessions index and the audit trail say so.

use crate::api::{Http, fixture};
use crate::util::*;
use serde_json::json;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_terminates_a_live_psql_session() {
    let (fx, p) = fixture();
    let http = Http::new(&fx.gw);
    let bob = fx.gw.conn_with(SHOP, "bob", &p.plain, fx.pg.bin_dir());
    let mut psql = bob
        .command("psql")
        .args(["-X", "-v", "VERBOSITY=verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start psql");
    let mut stdin = psql.stdin.take().unwrap();
    stdin.write_all(b"SELECT 'before' AS step;\n").unwrap();
    stdin.flush().unwrap();

    // The session shows up as live; bob cannot end it, the admin can.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let live = http
            .get_ok("/api/v1/sessions?live=true&identity=bob", &p.admin)
            .await;
        if let Some(id) = live["sessions"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "psql's session never showed as live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let path = format!("/api/v1/sessions/{id}/terminate");
    let reason = json!({ "reason": "maintenance window" });
    let (status, _) = http
        .send("POST", &path, Some(&p.plain), Some(&reason))
        .await;
    assert_eq!(status, 403, "bob is no admin");
    let (status, body) = http
        .send("POST", &path, Some(&p.admin), Some(&reason))
        .await;
    assert_eq!(status, 200, "{body}");

    // psql learns it at its next statement.
    let _ = stdin.write_all(b"SELECT 'after' AS step;\n");
    drop(stdin);
    let out = run_to_end(psql, Duration::from_secs(20));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.contains("before"), "{stdout}");
    assert!(
        !stdout.contains("after"),
        "the terminated session ran a statement: {stdout}"
    );
    assert!(
        stderr.contains("FATAL:  57P01: the session was terminated by olga: maintenance window"),
        "psql said:\n{stderr}"
    );

    // The recording ends with who terminated it; the index and the audit trail agree.
    let ended = "terminated by olga: maintenance window";
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let page = http
            .get_ok(
                &format!("/api/v1/sessions/{id}/events?limit=5000"),
                &p.admin,
            )
            .await;
        if page["ended"] == json!(true) {
            break page["events"].as_array().unwrap().last().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "the recording was not sealed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last["type"], "session_end");
    assert_eq!(last["reason"], ended);
    // The sessions index is closed just after the recording is sealed: wait for it too.
    let detail = loop {
        let detail = http
            .get_ok(&format!("/api/v1/sessions/{id}"), &p.admin)
            .await;
        if !detail["close_reason"].is_null() {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "the sessions index was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail["close_reason"], ended);
    assert_eq!(detail["live"], json!(false));
    assert_eq!(detail["verification"]["status"], "verified", "{detail}");
    let audit = http
        .get_ok(
            &format!("/api/v1/audit?session={id}&kind=session_closed"),
            &p.auditor,
        )
        .await;
    assert_eq!(audit["events"][0]["detail"], ended, "{audit}");
}

/// Waits for `child` to exit (killing it after `timeout`) and collects its output.
fn run_to_end(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
