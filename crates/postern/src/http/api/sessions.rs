//! `/api/v1/sessions`: the sessions index with filters, one session with its verification
//! status, its recorded timeline page by page (growing while the session is live), and
//! terminating a live session.
//!
//! Who reads what: admins and auditors every session; approvers the sessions of the approvals
//! they may decide; everyone their own.

use super::{ApiError, ApiResult, Body, Q, limit, parse_time};
use crate::http::HttpState;
use crate::http::auth::Caller;
use axum::Json;
use axum::extract::{Path, State};
use postern_core::{ApprovalFilter, SessionFilter, SessionRow};
use postern_pg::Termination;
use postern_record::{EventBody, VerifyError, read_events, verify_session};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How many decisions of each kind (`allow`, `block`, `approve`, `approved`, `denied`,
/// `expired`, `pending`) a recording holds.
pub type Decisions = BTreeMap<String, u64>;

/// Decision counts of sealed recordings by session id (a sealed recording never changes).
pub type DecisionsCache = Mutex<HashMap<String, Decisions>>;

/// The decision kinds a `decision` filter may name.
const DECISION_KINDS: [&str; 7] = [
    "allow", "block", "approve", "approved", "denied", "expired", "pending",
];

/// The most sessions one request returns.
const MAX_SESSIONS: u32 = 1000;

/// The most events one page of a timeline holds.
const MAX_EVENTS: u32 = 5000;

/// Filters of `GET /api/v1/sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    identity: Option<String>,
    kind: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    decision: Option<String>,
    live: Option<bool>,
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Runs blocking file work (reading and verifying recordings) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The sessions whose approvals `caller` may decide (or has decided): an approver reads them.
async fn approver_sessions(
    state: &HttpState,
    caller: &Caller,
) -> Result<HashSet<String>, ApiError> {
    if caller.approver_of.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = state
        .store
        .list_approvals(&ApprovalFilter {
            limit: Some(postern_store::MAX_LIMIT),
            ..Default::default()
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|row| caller.approves(row))
        .map(|row| row.session_id)
        .collect())
}

/// Whether `caller` may read `session`.
async fn readable(
    state: &HttpState,
    caller: &Caller,
    session: &SessionRow,
) -> Result<bool, ApiError> {
    if caller.owns_or_reads(session) {
        return Ok(true);
    }
    if caller.approver_of.is_empty() {
        return Ok(false);
    }
    let rows = state
        .store
        .list_approvals(&ApprovalFilter {
            session_id: Some(session.id.clone()),
            limit: Some(postern_store::MAX_LIMIT),
            ..Default::default()
        })
        .await?;
    Ok(rows.iter().any(|row| caller.approves(row)))
}

/// The session `id` if `caller` may read it; 404 when it does not exist, 403 when it is not
/// theirs to read.
async fn readable_session(
    state: &HttpState,
    caller: &Caller,
    id: &str,
) -> Result<SessionRow, ApiError> {
    let row = state
        .store
        .get_session(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no session {id}")))?;
    if !readable(state, caller, &row).await? {
        return Err(ApiError::forbidden(format!(
            "{} may not read session {id}: it is another identity's, and no approval of it is \
             theirs to decide",
            caller.identity.subject
        )));
    }
    Ok(row)
}

/// The local recording directory of session `id`, if there is one.
fn recording_dir(state: &HttpState, id: &str) -> Option<PathBuf> {
    postern_record::layout::validate_id(id).ok()?;
    let dir = state.recordings.join(id);
    dir.is_dir().then_some(dir)
}

/// Counts the decisions recorded in `dir` (what a damaged recording holds up to the damage).
fn count_decisions(dir: &std::path::Path) -> Decisions {
    let mut counts = Decisions::new();
    let Ok(events) = read_events(dir) else {
        return counts;
    };
    for event in events.map_while(Result::ok) {
        if let EventBody::Decision(d) = event.body
            && let Ok(Value::String(kind)) = serde_json::to_value(d.decision)
        {
            *counts.entry(kind).or_default() += 1;
        }
    }
    counts
}

/// Decision counts for `rows`, from the cache for sealed recordings.
async fn decisions_for(
    state: &Arc<HttpState>,
    rows: &[SessionRow],
) -> Result<Vec<Decisions>, ApiError> {
    let wanted: Vec<(String, bool)> = rows
        .iter()
        .map(|r| (r.id.clone(), r.ended_at_ms.is_some()))
        .collect();
    let state = state.clone();
    blocking(move || {
        wanted
            .into_iter()
            .map(|(id, ended)| {
                if ended
                    && let Some(hit) = state
                        .decisions_cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&id)
                {
                    return hit.clone();
                }
                let counts = recording_dir(&state, &id)
                    .map(|dir| count_decisions(&dir))
                    .unwrap_or_default();
                if ended {
                    state
                        .decisions_cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, counts.clone());
                }
                counts
            })
            .collect()
    })
    .await
}

