//! Micro-benchmarks of value masking, which runs on every masked value and, with detectors
//! configured, over every text the server sends.
//!
//! - `mask_value/*`: one typical value (an e-mail address) under each strategy;
//! - `scrub/clean_row`: a 10-column row with nothing to find (ids, timestamps, prices, a UUID,
//!   a name, a status), the common case, which must cost next to nothing;
//! - `scrub/row_with_email`: the same row with an e-mail address in it;
//! - `scrub/clean_value`: one short value, as when the engine scrubs column by column (the
//!   pre-filters alone decide).
//!
//! Run: `cargo bench -p postern-policy --bench mask` (add `-- --quick` for a fast pass).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_core::{ColumnMask, Masker};
use postern_policy::ValueMasker;
use postern_policy::config::{Detector, MaskConfig, MaskStrategy, When};
use std::hint::black_box;

const ALL_DETECTORS: [Detector; 5] = [
    Detector::Email,
    Detector::CreditCard,
    Detector::UsSsn,
    Detector::Iban,
    Detector::Phone,
];

fn mask(name: &str, strategy: MaskStrategy, detectors: &[Detector]) -> MaskConfig {
    MaskConfig {
        name: name.into(),
        when: When::default(),
        columns: vec!["customers.email".into()],
        detectors: detectors.to_vec(),
        strategy,
    }
}

fn mask_value(c: &mut Criterion) {
    let masks = [
        mask("redact", MaskStrategy::Redact, &[]),
        mask("partial", MaskStrategy::Partial, &[]),
        mask("hash", MaskStrategy::Hash, &[]),
    ];
    let masker = ValueMasker::new(&masks.iter().collect::<Vec<_>>(), [7; 32]);
    let value = b"customer1234@example.com";
    let mut group = c.benchmark_group("mask_value");
    for (id, name) in [(0, "redact"), (1, "partial"), (2, "hash")] {
        let mut out = Vec::with_capacity(64);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                masker.mask_value(ColumnMask::Direct(id), black_box(value), &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn scrub(c: &mut Criterion) {
    let masks = [mask("pii", MaskStrategy::Redact, &ALL_DETECTORS)];
    let masker = ValueMasker::new(&masks.iter().collect::<Vec<_>>(), [7; 32]);
    let clean = "1042\tCustomer number 1042\t2026-11-27 10:00:00+00\t199.99\tshipped\t\
                 550e8400-e29b-41d4-a716-446655440000\t3\tORD-2026-001042\t192.168.1.20\t\
                 Acme Widget 3000 (blue)";
    let with_email = clean.replace("Customer number 1042", "customer1042@example.com");
    let mut group = c.benchmark_group("scrub");
    let cases = [
        ("clean_row", clean),
        ("row_with_email", with_email.as_str()),
        ("clean_value", "Customer number 1042"),
    ];
    for (name, text) in cases {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(masker.scrub(black_box(text.as_bytes()))))
        });
    }
    group.finish();
}

criterion_group!(benches, mask_value, scrub);
criterion_main!(benches);
