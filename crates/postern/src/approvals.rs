//! Statement-level approvals: the [`Approvals`] seam on the metadata store, the webhook that
//! announces held statements, and the decision rules shared by the CLI (and, later, REST).
//!
//! A held statement becomes a `pending` row in the shared store. The node holding it polls the
//! row; any node, or `postern approvals approve|deny` on any machine with the store, decides it.
//! So nodes stay stateless (DESIGN.md decision 6): a decision is a row update, nothing else.

use crate::config::RawConfig;
use anyhow::{Context, Result};
use postern_core::approval::now_ms;
use postern_core::{
    ApprovalOutcome, ApprovalRequest, ApprovalRow, ApprovalState, Approvals, AuditEvent, AuditKind,
    Identity, Store, StoreError, new_approval_id,
};
use postern_policy::{Action, ApprovalSpec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long one webhook POST may take before it is abandoned (and logged).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest statement text quoted in a webhook message; the rest is elided.
const WEBHOOK_STATEMENT_CHARS: usize = 2000;

/// The longest statement text quoted in log lines and audit events.
const LOG_STATEMENT_CHARS: usize = 200;

/// How long held statements wait for a decision (the Prometheus histogram).
pub const APPROVAL_WAIT_SECONDS: &str = "postern_approval_wait_seconds";

/// Finds an `approve` rule's approvers and timeout by rule name.
pub type SpecLookup = Arc<dyn Fn(&str) -> Option<ApprovalSpec> + Send + Sync>;

/// Where held statements are announced: a Slack-compatible incoming webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook posting to `url` (http or https).
    pub fn new(url: &str) -> Result<Webhook> {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Webhook {
            url: url.to_owned(),
            client,
        })
    }

    /// POSTs `{"text": text}`; any non-2xx answer is an error.
    pub async fn post(&self, text: &str) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!("HTTP {status}: {}", shorten(body.trim(), 200)))
    }

    /// Where it posts, for log lines (the path of a Slack webhook URL is its secret).
    fn host(&self) -> String {
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The [`Approvals`] seam on the metadata store: a held statement is stored as a pending
/// request, announced (log line, audit event, webhook), and polled until decided or expired.
pub struct StoreApprovals {
    store: Arc<dyn Store>,
    lookup: SpecLookup,
    webhook: Option<Webhook>,
    poll_interval: Duration,
}

impl std::fmt::Debug for StoreApprovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreApprovals")
            .field("webhook", &self.webhook.as_ref().map(Webhook::host))
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// The gateway's [`Approvals`]: [`StoreApprovals`] on `store` with the `approve` rules of
/// `config` (approvers, timeout) and its `[approvals]` section (webhook, poll interval); the
/// refusing [`postern_core::NoApprovals`] when no rule approves.
pub fn build(config: &RawConfig, store: Arc<dyn Store>) -> Result<Arc<dyn Approvals>> {
    let mut specs = HashMap::new();
    for rule in config.rules.iter().filter(|r| r.action == Action::Approve) {
        let spec = ApprovalSpec {
            approvers: rule.approvers.clone(),
            timeout: rule.timeout_duration()?,
        };
        specs.insert(rule.name.clone(), spec);
    }
    if specs.is_empty() {
        return Ok(Arc::new(postern_core::NoApprovals));
    }
    let webhook = config
        .approvals
        .webhook_url
        .as_deref()
        .map(Webhook::new)
        .transpose()?;
    Ok(Arc::new(StoreApprovals::with_lookup(
        store,
        Arc::new(move |rule: &str| specs.get(rule).cloned()),
        webhook,
        config.approvals.poll_interval,
    )))
}

impl StoreApprovals {
    /// Holds statements in `store`; `lookup` gives each `approve` rule's approvers and timeout
    /// (e.g. `move |rule| policy.approval(rule).cloned()` with a `RulePolicy`).
    pub fn with_lookup(
        store: Arc<dyn Store>,
        lookup: SpecLookup,
        webhook: Option<Webhook>,
        poll_interval: Duration,
    ) -> Self {
        StoreApprovals {
            store,
            lookup,
            webhook,
            poll_interval: poll_interval.max(Duration::from_millis(10)),
        }
    }

    /// Stores the request, announces it and waits for its decision; a request that does not
    /// wait is answered [`ApprovalOutcome::Pending`] once it is stored and announced.
    async fn hold(
        &self,
        request: ApprovalRequest,
        spec: ApprovalSpec,
        now: i64,
    ) -> Result<ApprovalOutcome, StoreError> {
        let wait = request.wait;
        let timeout_ms = i64::try_from(spec.timeout.as_millis()).unwrap_or(i64::MAX / 2);
        let mut row = ApprovalRow {
            id: new_approval_id(),
            state: ApprovalState::Pending,
            session_id: request.session_id,
            subject: request.requester.subject.clone(),
            identity_kind: request.requester.kind.as_str().to_owned(),
            groups: request.requester.groups.clone(),
            target: request.target,
            rule: request.rule,
            statement: request.statement,
            approvers: spec.approvers.clone(),
            requested_at_ms: now,
            expires_at_ms: now.saturating_add(timeout_ms),
            decided_by: None,
            decided_at_ms: None,
            reason: None,
            window_until_ms: None,
            used_at_ms: None,
        };
        if let Err(first) = self.store.create_approval(&row).await {
            // An id collision is astronomically unlikely; a second try tells it apart from a
            // store that is down.
            row.id = new_approval_id();
            self.store
                .create_approval(&row)
                .await
                .map_err(|e| StoreError(format!("{} (and before that: {})", e.0, first.0)))?;
        }
        if !wait {
            // Nothing is held: the requester comes back with the id once it is decided, so the
            // request outlives the session that made it.
            self.announce(&row, &request.requester, spec.timeout, false)
                .await;
            return Ok(ApprovalOutcome::Pending { id: row.id });
        }
        // From here on, a dropped future (the session ended) must not leave the request
        // pending for an approver to decide in vain.
        let mut guard = PendingGuard {
            store: self.store.clone(),
            id: Some(row.id.clone()),
        };
        self.announce(&row, &request.requester, spec.timeout, true)
            .await;

        let deadline = tokio::time::Instant::now() + spec.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(self.poll_interval)).await;
            match self.store.get_approval(&row.id).await {
                Ok(Some(now)) => match now.state {
                    ApprovalState::Pending => {}
                    ApprovalState::Expired => break,
                    ApprovalState::Approved | ApprovalState::Denied => {
                        guard.disarm();
                        return Ok(outcome(&now));
                    }
                },
                Ok(None) => {
                    guard.disarm();
                    return Err(StoreError(format!(
                        "approval {} vanished from the store",
                        row.id
                    )));
                }
                // A transient failure (a busy database) is retried until the deadline.
                Err(e) => {
                    tracing::warn!(approval = %row.id, error = %e, "cannot poll the approval")
                }
            }
        }
        let reason = format!(
            "nobody decided within {}",
            humantime::format_duration(spec.timeout)
        );
        let last = self.store.expire_approval(&row.id, &reason).await;
        guard.disarm();
        let last = last?;
        if last.state == ApprovalState::Expired {
            tracing::info!(target: "postern::approvals", approval = %row.id, subject = %row.subject, target = %row.target, rule = %row.rule, "approval expired: {reason}");
            self.audit(AuditEvent {
                subject: None,
                detail: Some(format!("{} expired: {reason}", row.id)),
                ..audit_event(AuditKind::ApprovalDecided, &row)
            })
            .await;
        }
        Ok(outcome(&last))
    }

    /// Re-submission of a statement under approval `id` (by a requester that did not wait):
    /// runs it once if `id` approved exactly this statement of this requester, target and rule;
    /// otherwise says where the approval stands.
    async fn resubmit(&self, request: &ApprovalRequest, id: &str) -> ApprovalOutcome {
        let row = match self.store.get_approval(id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                return ApprovalOutcome::Unavailable(format!(
                    "there is no approval {id}; call again without an approval id to request one"
                ));
            }
            Err(e) => return ApprovalOutcome::Unavailable(e.to_string()),
        };
        let subject = &request.requester.subject;
        // Someone else's approval is never acted on (nor described beyond the mismatch).
        let mismatch = if &row.subject != subject {
            Some(format!("approval {id} was not requested by {subject}"))
        } else if row.target != request.target || row.rule != request.rule {
            Some(format!(
                "approval {id} is for target {} under rule {}, not target {} under rule {}",
                row.target, row.rule, request.target, request.rule
            ))
        } else if row.statement.trim() != request.statement.trim() {
            Some(format!(
                "approval {id} was granted for another statement ({}); re-submit exactly that \
                 statement, or call again without an approval id to request a new approval",
                shorten(&row.statement, LOG_STATEMENT_CHARS)
            ))
        } else {
            None
        };
        if let Some(why) = mismatch {
            return ApprovalOutcome::Unavailable(why);
        }
        match row.state {
            ApprovalState::Pending => ApprovalOutcome::Pending { id: row.id },
            ApprovalState::Denied | ApprovalState::Expired => outcome(&row),
            ApprovalState::Approved => {
                match self
                    .store
                    .use_approval(id, subject, &row.target, &row.rule, &row.statement)
                    .await
                {
                    Ok(used) => {
                        tracing::info!(target: "postern::approvals", approval = %id, subject = %subject, target_name = %row.target, rule = %row.rule, session = %request.session_id, "approved statement re-submitted: it runs now, once");
                        outcome(&used)
                    }
                    Err(e) => ApprovalOutcome::Unavailable(e.0),
                }
            }
        }
    }

    /// Says that `row` is waiting (`held`: in its session; otherwise for its requester to
    /// re-submit it): a log line, an audit event, and the webhook (in the background: a slow or
    /// failing webhook never delays or fails the hold).
    async fn announce(
        &self,
        row: &ApprovalRow,
        requester: &Identity,
        timeout: Duration,
        held: bool,
    ) {
        let how = if held {
            "held"
        } else {
            "not held (the requester re-submits it once approved)"
        };
        tracing::info!(
            target: "postern::approvals",
            approval = %row.id,
            session = %row.session_id,
            subject = %row.subject,
            kind = %row.identity_kind,
            target_name = %row.target,
            rule = %row.rule,
            approvers = ?row.approvers,
            timeout = %humantime::format_duration(timeout),
            statement = %shorten(&row.statement, LOG_STATEMENT_CHARS),
            how,
            "statement needs approval: decide with `postern approvals approve {0}` or `postern approvals deny {0}`",
            row.id
        );
        self.audit(AuditEvent {
            subject: Some(requester.subject.clone()),
            identity_kind: Some(requester.kind.as_str().to_owned()),
            groups: requester.groups.clone(),
            detail: Some(format!(
                "{} {how} by rule {} until a member of {} decides: {}",
                row.id,
                row.rule,
                row.approvers.join(", "),
                shorten(&row.statement, LOG_STATEMENT_CHARS)
            )),
            ..audit_event(AuditKind::ApprovalRequested, row)
        })
        .await;
        if let Some(webhook) = &self.webhook {
            let webhook = webhook.clone();
            let mut text = webhook_text(row, timeout);
            if !held {
                text.push_str(
                    "\n_Not held: the requester re-submits the statement under this id once it \
                     is approved, and it then runs once._",
                );
            }
            let id = row.id.clone();
            tokio::spawn(async move {
                match webhook.post(&text).await {
                    Ok(()) => {
                        tracing::debug!(approval = %id, host = %webhook.host(), "approval webhook delivered")
                    }
                    Err(e) => {
                        tracing::warn!(approval = %id, host = %webhook.host(), error = %e, "approval webhook failed")
                    }
                }
            });
        }
    }

    /// Logs `event` (target `postern::audit`, like the engine's events) and stores it; a store
    /// failure is logged, since the approval row already holds the facts.
    async fn audit(&self, event: AuditEvent) {
        tracing::info!(
            target: "postern::audit",
            kind = event.kind.as_str(),
            session = event.session_id.as_deref(),
            subject = event.subject.as_deref(),
            identity_kind = event.identity_kind.as_deref(),
            groups = ?event.groups,
            db_target = event.target.as_deref(),
            detail = event.detail.as_deref(),
            "audit"
        );
        if let Err(e) = self.store.append_audit(&event).await {
            tracing::error!(kind = event.kind.as_str(), error = %e, "audit event could not be stored");
        }
    }
}

