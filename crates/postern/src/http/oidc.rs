//! Console login with the identity provider: OpenID Connect authorization code flow with PKCE
//! (`[console.oidc]`).
//!
//! `GET /api/v1/oidc/login` sends the browser to the provider with a fresh `state`, `nonce` and
//! PKCE challenge (S256), remembered in a short-lived HttpOnly cookie; the provider sends it
//! back to `GET /api/v1/oidc/callback` with a code, which the gateway exchanges (with the PKCE
//! verifier) for an ID token. The ID token is verified exactly as any OIDC token — by the
//! `[[auth.oidc]]` provider with the same issuer, whose `audience` is the console's client id —
//! its `nonce` is checked, and it becomes the console's session cookie.

use super::HttpState;
use super::api::{ApiError, Q};
use super::auth::{COOKIE, cookie};
use crate::config::ConsoleOidc;
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The cookie holding the flow's `state`, PKCE verifier and nonce between login and callback.
const FLOW_COOKIE: &str = "postern_oidc";

/// How long a login may take at the provider.
const FLOW_SECONDS: u64 = 600;

/// The provider's endpoints.
#[derive(Debug, Clone, Deserialize)]
struct Endpoints {
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The console's OIDC client.
pub struct OidcLogin {
    config: ConsoleOidc,
    secret: Option<String>,
    client: reqwest::Client,
    endpoints: tokio::sync::OnceCell<Endpoints>,
}

impl OidcLogin {
    /// The client for `config`; the client secret is read now from its environment variable.
    pub fn new(config: &ConsoleOidc) -> Result<OidcLogin> {
        let secret = config
            .client_secret_env
            .as_deref()
            .map(|var| {
                std::env::var(var)
                    .with_context(|| format!("[console.oidc] client_secret_env: {var} is not set"))
            })
            .transpose()?;
        Ok(OidcLogin {
            config: config.clone(),
            secret,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building the OIDC HTTP client")?,
            endpoints: tokio::sync::OnceCell::new(),
        })
    }

