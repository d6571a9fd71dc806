//! Session recordings as an auditor sees them: every session through `postern serve` leaves a
//! recording under the recordings directory that verifies offline with the gateway's public
//! key (`postern_record::verify_session`, what `postern verify` runs), and holds what was said.
//!
//! This module has the shared helpers and the tests of what is recorded (result caps, per-
//! identity rules, pgbench's extended protocol); `record_failure` covers a recorder that
//! cannot write (fail-closed and best-effort), `record_crash` a gateway killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use postern_record::{
    Event, EventBody, SealStatus, VerifyReport, VerifyingKey, load_verifying_key, read_events,
    verify_session,
};

use crate::util::*;

// ---------------------------------------------------------------------------------------------
// Helpers shared by the recording tests

/// The gateway's public key, as an auditor would take it from `data_dir/keys/gateway.pub`.
pub fn public_key(gw: &Gateway) -> VerifyingKey {
    let path = gw.data_dir.join("keys").join("gateway.pub");
    load_verifying_key(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The session recordings under `root` (the manifest logs in `_log/` left out), sorted.
pub fn recording_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(['_', '.'])
        })
        .collect();
    dirs.sort();
    dirs
}

/// Every event of the recording in `dir`; panics if it cannot be read.
pub fn events(dir: &Path) -> Vec<Event> {
    read_events(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
}

/// The subject in the recording's `session_start`.
pub fn subject(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|e| match &e.body {
        EventBody::SessionStart(s) => Some(s.subject.as_str()),
        _ => None,
    })
}

/// `(kind, text)` of every `command` event.
pub fn commands(events: &[Event]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Command(c) => Some((c.kind.clone(), c.text.clone())),
            _ => None,
        })
        .collect()
}

/// How many events of `kind` (its `as_str` name, e.g. `rows`) the recording holds.
pub fn count_kind(events: &[Event], kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e.body.kind().as_str() == kind)
        .count()
}

/// Waits (sealing happens as the session ends) until the recording in `dir` verifies, and
/// returns the report; panics with the last verification error after `timeout`.
pub fn wait_verified(dir: &Path, key: &VerifyingKey, timeout: Duration) -> VerifyReport {
    let mut last = String::new();
    eventually(timeout, || match verify_session(dir, key) {
        Ok(report) => Some(report),
        Err(e) => {
            last = e.to_string();
            None
        }
    })
    .unwrap_or_else(|| {
        panic!(
            "the recording {} does not verify after {timeout:?}: {last}",
            dir.display()
        )
    })
}