#[async_trait::async_trait]
impl Approvals for StoreApprovals {
    async fn request(&self, request: ApprovalRequest) -> ApprovalOutcome {
        let Some(spec) = (self.lookup)(&request.rule) else {
            return ApprovalOutcome::Unavailable(format!(
                "rule {} does not hold statements for approval",
                request.rule
            ));
        };
        let now = now_ms();
        match self
            .store
            .active_window(
                &request.requester.subject,
                &request.target,
                &request.rule,
                now,
            )
            .await
        {
            Ok(Some(window)) => {
                return ApprovalOutcome::Approved {
                    id: window.id,
                    by: window.decided_by.unwrap_or_default(),
                    window: true,
                };
            }
            Ok(None) => {}
            Err(e) => return ApprovalOutcome::Unavailable(e.to_string()),
        }
        if let Some(id) = request.resubmission.clone() {
            return self.resubmit(&request, &id).await;
        }
        let held = std::time::Instant::now();
        let outcome = match self.hold(request, spec, now).await {
            Ok(outcome) => outcome,
            Err(e) => ApprovalOutcome::Unavailable(e.to_string()),
        };
        metrics::histogram!(APPROVAL_WAIT_SECONDS).record(held.elapsed().as_secs_f64());
        outcome
    }
}

/// Expires the request when the hold is abandoned (the engine dropped the future because the
/// session ended), so nobody approves a statement that will never run.
struct PendingGuard {
    store: Arc<dyn Store>,
    id: Option<String>,
}

