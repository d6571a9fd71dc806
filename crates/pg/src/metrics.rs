//! What the engine measures, through the `metrics` facade (the binary installs a Prometheus
//! recorder; without one every call is a no-op). Names are listed in the README.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// Statements by decision: `allow`, `block`, `approve`, and the outcomes of holds.
pub const STATEMENTS: &str = "postern_statements_total";
/// Sessions opened, by target.
pub const SESSIONS: &str = "postern_sessions_total";
/// Sessions open now, by target.
pub const SESSIONS_ACTIVE: &str = "postern_sessions_active";
/// How long sessions last, in seconds.
pub const SESSION_SECONDS: &str = "postern_session_duration_seconds";
/// Failures reaching or talking to a target, by target.
pub const UPSTREAM_ERRORS: &str = "postern_upstream_errors_total";
/// Connecting and logging in to a target, in seconds.
pub const UPSTREAM_CONNECT_SECONDS: &str = "postern_upstream_connect_seconds";
/// From a statement (or Sync) leaving for the target to its ReadyForQuery, in seconds.
pub const STATEMENT_SECONDS: &str = "postern_statement_duration_seconds";

/// Statement latency in one session: every Query, Sync and FunctionCall the client sends gets
/// exactly one ReadyForQuery back, in order, so a queue of send times pairs them up.
#[derive(Debug)]
pub struct Latency {
    sent: Mutex<VecDeque<Instant>>,
    /// The session's target's histogram, looked up once: a lookup by name and label hashes
    /// and allocates, on every statement.
    histogram: metrics::Histogram,
}

impl Latency {
    /// Statement latency for a session on `target`.
    pub fn new(target: &str) -> Self {
        Latency {
            sent: Mutex::default(),
            histogram: metrics::histogram!(STATEMENT_SECONDS, "target" => target.to_owned()),
        }
    }

    /// A frame that will be answered by ReadyForQuery (`tag` Q, S or F) goes upstream.
    pub fn sent(&self, tag: u8) {
        if matches!(tag, b'Q' | b'S' | b'F') {
            self.queue().push_back(Instant::now());
        }
    }

    /// A frame `tag` came back; ReadyForQuery (`Z`) closes the oldest statement.
    pub fn received(&self, tag: u8) {
        if tag != b'Z' {
            return;
        }
        if let Some(at) = self.queue().pop_front() {
            self.histogram.record(at.elapsed().as_secs_f64());
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}
