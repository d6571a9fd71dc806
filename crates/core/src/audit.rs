//! Audit events: the durable trail of who connected where, and what was refused.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A caller authenticated and was connected to a target.
    SessionOpened,
    /// A session ended (cleanly or not).
    SessionClosed,
    /// A credential was missing, malformed, expired or forged.
    AuthFailed,
    /// A verified identity asked for a target it may not open, or one that does not exist.
    AccessDenied,
    /// The target could not be reached or refused the gateway's credentials.
    UpstreamFailed,
    /// A statement was held for a human's approval (`detail` names the approval and the rule).
    ApprovalRequested,
    /// A held statement was approved, denied or expired (`subject` is the decider, if any).
    ApprovalDecided,
}

impl AuditKind {
    /// The snake_case name stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::SessionOpened => "session_opened",
            AuditKind::SessionClosed => "session_closed",
            AuditKind::AuthFailed => "auth_failed",
            AuditKind::AccessDenied => "access_denied",
            AuditKind::UpstreamFailed => "upstream_failed",
            AuditKind::ApprovalRequested => "approval_requested",
            AuditKind::ApprovalDecided => "approval_decided",
        }
    }
}

/// One audit event. Fields that do not apply are `None`; `detail` never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub kind: AuditKind,
    /// The session the event belongs to, when one was created.
    pub session_id: Option<String>,
    /// The verified subject, or the claimed user name for auth failures.
    pub subject: Option<String>,
    /// The identity kind, when verified.
    pub identity_kind: Option<String>,
    /// Groups of the verified identity.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The target asked for.
    pub target: Option<String>,
    /// The caller's address.
    pub client_addr: Option<String>,
    /// Bytes from the caller (closed sessions).
    pub bytes_in: Option<u64>,
    /// Bytes to the caller (closed sessions).
    pub bytes_out: Option<u64>,
    /// Session length in milliseconds (closed sessions).
    pub duration_ms: Option<u64>,
    /// Human-readable detail: the reason for a failure, the close cause.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// A blank event of `kind` stamped now.
    pub fn now(kind: AuditKind) -> Self {
        AuditEvent {
            at_ms: crate::now_ms(),
            kind,
            session_id: None,
            subject: None,
            identity_kind: None,
            groups: Vec::new(),
            target: None,
            client_addr: None,
            bytes_in: None,
            bytes_out: None,
            duration_ms: None,
            detail: None,
        }
    }
}