impl PendingGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        runtime.spawn(async move {
            if let Err(e) = store
                .expire_approval(&id, "the session ended before a decision")
                .await
            {
                tracing::warn!(approval = %id, error = %e, "cannot expire an abandoned approval");
            }
        });
    }
}

/// The outcome a decided (or expired) row stands for.
fn outcome(row: &ApprovalRow) -> ApprovalOutcome {
    match row.state {
        ApprovalState::Approved => ApprovalOutcome::Approved {
            id: row.id.clone(),
            by: row.decided_by.clone().unwrap_or_default(),
            window: false,
        },
        ApprovalState::Denied => ApprovalOutcome::Denied {
            id: row.id.clone(),
            by: row.decided_by.clone().unwrap_or_default(),
            reason: row
                .reason
                .clone()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "no reason given".into()),
        },
        ApprovalState::Expired | ApprovalState::Pending => {
            ApprovalOutcome::Expired { id: row.id.clone() }
        }
    }
}

/// An audit event about `row` (session, target), stamped now.
fn audit_event(kind: AuditKind, row: &ApprovalRow) -> AuditEvent {
    AuditEvent {
        session_id: Some(row.session_id.clone()),
        target: Some(row.target.clone()),
        ..AuditEvent::now(kind)
    }
}

/// The webhook message for a held statement: Slack mrkdwn, with `&`, `<`, `>` escaped as Slack
/// asks, so a statement can neither mention people nor forge links.
pub fn webhook_text(row: &ApprovalRow, timeout: Duration) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let statement = shorten(&row.statement, WEBHOOK_STATEMENT_CHARS).replace("```", "'''");
    let groups = if row.groups.is_empty() {
        String::new()
    } else {
        format!("; groups: {}", row.groups.join(", "))
    };
    format!(
        "Postern is holding a statement for approval: *{id}*\n\
         *Who:* {subject} ({kind}{groups})\n\
         *Target:* {target}   *Rule:* {rule}   *Session:* {session}\n\
         *Approvers:* {approvers}   *Expires in:* {timeout}\n\
         ```{statement}```\n\
         Approve: `postern approvals approve {id}` (add `--for 30m` to let this identity's \
         matching statements through for 30 minutes)\n\
         Deny: `postern approvals deny {id} --reason \"...\"`",
        id = row.id,
        subject = esc(&row.subject),
        kind = esc(&row.identity_kind),
        groups = esc(&groups),
        target = esc(&row.target),
        rule = esc(&row.rule),
        session = esc(&row.session_id),
        approvers = esc(&row.approvers.join(", ")),
        timeout = humantime::format_duration(timeout),
        statement = esc(&statement),
    )
}

