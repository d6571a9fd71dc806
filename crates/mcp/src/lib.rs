//! The MCP endpoint: the gateway's targets as tools for AI agents, over streamable HTTP.
//!
//! Every request carries `Authorization: Bearer <token>`, verified by the gateway's own
//! [`Authenticator`] (gateway tokens and OIDC) before the MCP layer sees it; without a valid
//! token the answer is HTTP 401 with a `WWW-Authenticate: Bearer` challenge and nothing else
//! happens. The server is stateless (no MCP session is kept between requests), so any gateway
//! node behind a load balancer can answer any request.
//!
//! A tool that touches a target does not reach the database itself: it connects to the
//! gateway's own PostgreSQL listener over loopback, as the caller, with a short-lived token
//! minted for the caller's identity, so policy, approvals, masking and recording are exactly
//! those of a wire client. Each tool call gets a causal id (UUIDv7) and opens one connection:
//! one recording holds the tool call (an intent event: the tool, its arguments, the stated
//! intent, the request's `_meta`), the statement stamped with the causal id, the decision and
//! the result.

mod gateway;
mod refusal;
mod tls;
mod tools;

pub use gateway::{Loopback, MintToken};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use postern_core::{AuditEvent, AuditKind, AuthError, Authenticator, Policy, Store, Target};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Where the endpoint is served on the HTTP listener.
pub const MCP_PATH: &str = "/mcp";

/// Default cap on the rows one `query` call returns.
pub const DEFAULT_MAX_ROWS: usize = 1000;

/// Everything the endpoint needs from the gateway.
pub struct McpState {
    /// Verifies bearer tokens (the gateway's authenticator).
    pub authenticator: Arc<dyn Authenticator>,
    /// The decision point, asked only which columns are masked (for `describe_target`).
    pub policy: Arc<dyn Policy>,
    /// The metadata store: approvals (for `get_approval`) and refused logins (audit).
    pub store: Arc<dyn Store>,
    /// Every configured target; each caller sees those whose `allow` admits them.
    pub targets: Vec<Target>,
    /// How tools reach the gateway's own PostgreSQL listener.
    pub loopback: Loopback,
    /// Most rows one `query` call returns (the rest is cut, with a note saying so).
    pub max_rows: usize,
    /// `Host` values accepted (DNS-rebinding protection); empty: any (every request needs a
    /// valid token anyway).
    pub allowed_hosts: Vec<String>,
    /// Fires when the gateway shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for McpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpState")
            .field("targets", &self.targets.len())
            .field("loopback", &self.loopback)
            .field("max_rows", &self.max_rows)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl McpState {
    /// The targets `identity` may open, in config order.
    fn targets_for(&self, identity: &postern_core::Identity) -> Vec<&Target> {
        self.targets
            .iter()
            .filter(|t| t.access.admits(identity))
            .collect()
    }
}

/// The `/mcp` route: bearer authentication in front of a stateless streamable-HTTP MCP server.
pub fn router(state: McpState) -> Router {
    let state = Arc::new(state);
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_cancellation_token(state.shutdown.child_token());
    config = if state.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(state.allowed_hosts.clone())
    };
    let handlers = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(tools::Handler::new(handlers.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service(MCP_PATH, service)
        .layer(middleware::from_fn_with_state(state, authenticate))
}

/// Verifies the bearer token and hands the identity to the MCP server in the request's
/// extensions; refuses with 401 (and an audit event) otherwise.
async fn authenticate(
    State(state): State<Arc<McpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match bearer(request.headers()) {
        Ok(token) => token.to_owned(),
        Err(refusal) => return refusal.into_response(),
    };
    match state.authenticator.authenticate(&token).await {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(error) => {
            let event = AuditEvent {
                detail: Some(format!("MCP endpoint: {error}")),
                ..AuditEvent::now(AuditKind::AuthFailed)
            };
            tracing::info!(target: "postern::audit", kind = event.kind.as_str(), detail = event.detail.as_deref(), "audit");
            if let Err(e) = state.store.append_audit(&event).await {
                tracing::error!(error = %e, "audit event could not be stored");
            }
            match error {
                AuthError::Unavailable(_) => Unauthorized {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: None,
                    description: error.to_string(),
                }
                .into_response(),
                _ => Unauthorized::invalid_token(error.to_string()).into_response(),
            }
        }
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Result<&str, Unauthorized> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Unauthorized {
            status: StatusCode::UNAUTHORIZED,
            error: None,
            description: "no token: send Authorization: Bearer <token> (a gateway token from \
                          `postern token issue`, or an OIDC token)"
                .into(),
        });
    };
    let malformed = || Unauthorized {
        status: StatusCode::UNAUTHORIZED,
        error: Some("invalid_request"),
        description: "the Authorization header must be `Bearer <token>`".into(),
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// A refused request: the status, the RFC 6750 challenge and a JSON body saying why.
struct Unauthorized {
    status: StatusCode,
    error: Option<&'static str>,
    description: String,
}

impl Unauthorized {
    fn invalid_token(description: String) -> Self {
        Unauthorized {
            status: StatusCode::UNAUTHORIZED,
            error: Some("invalid_token"),
            description,
        }
    }

    fn challenge(&self) -> String {
        let mut challenge = String::from("Bearer realm=\"postern\"");
        if let Some(error) = self.error {
            let description: String = self
                .description
                .chars()
                .map(|c| {
                    if c == '"' || c == '\\' || c.is_control() {
                        '\''
                    } else {
                        c
                    }
                })
                .collect();
            challenge.push_str(&format!(
                ", error=\"{error}\", error_description=\"{description}\""
            ));
        }
        challenge
    }
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let challenge = HeaderValue::from_str(&self.challenge())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"postern\""));
        let body = serde_json::json!({
            "error": self.error.unwrap_or("unauthorized"),
            "error_description": self.description,
        });
        (
            self.status,
            [(header::WWW_AUTHENTICATE, challenge)],
            axum::Json(body),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers).err().unwrap().error, None);
        for (value, ok) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            match (bearer(&headers), ok) {
                (Ok(token), Some(want)) => assert_eq!(token, want, "{value}"),
                (Err(e), None) => assert_eq!(e.error, Some("invalid_request"), "{value}"),
                (got, want) => panic!("{value}: {:?} vs {want:?}", got.ok()),
            }
        }
    }

    #[test]
    fn challenges_quote_safely() {
        let refusal = Unauthorized::invalid_token("the token was \"forged\"\n".into());
        assert_eq!(
            refusal.challenge(),
            "Bearer realm=\"postern\", error=\"invalid_token\", error_description=\"the token \
             was 'forged''\""
        );
    }
}