/// A session as the API shows it.
fn session_json(state: &HttpState, row: &SessionRow, decisions: &Decisions) -> Value {
    let mut v = crate::sessions::session_fields(row);
    v["live"] = json!(state.live.contains(&row.id));
    v["recorded"] = json!(recording_dir(state, &row.id).is_some());
    v["decisions"] = json!(decisions);
    v
}

/// `GET /api/v1/sessions`: the sessions the caller may read, newest first.
pub async fn list(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Q(params): Q<ListParams>,
) -> ApiResult {
    let limit = limit(params.limit, MAX_SESSIONS)? as usize;
    let offset = params.offset.unwrap_or(0) as usize;
    let until = parse_time("until", params.until.as_deref())?;
    if let Some(d) = &params.decision
        && !DECISION_KINDS.contains(&d.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "decision {d:?} is not one of {}",
            DECISION_KINDS.join(", ")
        )));
    }
    let rows = state
        .store
        .list_sessions(&SessionFilter {
            subject: params.identity.clone(),
            target: params.target.clone(),
            since_ms: parse_time("since", params.since.as_deref())?,
            open_only: params.live == Some(true),
            limit: Some(postern_store::MAX_LIMIT),
        })
        .await?;
    let theirs = if caller.reads_everything() {
        HashSet::new()
    } else {
        approver_sessions(&state, &caller).await?
    };
    let candidates: Vec<SessionRow> = rows
        .into_iter()
        .filter(|r| caller.owns_or_reads(r) || theirs.contains(&r.id))
        .filter(|r| params.kind.as_deref().is_none_or(|k| r.identity_kind == k))
        .filter(|r| until.is_none_or(|u| r.started_at_ms <= u))
        .filter(|r| {
            params
                .live
                .is_none_or(|live| state.live.contains(&r.id) == live)
        })
        .collect();
    let mut page = Vec::new();
    match &params.decision {
        None => {
            let rows: Vec<SessionRow> = candidates.into_iter().skip(offset).take(limit).collect();
            let decisions = decisions_for(&state, &rows).await?;
            for (row, d) in rows.iter().zip(&decisions) {
                page.push(session_json(&state, row, d));
            }
        }
        Some(wanted) => {
            // Only the recordings say which sessions had such a decision: read them in
            // batches until the page is full.
            let mut skipped = 0;
            for batch in candidates.chunks(limit.max(50)) {
                let decisions = decisions_for(&state, batch).await?;
                for (row, d) in batch.iter().zip(&decisions) {
                    if d.get(wanted).copied().unwrap_or(0) == 0 {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                        continue;
                    }
                    page.push(session_json(&state, row, d));
                }
                if page.len() >= limit {
                    page.truncate(limit);
                    break;
                }
            }
        }
    }
    Ok(Json(json!({ "sessions": page })))
}

/// What `postern verify` says of session `id`'s recording.
fn verification(state: &HttpState, id: &str, open: bool) -> Value {
    let Some(dir) = recording_dir(state, id) else {
        return json!({
            "status": "not_recorded",
            "message": "no recording of this session on this node",
        });
    };
    let Some(key) = &state.public_key else {
        return json!({
            "status": "unverified",
            "message": "the gateway's public key is not available",
        });
    };
    match verify_session(&dir, key) {
        Ok(report) => json!({ "status": "verified", "message": report.summary() }),
        Err(e @ VerifyError::Unsealed { .. }) if open => json!({
            "status": "open",
            "message": format!("not sealed yet: the session is open ({e})"),
        }),
        Err(e) => json!({ "status": "failed", "message": e.to_string() }),
    }
}