/// `text` cut to at most `max` characters, with how much was left out.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut),
    }
}

// ---------------------------------------------------------------------------------------------
// Deciding

/// What an approver decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the statement run; with a window, let later statements of the same identity, target
    /// and rule through for that long.
    Approve {
        /// The JIT window, from the moment of the decision.
        window: Option<Duration>,
    },
    /// Refuse it.
    Deny {
        /// Why, shown to the requester.
        reason: Option<String>,
    },
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No approval has that id.
    #[error("there is no approval {0}")]
    NotFound(String),
    /// The decider asked for it.
    #[error(
        "{subject} requested approval {id} and cannot decide it: a requester never approves or \
         denies their own statement"
    )]
    Requester {
        /// The approval.
        id: String,
        /// The requester and would-be decider.
        subject: String,
    },
    /// The decider is in none of the approvers groups.
    #[error(
        "{subject} may not decide approval {id}: only members of {approvers} may (your groups: \
         {groups})"
    )]
    NotAnApprover {
        /// The approval.
        id: String,
        /// The would-be decider.
        subject: String,
        /// The groups allowed to decide.
        approvers: String,
        /// The decider's groups.
        groups: String,
    },
    /// The approval is no longer pending (decided, expired) or the verdict is malformed.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A decision as made.
