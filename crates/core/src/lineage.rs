//! Intent-to-effect lineage carried inside a statement.
//!
//! An agent (or Postern's own MCP endpoint) that wants its statement tied to the tool call and
//! intent that caused it prefixes the statement with one comment:
//!
//! ```sql
//! /* postern-lineage {"causal_id":"call-7","tool":"query","intent":"count open orders"} */ SELECT …
//! ```
//!
//! The comment is invisible to the server (it is SQL whitespace), works through any client and
//! any protocol step, and lets the engine record an intent event and stamp the statement with
//! the causal id. The JSON object needs `causal_id`; every other member is recorded as sent.
//! `wait: false` asks the gateway not to hold a statement that needs approval but to answer at
//! once with the pending approval's id; `approval` re-submits a statement under an approval
//! granted since.

use serde::{Deserialize, Serialize};

/// The comment's opening, exactly.
pub const LINEAGE_PREFIX: &str = "/* postern-lineage ";

/// Longest comment accepted (a larger one is treated as ordinary SQL).
pub const MAX_LINEAGE_BYTES: usize = 64 * 1024;

/// What a lineage comment says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLineage {
    /// The causal id of the tool call (or step) that produced the statement.
    pub causal_id: String,
    /// Whether a statement needing approval is held (`true`, the default) or answered at once.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub wait: bool,
    /// A re-submission under this approval id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The whole JSON object as sent, for the recording.
    #[serde(skip)]
    pub json: String,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl StatementLineage {
    /// Splits a leading lineage comment off `text`: the lineage and the statement after it.
    /// `None` when the text does not start with a well-formed one (it is then ordinary SQL).
    pub fn split(text: &str) -> Option<(StatementLineage, &str)> {
        let rest = text.trim_start().strip_prefix(LINEAGE_PREFIX)?;
        let end = rest.find("*/")?;
        if end > MAX_LINEAGE_BYTES {
            return None;
        }
        let json = rest[..end].trim_end();
        let mut lineage: StatementLineage = serde_json::from_str(json).ok()?;
        if lineage.causal_id.is_empty() {
            return None;
        }
        lineage.json = json.to_owned();
        Some((lineage, &rest[end + 2..]))
    }

    /// The comment for `members` (a JSON object holding at least `causal_id`), with `*/`
    /// escaped so that it cannot end the comment early.
    pub fn comment(members: &serde_json::Value) -> String {
        let json = members.to_string().replace("*/", "*\\u002f");
        format!("{LINEAGE_PREFIX}{json} */ ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_comment_round_trips() {
        let comment = StatementLineage::comment(&json!({
            "causal_id": "c1", "tool": "query", "intent": "tricky */ text", "wait": false
        }));
        let text = format!("{comment}SELECT 1");
        let (lineage, rest) = StatementLineage::split(&text).unwrap();
        assert_eq!(lineage.causal_id, "c1");
        assert!(!lineage.wait);
        assert_eq!(rest.trim(), "SELECT 1");
        assert!(lineage.json.contains("tricky"));
    }

    #[test]
    fn anything_else_is_ordinary_sql() {
        for text in [
            "SELECT 1",
            "/* postern-lineage not json */ SELECT 1",
            "/* postern-lineage {\"causal_id\":\"\"} */ SELECT 1",
            "/* postern-lineage {\"intent\":\"no id\"} */ SELECT 1",
            "/* postern-lineage {\"causal_id\":\"x\"}",
        ] {
            assert!(StatementLineage::split(text).is_none(), "{text}");
        }
    }
}
