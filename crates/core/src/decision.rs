//! Decisions: what the gateway does with a command.

/// The outcome of the decision point for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward the command upstream.
    Allow,
    /// Refuse the command; the caller gets an error naming the rule.
    Block {
        /// The policy rule that matched.
        rule: String,
        /// Why, in words the caller can act on.
        reason: String,
    },
    /// Hold the command until a human approves it.
    Approve {
        /// The policy rule that requires approval.
        rule: String,
    },
}

impl Decision {
    /// The lowercase name used in recordings and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block { .. } => "block",
            Decision::Approve { .. } => "approve",
        }
    }
}
