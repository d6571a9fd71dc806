//! Console login with an OpenID Connect provider: authorization code + PKCE, end to end.
//!
//! The provider is a small one written here (discovery, authorize, token; EdDSA-signed ID
//! tokens; PKCE S256 checked; codes used once), served over HTTP on loopback. The gateway runs
//! as a separate process and talks to it for real; the browser's part (following redirects,
//! carrying cookies) is played with plain HTTP requests.

use crate::api::{Contract, Http, POLICY, documented, needs_oidc};
use crate::util::*;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

const CLIENT_ID: &str = "postern-console";

/// A code the provider handed out: what the token request must match.
struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    used: bool,
}

struct Provider {
    issuer: String,
    key: EncodingKey,
    grants: Mutex<HashMap<String, Grant>>,
}

async fn discovery(State(p): State<Arc<Provider>>) -> Json<Value> {
    Json(json!({
        "issuer": p.issuer,
        "authorization_endpoint": format!("{}/authorize", p.issuer),
        "token_endpoint": format!("{}/token", p.issuer),
        "jwks_uri": format!("{}/jwks", p.issuer),
    }))
}

/// Logs "ines" in at once (no login form) and sends the browser back with a code.
async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let code = uuid::Uuid::new_v4().simple().to_string();
    p.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: q["code_challenge"].clone(),
            nonce: q["nonce"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
            used: false,
        },
    );
    let mut back = reqwest::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    (
        axum::http::StatusCode::FOUND,
        [(axum::http::header::LOCATION, back.to_string())],
    )
        .into_response()
}