#[derive(Debug)]
pub struct Decided {
    /// The approval after the decision.
    pub row: ApprovalRow,
    /// Whether its audit event was stored (the decision stands either way).
    pub audit: Result<(), StoreError>,
}

/// Decides approval `id` as `decider`: refused unless the decider is in one of the approval's
/// `approvers` groups and is not the requester, and the approval is still pending. The store
/// makes the decision atomic (one winner among concurrent deciders) and re-checks the requester
/// and the expiry. The decision is also written as an `approval_decided` audit event.
pub async fn decide(
    store: &dyn Store,
    decider: &Identity,
    id: &str,
    verdict: Verdict,
) -> Result<Decided, DecideError> {
    let row = store
        .get_approval(id)
        .await
        .map_err(DecideError::Store)?
        .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
    if row.subject == decider.subject {
        return Err(DecideError::Requester {
            id: row.id,
            subject: decider.subject.clone(),
        });
    }
    if !row.approvers.iter().any(|group| decider.in_group(group)) {
        return Err(DecideError::NotAnApprover {
            id: row.id,
            subject: decider.subject.clone(),
            approvers: if row.approvers.is_empty() {
                "(no group: the rule names no approvers)".into()
            } else {
                row.approvers.join(", ")
            },
            groups: if decider.groups.is_empty() {
                "none".into()
            } else {
                decider.groups.join(", ")
            },
        });
    }
    let now = now_ms();
    let (state, reason, window_until_ms) = match &verdict {
        Verdict::Approve { window } => {
            let until = window
                .map(|w| {
                    i64::try_from(w.as_millis())
                        .ok()
                        .and_then(|w| now.checked_add(w))
                        .ok_or_else(|| DecideError::Refused("the window is too long".into()))
                })
                .transpose()?;
            (ApprovalState::Approved, None, until)
        }
        Verdict::Deny { reason } => (ApprovalState::Denied, reason.as_deref(), None),
    };
    let decided = store
        .decide_approval(id, state, &decider.subject, reason, window_until_ms)
        .await
        .map_err(|e| DecideError::Refused(e.0))?;

    let what = match (&verdict, decided.window_until_ms) {
        (Verdict::Approve { window: Some(w) }, Some(_)) => format!(
            "approved {} with a {} window",
            decided.id,
            humantime::format_duration(*w)
        ),
        (Verdict::Approve { .. }, _) => format!("approved {}", decided.id),
        (Verdict::Deny { .. }, _) => format!(
            "denied {}: {}",
            decided.id,
            decided.reason.as_deref().unwrap_or("no reason given")
        ),
    };
    let event = AuditEvent {
        subject: Some(decider.subject.clone()),
        identity_kind: Some(decider.kind.as_str().to_owned()),
        groups: decider.groups.clone(),
        detail: Some(format!(
            "{what} (rule {}, requested by {})",
            decided.rule, decided.subject
        )),
        ..audit_event(AuditKind::ApprovalDecided, &decided)
    };
    let audit = store.append_audit(&event).await;
    Ok(Decided {
        row: decided,
        audit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_core::{AuditQuery, IdentityKind};
    use postern_store::SqliteStore;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn identity(subject: &str, groups: &[&str], kind: IdentityKind) -> Identity {
        Identity {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            kind,
            issuer: "postern".into(),
            expires_at: i64::MAX,
        }
    }

    fn request(statement: &str) -> ApprovalRequest {
        ApprovalRequest {
            session_id: "0190-sess".into(),
            requester: identity("agent-7", &["agents"], IdentityKind::Agent),
            target: "shop".into(),
            rule: "agent-writes-need-approval".into(),
            statement: statement.into(),
            wait: true,
            resubmission: None,
        }
    }

    fn approvals(
        store: &SqliteStore,
        timeout: Duration,
        webhook: Option<Webhook>,
    ) -> Arc<StoreApprovals> {
        let lookup: SpecLookup = Arc::new(move |rule: &str| {
            (rule == "agent-writes-need-approval").then(|| ApprovalSpec {
                approvers: vec!["dba".into()],
                timeout,
            })
        });
        Arc::new(StoreApprovals::with_lookup(
            Arc::new(store.clone()),
            lookup,
            webhook,
            Duration::from_millis(20),
        ))
    }

    /// Waits until the store holds one pending approval and returns it.
    async fn pending(store: &SqliteStore) -> ApprovalRow {
        for _ in 0..200 {
            let rows = store
                .list_approvals(&postern_core::ApprovalFilter {
                    state: Some(ApprovalState::Pending),
                    ..Default::default()
                })
                .await
                .unwrap();
            if let Some(row) = rows.into_iter().next() {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no pending approval appeared");
    }

    fn dba() -> Identity {
        identity("dana", &["dba"], IdentityKind::Human)
    }

    #[tokio::test]
    async fn an_approval_releases_the_statement_and_a_window_covers_the_next() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_secs(60), None);
        let held = tokio::spawn({
            let seam = seam.clone();
            async move {
                seam.request(request("UPDATE t SET x = 1 WHERE id = 1"))
                    .await
            }
        });
        let row = pending(&store).await;
        assert_eq!(row.subject, "agent-7");
        assert_eq!(row.identity_kind, "agent");
        assert_eq!(row.approvers, vec!["dba".to_string()]);
        assert_eq!(row.expires_at_ms - row.requested_at_ms, 60_000);
        assert!(row.id.starts_with("APR-"));
        assert!(!held.is_finished());

        let decided = decide(
            &store,
            &dba(),
            &row.id,
            Verdict::Approve {
                window: Some(Duration::from_secs(1800)),
            },
        )
        .await
        .unwrap();
        decided.audit.unwrap();
        assert_eq!(
            held.await.unwrap(),
            ApprovalOutcome::Approved {
                id: row.id.clone(),
                by: "dana".into(),
                window: false
            }
        );
        // The window: the next matching statement passes at once, under the same approval.
        assert_eq!(
            seam.request(request("UPDATE t SET x = 2 WHERE id = 2"))
                .await,
            ApprovalOutcome::Approved {
                id: row.id.clone(),
                by: "dana".into(),
                window: true
            }
        );
        // Audit: the request and the decision.
        let kinds: Vec<AuditKind> = store
            .list_audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![AuditKind::ApprovalDecided, AuditKind::ApprovalRequested]
        );
    }

    #[tokio::test]
    async fn a_denial_carries_the_reason() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_secs(60), None);
        let held = tokio::spawn({
            let seam = seam.clone();
            async move { seam.request(request("DELETE FROM t WHERE id = 1")).await }
        });
        let row = pending(&store).await;
        decide(
            &store,
            &dba(),
            &row.id,
            Verdict::Deny {
                reason: Some("not during the sale".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            held.await.unwrap(),
            ApprovalOutcome::Denied {
                id: row.id,
                by: "dana".into(),
                reason: "not during the sale".into()
            }
        );
        // No window after a denial: the next statement is held again.
        let again = tokio::spawn({
            let seam = seam.clone();
            async move { seam.request(request("DELETE FROM t WHERE id = 2")).await }
        });
        let second = pending(&store).await;
        decide(&store, &dba(), &second.id, Verdict::Deny { reason: None })
            .await
            .unwrap();
        assert!(matches!(
            again.await.unwrap(),
            ApprovalOutcome::Denied { reason, .. } if reason == "no reason given"
        ));
    }

    #[tokio::test]
    async fn nobody_deciding_expires_the_request() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_millis(300), None);
        let outcome = seam
            .request(request("UPDATE t SET x = 1 WHERE id = 1"))
            .await;
        let ApprovalOutcome::Expired { id } = outcome else {
            panic!("{outcome:?}");
        };
        let row = store.get_approval(&id).await.unwrap().unwrap();
        assert_eq!(row.state, ApprovalState::Expired);
        assert!(row.reason.unwrap().contains("nobody decided within 300ms"));
        let err = decide(&store, &dba(), &id, Verdict::Approve { window: None })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn an_abandoned_hold_expires_its_request() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_secs(60), None);
        let held = tokio::spawn({
            let seam = seam.clone();
            async move {
                seam.request(request("UPDATE t SET x = 1 WHERE id = 1"))
                    .await
            }
        });
        let row = pending(&store).await;
        held.abort();
        let _ = held.await;
        for _ in 0..100 {
            let now = store.get_approval(&row.id).await.unwrap().unwrap();
            if now.state == ApprovalState::Expired {
                assert_eq!(
                    now.reason.as_deref(),
                    Some("the session ended before a decision")
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the abandoned request stayed pending");
    }

    #[tokio::test]
    async fn unknown_rules_and_a_broken_store_refuse() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_secs(60), None);
        let mut other = request("UPDATE t SET x = 1 WHERE id = 1");
        other.rule = "agents-no-ddl".into();
        assert!(matches!(
            seam.request(other).await,
            ApprovalOutcome::Unavailable(why) if why.contains("agents-no-ddl")
        ));
        store.close().await;
        assert!(matches!(
            seam.request(request("UPDATE t SET x = 1 WHERE id = 1"))
                .await,
            ApprovalOutcome::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn only_approvers_decide_and_never_the_requester() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_secs(60), None);
        let held = tokio::spawn({
            let seam = seam.clone();
            async move {
                seam.request(request("UPDATE t SET x = 1 WHERE id = 1"))
                    .await
            }
        });
        let row = pending(&store).await;
        let approve = || Verdict::Approve { window: None };
        // The requester, even in the approvers group.
        let selfish = identity("agent-7", &["dba"], IdentityKind::Agent);
        let err = decide(&store, &selfish, &row.id, approve())
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::Requester { .. }), "{err}");
        // Not an approver.
        let dev = identity("devin", &["dev"], IdentityKind::Human);
        let err = decide(&store, &dev, &row.id, approve()).await.unwrap_err();
        assert!(
            err.to_string().contains("only members of dba")
                && err.to_string().contains("your groups: dev"),
            "{err}"
        );
        let err = decide(&store, &dba(), "APR-NONE", approve())
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::NotFound(_)), "{err}");
        assert_eq!(
            store.get_approval(&row.id).await.unwrap().unwrap().state,
            ApprovalState::Pending
        );
        // A real approver; a second decision is refused.
        decide(&store, &dba(), &row.id, approve()).await.unwrap();
        let err = decide(
            &store,
            &identity("erin", &["dba"], IdentityKind::Human),
            &row.id,
            Verdict::Deny { reason: None },
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("already approved by dana"),
            "{err}"
        );
        assert!(matches!(
            held.await.unwrap(),
            ApprovalOutcome::Approved { window: false, .. }
        ));
    }

    /// A one-shot HTTP server: answers `status` to the first request and hands back its body.
    async fn webhook_server(status: u16) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/T000/B000/secret",
            listener.local_addr().unwrap()
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before the request ended");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    assert!(
                        head.starts_with("post /services/t000/b000/secret"),
                        "{head}"
                    );
                    assert!(head.contains("content-type: application/json"), "{head}");
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().unwrap())
                        .expect("a content-length");
                    break (end + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = conn.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            conn.write_all(reply.as_bytes()).await.unwrap();
            let _ = tx.send(body);
        });
        (url, rx)
    }

    #[tokio::test]
    async fn the_webhook_gets_a_slack_message_naming_everything() {
        let (url, body) = webhook_server(200).await;
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(
            &store,
            Duration::from_secs(300),
            Some(Webhook::new(&url).unwrap()),
        );
        let held = tokio::spawn({
            let seam = seam.clone();
            async move {
                seam.request(request(
                    "UPDATE orders SET note = '<@U123> & co' WHERE id = 7",
                ))
                .await
            }
        });
        let body = tokio::time::timeout(Duration::from_secs(10), body)
            .await
            .expect("the webhook was called")
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 1, "only `text`: {json}");
        let text = json["text"].as_str().unwrap();
        let row = pending(&store).await;
        for needle in [
            row.id.as_str(),
            "agent-7",
            "agent",
            "shop",
            "agent-writes-need-approval",
            "0190-sess",
            "dba",
            "5m",
            "UPDATE orders SET note = '&lt;@U123&gt; &amp; co' WHERE id = 7",
            &format!("postern approvals approve {}", row.id),
            &format!("postern approvals deny {}", row.id),
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("<@U123>"), "unescaped mention:\n{text}");
        decide(&store, &dba(), &row.id, Verdict::Deny { reason: None })
            .await
            .unwrap();
        held.await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_webhook_never_blocks_the_hold() {
        // 500 from the webhook; and a webhook nobody listens on.
        let (url, body) = webhook_server(500).await;
        let err = Webhook::new(&url).unwrap().post("x").await.unwrap_err();
        assert!(err.contains("500"), "{err}");
        body.await.unwrap();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/hook", l.local_addr().unwrap())
        };
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(
            &store,
            Duration::from_secs(60),
            Some(Webhook::new(&dead).unwrap()),
        );
        let held = tokio::spawn({
            let seam = seam.clone();
            async move {
                seam.request(request("UPDATE t SET x = 1 WHERE id = 1"))
                    .await
            }
        });
        let row = pending(&store).await;
        decide(&store, &dba(), &row.id, Verdict::Approve { window: None })
            .await
            .unwrap();
        assert!(matches!(
            held.await.unwrap(),
            ApprovalOutcome::Approved { .. }
        ));
    }

    #[tokio::test]
    async fn a_request_that_does_not_wait_is_pending_then_runs_once_when_resubmitted() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_secs(60), None);
        let statement = "UPDATE t SET x = 1 WHERE id = 1";
        let asked = ApprovalRequest {
            wait: false,
            ..request(statement)
        };
        let ApprovalOutcome::Pending { id } = seam.request(asked.clone()).await else {
            panic!("a non-waiting request answers at once");
        };
        let row = store.get_approval(&id).await.unwrap().unwrap();
        assert_eq!(row.state, ApprovalState::Pending);
        assert_eq!(row.statement, statement);
        // Announced like a held one.
        let audit = store.list_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(audit[0].kind, AuditKind::ApprovalRequested);
        assert!(audit[0].detail.as_deref().unwrap().contains("not held"));
        // The session that asked is gone; nothing expires the request.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            store.get_approval(&id).await.unwrap().unwrap().state,
            ApprovalState::Pending
        );

        let again = ApprovalRequest {
            resubmission: Some(id.clone()),
            statement: format!("  {statement}\n"),
            ..asked.clone()
        };
        // Still pending: pending again, no new request.
        assert_eq!(
            seam.request(again.clone()).await,
            ApprovalOutcome::Pending { id: id.clone() }
        );
        decide(&store, &dba(), &id, Verdict::Approve { window: None })
            .await
            .unwrap();
        // Someone else re-submitting it, or another statement under it: refused.
        let thief = ApprovalRequest {
            requester: identity("agent-8", &["agents"], IdentityKind::Agent),
            ..again.clone()
        };
        assert!(matches!(
            seam.request(thief).await,
            ApprovalOutcome::Unavailable(why) if why.contains("not requested by agent-8")
        ));
        let other = ApprovalRequest {
            statement: "DELETE FROM t".into(),
            ..again.clone()
        };
        assert!(matches!(
            seam.request(other).await,
            ApprovalOutcome::Unavailable(why) if why.contains("another statement")
        ));
        // The requester: runs once.
        assert_eq!(
            seam.request(again.clone()).await,
            ApprovalOutcome::Approved {
                id: id.clone(),
                by: "dana".into(),
                window: false
            }
        );
        assert!(
            store
                .get_approval(&id)
                .await
                .unwrap()
                .unwrap()
                .used_at_ms
                .is_some()
        );
        assert!(matches!(
            seam.request(again).await,
            ApprovalOutcome::Unavailable(why) if why.contains("already used")
        ));
        let unknown = ApprovalRequest {
            resubmission: Some("APR-NONE".into()),
            ..asked
        };
        assert!(matches!(
            seam.request(unknown).await,
            ApprovalOutcome::Unavailable(why) if why.contains("no approval APR-NONE")
        ));
    }

    #[tokio::test]
    async fn resubmitting_a_denied_or_expired_approval_says_so() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let seam = approvals(&store, Duration::from_millis(200), None);
        let asked = ApprovalRequest {
            wait: false,
            ..request("DELETE FROM t WHERE id = 1")
        };
        let ApprovalOutcome::Pending { id: denied } = seam.request(asked.clone()).await else {
            panic!("pending expected");
        };
        let ApprovalOutcome::Pending { id: expired } = seam.request(asked.clone()).await else {
            panic!("pending expected");
        };
        decide(
            &store,
            &dba(),
            &denied,
            Verdict::Deny {
                reason: Some("no".into()),
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let resubmit = |id: &str| ApprovalRequest {
            resubmission: Some(id.to_owned()),
            ..asked.clone()
        };
        assert!(matches!(
            seam.request(resubmit(&denied)).await,
            ApprovalOutcome::Denied { reason, .. } if reason == "no"
        ));
        assert_eq!(
            seam.request(resubmit(&expired)).await,
            ApprovalOutcome::Expired { id: expired }
        );
    }

    #[test]
    fn long_statements_are_shortened_on_a_char_boundary() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("ééé", 2), "éé… (2 more bytes)");
    }
}
