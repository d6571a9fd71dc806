//! The engine: shared state for every PostgreSQL session, and the accept loop.

use crate::cancel::CancelRegistry;
use crate::error::Refusal;
use crate::live::LiveSessions;
use crate::session;
use crate::target::PgTarget;
use crate::workers::SessionThreads;
use bytes::BytesMut;
use postern_core::{Approvals, Authenticator, Policy, Recorder, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bounds that keep one caller from exhausting the gateway.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted from a client (bytes).
    pub max_client_frame: usize,
    /// Largest message accepted from a server (bytes); PostgreSQL's own limit is 1 GiB.
    pub max_server_frame: usize,
    /// Time allowed from TCP accept to the end of authentication.
    pub handshake_timeout: Duration,
    /// Time allowed to connect and log in to the target.
    pub connect_timeout: Duration,
    /// Concurrent client connections.
    pub max_connections: usize,
    /// Threads that run sessions, each with its own event loop (see [`crate::workers`]);
    /// 0: sessions share the runtime that accepts them. Default: one per core.
    pub session_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_frame: 64 << 20,
            max_server_frame: 1 << 30,
            handshake_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            session_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The gateway-wide parts an engine drives through the core's seams.
pub struct Seams {
    /// Verifies tokens.
    pub authenticator: Arc<dyn Authenticator>,
    /// The decision point.
    pub policy: Arc<dyn Policy>,
    /// Audit events and the sessions index.
    pub store: Arc<dyn Store>,
    /// Session recordings.
    pub recorder: Arc<dyn Recorder>,
    /// Where held statements wait for a human.
    pub approvals: Arc<dyn Approvals>,
    /// This node's name.
    pub node: String,
    /// The policy's version.
    pub policy_version: Option<String>,
}

/// Everything the PostgreSQL sessions share. Read-only after construction, except the cancel
/// registry, which has its own lock.
pub struct PgEngine {
    /// Targets by name.
    pub targets: HashMap<String, Arc<PgTarget>>,
    /// Verifies tokens.
    pub authenticator: Arc<dyn Authenticator>,
    /// The decision point.
    pub policy: Arc<dyn Policy>,
    /// Where audit events and the sessions index go.
    pub store: Arc<dyn Store>,
    /// Where sessions are recorded.
    pub recorder: Arc<dyn Recorder>,
    /// Where held statements wait for a human.
    pub approvals: Arc<dyn Approvals>,
    /// This gateway node's name, stamped on recordings.
    pub node: String,
    /// The policy's version (e.g. a hash of its rules), stamped on recordings.
    pub policy_version: Option<String>,
    /// The listener's TLS configuration (`None`: TLS is declined).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse clients that did not negotiate TLS.
    pub require_tls: bool,
    /// Resource bounds.
    pub limits: Limits,
    /// The sessions live on this node (listed and terminated through the HTTP API).
    pub live: Arc<LiveSessions>,
    pub(crate) cancels: CancelRegistry,
}

impl PgEngine {
    /// Builds an engine; `targets` must contain only PostgreSQL targets.
    pub fn new(
        targets: impl IntoIterator<Item = PgTarget>,
        seams: Seams,
        tls: Option<Arc<rustls::ServerConfig>>,
        require_tls: bool,
        limits: Limits,
    ) -> Self {
        PgEngine {
            targets: targets
                .into_iter()
                .map(|t| (t.target.name.clone(), Arc::new(t)))
                .collect(),
            authenticator: seams.authenticator,
            policy: seams.policy,
            store: seams.store,
            recorder: seams.recorder,
            approvals: seams.approvals,
            node: seams.node,
            policy_version: seams.policy_version,
            tls,
            require_tls,
            limits,
            live: Arc::default(),
            cancels: CancelRegistry::default(),
        }
    }

    /// Accepts connections until `shutdown` fires, then waits for every session to end.
    ///
    /// One client can never stop the loop: per-connection failures stay in their task, accept
    /// errors back off briefly, and connections over the limit get a clear error.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let tasks = TaskTracker::new();
        let threads = match self.limits.session_threads {
            0 => None,
            n => match SessionThreads::start(n) {
                Ok(threads) => Some(threads),
                Err(e) => {
                    tracing::warn!(error = %e, "session threads could not be started; sessions run on the main runtime");
                    None
                }
            },
        };
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tasks.spawn(refuse(tcp, Refusal::TooManyConnections));
                continue;
            };
            let engine = self.clone();
            let shutdown = shutdown.clone();
            let Some(threads) = &threads else {
                tasks.spawn(async move {
                    session::serve_connection(engine, tcp, peer, shutdown).await;
                    drop(permit);
                });
                continue;
            };
            // The socket moves to the chosen thread's event loop: deregistered here,
            // registered there.
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "accepted connection could not be handed over");
                    continue;
                }
            };
            let (thread, placement) = threads.place();
            tasks.spawn_on(
                async move {
                    match tokio::net::TcpStream::from_std(tcp) {
                        Ok(tcp) => session::serve_connection(engine, tcp, peer, shutdown).await,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "accepted connection could not be registered")
                        }
                    }
                    drop(placement);
                    drop(permit);
                },
                thread,
            );
        }
        tasks.close();
        tasks.wait().await;
        // Every session has ended: the threads can stop.
        drop(threads);
    }
}

async fn refuse(mut tcp: tokio::net::TcpStream, refusal: Refusal) {
    let mut out = BytesMut::new();
    refusal.encode(&mut out);
    let _ = tcp.write_all(&out).await;
}
