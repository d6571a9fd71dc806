//! Fail closed, best effort, crashes and recovery.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use postern_record::*;

/// A local sink that fails on demand, like a full disk or an unreachable store.
struct Flaky {
    inner: LocalDirSink,
    broken: Arc<AtomicBool>,
}

impl Flaky {
    fn err(&self) -> Result<(), SinkError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(SinkError::new(
                "append to",
                self.inner.location(),
                io::Error::other("No space left on device"),
            ))
        } else {
            Ok(())
        }
    }
}

impl Sink for Flaky {
    fn append_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), SinkError> {
        self.err()?;
        self.inner.append_chunk(index, data)
    }
    fn append_checkpoint(&mut self, note: &[u8]) -> Result<(), SinkError> {
        self.err()?;
        self.inner.append_checkpoint(note)
    }
    fn sync(&mut self, durability: Durability) -> Result<(), SinkError> {
        self.err()?;
        self.inner.sync(durability)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

fn flaky(
    dir: &std::path::Path,
    id: &str,
    cfg: RecorderConfig,
) -> (SessionRecorder, Arc<AtomicBool>) {
    let broken = Arc::new(AtomicBool::new(false));
    let sink = Flaky {
        inner: LocalDirSink::create(dir, id).unwrap(),
        broken: broken.clone(),
    };
    let rec = SessionRecorder::start(start(id), Box::new(sink), signer(), cfg).unwrap();
    (rec, broken)
}

fn commands(dir: &std::path::Path) -> Vec<String> {
    read_events(dir)
        .unwrap()
        .filter_map(|e| match e.unwrap().body {
            EventBody::Command(c) => c.text,
            _ => None,
        })
        .collect()
}

fn recordings(dir: &std::path::Path) -> Recordings {
    Recordings::open(
        dir,
        "node-1",
        Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap(),
    )
    .unwrap()
}

#[test]
fn fail_closed_refuses_the_command_and_everything_after() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut rec, broken) = flaky(tmp.path(), "fc", config());
    statement(&mut rec, 0);
    broken.store(true, Ordering::SeqCst);

    // The write-ahead append fails: the engine must not forward this command.
    let err = rec
        .append_durable(EventBody::Command(Command::query("delete from users")))
        .unwrap_err();
    println!("{err}");
    assert!(matches!(err, RecordError::Sink(_)));
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(err.to_string().contains("fc"), "names the recording: {err}");

    // The recorder stays stopped even once the disk recovers: the session is over.
    broken.store(false, Ordering::SeqCst);
    let err = rec
        .append(EventBody::Command(Command::query("select 2")))
        .unwrap_err();
    assert!(matches!(err, RecordError::Failed(_)), "{err}");
    assert!(rec.failure().unwrap().contains("No space left"));
    assert!(rec.seal(SessionEnd::new("recording failed")).is_err());

    // At the next start it is sealed as interrupted, without the refused command.
    let recs = recordings(tmp.path());
    let report = recs.recover().unwrap();
    assert_eq!(report.sealed.len(), 1, "{report:?}");
    let rep = verify_session(&tmp.path().join("fc"), &key()).unwrap();
    assert_eq!(rep.status, SealStatus::Interrupted);
    assert_eq!(
        commands(&tmp.path().join("fc")),
        ["select id, email from users where id = 0"]
    );
}

#[test]
fn best_effort_records_a_signed_gap_and_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        on_failure: OnFailure::BestEffort,
        ..config()
    };
    let (mut rec, broken) = flaky(tmp.path(), "be", cfg);
    statement(&mut rec, 0);
    broken.store(true, Ordering::SeqCst);
    statement(&mut rec, 1); // five events lost, no error
    statement(&mut rec, 2); // five more
    assert_eq!(rec.pending_gap(), Some(10));
    broken.store(false, Ordering::SeqCst);
    statement(&mut rec, 3);
    assert_eq!(rec.pending_gap(), None);
    let receipt = rec.seal(SessionEnd::new("client closed")).unwrap();

    let dir = tmp.path().join("be");
    let rep = verify_session(&dir, &key()).unwrap();
    println!("{}", rep.summary());
    assert_eq!((rep.gaps, rep.lost_events), (1, 10));
    assert_eq!(rep.events, receipt.events);
    let gap = read_events(&dir)
        .unwrap()
        .find_map(|e| match e.unwrap().body {
            EventBody::Gap(g) => Some(g),
            _ => None,
        })
        .unwrap();
    assert_eq!(gap.lost_events, 10);
    assert!(gap.reason.contains("No space left on device"));
    assert_eq!(
        commands(&dir),
        [
            "select id, email from users where id = 0",
            "select id, email from users where id = 3"
        ]
    );
}

#[test]
fn best_effort_still_fails_the_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        on_failure: OnFailure::BestEffort,
        ..config()
    };
    let (mut rec, broken) = flaky(tmp.path(), "be2", cfg);
    statement(&mut rec, 0);
    broken.store(true, Ordering::SeqCst);
    assert!(rec.seal(SessionEnd::new("client closed")).is_err());
}

