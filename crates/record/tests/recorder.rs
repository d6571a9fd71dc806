//! The writer end to end: round trip, checkpoints, chunks, the results cap.

mod common;

use std::time::Duration;

use common::*;
use postern_record::*;

fn bodies(dir: &std::path::Path) -> Vec<EventBody> {
    read_events(dir).unwrap().map(|e| e.unwrap().body).collect()
}

#[test]
fn every_kind_of_event_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(tmp.path(), "rt", config());
    let script = vec![
        EventBody::Intent(Intent {
            causal_id: "call-1".into(),
            text: "find the user's email".into(),
        }),
        EventBody::Command(Command::parse("s1", "select $1::int")),
        EventBody::Command(Command::bind(
            "",
            "s1",
            vec![
                Value::from("42"),
                Value::Null,
                Value::Binary(vec![0, 159, 146, 150]),
            ],
        )),
        EventBody::Command(Command {
            causal_id: Some("call-1".into()),
            ..Command::execute("")
        }),
        EventBody::Decision(DecisionRecord {
            masked: vec!["email".into()],
            ..DecisionRecord::from(&postern_core::Decision::Allow)
        }),
        EventBody::RowDescription(RowDescription {
            columns: vec![Column {
                name: "int4".into(),
                type_id: Some(23),
                type_name: Some("int4".into()),
            }],
        }),
        EventBody::Rows(Rows {
            rows: vec![vec![Value::from("42")]],
        }),
        EventBody::CommandComplete(CommandComplete {
            tag: "SELECT 1".into(),
        }),
        EventBody::Notice(Diagnostic::new("WARNING", "01000", "careful")),
        EventBody::Notification(Notification {
            channel: "jobs".into(),
            payload: "42".into(),
            process_id: Some(7),
        }),
        EventBody::Command(Command::query("copy t from stdin")),
        EventBody::CopyData(CopyData::new(Direction::ToServer, b"1\tx\n")),
        EventBody::CopyData(CopyData::new(Direction::ToClient, &[0xff, 0xfe])),
        EventBody::Command(Command::query("drop table t")),
        EventBody::Decision(DecisionRecord::from(&postern_core::Decision::Block {
            rule: "no-ddl".into(),
            reason: "agents may not drop tables".into(),
        })),
        EventBody::Error(Diagnostic::new("ERROR", "42501", "blocked by rule no-ddl")),
    ];
    for body in &script {
        rec.append(body.clone()).unwrap();
    }
    let receipt = rec.seal(SessionEnd::new("client closed")).unwrap();
    assert_eq!(receipt.events, script.len() as u64 + 2);
    assert_eq!(receipt.status, SealStatus::Closed);

    let dir = tmp.path().join("rt");
    let report = verify_session(&dir, &key()).unwrap();
    println!("{}", report.summary());
    assert_eq!(report.events, receipt.events);
    assert_eq!(report.root, receipt.root);
    assert_eq!(report.subject.as_deref(), Some("alice"));

    let events: Vec<Event> = read_events(&dir).unwrap().map(Result::unwrap).collect();
    let EventBody::SessionStart(s) = &events[0].body else {
        panic!()
    };
    assert_eq!(s.session_id, "rt");
    assert!(s.started_at_unix_us > 1_600_000_000_000_000);
    assert_eq!(
        events[1..=script.len()]
            .iter()
            .map(|e| e.body.clone())
            .collect::<Vec<_>>(),
        script
    );
    assert!(events.windows(2).all(|w| w[0].offset_us <= w[1].offset_us));
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    // The export form is one JSON object per event.
    let line = serde_json::to_string(&events[2]).unwrap();
    assert!(
        line.starts_with(r#"{"seq":2,"#) && line.contains(r#""type":"command","kind":"parse""#),
        "{line}"
    );
}

#[test]
fn the_recorder_writes_start_and_end_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(tmp.path(), "x", config());
    let err = rec
        .append(EventBody::SessionEnd(SessionEnd::new("no")))
        .unwrap_err();
    assert!(matches!(err, RecordError::InvalidEvent(_)), "{err}");
    assert!(matches!(
        LocalDirSink::create(tmp.path(), "x"),
        Err(SinkError { .. })
    ));
    let sink = LocalDirSink::create(tmp.path(), "y").unwrap();
    let bad = SessionRecorder::start(start("../etc"), Box::new(sink), signer(), config());
    assert!(matches!(bad, Err(RecordError::InvalidId(_))));
}

