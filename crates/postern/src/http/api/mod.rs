//! The REST API, versioned under `/api/v1` and described by the OpenAPI document served at
//! `/api/v1/openapi.json` (docs/api.md has examples). JSON in and out; errors are
//! `{"error": "...", "status": N}` with a 4xx/5xx status and never carry data.

pub mod approvals;
pub mod audit;
pub mod sessions;

use super::HttpState;
use super::auth::{COOKIE, Caller};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use postern_core::StoreError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// The OpenAPI 3.0 document describing every endpoint.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The API's routes.
pub fn routes(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/oidc", get(super::oidc::info))
        .route("/api/v1/oidc/login", get(super::oidc::login))
        .route("/api/v1/oidc/callback", get(super::oidc::callback))
        .route("/api/v1/me", get(me))
        .route("/api/v1/targets", get(audit::targets))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/sessions", get(sessions::list))
        .route("/api/v1/sessions/{id}", get(sessions::show))
        .route("/api/v1/sessions/{id}/events", get(sessions::events))
        .route("/api/v1/sessions/{id}/terminate", post(sessions::terminate))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}", get(approvals::show))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/api/{*rest}", axum::routing::any(not_found))
        .with_state(state)
}

/// An API error: a status and a message, as `{"error": message, "status": code}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 401: no or bad credentials.
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// 403: authenticated, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "the API could not reach the store");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.message, "status": self.status.as_u16() })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"postern\""),
            );
        }
        response
    }
}

/// What handlers return.
pub type ApiResult = Result<Json<Value>, ApiError>;

/// Query parameters, with malformed ones answered as a JSON 400.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// A JSON body that may be absent (then `T::default()`); present, it must be
/// `application/json`, which also keeps plain HTML forms of other sites from posting it.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(T::default()));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A time parameter: RFC 3339, or a duration ago (`90m`, `2h`), as Unix milliseconds.
pub fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            crate::sessions::parse_since(v)
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
        })
        .transpose()
}

/// A listing's `limit`: default 100, at most `max`.
pub fn limit(value: Option<u32>, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(100.min(max)),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} must be between 1 and {max}"
        ))),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /api/v1/openapi.json)")
}

/// `GET /api/v1/me`: the caller's identity and roles.
async fn me(caller: Caller) -> ApiResult {
    Ok(Json(me_json(&caller)))
}

fn me_json(caller: &Caller) -> Value {
    let id = &caller.identity;
    json!({
        "subject": id.subject,
        "kind": id.kind,
        "groups": id.groups,
        "issuer": id.issuer,
        "expires_at": crate::sessions::rfc3339_ms(id.expires_at.saturating_mul(1000)),
        "roles": caller.roles(),
        "approver_of": caller.approver_of,
        "csrf_token": caller.csrf,
    })
}

/// The body of `POST /api/v1/login`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// `POST /api/v1/login`: checks the token and sets the console's session cookie to it.
async fn login(State(state): State<Arc<HttpState>>, Body(login): Body<Login>) -> Response {
    let token = login.token.trim();
    if token.is_empty() {
        return ApiError::bad_request("give {\"token\": \"...\"}").into_response();
    }
    if token
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b';' || b == b',')
    {
        return ApiError::unauthorized("the token is malformed").into_response();
    }
    let identity = match state.authenticator.authenticate(token).await {
        Ok(identity) => identity,
        Err(e) => return ApiError::unauthorized(&e.to_string()).into_response(),
    };
    let max_age = (identity.expires_at - postern_core::now_ms() / 1000).max(0);
    let caller = Caller::new(&state, identity, token);
    tracing::info!(target: "postern::audit", subject = %caller.identity.subject, "console login");
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    ([(header::SET_COOKIE, cookie)], Json(me_json(&caller))).into_response()
}

/// `POST /api/v1/logout`: clears the cookie.
async fn logout() -> Response {
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Json(json!({ "logged_out": true })),
    )
        .into_response()
}