async fn token(State(p): State<Arc<Provider>>, body: String) -> Response {
    let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{body}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let refuse = |why: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": why })),
        )
            .into_response()
    };
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["client_id"], CLIENT_ID);
    let mut grants = p.grants.lock().unwrap();
    let Some(grant) = grants.get_mut(&form["code"]) else {
        return refuse("unknown code");
    };
    if grant.used {
        return refuse("the code was used already");
    }
    grant.used = true;
    if form["redirect_uri"] != grant.redirect_uri {
        return refuse("redirect_uri differs");
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if B64URL.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return refuse("PKCE verification failed");
    }
    let now = unix_now();
    let claims = json!({
        "iss": p.issuer, "aud": CLIENT_ID, "sub": "ines", "groups": ["ops"],
        "iat": now, "exp": now + 600, "nonce": grant.nonce,
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let id_token = jsonwebtoken::encode(&header, &claims, &p.key).unwrap();
    Json(json!({ "access_token": "opaque", "token_type": "Bearer", "id_token": id_token }))
        .into_response()
}

/// GET through the contract, with `cookie` (if not empty) as the Cookie header.
async fn get(
    c: &mut Contract,
    template: &str,
    path: &str,
    cookie: &str,
    expect: u16,
) -> (Value, reqwest::header::HeaderMap) {
    let headers: &[(&str, &str)] = if cookie.is_empty() {
        &[]
    } else {
        &[("cookie", cookie)]
    };
    c.call_with("GET", template, path, None, None, headers, expect)
        .await
}

/// Starts a login at the gateway and plays the browser at the provider: the flow cookie, and
/// the callback path (with code and state) the provider sent the browser back to.
async fn through_provider(c: &mut Contract) -> (String, String, reqwest::Url) {
    let login = "/api/v1/oidc/login";
    let (_, started) = get(c, login, login, "", 302).await;
    let flow = set_cookie(&started, "postern_oidc").expect("the flow cookie");
    let to_provider = started["location"].to_str().unwrap().to_owned();
    assert!(
        to_provider.contains("code_challenge_method=S256"),
        "{to_provider}"
    );
    let (status, _, answered) = c.http.send_full("GET", &to_provider, None, None, &[]).await;
    assert_eq!(status, 302);
    let back = reqwest::Url::parse(answered["location"].to_str().unwrap()).unwrap();
    assert_eq!(back.path(), "/api/v1/oidc/callback");
    let path = format!("{}?{}", back.path(), back.query().unwrap());
    (flow, path, back)
}

/// The cookie `name=value` from the `Set-Cookie` headers.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn console_login_with_the_identity_provider() {
    // The provider's key and JWKS (the gateway reads the JWKS from a file).
    let keys = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key = EncodingKey::from_ed_pem(keys.serialize_pem().as_bytes()).unwrap();
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k1",
        "x": B64URL.encode(keys.public_key_raw()),
    }]});
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();

    // The provider's port is chosen now; it starts listening later, so that the gateway's
    // first attempt meets nobody.
    let port = postern_testkit::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let fx = Fixture::with(|pg| {
        GatewayConfig::shop(pg).raw(POLICY).raw(&format!(
            "[[auth.oidc]]\nissuer = {issuer:?}\naudience = {CLIENT_ID:?}\njwks_file = {}\n\n\
             [console.oidc]\nissuer = {issuer:?}\nclient_id = {CLIENT_ID:?}\n",
            toml_str(&jwks_file.display().to_string())
        ))
    });
    let http = Http::new(&fx.gw);
    let (_, doc) = http.send("GET", "/api/v1/openapi.json", None, None).await;
    let mut c = Contract {
        doc: doc.clone(),
        http,
        seen: BTreeSet::new(),
    };
    let login = "/api/v1/oidc/login";
    let callback = "/api/v1/oidc/callback";

    let info = c
        .call("GET", "/api/v1/oidc", "/api/v1/oidc", None, None, 200)
        .await;
    assert_eq!(info, json!({ "enabled": true, "issuer": issuer }));
    // Nobody at the provider's address yet.
    c.call("GET", login, login, None, None, 502).await;

    let provider = Arc::new(Provider {
        issuer: issuer.clone(),
        key,
        grants: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", routing::get(discovery))
        .route("/authorize", routing::get(authorize))
        .route("/token", post(token))
        .with_state(provider);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the provider's port is still free");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The browser: to the provider, back with a code, logged in.
    let (flow, back_path, back) = through_provider(&mut c).await;

    // Without this browser's flow cookie, or with another state, the code is not taken.
    get(&mut c, callback, &back_path, "", 400).await;
    let other_state = format!("{callback}?code=x&state=not-the-one");
    get(&mut c, callback, &other_state, &flow, 400).await;

    let (_, done) = c
        .call_with(
            "GET",
            callback,
            &back_path,
            None,
            None,
            &[("cookie", &flow)],
            303,
        )
        .await;
    assert_eq!(done["location"], "/console/#/sessions");
    let session = set_cookie(&done, "postern_session").expect("the session cookie");
    let (status, me, _) = c
        .http
        .send_full("GET", "/api/v1/me", None, None, &[("cookie", &session)])
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["subject"], "ines");
    assert_eq!(me["issuer"], json!(issuer));
    assert_eq!(me["roles"], json!(["admin"]));

    // A code is good once; a provider's refusal is passed on.
    get(&mut c, callback, &back_path, &flow, 401).await;
    let state = back
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let refused = format!("{callback}?error=access_denied&state={state}");
    let (body, _) = c
        .call_with(
            "GET",
            callback,
            &refused,
            None,
            None,
            &[("cookie", &flow)],
            401,
        )
        .await;
    assert!(
        body["error"].as_str().unwrap().contains("access_denied"),
        "{body}"
    );

    // A gateway whose token endpoint is down cannot finish a login.
    let closed = postern_testkit::free_port();
    let broken = Gateway::start(&GatewayConfig::shop(&fx.pg).raw(&format!(
        "[[auth.oidc]]\nissuer = {issuer:?}\naudience = {CLIENT_ID:?}\njwks_file = {}\n\n\
         [console.oidc]\nissuer = {issuer:?}\nclient_id = {CLIENT_ID:?}\n\
         authorization_endpoint = \"{issuer}/authorize\"\n\
         token_endpoint = \"http://127.0.0.1:{closed}/token\"\n",
        toml_str(&jwks_file.display().to_string())
    )));
    c.http = Http::new(&broken);
    let (flow, back_path, _) = through_provider(&mut c).await;
    get(&mut c, callback, &back_path, &flow, 502).await;

    let (wanted, _) = documented(&doc);
    let missing: Vec<_> = wanted
        .iter()
        .filter(|pair| needs_oidc(pair) && !c.seen.contains(*pair))
        .collect();
    assert!(
        missing.is_empty(),
        "documented OIDC answers never produced: {missing:?}"
    );
}
