//! `GET /api/v1/audit` (admins and auditors) and `GET /api/v1/targets`.

use super::{ApiError, ApiResult, Q, limit, parse_time};
use crate::http::HttpState;
use crate::http::auth::Caller;
use crate::sessions::rfc3339_ms;
use axum::Json;
use axum::extract::State;
use postern_core::{AuditEvent, AuditQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    subject: Option<String>,
    target: Option<String>,
    kind: Option<String>,
    session: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

/// The most audit events one request returns.
const MAX_AUDIT: u32 = 1000;

/// `GET /api/v1/audit`: audit events, newest first.
pub async fn list(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Q(params): Q<AuditParams>,
) -> ApiResult {
    if !caller.reads_everything() {
        return Err(ApiError::forbidden(
            "the audit log is for the admin and auditor roles",
        ));
    }
    let limit = limit(params.limit, MAX_AUDIT)?;
    let filtered = params.kind.is_some() || params.session.is_some();
    let events = state
        .store
        .list_audit(&AuditQuery {
            subject: params.subject,
            target: params.target,
            since_ms: parse_time("since", params.since.as_deref())?,
            // Kind and session are filtered here, so read further when they are given.
            limit: Some(if filtered {
                postern_store::MAX_LIMIT
            } else {
                limit
            }),
        })
        .await?;
    let events: Vec<Value> = events
        .iter()
        .filter(|e| params.kind.as_deref().is_none_or(|k| e.kind.as_str() == k))
        .filter(|e| {
            params
                .session
                .as_deref()
                .is_none_or(|s| e.session_id.as_deref() == Some(s))
        })
        .take(limit as usize)
        .map(event_json)
        .collect();
    Ok(Json(json!({ "events": events })))
}

/// One audit event as the API (and the audit JSON lines) show it.
pub fn event_json(e: &AuditEvent) -> Value {
    json!({
        "at": rfc3339_ms(e.at_ms),
        "kind": e.kind,
        "session_id": e.session_id,
        "subject": e.subject,
        "identity_kind": e.identity_kind,
        "groups": e.groups,
        "target": e.target,
        "client_addr": e.client_addr,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "duration_ms": e.duration_ms,
        "detail": e.detail,
    })
}

/// `GET /api/v1/targets`: the targets the caller may open (every target, with its access
/// rules, for admins and auditors).
pub async fn targets(State(state): State<Arc<HttpState>>, caller: Caller) -> ApiResult {
    let all = caller.reads_everything();
    let targets: Vec<Value> = state
        .targets
        .iter()
        .filter(|t| all || t.access.admits(&caller.identity))
        .map(|t| {
            let mut v = json!({
                "name": t.name,
                "kind": t.kind,
                "live_sessions": state.live.list().iter().filter(|s| s.target == t.name).count(),
            });
            if all {
                v["allow"] = json!({
                    "subjects": t.access.subjects,
                    "groups": t.access.groups,
                    "kinds": t.access.kinds,
                });
            }
            v
        })
        .collect();
    Ok(Json(json!({ "targets": targets })))
}