/// Ends a tokio-postgres session (Terminate) and waits until its connection task is done, so
/// the gateway has seen the end before the test looks for the sealed recording.
pub async fn close(client: tokio_postgres::Client, mut messages: Messages) {
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while messages.recv().await.is_some() {}
    })
    .await;
}

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop. Mounting needs
/// root (or CAP_SYS_ADMIN): [`Tmpfs::mount`] returns `None` with an explanation on stderr when
/// it cannot mount and `CI` is unset, and panics when `CI` is set, so CI never skips silently.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("postern-tmpfs-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(out) => stderr(&out),
                    Err(e) => e.to_string(),
                };
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "mount -t tmpfs failed ({why}); the disk-full tests need root or CAP_SYS_ADMIN"
                    );
                }
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs ({}); run as root to test a full recordings disk",
                    why.trim()
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with one big file (`dd` until ENOSPC) and checks that an 8 KiB
    /// append to a fresh file now fails.
    pub fn fill(&self) {
        let fill = self.path().join("fill");
        let out = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", fill.display()))
            .args(["bs=64k"])
            .output()
            .expect("running dd");
        assert!(
            !out.status.success() && stderr(&out).contains("No space left"),
            "dd did not fill the tmpfs: {}",
            stderr(&out)
        );
        let probe = self.path().join("probe");
        let err = std::fs::write(&probe, vec![0u8; 8192])
            .expect_err("the tmpfs still takes 8 KiB after filling it");
        let _ = std::fs::remove_file(&probe);
        assert_eq!(err.raw_os_error(), Some(28), "expected ENOSPC, got {err}");
    }

    /// Removes the fill file.
    pub fn free(&self) {
        std::fs::remove_file(self.path().join("fill")).expect("removing the fill file");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach it so the directory can go.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A `[recording]` section putting the recordings in `dir`.
pub fn recording_dir_toml(dir: &Path) -> String {
    format!(
        "[recording]\ndir = {}\n",
        toml_str(&dir.display().to_string())
    )
}

// ---------------------------------------------------------------------------------------------
// What is recorded

#[tokio::test]
async fn results_are_capped_per_target_and_rules_scope_recording_per_identity() {
    let fx = Fixture::with(|pg| {
        GatewayConfig::default()
            .target(Target::new(SHOP, pg.url(SHOP)).raw("record_results = \"first:1KB\""))
            .raw(
                r#"[[recording.rules]]
name = "bob: commands only"
when = { subjects = ["bob"] }
mode = "commands"

[[recording.rules]]
name = "carol: not recorded"
when = { subjects = ["carol"] }
mode = "off"
"#,
            )
    });
    let root = fx.gw.data_dir.join("recordings");
    let key = public_key(&fx.gw);

    // Alice (full, capped at 1 KiB per result): a 20 KiB result and a small one.
    {
        let (client, messages) = fx.gateway(SHOP).client().await;
        let big = client
            .simple_query("SELECT n, repeat('x', 200) AS pad FROM generate_series(1, 100) n")
            .await
            .unwrap();
        assert_eq!(
            big.iter()
                .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                .count(),
            100,
            "the cap must not change what the client receives"
        );
        client.simple_query("SELECT 'small-result'").await.unwrap();
        close(client, messages).await;
    }
    // Bob (commands only) and Carol (off).
    for who in ["bob", "carol"] {
        let token = fx.gw.token(who);
        let conn = fx.gw.conn_with(SHOP, who, &token, fx.pg.bin_dir());
        let (client, messages) = conn.client().await;
        let rows = client
            .simple_query(&format!("SELECT 'value-seen-by-{who}'"))
            .await
            .unwrap();
        assert_eq!(
            rows.iter()
                .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                .count(),
            1,
            "{who}: one row"
        );
        close(client, messages).await;
    }

    // Two recordings (alice, bob), both sealed and intact; none for carol.
    let dirs = eventually(Duration::from_secs(10), || {
        let dirs = recording_dirs(&root);
        (dirs.len() >= 2).then_some(dirs)
    })
    .unwrap_or_else(|| panic!("expected 2 recordings, found {:?}", recording_dirs(&root)));
    std::thread::sleep(Duration::from_millis(500)); // a third one, if any, would be there now
    let dirs_now = recording_dirs(&root);
    assert_eq!(
        dirs_now.len(),
        2,
        "mode = \"off\" must create no recording: {dirs_now:?}"
    );
    let mut by_subject = std::collections::BTreeMap::new();
    for dir in &dirs {
        let report = wait_verified(dir, &key, Duration::from_secs(10));
        assert_eq!(report.status, SealStatus::Closed, "{}", report.summary());
        let evs = events(dir);
        by_subject.insert(subject(&evs).unwrap().to_owned(), (report, evs));
    }
    assert_eq!(
        by_subject.keys().collect::<Vec<_>>(),
        ["alice", "bob"],
        "recorded subjects"
    );

    // Alice: the big result is cut at 1 KiB of values and marked; the small one is whole.
    let (report, evs) = &by_subject["alice"];
    assert_eq!(
        report.truncated_results,
        1,
        "one capped result: {}",
        report.summary()
    );
    let truncated: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ResultsTruncated(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(truncated.len(), 1, "{truncated:?}");
    let t = truncated[0];
    assert_eq!(t.reason, "first:1KB");
    let kept: Vec<&Vec<postern_record::Value>> = evs
        .iter()
        .flat_map(|e| match &e.body {
            EventBody::Rows(r) => r.rows.iter().filter(|row| row.len() == 2).collect(),
            _ => Vec::new(),
        })
        .collect();
    let kept_rows = kept.len();
    let kept_bytes: usize = kept
        .iter()
        .flat_map(|row| row.iter())
        .map(|v| v.len())
        .sum();
    assert!(
        kept_bytes <= 1024,
        "kept {kept_bytes} value bytes under a 1 KiB cap"
    );
    assert!(
        (1..100).contains(&kept_rows),
        "kept {kept_rows} of 100 rows under a 1 KiB cap"
    );
    assert_eq!(
        kept_rows as u64 + t.omitted_rows,
        100,
        "kept + omitted rows must be the whole result: {t:?}"
    );
    // Value bytes of the whole result: 100 x 200 pad bytes + the digits of 1..=100.
    assert_eq!(
        kept_bytes as u64 + t.omitted_bytes,
        20_192,
        "kept + omitted bytes must be the whole result: {t:?}"
    );
    let small_recorded = evs.iter().any(|e| match &e.body {
        EventBody::Rows(r) => r
            .rows
            .iter()
            .any(|row| row.iter().any(|v| v.as_bytes() == Some(b"small-result"))),
        _ => false,
    });
    assert!(
        small_recorded,
        "the small result after the capped one is recorded in full"
    );

    // Bob: the command is there, the row is not.
    let (_, evs) = &by_subject["bob"];
    assert!(
        commands(evs)
            .iter()
            .any(|(k, t)| k == "query" && t.as_deref() == Some("SELECT 'value-seen-by-bob'")),
        "bob's command is recorded: {:?}",
        commands(evs)
    );
    assert_eq!(count_kind(evs, "rows"), 0, "commands-only records no rows");
    let bob_dir = dirs
        .iter()
        .find(|d| subject(&events(d)) == Some("bob"))
        .unwrap();
    let raw: Vec<u8> = std::fs::read_dir(bob_dir)
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    // The value appears once, inside the command text, never as a result value.
    let needle = b"value-seen-by-bob";
    let hits = raw.windows(needle.len()).filter(|w| w == needle).count();
    assert_eq!(hits, 1, "bob's result value appears outside his command");
}

#[test]
fn pgbench_extended_sessions_are_recorded_and_verify() {
    let fx = Fixture::with(|pg| {
        pg.create_database("bench")
            .expect("creating the bench database");
        GatewayConfig::shop(pg).target(Target::new("bench", pg.url("bench")))
    });
    fx.direct("bench").pgbench_init();

    let mut cmd = fx.gateway("bench").command("pgbench");
    cmd.args(["-n", "-t", "100", "-c", "2", "-M", "extended"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(180));
    assert_success(&out, "pgbench -M extended through the gateway");
    assert!(
        stdout(&out).contains("number of transactions actually processed: 200/200"),
        "{}",
        stdout(&out)
    );

    let key = public_key(&fx.gw);
    let root = fx.gw.data_dir.join("recordings");
    let dirs = recording_dirs(&root);
    assert!(
        dirs.len() >= 2,
        "expected a recording per pgbench client, found {dirs:?}"
    );
    let mut bench_sessions = 0;
    let mut totals = std::collections::BTreeMap::<String, usize>::new();
    let mut bind_with_params = 0;
    for dir in &dirs {
        let report = wait_verified(dir, &key, Duration::from_secs(10));
        assert_eq!(report.status, SealStatus::Closed, "{}", report.summary());
        assert_eq!(report.gaps, 0, "{}", report.summary());
        let evs = events(dir);
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for (k, _) in commands(&evs) {
            *kinds.entry(k).or_default() += 1;
        }
        bind_with_params += evs
            .iter()
            .filter(|e| matches!(&e.body, EventBody::Command(c) if c.kind == "bind" && !c.params.is_empty()))
            .count();
        if kinds.get("execute").copied().unwrap_or(0) > 0 {
            bench_sessions += 1;
            for k in ["parse", "bind", "execute"] {
                assert!(
                    kinds.get(k).copied().unwrap_or(0) >= 100,
                    "{}: too few {k} commands for a 100-transaction client: {kinds:?}",
                    dir.display()
                );
            }
        }
        for (k, n) in kinds {
            *totals.entry(k).or_default() += n;
        }
    }
    assert_eq!(
        bench_sessions, 2,
        "two pgbench client sessions with extended-protocol commands"
    );
    // The TPC-B-like script has 7 statements per transaction: 2 clients x 100 x 7.
    for k in ["parse", "bind", "execute"] {
        assert!(
            totals.get(k).copied().unwrap_or(0) >= 1400,
            "expected at least 1400 {k} commands in all: {totals:?}"
        );
    }
    assert!(
        bind_with_params >= 200 * 5,
        "binds record their parameter values: only {bind_with_params} binds with parameters"
    );
}