    /// The endpoints from the config, else from the issuer's discovery document (read once).
    async fn endpoints(&self) -> Result<&Endpoints, String> {
        self.endpoints
            .get_or_try_init(|| async {
                if let (Some(a), Some(t)) = (
                    &self.config.authorization_endpoint,
                    &self.config.token_endpoint,
                ) {
                    return Ok(Endpoints {
                        authorization_endpoint: a.clone(),
                        token_endpoint: t.clone(),
                    });
                }
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let found: Endpoints = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("reading {url}: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("reading {url}: {e}"))?;
                Ok(Endpoints {
                    authorization_endpoint: self
                        .config
                        .authorization_endpoint
                        .clone()
                        .unwrap_or(found.authorization_endpoint),
                    token_endpoint: self
                        .config
                        .token_endpoint
                        .clone()
                        .unwrap_or(found.token_endpoint),
                })
            })
            .await
    }

    /// Where the provider sends the browser back: the configured URL, else this listener's.
    fn redirect_url(&self, headers: &HeaderMap) -> String {
        match &self.config.redirect_url {
            Some(url) => url.clone(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                format!("http://{host}/api/v1/oidc/callback")
            }
        }
    }
}

fn random() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a valid URL");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

/// `GET /api/v1/oidc`: whether the console offers the provider's login.
pub async fn info(State(state): State<Arc<HttpState>>) -> Response {
    let body = match &state.oidc {
        Some(oidc) => json!({ "enabled": true, "issuer": oidc.config.issuer }),
        None => json!({ "enabled": false, "issuer": null }),
    };
    axum::Json(body).into_response()
}

/// `GET /api/v1/oidc/login`: redirects the browser to the provider.
pub async fn login(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let Some(oidc) = &state.oidc else {
        return ApiError::not_found("OIDC login is not configured ([console.oidc])")
            .into_response();
    };
    let endpoints = match oidc.endpoints().await {
        Ok(e) => e,
        Err(e) => return ApiError::new(StatusCode::BAD_GATEWAY, e).into_response(),
    };
    let flow_state = random();
    let verifier = format!("{}{}", random(), random());
    let nonce = random();
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    let scope = oidc.config.scopes.join(" ");
    let redirect = oidc.redirect_url(&headers);
    let query = query_string(&[
        ("response_type", "code"),
        ("client_id", &oidc.config.client_id),
        ("redirect_uri", &redirect),
        ("scope", &scope),
        ("state", &flow_state),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let separator = if endpoints.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{separator}{query}", endpoints.authorization_endpoint);
    // SameSite=Lax: the provider's redirect back is a cross-site top-level navigation.
    let flow = format!(
        "{FLOW_COOKIE}={flow_state}.{verifier}.{nonce}; Path=/api/v1/oidc; HttpOnly; \
         SameSite=Lax; Max-Age={FLOW_SECONDS}"
    );
    (
        StatusCode::FOUND,
        [(header::LOCATION, location), (header::SET_COOKIE, flow)],
    )
        .into_response()
}

/// What the provider sends back.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /api/v1/oidc/callback`: exchanges the code, checks the ID token, sets the session.
pub async fn callback(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Q(back): Q<Callback>,
) -> Response {
    match finish(&state, &headers, back).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn finish(
    state: &HttpState,
    headers: &HeaderMap,
    back: Callback,
) -> Result<Response, ApiError> {
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| ApiError::not_found("OIDC login is not configured ([console.oidc])"))?;
    if let Some(error) = back.error {
        return Err(ApiError::unauthorized(&format!(
            "the identity provider refused the login: {error}{}",
            back.error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )));
    }
    let flow = cookie(headers, FLOW_COOKIE).unwrap_or_default();
    let mut parts = flow.splitn(3, '.');
    let (Some(expected), Some(verifier), Some(nonce)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::bad_request(
            "no login in progress in this browser (start again at the console)",
        ));
    };
    let sent = back.state.unwrap_or_default();
    if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::bad_request(
            "the login's state does not match this browser's (start again at the console)",
        ));
    }
    let code = back
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("the identity provider sent no code"))?;
    let endpoints = oidc
        .endpoints()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))?;
    let redirect = oidc.redirect_url(headers);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", oidc.config.client_id.as_str()),
        ("code_verifier", verifier),
    ];
    if let Some(secret) = &oidc.secret {
        form.push(("client_secret", secret));
    }
    let response = oidc
        .client
        .post(&endpoints.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(query_string(&form))
        .send()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the token endpoint: {e}")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(ApiError::unauthorized(&format!(
            "the identity provider refused the code ({status}): {}",
            body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given")
        )));
    }
    let id_token = body["id_token"]
        .as_str()
        .ok_or_else(|| ApiError::unauthorized("the identity provider sent no ID token"))?;
    let identity = state
        .authenticator
        .authenticate(id_token)
        .await
        .map_err(|e| ApiError::unauthorized(&format!("the ID token was refused: {e}")))?;
    if identity.issuer != oidc.config.issuer {
        return Err(ApiError::unauthorized(
            "the ID token is from another issuer",
        ));
    }
    let claims: Value = id_token
        .split('.')
        .nth(1)
        .and_then(|p| B64URL.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null);
    let got = claims["nonce"].as_str().unwrap_or_default();
    if !bool::from(got.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(ApiError::unauthorized(
            "the ID token's nonce does not match this login",
        ));
    }
    tracing::info!(target: "postern::audit", subject = %identity.subject, issuer = %identity.issuer, "console login through OIDC");
    let max_age = (identity.expires_at - postern_core::now_ms() / 1000).max(0);
    let session =
        format!("{COOKIE}={id_token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let clear = format!("{FLOW_COOKIE}=; Path=/api/v1/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/console/#/sessions")],
    )
        .into_response();
    for c in [session, clear] {
        if let Ok(value) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}
