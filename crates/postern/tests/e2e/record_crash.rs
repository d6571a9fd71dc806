//! A gateway killed with SIGKILL in the middle of 20 busy sessions: at restart it seals every
//! open recording as interrupted, every recording verifies offline, and each one holds the
//! command of every statement whose result its client had received (commands are made
//! durable before they are forwarded, so an answered statement is always on disk).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_record::{SealStatus, verify_all, verify_session};
use tokio_postgres::SimpleQueryMessage;

use crate::recording::*;
use crate::util::*;

const SESSIONS: usize = 20;

/// `SELECT <session>, <n>` → (session, n).
fn parse_statement(text: &str) -> Option<(usize, u32)> {
    let rest = text.strip_prefix("SELECT ")?;
    let (s, n) = rest.split_once(", ")?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_20_sessions_loses_no_answered_statement() {
    let mut fx = Fixture::start();
    let conn = fx.gateway(SHOP);
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        clients.push(conn.client().await);
    }
    // For each session, the statements whose results the client received, in order.
    let received: Arc<Vec<Mutex<Vec<u32>>>> =
        Arc::new((0..SESSIONS).map(|_| Mutex::new(Vec::new())).collect());
    let mut tasks = Vec::new();
    for (s, (client, messages)) in clients.into_iter().enumerate() {
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let _messages = messages;
            for n in 0u32.. {
                let Ok(reply) = client.simple_query(&format!("SELECT {s}, {n}")).await else {
                    return;
                };
                let row = reply.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some((
                        r.get(0).unwrap_or("").to_owned(),
                        r.get(1).unwrap_or("").to_owned(),
                    )),
                    _ => None,
                });
                assert_eq!(
                    row,
                    Some((s.to_string(), n.to_string())),
                    "session {s}: the answer to statement {n}"
                );
                received[s].lock().unwrap().push(n);
            }
        }));
    }

    // Let every session get some answers, then kill the gateway mid-stream.
    let start = Instant::now();
    loop {
        let least = received
            .iter()
            .map(|r| r.lock().unwrap().len())
            .min()
            .unwrap();
        if least >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every session got 5 answers within 60 s (least: {least})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.gw.kill9();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a client did not notice the gateway was gone within 30 s")
            .expect("a client task panicked");
    }
    let received: Vec<Vec<u32>> = received.iter().map(|r| r.lock().unwrap().clone()).collect();

    // Restart on the same data directory: recovery seals what the crash left open.
    fx.gw.restart(&[]);
    let key = public_key(&fx.gw);
    let root = fx.gw.data_dir.join("recordings");
    let dirs = recording_dirs(&root);
    assert_eq!(dirs.len(), SESSIONS, "one recording per session: {dirs:?}");
    let mut recorded: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for dir in &dirs {
        let report = verify_session(dir, &key).unwrap_or_else(|e| {
            panic!(
                "{} does not verify after the restart: {e}\n--- log\n{}",
                dir.display(),
                fx.gw.log()
            )
        });
        assert_eq!(
            report.status,
            SealStatus::Interrupted,
            "{}",
            report.summary()
        );
        let evs = events(dir);
        assert_eq!(subject(&evs), Some(ALICE), "{}", dir.display());
        let mut sessions = BTreeSet::new();
        for (kind, text) in commands(&evs) {
            assert_eq!(kind, "query", "{}: {text:?}", dir.display());
            let (s, n) = text
                .as_deref()
                .and_then(parse_statement)
                .unwrap_or_else(|| panic!("{}: unexpected command {text:?}", dir.display()));
            sessions.insert(s);
            recorded.entry(s).or_default().insert(n);
        }
        assert!(
            sessions.len() <= 1,
            "{} holds statements of several sessions: {sessions:?}",
            dir.display()
        );
    }
    let mut answered_total = 0;
    let mut unanswered_recorded = 0;
    for (s, answered) in received.iter().enumerate() {
        let on_disk = recorded.get(&s).cloned().unwrap_or_default();
        let missing: Vec<u32> = answered
            .iter()
            .copied()
            .filter(|n| !on_disk.contains(n))
            .collect();
        assert!(
            missing.is_empty(),
            "session {s}: statements answered but not in the recording: {missing:?} (recorded {} statements)",
            on_disk.len()
        );
        // Recorded statements are the session's own, numbered without holes.
        let expected: BTreeSet<u32> = (0..on_disk.len() as u32).collect();
        assert_eq!(on_disk, expected, "session {s}: recorded statement numbers");
        answered_total += answered.len();
        unanswered_recorded += on_disk.len() - answered.len();
    }
    eprintln!(
        "crash test: {answered_total} answered statements all recorded; {unanswered_recorded} recorded but unanswered (in flight at the kill)"
    );

    // The manifest log agrees with the recordings, and the gateway serves again.
    let all = verify_all(&root, &key).unwrap();
    assert!(
        all.is_intact(),
        "verify_all after restart: {:?}",
        all.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    fx.assert_still_serving();

    // The sessions index no longer shows the killed sessions as live (the psql check above
    // may take a moment to be marked closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(postern_bin())
            .arg("--config")
            .arg(&fx.gw.config_path)
            .args(["sessions", "list", "--open", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let open: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let count = open.as_array().map_or(usize::MAX, Vec::len);
        if count == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions still open after the restart: {open}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
