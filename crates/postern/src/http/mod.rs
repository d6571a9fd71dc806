//! The HTTP listener: one axum router carrying the health checks and, beside them, the REST
//! API, the console and the MCP endpoint, each mounted from its own module or crate.

pub mod health;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything the HTTP listener serves.
pub fn app() -> Router {
    Router::new().merge(health::routes())
}

/// Serves `app` until `shutdown` fires, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the http listener failed");
    }
}