#[test]
fn a_crash_loses_only_what_was_not_flushed_and_recovery_seals_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        let id = format!("crash-{n:02}");
        // (Not through `Recordings`: a leaked recorder would keep its log locked, which a
        // real crash does not.)
        let mut rec = open(tmp.path(), &id, config());
        for i in 0..3 {
            statement(&mut rec, i);
        }
        // A command whose result was being streamed when the process died.
        rec.append_durable(EventBody::Command(Command::query("select pg_sleep(10)")))
            .unwrap();
        rec.append(EventBody::Rows(Rows {
            rows: vec![vec![Value::from("never flushed")]],
        }))
        .unwrap();
        std::mem::forget(rec); // kill -9: no destructor, no flush
        ids.push(id);
    }
    // Half-written tails, as a crash mid-write leaves them.
    let last = chunk_path(tmp.path(), "crash-00", 0);
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0, 0, 1, 0, 0xde, 0xad]);
    std::fs::write(&last, bytes).unwrap();
    let cps = tmp.path().join("crash-01").join("checkpoints");
    let mut notes = std::fs::read(&cps).unwrap();
    notes.extend_from_slice(b"postern.test/session/crash-01\n17\n");
    std::fs::write(&cps, notes).unwrap();
    // Created but nothing written yet.
    std::fs::create_dir(tmp.path().join("crash-empty")).unwrap();

    // Before recovery these are open recordings, not problems.
    let before = verify_all(tmp.path(), &key()).unwrap();
    assert_eq!(before.sessions.iter().filter(|s| s.open).count(), 20);
    let recs = recordings(tmp.path()); // the restart
    let report = recs.recover().unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.sealed.len(), 21);
    for id in &ids {
        let dir = tmp.path().join(id);
        let rep = verify_session(&dir, &key()).unwrap();
        assert_eq!(rep.status, SealStatus::Interrupted);
        // start + 3 statements + the durable command + the interrupted end.
        assert_eq!(rep.events, 1 + 15 + 1 + 1, "{}", rep.summary());
        let events: Vec<_> = read_events(&dir).unwrap().map(Result::unwrap).collect();
        assert!(matches!(
            &events[events.len() - 2].body,
            EventBody::Command(c) if c.text.as_deref() == Some("select pg_sleep(10)")
        ));
        let EventBody::SessionEnd(end) = &events.last().unwrap().body else {
            panic!()
        };
        assert!(end.interrupted);
        assert_eq!(end.reason, INTERRUPTED_REASON);
    }
    let empty = verify_session(&tmp.path().join("crash-empty"), &key()).unwrap();
    assert_eq!((empty.events, empty.status), (1, SealStatus::Interrupted));

    let all = verify_all(tmp.path(), &key()).unwrap();
    assert!(all.is_intact(), "{:?}", all.problems);
    assert_eq!(all.logs[0].size, 21);

    // Recovery is idempotent.
    let again = recs.recover().unwrap();
    assert!(again.sealed.is_empty() && again.logged.is_empty() && again.failed.is_empty());
}

#[test]
fn a_dropped_recorder_hands_over_its_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(tmp.path(), "drop", config());
    statement(&mut rec, 0);
    rec.append(EventBody::Notice(Diagnostic::new(
        "NOTICE", "00000", "buffered",
    )))
    .unwrap();
    drop(rec); // a panicking session task
    let err = verify_session(&tmp.path().join("drop"), &key()).unwrap_err();
    assert!(
        matches!(err, VerifyError::Unsealed { events: 7, .. }),
        "{err}"
    );
    let recs = recordings(tmp.path());
    recs.recover().unwrap();
    let rep = verify_session(&tmp.path().join("drop"), &key()).unwrap();
    assert_eq!(rep.events, 8);
}

#[test]
fn a_seal_that_missed_the_log_is_logged_at_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    record(tmp.path(), "unlogged", 1, config()); // no manifest log attached
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert!(!all.sessions[0].logged);
    let recs = recordings(tmp.path());
    let report = recs.recover().unwrap();
    assert_eq!(report.logged, ["unlogged"]);
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert!(all.sessions[0].logged && all.is_intact());
}

#[test]
fn recovery_refuses_to_seal_a_tampered_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(tmp.path(), "bad", config());
    for i in 0..3 {
        statement(&mut rec, i);
    }
    std::mem::forget(rec);
    let path = chunk_path(tmp.path(), "bad", 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let report = recordings(tmp.path()).recover().unwrap();
    assert_eq!(report.failed.len(), 1);
    println!("{}", report.failed[0].1);
    assert!(verify_session(&tmp.path().join("bad"), &key()).is_err());
}

#[test]
fn the_manifest_log_is_locked_to_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let _a = recordings(tmp.path());
    let b = Recordings::open(
        tmp.path(),
        "node-1",
        Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap(),
    );
    let err = b.unwrap_err();
    assert!(err.to_string().contains("another gateway process"), "{err}");
    // Another node name is another log.
    assert!(
        Recordings::open(
            tmp.path(),
            "node-2",
            Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap()
        )
        .is_ok()
    );
}
