//! What an agent is told when a statement does not run: the gateway's refusal (SQLSTATE 42501
//! with the rule and, for approvals, the approval id, as the PostgreSQL engine words it) or the
//! database's own error, with what to do next.

use serde_json::{Value, json};

/// The SQLSTATE of the gateway's refusals.
const REFUSED: &str = "42501";

/// Why a statement did not run, as far as the agent needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A `block` rule refused it.
    Blocked,
    /// It needs approval; the request is pending under the approval id.
    Pending,
    /// An approver denied it.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The approval could not be requested or used (used already, another statement, ...).
    ApprovalRefused,
    /// The database (or the gateway, for another reason) returned an error.
    Error,
}

impl Why {
    fn as_str(&self) -> &'static str {
        match self {
            Why::Blocked => "blocked",
            Why::Pending => "approval_pending",
            Why::Denied => "approval_denied",
            Why::Expired => "approval_expired",
            Why::ApprovalRefused => "approval_refused",
            Why::Error => "error",
        }
    }
}

/// A statement that did not run, read from the error it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub why: Why,
    /// The error's message.
    pub message: String,
    /// Its SQLSTATE, when the server (or gateway) gave one.
    pub sqlstate: Option<String>,
    /// The rule that stopped it.
    pub rule: Option<String>,
    /// The approval it concerns.
    pub approval_id: Option<String>,
    /// The server's detail and hint, when given.
    pub detail: Option<String>,
    /// The server's hint.
    pub hint: Option<String>,
}

impl Refusal {
    /// Reads a query's error.
    pub fn from_error(error: &tokio_postgres::Error) -> Refusal {
        match error.as_db_error() {
            Some(db) => {
                let mut refusal = Refusal::parse(db.code().code(), db.message());
                refusal.detail = db.detail().map(str::to_owned);
                refusal.hint = db.hint().map(str::to_owned);
                refusal
            }
            None => Refusal {
                why: Why::Error,
                message: error.to_string(),
                sqlstate: None,
                rule: None,
                approval_id: None,
                detail: None,
                hint: None,
            },
        }
    }

    /// Reads a message with its SQLSTATE.
    pub fn parse(sqlstate: &str, message: &str) -> Refusal {
        let refused = sqlstate == REFUSED;
        let rule = refused.then(|| quoted_after(message, "rule \"")).flatten();
        let approval_id = refused.then(|| approval_id(message)).flatten();
        let why = if !refused || rule.is_none() {
            Why::Error
        } else if message.starts_with("blocked by rule") {
            Why::Blocked
        } else if approval_id.is_some() && message.contains(" is pending") {
            Why::Pending
        } else if approval_id.is_some() && message.contains(" was denied by ") {
            Why::Denied
        } else if approval_id.is_some() && message.contains(" expired without a decision") {
            Why::Expired
        } else {
            Why::ApprovalRefused
        };
        Refusal {
            why,
            message: message.to_owned(),
            sqlstate: Some(sqlstate.to_owned()),
            rule,
            approval_id,
            detail: None,
            hint: None,
        }
    }

    /// What the agent should do next; `approvers` are the groups that may decide the approval.
    pub fn next_step(&self, approvers: &[String]) -> String {
        let rule = self.rule.as_deref().unwrap_or("?");
        let id = self.approval_id.as_deref().unwrap_or("?");
        match self.why {
            Why::Blocked => format!(
                "The gateway's policy refuses this statement (rule \"{rule}\"). Retrying it will \
                 not help: change the statement, or ask a human to do this through another \
                 channel."
            ),
            Why::Pending => {
                let who = if approvers.is_empty() {
                    "an approver".to_owned()
                } else {
                    format!("a member of {}", approvers.join(" or "))
                };
                format!(
                    "This statement needs a human's approval (rule \"{rule}\"); nothing ran. \
                     Ask {who} to approve {id} (`postern approvals approve {id}`). Once it is \
                     approved, call `query` again with the same target and sql and \
                     approval_id \"{id}\": it then runs exactly once. `get_approval` tells \
                     where the approval stands."
                )
            }
            Why::Denied => format!(
                "A human denied approval {id} (rule \"{rule}\"); nothing ran. Do not re-submit \
                 it; the message says why."
            ),
            Why::Expired => format!(
                "Nobody decided approval {id} in time (rule \"{rule}\"); nothing ran. Call \
                 `query` again without approval_id to request a new approval if it is still \
                 needed."
            ),
            Why::ApprovalRefused => format!(
                "The approval could not be requested or used (rule \"{rule}\"); nothing ran. \
                 An approval runs its statement once, exactly as requested: call `query` \
                 without approval_id to request a new approval."
            ),
            Why::Error => "The statement failed; the message (and detail or hint) says why. \
                           Fix the statement and try again."
                .to_owned(),
        }
    }

