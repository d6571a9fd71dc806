//! Liveness and readiness for load balancers and orchestrators (`/healthz`, `/readyz`).

use axum::Router;
use axum::routing::get;

/// The health routes: both answer `ok` while the gateway is serving.
pub fn routes() -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
}

async fn ok() -> &'static str {
    "ok\n"
}
