//! Micro-benchmarks of statement analysis, which runs once per simple query and once per
//! `Parse` on the gateway's hot path:
//!
//! - `analysis/cold/*`: parsing and classifying a text the cache has not seen (with and
//!   without the lineage that masking needs);
//! - `analysis/cached/*`: the same text from the shared cache (the steady state of prepared and
//!   extended-protocol clients, and of any repeated statement text);
//! - `analysis/same_shape/*`: a text the cache has not seen but whose shape it has (other
//!   literal values, other lengths: `pgbench -M simple`, clients that inline values).
//!
//! Run: `cargo bench -p postern-policy --bench analysis` (add `-- --quick` for a fast pass).

use criterion::{Criterion, criterion_group, criterion_main};
use postern_policy::{Analysis, Analyzer, FunctionCatalog, Lexing};
use std::hint::black_box;

const STATEMENTS: [(&str, &str); 3] = [
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    ),
    (
        "join",
        "SELECT o.id, c.name, sum(o.total) FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.status = 'paid' GROUP BY o.id, c.name ORDER BY 3 DESC LIMIT 20",
    ),
    (
        "cte_write",
        "WITH d AS (DELETE FROM orders WHERE ordered_at < now() - interval '1 year' RETURNING *) \
         INSERT INTO orders_archive SELECT * FROM d",
    ),
];

fn analysis(c: &mut Criterion) {
    let functions = FunctionCatalog::default();
    let mut group = c.benchmark_group("analysis");
    for (name, sql) in STATEMENTS {
        group.bench_function(format!("cold/{name}"), |b| {
            b.iter(|| Analysis::of_with(black_box(sql), Lexing::Standard, &functions, false))
        });
        group.bench_function(format!("cold_with_lineage/{name}"), |b| {
            b.iter(|| Analysis::of_with(black_box(sql), Lexing::Standard, &functions, true))
        });
        let analyzer = Analyzer::default().with_lineage();
        analyzer.analyze(sql);
        group.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| analyzer.analyze(black_box(sql)))
        });
        let other_values = sql.replace("48213", "7").replace("'paid'", "'open'");
        group.bench_function(format!("same_shape/{name}"), |b| {
            b.iter(|| analyzer.analyze(black_box(&other_values)))
        });
    }
    group.finish();
}

criterion_group!(benches, analysis);
criterion_main!(benches);