    /// The structured content of the tool error.
    pub fn to_json(&self, approvers: &[String]) -> Value {
        let mut value = json!({
            "error": self.why.as_str(),
            "message": self.message,
            "next_step": self.next_step(approvers),
        });
        let object = value.as_object_mut().expect("an object");
        for (key, field) in [
            ("sqlstate", &self.sqlstate),
            ("rule", &self.rule),
            ("approval_id", &self.approval_id),
            ("detail", &self.detail),
            ("hint", &self.hint),
        ] {
            if let Some(field) = field {
                object.insert(key.into(), Value::String(field.clone()));
            }
        }
        if !approvers.is_empty() {
            object.insert("approvers".into(), json!(approvers));
        }
        value
    }
}

/// The text between `opening` and the next `"` in `message`.
fn quoted_after(message: &str, opening: &str) -> Option<String> {
    let start = message.find(opening)? + opening.len();
    let end = message[start..].find('"')?;
    Some(message[start..start + end].to_owned())
}

/// The first `APR-` id (ten Crockford base32 characters) in `message`.
fn approval_id(message: &str) -> Option<String> {
    message.match_indices("APR-").find_map(|(at, _)| {
        let id: String = message[at..].chars().take(14).collect();
        (id.len() == 14 && id[4..].chars().all(|c| c.is_ascii_alphanumeric())).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_refusals_are_recognised() {
        let blocked = Refusal::parse(
            "42501",
            "blocked by rule \"agents-no-ddl\": ddl statements are not allowed",
        );
        assert_eq!(blocked.why, Why::Blocked);
        assert_eq!(blocked.rule.as_deref(), Some("agents-no-ddl"));
        assert_eq!(blocked.approval_id, None);

        let pending = Refusal::parse(
            "42501",
            "rule \"writes\": approval APR-0123456789 is pending; re-submit the statement with \
             that approval id once it is approved",
        );
        assert_eq!(pending.why, Why::Pending);
        assert_eq!(pending.approval_id.as_deref(), Some("APR-0123456789"));
        let next = pending.next_step(&["dba".into()]);
        assert!(next.contains("a member of dba"), "{next}");
        assert!(next.contains("approval_id \"APR-0123456789\""), "{next}");
        let json = pending.to_json(&["dba".into()]);
        assert_eq!(json["error"], "approval_pending");
        assert_eq!(json["rule"], "writes");
        assert_eq!(json["approvers"][0], "dba");

        for (message, why) in [
            (
                "rule \"w\": approval APR-ABCDEFGHJK was denied by dana: not now",
                Why::Denied,
            ),
            (
                "rule \"w\": approval APR-ABCDEFGHJK expired without a decision",
                Why::Expired,
            ),
            (
                "rule \"w\" requires approval, which could not be requested: approval \
                 APR-ABCDEFGHJK was already used (3 s ago)",
                Why::ApprovalRefused,
            ),
        ] {
            assert_eq!(Refusal::parse("42501", message).why, why, "{message}");
        }
        // Other errors, including a 42501 of the database's own, are errors.
        assert_eq!(
            Refusal::parse("42601", "syntax error at or near \"SELEC\"").why,
            Why::Error
        );
        assert_eq!(
            Refusal::parse("42501", "permission denied for table orders").why,
            Why::Error
        );
    }
}
