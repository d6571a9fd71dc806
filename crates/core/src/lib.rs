//! The protocol-neutral heart of Postern.
//!
//! `core` knows *who* is connecting ([`identity`]), *what* they may reach ([`target`]),
//! *what* they asked for ([`command`]) and *what the gateway decided* ([`decision`]). It owns the
//! seams ([`seams`]) through which a protocol engine reaches authentication, policy and the
//! metadata store, so that engines never depend on the crates that implement them.
//!
//! Nothing here performs I/O: leaf crates do, behind the traits.

pub mod approval;
pub mod audit;
pub mod command;
pub mod decision;
pub mod event;
pub mod identity;
pub mod lineage;
pub mod mask;
pub mod packed_rows;
pub mod seams;
pub mod session;
pub mod target;

pub use approval::{ApprovalFilter, ApprovalRow, ApprovalState, new_approval_id};
pub use audit::{AuditEvent, AuditKind};
pub use command::{Command, CommandSource};
pub use decision::Decision;
pub use identity::{Identity, IdentityKind, new_session_id};
pub use lineage::StatementLineage;
pub use mask::{ColumnMask, MaskCatalog, Masker, ResultPlan, SessionMasking};
pub use seams::{
    AllowAll, ApprovalOutcome, ApprovalRequest, Approvals, AuditQuery, AuthError, Authenticator,
    NoApprovals, NoRecording, Policy, Recorder, RecordingError, SessionPolicy, SessionRecording,
    Store, StoreError,
};
pub use session::{SessionFilter, SessionRow};
pub use target::{Target, TargetAccess, TargetKind};

/// The current Unix time in milliseconds: the one clock for audit events, the sessions index
/// and approvals.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
