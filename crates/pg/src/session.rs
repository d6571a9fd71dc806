//! One caller's session: startup, authentication, target selection, the upstream connection,
//! the relay, and the audit trail around them.

use crate::catalog;
use crate::engine::PgEngine;
use crate::error::Refusal;
use crate::frame;
use crate::live::LiveSession;
use crate::mask::ResultMasking;
use crate::metrics as m;
use crate::relay::{self, RelayContext, RelayEnd, Traffic};
use crate::startup::{self, ClientStartup, Opening};
use crate::stream::MaybeTls;
use crate::target::PgTarget;
use crate::upstream::{self, Upstream};
use bytes::BytesMut;
use postern_core::event::{SessionEnd, SessionStart};
use postern_core::{
    AuditEvent, AuditKind, AuthError, Identity, RecordingError, SessionRecording, SessionRow,
    new_session_id, now_ms,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Startup parameters that describe the gateway's own login and are never passed upstream.
const GATEWAY_PARAMS: &[&str] = &["user", "database", "replication"];

/// Serves one accepted connection to completion. Never panics on client input.
pub async fn serve_connection(
    engine: Arc<PgEngine>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let limits = &engine.limits;
    let opening = tokio::time::timeout(
        limits.handshake_timeout,
        startup::negotiate(tcp, engine.tls.clone()),
    )
    .await;
    match opening {
        Err(_) => tracing::debug!(%peer, "startup timed out"),
        Ok(Err((stream, refusal))) => {
            tracing::info!(%peer, error = %refusal, "connection refused during startup");
            if let Some(mut stream) = stream {
                send_refusal(&mut stream, &refusal).await;
            }
        }
        Ok(Ok(Opening::Cancel { pid, secret })) => forward_cancel(&engine, pid, secret).await,
        Ok(Ok(Opening::Session(startup))) => {
            Session {
                engine: &engine,
                peer,
                id: new_session_id(),
            }
            .run(startup, shutdown)
            .await
        }
    }
}

async fn send_refusal(stream: &mut MaybeTls, refusal: &Refusal) {
    let mut out = BytesMut::new();
    refusal.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

async fn forward_cancel(engine: &PgEngine, pid: i32, secret: i32) {
    match engine.cancels.resolve(pid, secret) {
        Some((target, key)) => {
            tracing::info!(target = %target.target.name, "forwarding cancel request");
            if let Err(e) = upstream::cancel(&target, key).await {
                tracing::warn!(target = %target.target.name, error = %e, "cancel request failed");
            }
        }
        None => tracing::info!("cancel request with an unknown key ignored"),
    }
}

struct Session<'a> {
    engine: &'a PgEngine,
    peer: SocketAddr,
    id: String,
}

/// A session that passed authentication and reached its target.
struct Opened {
    identity: Identity,
    target: Arc<PgTarget>,
    upstream: Upstream,
}

impl Session<'_> {
    async fn run(self, mut startup: ClientStartup, shutdown: CancellationToken) {
        let timeout = self.engine.limits.handshake_timeout;
        let opened = match tokio::time::timeout(timeout, self.open(&mut startup)).await {
            Err(_) => {
                tracing::info!(peer = %self.peer, "authentication timed out");
                return;
            }
            Ok(Ok(Some(opened))) => opened,
            Ok(Ok(None)) => return,
            Ok(Err(refusal)) => {
                send_refusal(&mut startup.stream, &refusal).await;
                return;
            }
        };
        self.relay(startup, opened, shutdown).await;
    }

    /// Authenticates the caller and connects to the target. `Ok(None)`: the client left.
    async fn open(&self, startup: &mut ClientStartup) -> Result<Option<Opened>, Refusal> {
        let engine = self.engine;
        if engine.require_tls && !startup.stream.is_tls() {
            return Err(Refusal::TlsRequired);
        }
        if startup
            .param("replication")
            .is_some_and(|v| !matches!(v, "false" | "off" | "0" | "no"))
        {
            return Err(Refusal::Unsupported(
                "replication connections are not supported by the gateway".into(),
            ));
        }
        let mut prelude = BytesMut::new();
        startup::negotiation_reply(startup, &mut prelude);
        if !prelude.is_empty() {
            startup.write(&prelude).await?;
        }
        let user = startup.param("user").unwrap_or_default().to_owned();
        let target_name = startup.param("database").unwrap_or(&user).to_owned();
        let Some(token) = startup.read_password().await? else {
            return Ok(None);
        };
        let identity = match self.authenticate(&token, &user).await {
            Ok(identity) => identity,
            Err(refusal) => {
                let mut event = self.event(AuditKind::AuthFailed);
                event.subject = Some(user);
                event.target = Some(target_name);
                event.detail = Some(refusal.to_string());
                self.audit(event).await;
                return Err(refusal);
            }
        };
        let target = match self.authorize(&identity, &target_name) {
            Ok(target) => target,
            Err(refusal) => {
                let mut event =
                    self.identity_event(AuditKind::AccessDenied, &identity, &target_name);
                event.detail = Some(refusal.to_string());
                self.audit(event).await;
                return Err(refusal);
            }
        };
        let params: Vec<(&str, &str)> = startup
            .params
            .iter()
            .filter(|(k, _)| !GATEWAY_PARAMS.contains(&k.as_str()) && !k.starts_with("_pq_."))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let connecting = Instant::now();
        let connected = tokio::time::timeout(
            engine.limits.connect_timeout,
            upstream::connect(&target, &params),
        )
        .await;
        metrics::histogram!(m::UPSTREAM_CONNECT_SECONDS, "target" => target.target.name.clone())
            .record(connecting.elapsed().as_secs_f64());
        let upstream = match connected {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                return Err(self
                    .upstream_failed(&identity, &target, e.to_string())
                    .await);
            }
            Err(_) => {
                return Err(self
                    .upstream_failed(&identity, &target, "connection timed out".into())
                    .await);
            }
        };
        Ok(Some(Opened {
            identity,
            target,
            upstream,
        }))
    }

    async fn authenticate(&self, token: &str, user: &str) -> Result<Identity, Refusal> {
        if token.is_empty() {
            return Err(AuthError::Missing.into());
        }
        let identity = self.engine.authenticator.authenticate(token).await?;
        if identity.subject != user {
            return Err(Refusal::SubjectMismatch {
                user: user.to_owned(),
                subject: identity.subject,
            });
        }
        Ok(identity)
    }

    fn authorize(&self, identity: &Identity, target_name: &str) -> Result<Arc<PgTarget>, Refusal> {
        let target = self
            .engine
            .targets
            .get(target_name)
            .ok_or_else(|| Refusal::UnknownTarget(target_name.to_owned()))?;
        if !target.target.access.admits(identity) {
            return Err(Refusal::AccessDenied {
                subject: identity.subject.clone(),
                target: target_name.to_owned(),
            });
        }
        Ok(target.clone())
    }

    async fn upstream_failed(
        &self,
        identity: &Identity,
        target: &PgTarget,
        reason: String,
    ) -> Refusal {
        tracing::warn!(session = %self.id, target = %target.target.name, error = %reason, "upstream connection failed");
        metrics::counter!(m::UPSTREAM_ERRORS, "target" => target.target.name.clone()).increment(1);
        let mut event =
            self.identity_event(AuditKind::UpstreamFailed, identity, &target.target.name);
        event.detail = Some(reason.clone());
        self.audit(event).await;
        Refusal::Upstream {
            target: target.target.name.clone(),
            reason,
        }
    }

    /// Completes the client's startup with the server's parameters and the gateway's own cancel
    /// key, then relays until either side leaves. The session is indexed and its recording
    /// started before the client sees ReadyForQuery; if either fails the session is refused.
    async fn relay(self, startup: ClientStartup, opened: Opened, shutdown: CancellationToken) {
        let Opened {
            identity,
            target,
            upstream,
        } = opened;
        let engine = self.engine;
        let started = Instant::now();
        let started_at_ms = now_ms();
        let mut client = startup.stream;
        let name = target.target.name.clone();

        let recording = match self
            .begin(&identity, &target, client.is_tls(), started_at_ms)
            .await
        {
            Ok(recording) => recording,
            Err(refusal) => {
                send_refusal(&mut client, &refusal).await;
                return;
            }
        };
        let mut policy = engine.policy.open_session(&identity, &target.target);
        let mut upstream = upstream;
        let masking = match policy.masking() {
            None => None,
            Some(masking) => match catalog::resolve(
                &mut upstream.stream,
                &mut upstream.leftover,
                &masking.columns,
                engine.limits.max_server_frame,
            )
            .await
            {
                Ok(resolved) => {
                    let resolved = Arc::new(resolved);
                    policy.set_mask_catalog(Arc::clone(&resolved));
                    Some(ResultMasking::new(masking.masker, resolved))
                }
                Err(e) => {
                    tracing::error!(session = %self.id, error = %e, "masking could not be set up");
                    send_refusal(&mut client, &Refusal::Masking(e.to_string())).await;
                    let reason = format!("refused: masking could not be set up: {e}");
                    if let Some(recording) = recording {
                        let _ = recording.seal(SessionEnd::new(reason.clone()));
                    }
                    let _ = engine
                        .store
                        .session_closed(&self.id, now_ms(), 0, 0, &reason)
                        .await;
                    return;
                }
            },
        };
        let cancel_key = engine
            .cancels
            .register(target.clone(), upstream.backend_key);
        metrics::counter!(m::SESSIONS, "target" => name.clone()).increment(1);
        let active = metrics::gauge!(m::SESSIONS_ACTIVE, "target" => name.clone());
        active.increment(1.0);
        let live = engine.live.register(LiveSession {
            id: self.id.clone(),
            subject: identity.subject.clone(),
            target: name.clone(),
            started_at_ms,
        });
        let mut hello = BytesMut::with_capacity(512);
        frame::auth_request(&mut hello, 0);
        for parameter in &upstream.parameter_frames {
            hello.extend_from_slice(parameter);
        }
        frame::backend_key_data(&mut hello, cancel_key.pid, cancel_key.secret);
        hello.extend_from_slice(&upstream.ready);
        let mut traffic = Traffic {
            from_client: 0,
            to_client: hello.len() as u64,
        };
        let ctx = RelayContext::new(
            &identity,
            &target.target,
            &self.id,
            engine.approvals.as_ref(),
            engine.limits.max_client_frame,
            engine.limits.max_server_frame,
            recording,
        )
        .with_masking(masking);
        let end = if let Err(e) = client.write_all(&hello).await.and(client.flush().await) {
            RelayEnd::Io("client write", e)
        } else {
            let (mut client_rx, mut client_tx) = tokio::io::split(&mut client);
            let (mut server_rx, mut server_tx) = tokio::io::split(upstream.stream);
            let end = tokio::select! {
                end = relay::client_to_server(&ctx, policy.as_mut(), &mut client_rx, &mut server_tx, startup.buf, &mut traffic.from_client) => end,
                end = relay::server_to_client(&ctx, &mut server_rx, &mut client_tx, upstream.leftover, &mut traffic.to_client) => end,
                _ = shutdown.cancelled() => RelayEnd::Shutdown,
                by = live.terminated() => RelayEnd::Terminated(by),
            };
            let farewell = match &end {
                RelayEnd::ClientProtocol(e) => Some(Refusal::from(e.clone())),
                RelayEnd::Shutdown => Some(Refusal::Shutdown),
                RelayEnd::Terminated(by) => Some(Refusal::Terminated(by.clone())),
                RelayEnd::Recording(e) => Some(Refusal::Recording(e.to_string())),
                _ => None,
            };
            if let Some(refusal) = farewell {
                let mut out = BytesMut::new();
                refusal.encode(&mut out);
                let _ = client_tx.write_all(&out).await;
                let _ = client_tx.flush().await;
            }
            let _ = client_tx.shutdown().await;
            end
        };
        drop(cancel_key);
        drop(live);
        active.decrement(1.0);
        metrics::histogram!(m::SESSION_SECONDS).record(started.elapsed().as_secs_f64());
        if matches!(
            end,
            RelayEnd::ServerProtocol(_) | RelayEnd::Io("server read" | "server write", _)
        ) {
            metrics::counter!(m::UPSTREAM_ERRORS, "target" => name.clone()).increment(1);
        }

        let reason = describe(&end);
        tracing::info!(session = %self.id, subject = %identity.subject, target = %name, reason, "session closed");
        if let Some(recording) = ctx.into_recording() {
            let end = SessionEnd {
                bytes_from_client: Some(traffic.from_client),
                bytes_to_client: Some(traffic.to_client),
                ..SessionEnd::new(reason.clone())
            };
            // Sealing waits for the disk (fsync) or the object store: off the session's
            // thread, which other sessions share.
            let sealed = tokio::task::spawn_blocking(move || recording.seal(end))
                .await
                .unwrap_or_else(|e| Err(RecordingError(format!("sealing panicked: {e}"))));
            if let Err(e) = sealed {
                tracing::error!(session = %self.id, error = %e, "the recording could not be sealed");
            }
        }
        if let Err(e) = engine
            .store
            .session_closed(
                &self.id,
                now_ms(),
                traffic.from_client,
                traffic.to_client,
                &reason,
            )
            .await
        {
            tracing::error!(session = %self.id, error = %e, "the sessions index could not be updated");
        }
        let mut closed = self.identity_event(AuditKind::SessionClosed, &identity, &name);
        closed.bytes_in = Some(traffic.from_client);
        closed.bytes_out = Some(traffic.to_client);
        closed.duration_ms = Some(started.elapsed().as_millis() as u64);
        closed.detail = Some(reason);
        self.audit(closed).await;
    }

    /// Audits, indexes and starts recording a session that is about to open.
    async fn begin(
        &self,
        identity: &Identity,
        target: &PgTarget,
        tls: bool,
        started_at_ms: i64,
    ) -> Result<Option<Box<dyn SessionRecording>>, Refusal> {
        let engine = self.engine;
        let name = &target.target.name;
        let unavailable = |what: &str, e: String| Refusal::Upstream {
            target: name.clone(),
            reason: format!("the gateway cannot {what}: {e}"),
        };
        let mut opened = self.identity_event(AuditKind::SessionOpened, identity, name);
        opened.detail = tls.then(|| "tls".to_owned());
        self.audit_required(opened)
            .await
            .map_err(|e| unavailable("store audit events", e))?;
        let row = SessionRow {
            id: self.id.clone(),
            subject: identity.subject.clone(),
            identity_kind: identity.kind.as_str().to_owned(),
            groups: identity.groups.clone(),
            target: name.clone(),
            client_addr: Some(self.peer.to_string()),
            started_at_ms,
            ended_at_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            close_reason: None,
        };
        engine
            .store
            .session_opened(&row)
            .await
            .map_err(|e| unavailable("index the session", e.to_string()))?;
        let mut start = SessionStart::new(&self.id, identity, &target.target, engine.node.clone());
        start.started_at_unix_us = started_at_ms * 1000;
        start.client_addr = Some(self.peer.to_string());
        start.policy_version = engine.policy_version.clone();
        if tls {
            start.attributes.insert("client_tls".into(), "true".into());
        }
        match engine.recorder.start(start) {
            Ok(recording) => Ok(recording),
            Err(e) => {
                // The session was indexed and audited as opened: close it again, or it would
                // stay "open" in the index and the audit trail forever.
                let refusal = Refusal::Recording(e.to_string());
                let reason = format!("refused: {refusal}");
                if let Err(e) = engine
                    .store
                    .session_closed(&self.id, now_ms(), 0, 0, &reason)
                    .await
                {
                    tracing::error!(session = %self.id, error = %e, "the sessions index could not be updated");
                }
                let mut closed = self.identity_event(AuditKind::SessionClosed, identity, name);
                closed.bytes_in = Some(0);
                closed.bytes_out = Some(0);
                closed.detail = Some(reason);
                self.audit(closed).await;
                Err(refusal)
            }
        }
    }

    fn event(&self, kind: AuditKind) -> AuditEvent {
        let mut event = AuditEvent::now(kind);
        event.session_id = Some(self.id.clone());
        event.client_addr = Some(self.peer.to_string());
        event
    }

    fn identity_event(&self, kind: AuditKind, identity: &Identity, target: &str) -> AuditEvent {
        let mut event = self.event(kind);
        event.subject = Some(identity.subject.clone());
        event.identity_kind = Some(identity.kind.as_str().to_owned());
        event.groups = identity.groups.clone();
        event.target = Some(target.to_owned());
        event
    }

    /// Records an audit event; a store failure is logged loudly but does not end the session.
    async fn audit(&self, event: AuditEvent) {
        if let Err(e) = self.audit_required(event).await {
            tracing::error!(session = %self.id, error = %e, "audit event could not be stored");
        }
    }

    /// Records an audit event, returning the store's failure to the caller.
    async fn audit_required(&self, event: AuditEvent) -> Result<(), String> {
        tracing::info!(
            target: "postern::audit",
            kind = event.kind.as_str(),
            session = event.session_id.as_deref(),
            subject = event.subject.as_deref(),
            identity_kind = event.identity_kind.as_deref(),
            groups = ?event.groups,
            db_target = event.target.as_deref(),
            client_addr = event.client_addr.as_deref(),
            bytes_in = event.bytes_in,
            bytes_out = event.bytes_out,
            duration_ms = event.duration_ms,
            detail = event.detail.as_deref(),
            "audit"
        );
        self.engine
            .store
            .append_audit(&event)
            .await
            .map_err(|e| e.to_string())
    }
}

fn describe(end: &RelayEnd) -> String {
    match end {
        RelayEnd::ClientTerminated => "client terminated".into(),
        RelayEnd::ClientClosed => "client closed the connection".into(),
        RelayEnd::ServerClosed => "server closed the connection".into(),
        RelayEnd::Shutdown => "gateway shutting down".into(),
        RelayEnd::Terminated(by) => by.to_string(),
        RelayEnd::Recording(e) => format!("recording failed: {e}"),
        RelayEnd::ClientProtocol(e) => format!("client protocol violation: {e}"),
        RelayEnd::ServerProtocol(e) => format!("server protocol violation: {e}"),
        RelayEnd::Io(side, e) => format!("{side} failed: {e}"),
    }
}
