//! The traits through which protocol engines reach the rest of the gateway.
//!
//! Engines depend on these traits only; `auth`, `store` and (later) the policy and recorder
//! crates implement them, and the binary wires concrete types together.

use crate::approval::{ApprovalFilter, ApprovalRow, ApprovalState};
use crate::audit::AuditEvent;
use crate::command::Command;
use crate::decision::Decision;
use crate::event::{EventBody, SessionEnd, SessionStart};
use crate::identity::Identity;
use crate::mask::{MaskCatalog, ResultPlan, SessionMasking};
use crate::session::{SessionFilter, SessionRow};
use crate::target::Target;
use std::sync::Arc;

/// Why a credential was refused. The messages are shown to the caller, so they say *which*
/// check failed without echoing the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no token was presented (send the token as the password)")]
    Missing,
    /// The credential is not a well-formed token.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// The signature does not verify against any trusted key.
    #[error("the token's signature is invalid (forged or signed by an untrusted key)")]
    BadSignature,
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// The token's `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token is for another audience or issuer, or uses a refused algorithm.
    #[error("the token was rejected: {0}")]
    Rejected(String),
    /// The verifier could not check the token (e.g. the JWKS could not be fetched).
    #[error("the token could not be verified right now: {0}")]
    Unavailable(String),
}

/// Turns a presented credential into a verified [`Identity`].
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    /// Verify `token` and return the identity it proves.
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// The decision point, shared by every session. It hands each session its own
/// [`SessionPolicy`], which may keep per-session state (prepared statements, approval windows).
pub trait Policy: Send + Sync {
    /// Starts deciding for a session of `identity` on `target`.
    fn open_session(&self, identity: &Identity, target: &Target) -> Box<dyn SessionPolicy>;
}

/// One session's decision point: one call per command, on the hot path, so it must not block.
pub trait SessionPolicy: Send {
    /// Decide what to do with `command`.
    fn decide(&mut self, command: &Command<'_>) -> Decision;

    /// The session's masking, when masks apply to it: the engine resolves the columns in the
    /// target's catalog (then calls [`SessionPolicy::set_mask_catalog`]) and masks results
    /// with the masker. `None` (the default): results pass untouched.
    fn masking(&self) -> Option<SessionMasking> {
        None
    }

    /// The target's catalog, resolved for the columns [`SessionPolicy::masking`] named.
    fn set_mask_catalog(&mut self, _catalog: Arc<MaskCatalog>) {}

    /// How to mask the results of `command`, which [`SessionPolicy::decide`] has just allowed.
    /// `None`: nothing in them derives from a masked column.
    fn result_plan(&mut self, _command: &Command<'_>) -> Option<Arc<ResultPlan>> {
        None
    }

    /// [`SessionPolicy::decide`], then (when `plan` is set and the command is not blocked)
    /// [`SessionPolicy::result_plan`], in one call: an implementation can read the text once
    /// for both.
    fn decide_and_plan(
        &mut self,
        command: &Command<'_>,
        plan: bool,
    ) -> (Decision, Option<Arc<ResultPlan>>) {
        let decision = self.decide(command);
        let plan = match decision {
            Decision::Block { .. } => None,
            _ if plan => self.result_plan(command),
            _ => None,
        };
        (decision, plan)
    }
}

/// The policy used until rules are configured: every command is allowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn open_session(&self, _: &Identity, _: &Target) -> Box<dyn SessionPolicy> {
        Box::new(AllowAll)
    }
}

impl SessionPolicy for AllowAll {
    fn decide(&mut self, _: &Command<'_>) -> Decision {
        Decision::Allow
    }
}

/// A failure of the metadata store.
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(pub String);

/// Filters for listing audit events; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events of this subject.
    pub subject: Option<String>,
    /// Only events for this target.
    pub target: Option<String>,
    /// Only events at or after this Unix time in milliseconds.
    pub since_ms: Option<i64>,
    /// At most this many events, newest first (default 100).
    pub limit: Option<u32>,
}

