//! SQL-aware policy for Postern: what a statement does, and what the gateway does about it.
//!
//! - [`analysis`]: every statement is parsed with PostgreSQL's own parser (`pg_query`) and
//!   classified by everything it does ([`StatementClass`]: read, write, unbounded_write, ddl,
//!   privilege, admin, unknown, session, lock, maintenance), with the tables, columns and
//!   functions it touches and a [`Finding`] per class saying what was seen.
//! - [`cache`]: analyses are cached by statement text in a sharded LRU shared by all sessions,
//!   so a hot statement is parsed once.
//! - [`config`]: the policy language (`[[rules]]`, `[[masks]]`, `[functions]`), documented in
//!   `docs/policy.md`.
//! - [`policy`]: [`RulePolicy`] implements [`postern_core::Policy`]; each session's
//!   [`RuleSession`] remembers prepared statements so `EXECUTE` is judged by what it runs.
//!
//! The engine calls [`postern_core::SessionPolicy::decide`] once per simple query and once per
//! `Parse`; a cached statement costs about a microsecond.

#![warn(missing_docs)]

pub mod analysis;
pub mod cache;
pub mod class;
pub mod config;
pub mod error;
pub mod functions;
pub mod lineage;
pub mod mask;
mod plan;
pub mod policy;
pub mod rules;
mod shape;
mod verb;
mod walk;

pub use analysis::{
    Access, Analysis, AnalysisError, ColumnUse, Finding, Lexing, QualifiedName, StatementAnalysis,
    TableUse, analyze, analyze_with,
};
pub use cache::{Analyzer, CacheStats, DEFAULT_CACHE_ENTRIES, MAX_CACHED_TEXT};
pub use class::{ClassSet, StatementClass};
pub use config::{
    Action, ColumnPattern, DEFAULT_APPROVAL_TIMEOUT, Detector, MaskConfig, MaskStrategy,
    PolicyConfig, RuleConfig, TablePattern, When,
};
pub use error::ConfigError;
pub use functions::FunctionCatalog;
pub use mask::ValueMasker;
pub use policy::{MAX_PREPARED_PER_SESSION, RulePolicy, RuleSession};
pub use rules::ApprovalSpec;