/// `GET /api/v1/sessions/{id}`: the session, its decision counts and its verification.
pub async fn show(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let row = readable_session(&state, &caller, &id).await?;
    let decisions = decisions_for(&state, std::slice::from_ref(&row)).await?;
    let mut v = session_json(&state, &row, &decisions[0]);
    let open = row.ended_at_ms.is_none();
    let verified = {
        let state = state.clone();
        blocking(move || verification(&state, &id, open)).await?
    };
    v["verification"] = verified;
    let approvals = state
        .store
        .list_approvals(&ApprovalFilter {
            session_id: Some(row.id.clone()),
            limit: Some(postern_store::MAX_LIMIT),
            ..Default::default()
        })
        .await?;
    v["approvals"] = json!(
        approvals
            .iter()
            .filter(|a| caller.sees_approval(a))
            .map(|a| a.id.clone())
            .collect::<Vec<_>>()
    );
    Ok(Json(v))
}

/// Paging of `GET /api/v1/sessions/{id}/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// Only events after this sequence number.
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/sessions/{id}/events`: one page of the recorded timeline, in the export
/// format (`seq`, `offset_us`, `type`, and the event's fields).
pub async fn events(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Path(id): Path<String>,
    Q(params): Q<EventsParams>,
) -> ApiResult {
    let row = readable_session(&state, &caller, &id).await?;
    let limit = limit(params.limit.or(Some(500)), MAX_EVENTS)? as usize;
    let Some(dir) = recording_dir(&state, &id) else {
        return Err(ApiError::not_found(format!(
            "there is no recording of session {id} on this node"
        )));
    };
    let open = row.ended_at_ms.is_none();
    let live = state.live.contains(&id);
    let after = params.after;
    let page = blocking(move || {
        let reader = match read_events(&dir) {
            Ok(reader) => reader,
            // A session that has just opened may not have its first chunk yet.
            Err(_) if open => return Ok((Vec::new(), false, false, None)),
            Err(e) => return Err(e.to_string()),
        };
        let mut events = Vec::new();
        let mut more = false;
        let mut ended = false;
        let mut damage = None;
        for item in reader {
            match item {
                Ok(event) => {
                    if after.is_some_and(|a| event.seq <= a) {
                        continue;
                    }
                    if events.len() == limit {
                        more = true;
                        break;
                    }
                    ended |= matches!(event.body, EventBody::SessionEnd(_));
                    events.push(serde_json::to_value(&event).unwrap_or(Value::Null));
                }
                // The tail of an open recording may be mid-write: it is simply not there yet.
                Err(_) if open => break,
                Err(e) => {
                    damage = Some(e.to_string());
                    break;
                }
            }
        }
        Ok((events, more, ended, damage))
    })
    .await?
    .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let (events, more, ended, damage) = page;
    let last = events.last().and_then(|e| e["seq"].as_u64()).or(after);
    Ok(Json(json!({
        "session_id": id,
        "events": events,
        "next_after": last,
        "more": more,
        "ended": ended,
        "live": live,
        "damaged": damage,
    })))
}

/// The body of `POST /api/v1/sessions/{id}/terminate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateBody {
    /// Why, shown to the client and recorded.
    reason: Option<String>,
}

/// `POST /api/v1/sessions/{id}/terminate` (admins): ends a live session on this node.
pub async fn terminate(
    State(state): State<Arc<HttpState>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<TerminateBody>,
) -> ApiResult {
    if !caller.admin {
        return Err(ApiError::forbidden(
            "only the admin role may terminate sessions",
        ));
    }
    let termination = Termination {
        by: caller.identity.subject.clone(),
        reason: body.reason.filter(|r| !r.trim().is_empty()),
    };
    if !state.live.terminate(&id, termination.clone()) {
        return Err(match state.store.get_session(&id).await? {
            None => ApiError::not_found(format!("there is no session {id}")),
            Some(row) if row.ended_at_ms.is_some() => {
                ApiError::conflict(format!("session {id} has already ended"))
            }
            Some(_) => ApiError::conflict(format!(
                "session {id} is not live on this gateway node (terminate it on the node \
                 serving it)"
            )),
        });
    }
    tracing::info!(target: "postern::audit", session = %id, by = %termination.by, reason = termination.reason.as_deref(), "session terminated through the API");
    Ok(Json(json!({
        "session_id": id,
        "terminated": true,
        "by": termination.by,
        "reason": termination.reason,
    })))
}
