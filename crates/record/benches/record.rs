//! Micro-benchmarks of the recorder's hot path and of offline verification.
//!
//! - `append/statement`: the events a one-row `SELECT` leaves (command, decision, row
//!   description, one row, completion) and the write-ahead commit, to a local directory with
//!   `durability = "write"`: what recording adds per statement;
//! - `append/rows_1k`: a batch of 1,000 two-column rows as an engine captures them (packed),
//!   encoded and hashed without a flush (throughput in value bytes);
//! - `verify/statements`: `verify_session` over a recording of 20,000 such statements
//!   (throughput in recording bytes; the `postern verify` target is 300 MB/s on one core).
//!
//! Run: `cargo bench -p postern-record --bench record` (add `-- --quick` for a fast pass).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_record::*;

#[path = "../tests/common/mod.rs"]
mod common;

fn recorder(dir: &std::path::Path, id: &str) -> SessionRecorder {
    common::open(dir, id, RecorderConfig::default())
}

fn one_row(values: &[&str]) -> PackedRows {
    let mut rows = PackedRows::default();
    rows.push_values(values.iter().map(|v| Some(v.as_bytes())));
    rows
}

/// The events of `SELECT abalance FROM pgbench_accounts WHERE aid = n`, and its commit.
fn statement(rec: &mut SessionRecorder, n: u64) {
    rec.append(EventBody::Command(Command::query(format!(
        "SELECT abalance FROM pgbench_accounts WHERE aid = {n};"
    ))))
    .unwrap();
    rec.append(EventBody::Decision(DecisionRecord::new(
        DecisionKind::Allow,
    )))
    .unwrap();
    rec.flush().unwrap();
    rec.append(EventBody::RowDescription(RowDescription {
        columns: vec![Column {
            type_id: Some(23),
            ..Column::named("abalance")
        }],
    }))
    .unwrap();
    rec.append(EventBody::PackedRows(one_row(&["0"]))).unwrap();
    rec.append(EventBody::CommandComplete(CommandComplete {
        tag: "SELECT 1".into(),
    }))
    .unwrap();
}

fn append(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("append");
    let mut rec = recorder(tmp.path(), "statement");
    let mut n = 0;
    group.bench_function("statement", |b| {
        b.iter(|| {
            n += 1;
            statement(&mut rec, n);
        })
    });
    let mut batch = PackedRows::default();
    for i in 0..1000u64 {
        let id = i.to_string();
        let digest = format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        batch.push_values([Some(id.as_bytes()), Some(digest.as_bytes())].into_iter());
    }
    let bytes: u64 = (0..batch.len()).map(|i| batch.value_bytes(i)).sum();
    group.throughput(Throughput::Bytes(bytes));
    let mut rec = recorder(tmp.path(), "rows");
    group.bench_function("rows_1k", |b| {
        b.iter(|| rec.append(EventBody::PackedRows(batch.clone())).unwrap())
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = recorder(tmp.path(), "verify");
    for n in 0..20_000 {
        statement(&mut rec, n);
    }
    rec.seal(SessionEnd::new("bench done")).unwrap();
    let dir = tmp.path().join("verify");
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let key = common::key();
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);
    group.bench_function("statements", |b| {
        b.iter(|| {
            let report = verify_session(&dir, &key).unwrap();
            assert_eq!(report.events, 100_002);
        })
    });
    group.finish();
}

criterion_group!(benches, append, verify);
criterion_main!(benches);
