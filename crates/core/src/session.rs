//! The sessions index: one row per gateway session, for `sessions list`, the console and recordings.

use serde::{Deserialize, Serialize};

/// One gateway session as the index knows it: who opened what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The session id (also used by audit events and recordings).
    pub id: String,
    /// The verified subject.
    pub subject: String,
    /// The identity kind (user, service account, ...).
    pub identity_kind: String,
    /// Groups of the verified identity.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The target the session was opened against.
    pub target: String,
    /// The caller's address, when known.
    pub client_addr: Option<String>,
    /// Unix time in milliseconds when the session opened.
    pub started_at_ms: i64,
    /// Unix time in milliseconds when the session closed; `None` while it is open.
    pub ended_at_ms: Option<i64>,
    /// Bytes from the caller (final once closed).
    pub bytes_in: u64,
    /// Bytes to the caller (final once closed).
    pub bytes_out: u64,
    /// Why the session ended, once closed.
    pub close_reason: Option<String>,
}

/// Filters for listing sessions; `None`/`false` matches everything.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions of this subject.
    pub subject: Option<String>,
    /// Only sessions against this target.
    pub target: Option<String>,
    /// Only sessions started at or after this Unix time in milliseconds.
    pub since_ms: Option<i64>,
    /// Only sessions that have not closed yet.
    pub open_only: bool,
    /// At most this many sessions, newest first (default 100, max 10,000).
    pub limit: Option<u32>,
}
