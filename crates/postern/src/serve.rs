//! `postern serve`: resolve the configuration, wire the concrete parts into the engines, and run
//! the listeners until a signal arrives.

use crate::config::{RawConfig, RawTarget};
use crate::{http, tls};
use anyhow::{Context, Result, bail};
use postern_auth::{GatewayKey, GatewayTokenVerifier, MultiAuthenticator, OidcVerifier};
use postern_core::{AllowAll, Authenticator, Policy, Store, Target};
use postern_pg::{Limits, PgEngine, PgTarget, PgUrl, Seams, Secret, UpstreamTlsMode};
use postern_policy::Analyzer;
use postern_store::SqliteStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running gateway: its bound addresses, and the handle that stops it.
pub struct Running {
    /// Where the PostgreSQL listener is bound.
    pub postgres_addr: SocketAddr,
    /// Fires to stop the listeners and end every session.
    pub shutdown: CancellationToken,
    /// Completes when every listener and session has ended.
    pub done: tokio::task::JoinHandle<()>,
}

/// Resolves `config`, binds its listeners and starts serving in the background.
pub async fn start(config: &RawConfig) -> Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let key =
        GatewayKey::load_or_create(&config.data_dir).context("loading the gateway signing key")?;
    let authenticator: Arc<dyn Authenticator> = Arc::new(authenticator(
        config,
        GatewayTokenVerifier::new(&key.verifying_key()),
    )?);
    let mut store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&config.data_dir.join("postern.db"))
            .await
            .context("opening the metadata store")?,
    );
    if let Some(path) = &config.audit.file {
        store = Arc::new(crate::audit_log::AuditLines::new(store, path)?);
    }
    let targets = config
        .targets
        .iter()
        .map(resolve_target)
        .collect::<Result<Vec<_>>>()?;
    let server_tls = tls::server_config(config.tls.as_ref(), &config.data_dir)?;
    let limits = Limits {
        max_client_frame: config.limits.max_client_message_bytes,
        handshake_timeout: config.limits.handshake_timeout,
        connect_timeout: config.limits.connect_timeout,
        max_connections: config.limits.max_connections,
        session_threads: config.session_threads(),
        ..Limits::default()
    };
    let node = config.recording.node.clone().unwrap_or_else(tls::hostname);
    let BuiltPolicy {
        policy,
        version: policy_version,
        analyzer,
    } = build_policy(config, mask_key(&key))?;
    let seams = Seams {
        authenticator: authenticator.clone(),
        policy,
        approvals: crate::approvals::build(config, store.clone())?,
        store: store.clone(),
        recorder: crate::recording::build(config, &node)?,
        node,
        policy_version,
    };
    close_interrupted_sessions(seams.store.as_ref()).await?;
    let mcp = crate::mcp::Wiring::new(config, &key, &seams, &targets)?;
    let target_list: Vec<Target> = targets.iter().map(|t| t.target.clone()).collect();
    let engine = Arc::new(PgEngine::new(
        targets,
        seams,
        Some(server_tls),
        config.listen.require_tls(),
        limits,
    ));

    let pg_listener = TcpListener::bind(config.listen.postgres)
        .await
        .with_context(|| {
            format!(
                "binding the postgres listener on {}",
                config.listen.postgres
            )
        })?;
    let postgres_addr = pg_listener.local_addr()?;
    let http_listener = match config.listen.http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the http listener on {addr}"))?,
        ),
        None => None,
    };
    let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;

    let shutdown = CancellationToken::new();
    let live = engine.live.clone();
    // The HTTP state installs the metrics recorder: before the first session, which looks up
    // its metric handles once.
    let http_app = match http_listener {
        Some(listener) => {
            let mut state = http::HttpState::new(config, store, authenticator, target_list, live)?;
            state.analyzer = analyzer;
            let app = http::app(Arc::new(state)).merge(mcp.router(postgres_addr, &shutdown)?);
            Some((listener, app))
        }
        None => None,
    };
    let pg = tokio::spawn(engine.serve(pg_listener, shutdown.clone()));
    let http =
        http_app.map(|(listener, app)| tokio::spawn(http::serve(listener, app, shutdown.clone())));
    let done = tokio::spawn(async move {
        let _ = pg.await;
        if let Some(http) = http {
            let _ = http.await;
        }
    });
    tracing::info!(postgres = %postgres_addr, http = ?http_addr, targets = config.targets.len(), "postern is serving");
    Ok(Running {
        postgres_addr,
        shutdown,
        done,
    })
}

/// What verifies tokens: gateway tokens (with `gateway`), plus the configured OIDC providers.
/// Shared by the listeners and the CLI commands that act as a token's identity.
pub fn authenticator(
    config: &RawConfig,
    gateway: GatewayTokenVerifier,
) -> Result<MultiAuthenticator> {
    let mut oidc = Vec::new();
    for provider in &config.auth.oidc {
        oidc.push(
            OidcVerifier::new(provider.clone())
                .with_context(|| format!("OIDC provider {}", provider.issuer))?,
        );
    }
    Ok(MultiAuthenticator::new(gateway, oidc)?)
}

