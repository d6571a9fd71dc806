//! `/metrics`: Prometheus text exposition of what the gateway measures.
//!
//! The engines record through the `metrics` facade; this module installs the Prometheus
//! recorder (once per process) and renders it. Gauges that describe shared state (approvals
//! pending in the store) are read when scraped, so every node reports the same value.

use super::HttpState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use postern_core::{ApprovalFilter, ApprovalState};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Approvals waiting for a decision, in the shared store.
pub const APPROVALS_PENDING: &str = "postern_approvals_pending";
/// Statements whose analysis came from the cache (same text, or same shape with other
/// literal values).
pub const ANALYSIS_CACHE_HITS: &str = "postern_analysis_cache_hits_total";
/// Statements the gateway had to parse.
pub const ANALYSIS_CACHE_MISSES: &str = "postern_analysis_cache_misses_total";
/// Texts and shapes held by the analysis cache.
pub const ANALYSIS_CACHE_ENTRIES: &str = "postern_analysis_cache_entries";

/// Histogram buckets, in seconds: from a fast statement to a long approval wait.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (the first call does; later ones return the same handle)
/// and, on the current runtime, its periodic upkeep.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "a metrics recorder was already installed");
            }
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// The `/metrics` route.
pub fn routes(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}

async fn render(State(state): State<Arc<HttpState>>) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response();
    };
    match state
        .store
        .list_approvals(&ApprovalFilter {
            state: Some(ApprovalState::Pending),
            limit: Some(postern_store::MAX_LIMIT),
            ..Default::default()
        })
        .await
    {
        Ok(pending) => metrics::gauge!(APPROVALS_PENDING).set(pending.len() as f64),
        Err(e) => tracing::warn!(error = %e, "cannot count pending approvals for /metrics"),
    }
    if let Some(analyzer) = &state.analyzer {
        let stats = analyzer.stats();
        metrics::counter!(ANALYSIS_CACHE_HITS).absolute(stats.hits);
        metrics::counter!(ANALYSIS_CACHE_MISSES).absolute(stats.misses);
        metrics::gauge!(ANALYSIS_CACHE_ENTRIES).set(stats.entries as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
