//! The HTTP listener: one axum router carrying the health checks and, beside them, the REST
//! API, the console and the MCP endpoint, each mounted from its own module or crate.

pub mod api;
pub mod auth;
pub mod console;
pub mod health;
pub mod metrics;
pub mod oidc;

use crate::config::RawConfig;
use anyhow::{Context, Result};
use axum::Router;
use postern_core::{Authenticator, Store, Target};
use postern_pg::LiveSessions;
use postern_record::VerifyingKey;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the HTTP routes share: the gateway's store, authenticator, roles and recordings.
pub struct HttpState {
    /// Audit events, the sessions index and approvals.
    pub store: Arc<dyn Store>,
    /// Verifies bearer tokens and console logins (gateway tokens and OIDC).
    pub authenticator: Arc<dyn Authenticator>,
    /// Groups holding the `admin` role.
    pub admin_groups: Vec<String>,
    /// Groups holding the `auditor` role.
    pub auditor_groups: Vec<String>,
    /// Groups named as `approvers` by any `approve` rule.
    pub approver_groups: BTreeSet<String>,
    /// The configured targets.
    pub targets: Vec<Target>,
    /// This node's recordings directory.
    pub recordings: PathBuf,
    /// The gateway's public key, to verify recordings as `postern verify` does.
    pub public_key: Option<VerifyingKey>,
    /// The sessions live on this node.
    pub live: Arc<LiveSessions>,
    /// Per-session decision counts of sealed recordings, so listings read each one once.
    pub decisions_cache: api::sessions::DecisionsCache,
    /// Renders `/metrics` (`None`: not served).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The policy's statement-analysis cache, whose statistics `/metrics` reports (`None`:
    /// no rules or masks, nothing is analysed).
    pub analyzer: Option<Arc<postern_policy::Analyzer>>,
    /// The console's OIDC login, when `[console.oidc]` is set.
    pub oidc: Option<oidc::OidcLogin>,
}

impl HttpState {
    /// The state for `config`, with the gateway's store, authenticator and live sessions.
    pub fn new(
        config: &RawConfig,
        store: Arc<dyn Store>,
        authenticator: Arc<dyn Authenticator>,
        targets: Vec<Target>,
        live: Arc<LiveSessions>,
    ) -> Result<HttpState> {
        let key_path = crate::sessions::default_key_path(config);
        let public_key = if key_path.is_file() {
            Some(
                postern_record::load_verifying_key(&key_path)
                    .with_context(|| format!("loading {}", key_path.display()))?,
            )
        } else {
            None
        };
        let metrics = metrics::install();
        // Series that exist from the start, so a dashboard sees zeros rather than gaps.
        for target in &targets {
            use postern_pg::metrics as m;
            let label = || ("target", target.name.clone());
            ::metrics::counter!(m::SESSIONS, &[label()]).increment(0);
            ::metrics::gauge!(m::SESSIONS_ACTIVE, &[label()]).increment(0.0);
            ::metrics::counter!(m::UPSTREAM_ERRORS, &[label()]).increment(0);
        }
        for decision in ["allow", "block", "approve"] {
            ::metrics::counter!(postern_pg::metrics::STATEMENTS, "decision" => decision)
                .increment(0);
        }
        ::metrics::counter!(crate::recording::RECORDING_BYTES).increment(0);
        let approver_groups = config
            .rules
            .iter()
            .filter(|r| r.action == postern_policy::Action::Approve)
            .flat_map(|r| r.approvers.iter().cloned())
            .collect();
        Ok(HttpState {
            store,
            authenticator,
            admin_groups: config.roles.admin.clone(),
            auditor_groups: config.roles.auditor.clone(),
            approver_groups,
            targets,
            recordings: config.recordings_dir(),
            public_key,
            live,
            decisions_cache: Default::default(),
            metrics: Some(metrics),
            analyzer: None,
            oidc: config
                .console
                .oidc
                .as_ref()
                .map(oidc::OidcLogin::new)
                .transpose()?,
        })
    }
}

/// Everything the HTTP listener serves.
pub fn app(state: Arc<HttpState>) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(console::routes())
        .merge(metrics::routes(state.clone()))
        .merge(api::routes(state))
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