/// Marks sessions a previous run left open (a crash, kill -9) as ended, now that their
/// recordings have been sealed as interrupted. The store is this node's own (SQLite), so no
/// open session in it can still be live.
async fn close_interrupted_sessions(store: &dyn Store) -> Result<()> {
    let open = store
        .list_sessions(&postern_core::SessionFilter {
            open_only: true,
            limit: Some(postern_store::MAX_LIMIT),
            ..Default::default()
        })
        .await
        .context("listing sessions left open")?;
    let now = postern_core::now_ms();
    for session in &open {
        store
            .session_closed(
                &session.id,
                now,
                session.bytes_in,
                session.bytes_out,
                "interrupted: the gateway stopped before the session ended",
            )
            .await
            .context("closing a session left open")?;
    }
    if !open.is_empty() {
        tracing::warn!(
            sessions = open.len(),
            "closed sessions left open by the previous run"
        );
    }
    Ok(())
}

/// The key of the `hash` mask strategy: secret (only the gateway's signing key can produce
/// it) and stable across restarts and across nodes sharing the key. Ed25519 signatures are
/// deterministic, so the signature of a fixed label serves as a derived key.
fn mask_key(key: &GatewayKey) -> [u8; 32] {
    let signature = key.sign(b"postern mask hash key v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(&signature[32..]);
    out
}

/// The decision point, the version stamped on recordings (a digest of the policy's
/// configuration) and the analysis cache whose statistics `/metrics` shows.
struct BuiltPolicy {
    policy: Arc<dyn Policy>,
    version: Option<String>,
    analyzer: Option<Arc<Analyzer>>,
}

/// Allow-all when no rules or masks are configured, else the rule engine.
fn build_policy(config: &RawConfig, mask_key: [u8; 32]) -> Result<BuiltPolicy> {
    let policy = config.policy();
    if policy.rules.is_empty() && policy.masks.is_empty() {
        return Ok(BuiltPolicy {
            policy: Arc::new(AllowAll),
            version: None,
            analyzer: None,
        });
    }
    let version = format!("{:016x}", fnv1a(format!("{policy:?}").as_bytes()));
    let rules = postern_policy::RulePolicy::new(policy)
        .context("compiling the policy")?
        .with_mask_key(mask_key);
    Ok(BuiltPolicy {
        analyzer: Some(Arc::clone(rules.analyzer())),
        policy: Arc::new(rules),
        version: Some(version),
    })
}

/// A stable 64-bit digest (FNV-1a), enough to tell policy versions apart in recordings.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs until SIGINT or SIGTERM, then stops every session.
pub async fn run(config: &RawConfig) -> Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown.cancel();
    let _ = running.done.await;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn resolve_target(raw: &RawTarget) -> Result<PgTarget> {
    let url = PgUrl::parse(&raw.url).with_context(|| format!("target \"{}\"", raw.name))?;
    let password = match (&url.password, &raw.password_env, &raw.password_file) {
        (Some(p), _, _) => Some(p.clone()),
        (_, Some(var), _) => Some(std::env::var(var).with_context(|| {
            format!(
                "target \"{}\": environment variable {var} (password_env) is not set",
                raw.name
            )
        })?),
        (_, _, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "target \"{}\": reading password_file {}",
                        raw.name,
                        path.display()
                    )
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        _ => None,
    };
    let mut params = Vec::new();
    let mut sslmode = None;
    for (k, v) in &url.query {
        match k.as_str() {
            "sslmode" => sslmode = Some(v.clone()),
            "options" | "application_name" => params.push((k.clone(), v.clone())),
            other => bail!(
                "target \"{}\": unsupported URL parameter {other:?}",
                raw.name
            ),
        }
    }
    let tls_mode: UpstreamTlsMode = raw
        .tls
        .clone()
        .or(sslmode)
        .unwrap_or_else(|| "prefer".into())
        .parse()
        .map_err(|e: String| anyhow::anyhow!("target \"{}\": {e}", raw.name))?;
    let roots = root_store(raw)?;
    let tls = postern_pg::client_tls_config(tls_mode, roots)
        .with_context(|| format!("target \"{}\": building TLS configuration", raw.name))?;
    Ok(PgTarget {
        target: Target {
            name: raw.name.clone(),
            kind: raw.kind,
            access: raw.allow.clone(),
        },
        host: url.host,
        port: url.port,
        user: url.user,
        database: url.database,
        password: password.map(Secret::new),
        tls_mode,
        tls,
        params,
    })
}

fn root_store(raw: &RawTarget) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &raw.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).with_context(|| {
                format!(
                    "target \"{}\": reading ca_file {}",
                    raw.name,
                    path.display()
                )
            })? {
                roots.add(cert?)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}
