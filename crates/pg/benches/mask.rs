//! Micro-benchmarks of masking on the wire: one DataRow through `ResultMasking`, the way the
//! relay meets every row of a masked session.
//!
//! The session's mask is the bench configuration's (`bench/configs/policy.toml`): a redacted
//! column and the five content detectors. The result is `SELECT id, email, note FROM people`:
//!
//! - `row/masked_column`: the e-mail column is masked by lineage (rewritten, the detectors
//!   skip it), the note holds nothing to find;
//! - `row/clean`: `SELECT id, name, note`: no masked column, the detectors scan both text
//!   values and find nothing (the row is forwarded as it is);
//! - `row/finding`: as `clean`, with an e-mail address in the note (the detectors rewrite it).
//!
//! Run: `cargo bench -p postern-pg --bench mask` (add `-- --quick` for a fast pass).

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_core::mask::{ColumnMask, MaskCatalog, OutputItem, Outputs, ResultPlan, StatementPlan};
use postern_pg::frame;
use postern_pg::mask::ResultMasking;
use postern_policy::ValueMasker;
use postern_policy::config::{Detector, MaskConfig, MaskStrategy, When};
use std::hint::black_box;
use std::sync::Arc;

const TEXT_OID: u32 = 25;

fn masking() -> ResultMasking {
    let mask = MaskConfig {
        name: "customer-pii".into(),
        when: When::default(),
        columns: vec!["people.email".into()],
        detectors: vec![
            Detector::Email,
            Detector::CreditCard,
            Detector::UsSsn,
            Detector::Iban,
            Detector::Phone,
        ],
        strategy: MaskStrategy::Redact,
    };
    let masker = ValueMasker::new(&[&mask], [9; 32]);
    ResultMasking::new(Arc::new(masker), Arc::new(MaskCatalog::default()))
}

/// A simple query whose second output column is `email` (masked) or clean.
fn describe(m: &ResultMasking, email_masked: bool) {
    let email = if email_masked {
        ColumnMask::Direct(0)
    } else {
        ColumnMask::Clean
    };
    m.on_query(Some(Arc::new(ResultPlan {
        statements: vec![StatementPlan {
            outputs: Outputs::Known(vec![
                OutputItem::Column(ColumnMask::Clean),
                OutputItem::Column(email),
                OutputItem::Column(ColumnMask::Clean),
            ]),
            touches_masked: email_masked,
            copy: None,
        }],
    })));
    let mut t = BytesMut::new();
    let at = frame::begin(&mut t, b'T');
    t.put_i16(3);
    for (name, type_oid) in [("id", 23), ("email", TEXT_OID), ("note", TEXT_OID)] {
        frame::put_cstr(&mut t, name);
        t.put_u32(0);
        t.put_i16(0);
        t.put_u32(type_oid);
        t.put_i16(-1);
        t.put_i32(-1);
        t.put_i16(0);
    }
    frame::finish(&mut t, at);
    m.on_server_frame(&t, &mut BytesMut::new()).unwrap();
}

fn row(second: &str, note: &str) -> BytesMut {
    let mut d = BytesMut::new();
    let at = frame::begin(&mut d, b'D');
    d.put_i16(3);
    for value in ["48213", second, note] {
        d.put_i32(value.len() as i32);
        d.put_slice(value.as_bytes());
    }
    frame::finish(&mut d, at);
    d
}

fn bench_rows(c: &mut Criterion) {
    let mut group = c.benchmark_group("row");
    group.throughput(Throughput::Elements(1));
    let quiet = "delivered on 2026-11-27, left at the door";
    let (email, name) = ("customer48213@example.com", "Customer number 48213");
    for (bench, email_masked, second, note, rewritten) in [
        ("masked_column", true, email, quiet, true),
        ("clean", false, name, quiet, false),
        (
            "finding",
            false,
            name,
            "ask for bob@example.org at the door",
            true,
        ),
    ] {
        let m = masking();
        describe(&m, email_masked);
        let frame_bytes = row(second, note);
        let mut out = BytesMut::with_capacity(256);
        assert_eq!(
            m.on_server_frame(&frame_bytes, &mut out).unwrap(),
            rewritten,
            "{bench}"
        );
        group.bench_function(bench, |b| {
            b.iter(|| {
                out.clear();
                black_box(
                    m.on_server_frame(black_box(&frame_bytes), &mut out)
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_rows);
criterion_main!(benches);
