//! `/api/v1/approvals`: held statements, and deciding them with the same rules as
//! `postern approvals approve|deny` ([`crate::approvals::decide`]).

use super::{ApiError, ApiResult, Body, Q, limit};
use crate::approvals::{DecideError, Verdict, decide};
use crate::approvals_cli::{parse_window, row_json};
use crate::http::HttpState;
use crate::http::auth::Caller;
use axum::Json;
use axum::extract::{Path, State};
use postern_core::{ApprovalFilter, ApprovalRow, ApprovalState};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Filters of `GET /api/v1/approvals`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    identity: Option<String>,
    target: Option<String>,
    session: Option<String>,
    limit: Option<u32>,
}

/// The most approvals one request returns.
const MAX_APPROVALS: u32 = 1000;

/// An approval as the API shows it to `caller`: the CLI's JSON, plus whether they may decide.
fn approval_json(caller: &Caller, row: &ApprovalRow) -> Value {
    let mut v = row_json(row);
    v["can_decide"] = json!(
        row.state == ApprovalState::Pending
            && caller.approves(row)
            && row.subject != caller.identity.subject
    );
    v
}

/// `GET /api/v1/approvals`: the approvals the caller may see, newest first.
pub async fn list(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Q(params): Q<ListParams>,
) -> ApiResult {
    let wanted = match params.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(s.parse::<ApprovalState>().map_err(ApiError::bad_request)?),
    };
    let limit = limit(params.limit, MAX_APPROVALS)?;
    let rows = state
        .store
        .list_approvals(&ApprovalFilter {
            state: wanted,
            subject: params.identity,
            target: params.target,
            session_id: params.session,
            limit: Some(if caller.reads_everything() {
                limit
            } else {
                postern_store::MAX_LIMIT
            }),
        })
        .await?;
    let approvals: Vec<Value> = rows
        .iter()
        .filter(|row| caller.sees_approval(row))
        .take(limit as usize)
        .map(|row| approval_json(&caller, row))
        .collect();
    Ok(Json(json!({ "approvals": approvals })))
}

/// The approval `id`, if the caller may see it (an unseen one is "not found", as if absent).
async fn visible(state: &HttpState, caller: &Caller, id: &str) -> Result<ApprovalRow, ApiError> {
    state
        .store
        .get_approval(id)
        .await?
        .filter(|row| caller.sees_approval(row))
        .ok_or_else(|| ApiError::not_found(format!("there is no approval {id}")))
}

/// `GET /api/v1/approvals/{id}`.
pub async fn show(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let row = visible(&state, &caller, &id).await?;
    Ok(Json(approval_json(&caller, &row)))
}

/// The body of `POST /api/v1/approvals/{id}/approve`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// A JIT window (`30m`, `2h`): later matching statements pass until it ends.
    window: Option<String>,
}

/// The body of `POST /api/v1/approvals/{id}/deny`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    /// Why, shown to the requester.
    reason: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve`.
pub async fn approve(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<ApproveBody>,
) -> ApiResult {
    let window = body
        .window
        .as_deref()
        .map(|w| parse_window(w).map_err(|e| ApiError::bad_request(format!("window: {e}"))))
        .transpose()?;
    decide_as(&state, &caller, &id, Verdict::Approve { window }).await
}

/// `POST /api/v1/approvals/{id}/deny`.
pub async fn deny(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<DenyBody>,
) -> ApiResult {
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    decide_as(&state, &caller, &id, Verdict::Deny { reason }).await
}

/// Decides as the caller; [`decide`] refuses non-approvers and the requester (403), and
/// anything no longer pending (409).
async fn decide_as(state: &HttpState, caller: &Caller, id: &str, verdict: Verdict) -> ApiResult {
    let decided = decide(state.store.as_ref(), &caller.identity, id, verdict)
        .await
        .map_err(|e| match e {
            DecideError::NotFound(_) => ApiError::not_found(e.to_string()),
            DecideError::Requester { .. } | DecideError::NotAnApprover { .. } => {
                ApiError::forbidden(e.to_string())
            }
            DecideError::Refused(_) => ApiError::conflict(e.to_string()),
            DecideError::Store(e) => ApiError::from(e),
        })?;
    if let Err(e) = &decided.audit {
        tracing::error!(approval = %id, error = %e, "the decision stands, but its audit event was not stored");
    }
    tracing::info!(target: "postern::approvals", approval = %id, by = %caller.identity.subject, state = %decided.row.state, "approval decided through the API");
    Ok(Json(approval_json(caller, &decided.row)))
}
