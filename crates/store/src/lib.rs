//! The metadata store: audit events, the sessions index and approval requests, kept in SQLite
//! by default.
//!
//! [`SqliteStore`] implements [`postern_core::Store`]: the audit trail, the sessions index and
//! approval requests. Every write returns its error to the caller; nothing is dropped silently.
//! Migrations live in `migrations/<backend>/` so a PostgreSQL store can sit beside the SQLite one
//! later.

mod sqlite;

pub use postern_core::approval::{ApprovalFilter, ApprovalRow, ApprovalState};
pub use postern_core::session::{SessionFilter, SessionRow};
pub use sqlite::SqliteStore;

/// Listing limit used when a query gives none.
pub const DEFAULT_LIMIT: u32 = 100;
/// Upper bound on any listing, so one request cannot pull the whole table.
pub const MAX_LIMIT: u32 = 10_000;

/// The effective limit for a listing: `None` means [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
fn effective_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_caps() {
        assert_eq!(effective_limit(None), DEFAULT_LIMIT);
        assert_eq!(effective_limit(Some(7)), 7);
        assert_eq!(effective_limit(Some(MAX_LIMIT + 1)), MAX_LIMIT);
    }
}
