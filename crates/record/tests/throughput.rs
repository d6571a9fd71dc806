//! Verify throughput on a ~100 MB recording. Prints MB/s (run with `--nocapture`, and
//! `--release` for representative figures); asserts nothing about time.
//! `POSTERN_VERIFY_MB` changes the size.

mod common;

use std::time::Instant;

use common::*;
use postern_record::*;

#[test]
fn verify_throughput() {
    let target_mb: u64 = std::env::var("POSTERN_VERIFY_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = open(
        tmp.path(),
        "bulk",
        RecorderConfig {
            checkpoint_events: 1000,
            ..RecorderConfig::default()
        },
    );
    // Statements returning 50 rows of three columns, like an ordinary query.
    let rows: Vec<Vec<Value>> = (0..50)
        .map(|i| {
            vec![
                Value::from(format!("{}", 100_000 + i)),
                Value::from(format!("customer-{i:05}@example.com")),
                Value::from("2024-05-01 12:34:56.789+00"),
            ]
        })
        .collect();
    let written = Instant::now();
    let mut statements = 0u64;
    while rec.events() == 0 || bytes_of(tmp.path()) < target_mb << 20 {
        for _ in 0..500 {
            rec.append_durable(EventBody::Command(Command::query(format!(
                "select id, email, created_at from customers where region = {statements} limit 50"
            ))))
            .unwrap();
            rec.append(EventBody::Decision(DecisionRecord::new(
                DecisionKind::Allow,
            )))
            .unwrap();
            rec.append(EventBody::RowDescription(RowDescription {
                columns: vec![
                    Column::named("id"),
                    Column::named("email"),
                    Column::named("created_at"),
                ],
            }))
            .unwrap();
            rec.append(EventBody::Rows(Rows { rows: rows.clone() }))
                .unwrap();
            rec.append(EventBody::CommandComplete(CommandComplete {
                tag: "SELECT 50".into(),
            }))
            .unwrap();
            rec.flush().unwrap();
            statements += 1;
        }
    }
    let receipt = rec.seal(SessionEnd::new("done")).unwrap();
    let write_secs = written.elapsed().as_secs_f64();
    let dir = tmp.path().join("bulk");

    let t = Instant::now();
    let rep = verify_session(&dir, &key()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(rep.events, receipt.events);
    let mb = rep.bytes as f64 / (1 << 20) as f64;

    let t = Instant::now();
    let mut n = 0u64;
    for event in read_events(&dir).unwrap() {
        event.unwrap();
        n += 1;
    }
    let read_secs = t.elapsed().as_secs_f64();
    assert_eq!(n, rep.events);

    println!(
        "recording: {mb:.1} MiB, {} events, {} chunks, {} checkpoints, {:.0} bytes/statement",
        rep.events,
        rep.chunks,
        rep.checkpoints,
        rep.bytes as f64 / statements as f64
    );
    println!(
        "record : {:.1} MiB/s ({statements} statements in {write_secs:.2} s)",
        mb / write_secs
    );
    println!("verify : {:.1} MiB/s ({secs:.2} s)", mb / secs);
    println!(
        "read   : {:.1} MiB/s ({read_secs:.2} s, events parsed)",
        mb / read_secs
    );
}

fn bytes_of(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("bulk"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}