/// The metadata store: audit events, the sessions index and approval requests.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Persist one audit event.
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// List audit events matching `query`, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Index a session that has just opened.
    async fn session_opened(&self, row: &SessionRow) -> Result<(), StoreError>;
    /// Mark a session closed with its final byte counts.
    async fn session_closed(
        &self,
        id: &str,
        ended_at_ms: i64,
        bytes_in: u64,
        bytes_out: u64,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// List sessions matching `filter`, newest first.
    async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRow>, StoreError>;
    /// The session `id`, if it is indexed.
    async fn get_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError>;

    /// Store a new approval request (normally `pending`). Fails if the id is taken.
    async fn create_approval(&self, row: &ApprovalRow) -> Result<(), StoreError>;
    /// The approval `id`, with a pending row past its expiry reported as expired.
    async fn get_approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError>;
    /// List approvals matching `filter`, newest first.
    async fn list_approvals(&self, filter: &ApprovalFilter)
    -> Result<Vec<ApprovalRow>, StoreError>;
    /// Atomically decide approval `id`: `state` is `Approved` or `Denied`, `by` is the decider's
    /// subject. Only a pending, unexpired approval can be decided, and never by its requester;
    /// otherwise the error says why (unknown id, already decided, expired, self-approval).
    /// `window_until_ms` opens a JIT window (approvals only). Returns the decided row.
    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        reason: Option<&str>,
        window_until_ms: Option<i64>,
    ) -> Result<ApprovalRow, StoreError>;
    /// Mark approval `id` expired with `reason` if it is still pending, and return the row as it
    /// now stands: a decision that won the race is returned unchanged, so the caller can honour
    /// it. Fails only for an unknown id or a store failure.
    async fn expire_approval(&self, id: &str, reason: &str) -> Result<ApprovalRow, StoreError>;
    /// Atomically use approval `id` for one run of its statement: it must be approved, not used
    /// yet, and requested by `subject` on `target` under `rule` for exactly `statement`. Stamps
    /// `used_at_ms` and returns the row; otherwise the error says why (unknown id, not approved,
    /// already used, another subject, target, rule or statement), and nothing changes.
    async fn use_approval(
        &self,
        id: &str,
        subject: &str,
        target: &str,
        rule: &str,
        statement: &str,
    ) -> Result<ApprovalRow, StoreError>;
    /// The approved approval of `subject` on `target` under `rule` whose JIT window is still
    /// open at `now_ms` (`window_until_ms > now_ms`), the longest-lasting first.
    async fn active_window(
        &self,
        subject: &str,
        target: &str,
        rule: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRow>, StoreError>;
}

/// A recording that could not be written; the engine stops forwarding (fail closed) and shows
/// the caller this message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RecordingError(pub String);

/// Where sessions are recorded. The implementation decides, per identity and target, whether a
/// session is recorded in full, commands only, or not at all.
pub trait Recorder: Send + Sync {
    /// Starts recording a session; `Ok(None)` when recording is off for it.
    fn start(
        &self,
        start: SessionStart,
    ) -> Result<Option<Box<dyn SessionRecording>>, RecordingError>;
}

/// One session's recording. Calls are synchronous and cheap except [`SessionRecording::commit`],
/// which makes everything appended so far durable: engines call it before forwarding a command.
pub trait SessionRecording: Send {
    /// Buffers an event.
    fn append(&mut self, event: EventBody) -> Result<(), RecordingError>;
    /// Makes every buffered event durable (write-ahead point).
    fn commit(&mut self) -> Result<(), RecordingError>;
    /// Whether results (rows, COPY data) are wanted, so an engine can skip decoding them.
    fn wants_results(&self) -> bool;
    /// Ends the recording with its final event and seal.
    fn seal(self: Box<Self>, end: SessionEnd) -> Result<(), RecordingError>;
}

/// The recorder used when recording is switched off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecording;

impl Recorder for NoRecording {
    fn start(&self, _: SessionStart) -> Result<Option<Box<dyn SessionRecording>>, RecordingError> {
        Ok(None)
    }
}

/// A statement held until a human decides, as the engine asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The session that holds the statement.
    pub session_id: String,
    /// Who asked (never allowed to decide).
    pub requester: Identity,
    /// The target the statement is for.
    pub target: String,
    /// The `approve` rule that matched.
    pub rule: String,
    /// The statement text.
    pub statement: String,
    /// Wait for the decision (a wire client simply waits). `false`: store the request and
    /// answer [`ApprovalOutcome::Pending`] at once, for callers such as MCP tools that come
    /// back later.
    pub wait: bool,
    /// The caller re-submits the statement under this approval: if it is approved for the
    /// same identity, target, rule and statement and not used yet, it is used now (once).
    pub resubmission: Option<String>,
}

/// How a held statement was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Run it. `window` is true when an earlier JIT approval covered it (no new request).
    Approved {
        /// The approval's id.
        id: String,
        /// Who approved.
        by: String,
        /// Covered by an approval window rather than a request of its own.
        window: bool,
    },
    /// Refuse it.
    Denied {
        /// The approval's id.
        id: String,
        /// Who denied.
        by: String,
        /// Why, in the approver's words.
        reason: String,
    },
    /// Stored and not decided yet (only when the request did not wait): the caller re-submits
    /// the statement with this id once it is approved.
    Pending {
        /// The approval's id.
        id: String,
    },
    /// Nobody decided in time.
    Expired {
        /// The approval's id.
        id: String,
    },
    /// The request could not be made (store down): the statement is refused.
    Unavailable(String),
}

/// Where held statements wait for a human: the implementation stores the request, announces it
/// (console, CLI, webhook) and resolves when it is decided or times out.
#[async_trait::async_trait]
pub trait Approvals: Send + Sync {
    /// Holds `request` until it is decided; resolves at once when a JIT window covers it.
    async fn request(&self, request: ApprovalRequest) -> ApprovalOutcome;
}

/// Used when no approval rules exist: every request is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoApprovals;

#[async_trait::async_trait]
impl Approvals for NoApprovals {
    async fn request(&self, _: ApprovalRequest) -> ApprovalOutcome {
        ApprovalOutcome::Unavailable("approvals are not configured on this gateway".into())
    }
}
