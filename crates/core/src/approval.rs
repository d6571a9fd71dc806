//! Approval requests as the metadata store keeps them: one row per statement held for a human,
//! from the moment it is held until it is approved, denied or expires.
//!
//! Any gateway node (or the CLI, or the REST API) can decide a request, because the row lives in
//! the shared store; the node holding the statement polls it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an approval request is in its life. Only `Pending` moves, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    /// Waiting for a decision.
    Pending,
    /// An approver let it run (and maybe opened a JIT window).
    Approved,
    /// An approver refused it.
    Denied,
    /// Nobody decided in time, or the session holding it ended first.
    Expired,
}

impl ApprovalState {
    /// Every state, in life order.
    pub const ALL: [ApprovalState; 4] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Denied,
        ApprovalState::Expired,
    ];

    /// The lowercase name stored, printed and accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
        }
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApprovalState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown approval state {s:?} (expected pending, approved, denied or expired)"
                )
            })
    }
}

/// One approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRow {
    /// `APR-` and a short random suffix (see [`new_approval_id`]).
    pub id: String,
    /// Where it is in its life. A pending row past `expires_at_ms` is reported as expired by the
    /// store even before the holder marks it so.
    pub state: ApprovalState,
    /// The session holding the statement.
    pub session_id: String,
    /// The requester's subject (never allowed to decide).
    pub subject: String,
    /// The requester's identity kind (`human`, `agent`, `service`).
    pub identity_kind: String,
    /// The requester's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The target the statement is for.
    pub target: String,
    /// The `approve` rule that matched.
    pub rule: String,
    /// The statement text.
    pub statement: String,
    /// Groups whose members may decide (the rule's `approvers` when it was held).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Unix time in milliseconds when the statement was held.
    pub requested_at_ms: i64,
    /// Unix time in milliseconds after which it can no longer be decided.
    pub expires_at_ms: i64,
    /// Who approved or denied it.
    pub decided_by: Option<String>,
    /// Unix time in milliseconds of the decision (or of the expiry).
    pub decided_at_ms: Option<i64>,
    /// The approver's reason for a denial, or why it expired.
    pub reason: Option<String>,
    /// For a JIT approval: until when (Unix ms) later statements of the same subject, target and
    /// rule pass without a new request.
    pub window_until_ms: Option<i64>,
    /// For an approval granted to a statement that was not held (the requester re-submits it
    /// under the approval's id): Unix ms when the re-submission ran. It runs once.
    #[serde(default)]
    pub used_at_ms: Option<i64>,
}

impl ApprovalRow {
    /// The state as of `now_ms`: a pending request past its expiry is expired.
    pub fn effective_state(&self, now_ms: i64) -> ApprovalState {
        match self.state {
            ApprovalState::Pending if self.expires_at_ms <= now_ms => ApprovalState::Expired,
            state => state,
        }
    }
}

/// Filters for listing approvals; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    /// Only approvals in this state (as of now: a pending row past its expiry counts as
    /// expired).
    pub state: Option<ApprovalState>,
    /// Only approvals requested by this subject.
    pub subject: Option<String>,
    /// Only approvals for this target.
    pub target: Option<String>,
    /// Only approvals held by this session.
    pub session_id: Option<String>,
    /// At most this many approvals, newest first (default 100, max 10,000).
    pub limit: Option<u32>,
}

/// A new approval id: `APR-` and ten characters of Crockford base32 (50 random bits), short
/// enough to type and unguessable enough not to be enumerated.
pub fn new_approval_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let random = uuid::Uuid::new_v4().as_u128();
    let mut id = String::from("APR-");
    for i in 0..10 {
        id.push(ALPHABET[((random >> (5 * i)) & 31) as usize] as char);
    }
    id
}

pub use crate::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for state in ApprovalState::ALL {
            assert_eq!(state.as_str().parse::<ApprovalState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::String(state.as_str().into())
            );
        }
        assert!(
            "held"
                .parse::<ApprovalState>()
                .unwrap_err()
                .contains("held")
        );
    }

    #[test]
    fn ids_are_short_distinct_and_typeable() {
        let a = new_approval_id();
        let b = new_approval_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 14, "{a}");
        assert!(a.starts_with("APR-"));
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
    }

    #[test]
    fn a_pending_row_past_its_expiry_is_expired() {
        let row = ApprovalRow {
            id: "APR-1".into(),
            state: ApprovalState::Pending,
            session_id: "s".into(),
            subject: "a".into(),
            identity_kind: "agent".into(),
            groups: vec![],
            target: "t".into(),
            rule: "r".into(),
            statement: "DELETE FROM x WHERE id = 1".into(),
            approvers: vec!["dba".into()],
            requested_at_ms: 0,
            expires_at_ms: 100,
            decided_by: None,
            decided_at_ms: None,
            reason: None,
            window_until_ms: None,
            used_at_ms: None,
        };
        assert_eq!(row.effective_state(99), ApprovalState::Pending);
        assert_eq!(row.effective_state(100), ApprovalState::Expired);
        let denied = ApprovalRow {
            state: ApprovalState::Denied,
            ..row
        };
        assert_eq!(denied.effective_state(1000), ApprovalState::Denied);
    }
}