#[test]
fn checkpoints_follow_event_count_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    // By count: every 4 events (at flushes).
    record(tmp.path(), "count", 6, config());
    let rep = verify_session(&tmp.path().join("count"), &key()).unwrap();
    assert_eq!(rep.checkpoints, 7);

    // By time: an interval of zero signs at every flush with new events.
    let cfg = RecorderConfig {
        checkpoint_events: 1_000_000,
        checkpoint_interval: Duration::ZERO,
        ..config()
    };
    record(tmp.path(), "time", 3, cfg);
    let rep = verify_session(&tmp.path().join("time"), &key()).unwrap();
    // start is not checkpointed on its own; each statement flushes twice; then the seal.
    assert_eq!(rep.checkpoints, 3 * 2 + 1);

    // Neither: only the seal.
    let cfg = RecorderConfig {
        checkpoint_events: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        ..config()
    };
    record(tmp.path(), "seal-only", 3, cfg);
    let rep = verify_session(&tmp.path().join("seal-only"), &key()).unwrap();
    assert_eq!(rep.checkpoints, 1);
}

#[test]
fn chunks_rotate_by_size_and_read_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        chunk_bytes: 1000,
        ..config()
    };
    record(tmp.path(), "rot", 40, cfg);
    let dir = tmp.path().join("rot");
    let rep = verify_session(&dir, &key()).unwrap();
    assert!(rep.chunks > 10, "{}", rep.summary());
    assert_eq!(rep.events, 202);
    let events: Vec<Event> = read_events(&dir).unwrap().map(Result::unwrap).collect();
    assert_eq!(events.len(), 202);
    for chunk in 0..rep.chunks {
        let len = std::fs::metadata(chunk_path(tmp.path(), "rot", chunk))
            .unwrap()
            .len();
        assert!(len < 1000 + 400, "chunk {chunk} is {len} bytes");
    }
}

fn rows(n: usize, width: usize) -> Vec<Vec<Value>> {
    (0..n)
        .map(|i| vec![Value::from(format!("{i:0width$}"))])
        .collect()
}

fn one_result(cap: ResultCap, n: usize, width: usize) -> Vec<EventBody> {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(
        tmp.path(),
        "cap",
        RecorderConfig {
            results: cap,
            ..config()
        },
    );
    rec.append_durable(EventBody::Command(Command::query("select * from big")))
        .unwrap();
    rec.append(EventBody::RowDescription(RowDescription {
        columns: vec![Column::named("v")],
    }))
    .unwrap();
    // The engine hands rows over in batches of 10.
    let all = rows(n, width);
    for batch in all.chunks(10) {
        rec.append(EventBody::Rows(Rows {
            rows: batch.to_vec(),
        }))
        .unwrap();
    }
    rec.append(EventBody::CommandComplete(CommandComplete {
        tag: format!("SELECT {n}"),
    }))
    .unwrap();
    rec.append_durable(EventBody::Command(Command::query("select 1")))
        .unwrap();
    rec.seal(SessionEnd::new("client closed")).unwrap();
    let dir = tmp.path().join("cap");
    verify_session(&dir, &key()).unwrap();
    bodies(&dir)
}

fn kept_rows(bodies: &[EventBody]) -> usize {
    bodies
        .iter()
        .map(|b| match b {
            EventBody::Rows(r) => r.rows.len(),
            _ => 0,
        })
        .sum()
}

fn marker(bodies: &[EventBody]) -> Option<(usize, ResultsTruncated)> {
    bodies.iter().enumerate().find_map(|(i, b)| match b {
        EventBody::ResultsTruncated(t) => Some((i, t.clone())),
        _ => None,
    })
}

#[test]
fn results_are_recorded_in_full_by_default() {
    let b = one_result(ResultCap::Full, 95, 10);
    assert_eq!(kept_rows(&b), 95);
    assert!(marker(&b).is_none());
}

