//! Who is calling the HTTP API, and what they may do.
//!
//! A caller proves an identity with a token — a gateway token or an OIDC token of a configured
//! provider, verified exactly as the PostgreSQL listener verifies passwords — sent either as
//! `Authorization: Bearer <token>` (API clients) or in the console's `postern_session` cookie,
//! set by `POST /api/v1/login`. The cookie holds the token itself (HttpOnly, SameSite=Strict),
//! so any gateway node can check it. Requests that change something and authenticate with the
//! cookie must also carry the `X-Postern-CSRF` header, whose value the login (and `/me`) hands
//! to the page: a digest of the token that another site can neither read nor compute.
//!
//! Roles come from groups: `[roles] admin` and `auditor`, and each `approve` rule's
//! `approvers`.

use super::HttpState;
use super::api::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use postern_core::{ApprovalRow, Identity, SessionRow};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The console's session cookie.
pub const COOKIE: &str = "postern_session";

/// The header that must accompany cookie-authenticated requests that change something.
pub const CSRF_HEADER: &str = "x-postern-csrf";

/// An authenticated caller and their roles.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified identity.
    pub identity: Identity,
    /// Member of an `admin` group.
    pub admin: bool,
    /// Member of an `auditor` group.
    pub auditor: bool,
    /// The caller's groups that some `approve` rule names as approvers.
    pub approver_of: Vec<String>,
    /// The CSRF value for this token (what the console sends in [`CSRF_HEADER`]).
    pub csrf: String,
}

impl Caller {
    /// Builds the caller for `identity` under `state`'s roles.
    pub fn new(state: &HttpState, identity: Identity, token: &str) -> Caller {
        let in_any = |groups: &[String]| groups.iter().any(|g| identity.in_group(g));
        Caller {
            admin: in_any(&state.admin_groups),
            auditor: in_any(&state.auditor_groups),
            approver_of: identity
                .groups
                .iter()
                .filter(|g| state.approver_groups.contains(*g))
                .cloned()
                .collect(),
            csrf: csrf_token(token),
            identity,
        }
    }

    /// Reads every session, approval and audit event.
    pub fn reads_everything(&self) -> bool {
        self.admin || self.auditor
    }

    /// Whether the caller is in one of `approval`'s approver groups (the rules of deciding —
    /// never one's own request, only while pending — are [`crate::approvals::decide`]'s).
    pub fn approves(&self, approval: &ApprovalRow) -> bool {
        approval.approvers.iter().any(|g| self.identity.in_group(g))
    }

    /// Whether the caller may see `approval`: everything readers, its approvers, its requester.
    pub fn sees_approval(&self, approval: &ApprovalRow) -> bool {
        self.reads_everything()
            || approval.subject == self.identity.subject
            || self.approves(approval)
    }

    /// Whether the caller may read `session` without looking at approvals: everything readers
    /// and the session's own subject. Approvers also read the sessions their approvals
    /// concern; see `api::sessions::readable`.
    pub fn owns_or_reads(&self, session: &SessionRow) -> bool {
        self.reads_everything() || session.subject == self.identity.subject
    }

    /// The roles as the API reports them.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if self.admin {
            roles.push("admin");
        }
        if self.auditor {
            roles.push("auditor");
        }
        if !self.approver_of.is_empty() {
            roles.push("approver");
        }
        roles
    }
}

/// The CSRF value that goes with `token`: unguessable without the token, stable for it.
pub fn csrf_token(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"postern-csrf\0");
    hash.update(token.as_bytes());
    B64URL.encode(hash.finalize())
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

impl FromRequestParts<Arc<HttpState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<HttpState>,
    ) -> Result<Self, Self::Rejection> {
        let (token, from_cookie) = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => {
                let value = value.to_str().unwrap_or_default();
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
                    })?;
                (token.to_owned(), false)
            }
            None => match cookie(&parts.headers, COOKIE).filter(|c| !c.is_empty()) {
                Some(token) => (token.to_owned(), true),
                None => {
                    return Err(ApiError::unauthorized(
                        "no token: send `Authorization: Bearer <token>` or log in to the console",
                    ));
                }
            },
        };
        let identity = state
            .authenticator
            .authenticate(&token)
            .await
            .map_err(|e| ApiError::unauthorized(&e.to_string()))?;
        let caller = Caller::new(state, identity, &token);
        if from_cookie && !parts.method.is_safe() {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if sent != caller.csrf {
                return Err(ApiError::forbidden(
                    "missing or wrong X-Postern-CSRF header (requests authenticated by the \
                     console cookie must carry it)",
                ));
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; postern_session=tok"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn csrf_values_depend_on_the_token() {
        assert_eq!(csrf_token("x"), csrf_token("x"));
        assert_ne!(csrf_token("x"), csrf_token("y"));
        assert_eq!(csrf_token("x").len(), 43);
    }
}
