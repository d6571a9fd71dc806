//! Errors of the policy config. Each message names the rule or mask at fault and says how to
//! fix it, because operators read them at startup.

use crate::class::StatementClass;

/// Why a policy config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not match the policy language (unknown key, unknown statement class or
    /// identity kind, wrong type); the message includes the location.
    #[error("invalid policy config: {0}")]
    Toml(String),
    /// A rule or mask has an empty name.
    #[error("{kind} #{index} has an empty name; every {kind} needs a unique name")]
    EmptyName {
        /// `rule` or `mask`.
        kind: &'static str,
        /// Its position in the file, from 1.
        index: usize,
    },
    /// Two rules or masks share a name.
    #[error("the name {0:?} is used twice; rule and mask names must be unique")]
    DuplicateName(String),
    /// An `approve` rule names nobody who may approve.
    #[error("rule {0:?} has action = \"approve\" but no approvers; add approvers = [\"group\", …]")]
    MissingApprovers(String),
    /// An `approve` rule's timeout is not a duration.
    #[error(
        "rule {rule:?} has an invalid timeout {value:?} ({reason}); write e.g. \"5m\", \"90s\" or \"1h 30m\""
    )]
    BadTimeout {
        /// The rule.
        rule: String,
        /// What was written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `approvers` or `timeout` on a rule that does not approve.
    #[error("rule {0:?} sets approvers or timeout, which only apply to action = \"approve\"")]
    ApprovalFieldsWithoutApprove(String),
    /// A malformed table name in `when.tables`.
    #[error("rule {owner:?} has an invalid table {value:?}; write table, schema.table or schema.*")]
    BadTable {
        /// The rule.
        owner: String,
        /// What was written.
        value: String,
    },
    /// A malformed column name in `when.columns`.
    #[error(
        "rule {owner:?} has an invalid column {value:?}; write column, table.column, schema.table.column or table.*"
    )]
    BadColumn {
        /// The rule.
        owner: String,
        /// What was written.
        value: String,
    },
    /// A mask's `when` uses statement conditions.
    #[error(
        "mask {0:?}: `when` may only use kind, subjects, groups and targets (masks select sessions, not statements)"
    )]
    MaskStatementConditions(String),
    /// A mask that masks nothing.
    #[error("mask {0:?} has neither columns nor detectors, so it would mask nothing")]
    EmptyMask(String),
    /// A malformed masked column.
    #[error(
        "mask {mask:?} has an invalid column {value:?}; write table.column or schema.table.column"
    )]
    BadMaskColumn {
        /// The mask.
        mask: String,
        /// What was written.
        value: String,
    },
    /// A malformed function name in `[functions]`.
    #[error("[functions] {class} has an invalid name {value:?}; write function or schema.function")]
    BadFunction {
        /// The class it was listed under.
        class: StatementClass,
        /// What was written.
        value: String,
    },
}