#[test]
fn a_capped_result_keeps_its_first_bytes_and_says_so() {
    // 95 rows of 10 bytes under a 255-byte cap: 25 rows fit.
    let b = one_result("first:255B".parse().unwrap(), 95, 10);
    assert_eq!(kept_rows(&b), 25);
    let (at, m) = marker(&b).expect("a truncation marker");
    assert_eq!((m.omitted_rows, m.omitted_bytes), (70, 700));
    assert_eq!(m.reason, "first:255B");
    // The marker sits where the omission ends: just before the completion tag.
    assert!(matches!(&b[at + 1], EventBody::CommandComplete(c) if c.tag == "SELECT 95"));
    // Only one marker, and the next statement is recorded normally.
    assert_eq!(
        b.iter()
            .filter(|x| matches!(x, EventBody::ResultsTruncated(_)))
            .count(),
        1
    );
    assert!(matches!(&b[at + 2], EventBody::Command(c) if c.text.as_deref() == Some("select 1")));
}

#[test]
fn no_results_keeps_descriptions_and_tags() {
    let b = one_result(ResultCap::None, 30, 4);
    assert_eq!(kept_rows(&b), 0);
    let (_, m) = marker(&b).unwrap();
    assert_eq!(
        (m.omitted_rows, m.omitted_bytes, m.reason.as_str()),
        (30, 120, "none")
    );
    assert!(b.iter().any(|x| matches!(x, EventBody::RowDescription(_))));
    assert!(b.iter().any(|x| matches!(x, EventBody::CommandComplete(_))));
}

#[test]
fn large_row_batches_are_split_into_bounded_events() {
    // One batch of 3000 rows × 1 KiB = ~3 MiB becomes events of about 1 MiB each.
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(tmp.path(), "big", config());
    rec.append(EventBody::Rows(Rows {
        rows: rows(3000, 1024),
    }))
    .unwrap();
    rec.seal(SessionEnd::new("done")).unwrap();
    let b = bodies(&tmp.path().join("big"));
    let sizes: Vec<usize> = b
        .iter()
        .filter_map(|x| match x {
            EventBody::Rows(r) => Some(r.rows.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 3000);
    assert!(
        sizes.len() >= 3 && sizes.iter().all(|&n| n <= 1024),
        "{sizes:?}"
    );
    verify_session(&tmp.path().join("big"), &key()).unwrap();
}

#[test]
fn copy_data_is_capped_to_the_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(
        tmp.path(),
        "copy",
        RecorderConfig {
            results: ResultCap::First(10),
            ..config()
        },
    );
    rec.append_durable(EventBody::Command(Command::query("copy t to stdout")))
        .unwrap();
    for piece in ["1\talpha\n", "2\tbeta\n", "3\tgamma\n"] {
        rec.append(EventBody::CopyData(CopyData::new(
            Direction::ToClient,
            piece.as_bytes(),
        )))
        .unwrap();
    }
    rec.append(EventBody::CommandComplete(CommandComplete {
        tag: "COPY 3".into(),
    }))
    .unwrap();
    rec.seal(SessionEnd::new("done")).unwrap();
    let b = bodies(&tmp.path().join("copy"));
    let data: Vec<u8> = b
        .iter()
        .filter_map(|x| match x {
            EventBody::CopyData(c) => c.data.as_bytes().map(<[u8]>::to_vec),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(data, b"1\talpha\n2\t");
    let (_, m) = marker(&b).unwrap();
    assert_eq!(m.omitted_bytes, 23 - 10);
}

#[test]
fn fsync_durability_and_thread_safety() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<SessionRecorder>();
    send_sync::<Recordings>();
    send_sync::<VerifyError>();
    send_sync::<RecordError>();

    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        durability: Durability::Fsync,
        chunk_bytes: 500,
        ..config()
    };
    record(tmp.path(), "fsync", 5, cfg);
    let rep = verify_session(&tmp.path().join("fsync"), &key()).unwrap();
    assert!(rep.chunks > 1);
    assert_eq!("fsync".parse::<Durability>().unwrap(), Durability::Fsync);
    assert_eq!(
        "best-effort".parse::<OnFailure>().unwrap(),
        OnFailure::BestEffort
    );
    assert!("maybe".parse::<OnFailure>().is_err());
}

#[test]
fn a_recording_in_the_wrong_directory_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    record(tmp.path(), "one", 1, config());
    record(tmp.path(), "two", 1, config());
    std::fs::rename(tmp.path().join("one"), tmp.path().join("tmp")).unwrap();
    std::fs::rename(tmp.path().join("two"), tmp.path().join("one")).unwrap();
    std::fs::rename(tmp.path().join("tmp"), tmp.path().join("two")).unwrap();
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert_eq!(all.problems.len(), 2, "{:?}", all.problems);
    assert!(
        all.problems[0]
            .to_string()
            .contains("holds the recording of session two")
    );
}
