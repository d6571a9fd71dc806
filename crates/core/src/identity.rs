//! Verified identities: the answer to "who is on the other end of this connection".

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What sort of caller an identity is. Policy treats agents more strictly by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// A person at a keyboard.
    Human,
    /// An AI agent acting on someone's behalf.
    Agent,
    /// A non-interactive service account.
    Service,
}

impl IdentityKind {
    /// The lowercase name used in config, tokens and recordings.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Human => "human",
            IdentityKind::Agent => "agent",
            IdentityKind::Service => "service",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdentityKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(IdentityKind::Human),
            "agent" => Ok(IdentityKind::Agent),
            "service" => Ok(IdentityKind::Service),
            other => Err(format!(
                "unknown identity kind {other:?} (expected human, agent or service)"
            )),
        }
    }
}

/// A caller whose credential the gateway has verified.
///
/// Built only by an [`crate::Authenticator`]; engines carry it through the session so every
/// command, decision and audit event names the same subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The stable name of the caller (`sub` claim).
    pub subject: String,
    /// Groups the caller belongs to, used by target access rules and policy.
    pub groups: Vec<String>,
    /// Human, agent or service.
    pub kind: IdentityKind,
    /// Who vouched for the identity: `postern` for gateway tokens, the issuer URL for OIDC.
    pub issuer: String,
    /// Unix seconds after which the credential is no longer valid.
    pub expires_at: i64,
}

impl Identity {
    /// True when the identity belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// A new, time-ordered session id (UUIDv7), so ids sort by start time in listings and file names.
pub fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
