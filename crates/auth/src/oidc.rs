//! OIDC: verify JWTs minted by an external identity provider against its published keys (JWKS).
//!
//! The key set is loaded lazily on first use, kept in memory, and reloaded when a token names a
//! `kid` the cache does not know (the provider rotated its keys). Reloads are rate-limited so
//! that a stream of tokens with made-up `kid`s cannot turn the gateway into a flood of requests
//! to the provider; failed loads count too. Only asymmetric algorithms are accepted (RS256,
//! ES256, EdDSA), and each key must be of the family the token's `alg` claims.

use crate::jwt;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use postern_core::{AuthError, Identity, IdentityKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The algorithms an OIDC token may use; HMAC and `none` are never accepted.
const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 60;

/// The shortest time between two key-set loads unless changed with
/// [`OidcVerifier::with_min_refresh_interval`].
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(30);

/// How long a JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One trusted identity provider, as written in a `[[auth.oidc]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL, matched exactly against the token's `iss`.
    pub issuer: String,
    /// The `aud` the token must carry (the client id registered for the gateway).
    pub audience: String,
    /// Where the provider publishes its JWKS (exclusive with `jwks_file`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A local JWKS file, for air-gapped setups and tests (exclusive with `jwks_url`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the caller's groups: an array of strings or a single string.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim naming the caller's kind (`human`, `agent` or `service`), if the provider sets one.
    #[serde(default)]
    pub kind_claim: Option<String>,
    /// The kind of callers whose token does not name one.
    #[serde(default = "default_kind")]
    pub default_kind: IdentityKind,
    /// The claim holding the caller's stable name.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_kind() -> IdentityKind {
    IdentityKind::Human
}

fn default_subject_claim() -> String {
    "sub".into()
}

/// A mistake in an [`OidcConfig`], found at start-up rather than at the first login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcConfigError {
    /// `issuer` or `audience` is empty.
    #[error("auth.oidc: `{0}` must not be empty")]
    Empty(&'static str),
    /// Neither or both of `jwks_url` and `jwks_file` are set.
    #[error("auth.oidc issuer {issuer}: set exactly one of `jwks_url` and `jwks_file`")]
    JwksSource {
        /// The issuer the table is for.
        issuer: String,
    },
    /// `jwks_url` is not an http(s) URL.
    #[error("auth.oidc issuer {issuer}: `jwks_url` {url} is not an http or https URL")]
    JwksUrl {
        /// The issuer the table is for.
        issuer: String,
        /// The configured URL.
        url: String,
    },
    /// The issuer is the gateway's own name, so routing could not tell the two apart.
    #[error("auth.oidc: issuer `postern` is reserved for gateway tokens")]
    ReservedIssuer,
    /// Two tables name the same issuer.
    #[error("auth.oidc: issuer {0} is configured twice")]
    DuplicateIssuer(String),
    /// The HTTP client could not be built.
    #[error("auth.oidc issuer {issuer}: cannot build the HTTP client: {reason}")]
    Http {
        /// The issuer the table is for.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
}

impl OidcConfig {
    /// Check the table on its own (exactly one key source, non-empty names, a usable URL).
    pub fn validate(&self) -> Result<(), OidcConfigError> {
        if self.issuer.is_empty() {
            return Err(OidcConfigError::Empty("issuer"));
        }
        if self.audience.is_empty() {
            return Err(OidcConfigError::Empty("audience"));
        }
        if self.issuer == crate::GATEWAY_ISSUER {
            return Err(OidcConfigError::ReservedIssuer);
        }
        match (&self.jwks_url, &self.jwks_file) {
            (Some(url), None) => {
                let ok =
                    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(OidcConfigError::JwksUrl {
                        issuer: self.issuer.clone(),
                        url: url.clone(),
                    });
                }
                Ok(())
            }
            (None, Some(_)) => Ok(()),
            _ => Err(OidcConfigError::JwksSource {
                issuer: self.issuer.clone(),
            }),
        }
    }
}

/// Where the key set comes from.
enum Source {
    Url {
        client: reqwest::Client,
        url: String,
    },
    File(PathBuf),
}

/// The in-memory key set and when it was last (re)loaded.
#[derive(Default)]
struct Cache {
    keys: Option<Arc<Vec<Jwk>>>,
    /// When the last load was attempted, successful or not.
    attempted_at: Option<Instant>,
    /// Why the last load failed, reported while reloads are rate-limited.
    last_error: Option<String>,
}

/// Verifies tokens from one OIDC provider.
pub struct OidcVerifier {
    config: OidcConfig,
    source: Source,
    min_refresh: Duration,
    // An async mutex: concurrent logins wait for one in-flight load instead of each fetching.
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier for `config`, after validating it. No key is fetched until the first token.
    pub fn new(config: OidcConfig) -> Result<OidcVerifier, OidcConfigError> {
        config.validate()?;
        let source = match (&config.jwks_url, &config.jwks_file) {
            (Some(url), _) => {
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| OidcConfigError::Http {
                        issuer: config.issuer.clone(),
                        reason: e.to_string(),
                    })?;
                Source::Url {
                    client,
                    url: url.clone(),
                }
            }
            (None, Some(path)) => Source::File(path.clone()),
            (None, None) => unreachable!("validate() requires a key source"),
        };
        Ok(OidcVerifier {
            config,
            source,
            min_refresh: DEFAULT_MIN_REFRESH,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Change the shortest time between two key-set loads (tests use a short one).
    pub fn with_min_refresh_interval(mut self, interval: Duration) -> OidcVerifier {
        self.min_refresh = interval;
        self
    }

    /// The issuer this verifier trusts, used to route tokens to it.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Verify `token` and map its claims to an [`Identity`].
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jwt::header(token)?;
        let alg = jwt::accepted_alg(&header.alg, &ACCEPTED)?;
        let jwk = self.key_for(header.kid.as_deref()).await?;
        check_key_fits(&jwk, alg)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
            AuthError::Unavailable(format!("the issuer's signing key is unusable: {e}"))
        })?;

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(jwt::auth_error)?
            .claims;
        self.identity(&claims)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let c = &self.config;
        let subject = match claims.get(&c.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(AuthError::Rejected(format!(
                    "the token has no {} claim naming the subject",
                    c.subject_claim
                )));
            }
        };
        let groups = match claims.get(&c.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(g)) => vec![g.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| groups_error(&c.groups_claim))?,
            Some(_) => return Err(groups_error(&c.groups_claim)),
        };
        let kind = match c
            .kind_claim
            .as_ref()
            .and_then(|name| claims.get(name).map(|v| (name, v)))
        {
            None => c.default_kind,
            Some((name, value)) => {
                value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    AuthError::Rejected(format!("the {name} claim must be human, agent or service"))
                })?
            }
        };
        let expires_at = claims
            .get("exp")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .ok_or_else(|| AuthError::Malformed("the exp claim has the wrong type".into()))?;
        Ok(Identity {
            subject,
            groups,
            kind,
            issuer: c.issuer.clone(),
            expires_at,
        })
    }

    /// The key the token's header points at, loading or reloading the key set as needed.
    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        let mut cache = self.cache.lock().await;
        let keys = match &cache.keys {
            Some(keys) => keys.clone(),
            None => self.reload(&mut cache).await?,
        };
        match kid {
            None => match keys.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(AuthError::Unavailable(
                    "the issuer publishes no signing keys".into(),
                )),
                _ => Err(AuthError::Rejected(
                    "the token names no key (kid) and the issuer publishes several".into(),
                )),
            },
            Some(kid) => {
                if let Some(jwk) = find(&keys, kid) {
                    return Ok(jwk.clone());
                }
                // Unknown kid: the provider may have rotated its keys.
                let keys = self.reload(&mut cache).await?;
                find(&keys, kid).cloned().ok_or_else(|| {
                    AuthError::Rejected(format!(
                        "the issuer publishes no key with kid {}",
                        jwt::shown(kid)
                    ))
                })
            }
        }
    }

    /// Load the key set, unless the last attempt was too recent: then report the last failure,
    /// or hand back the cached set.
    async fn reload(&self, cache: &mut Cache) -> Result<Arc<Vec<Jwk>>, AuthError> {
        if let Some(at) = cache.attempted_at
            && at.elapsed() < self.min_refresh
        {
            return match (&cache.keys, &cache.last_error) {
                (Some(keys), _) => Ok(keys.clone()),
                (None, reason) => Err(AuthError::Unavailable(format!(
                    "the issuer's keys could not be loaded: {}",
                    reason.as_deref().unwrap_or("unknown error")
                ))),
            };
        }
        cache.attempted_at = Some(Instant::now());
        match self.load().await {
            Ok(keys) => {
                tracing::debug!(issuer = %self.config.issuer, keys = keys.len(), "loaded JWKS");
                let keys = Arc::new(keys);
                cache.keys = Some(keys.clone());
                cache.last_error = None;
                Ok(keys)
            }
            Err(reason) => {
                tracing::warn!(issuer = %self.config.issuer, %reason, "cannot load JWKS");
                cache.last_error = Some(reason.clone());
                Err(AuthError::Unavailable(format!(
                    "the issuer's keys could not be loaded: {reason}"
                )))
            }
        }
    }

    /// Fetch or read the JWKS document and keep the signing keys we can parse.
    async fn load(&self) -> Result<Vec<Jwk>, String> {
        let body = match &self.source {
            Source::Url { client, url } => {
                let response = client
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("GET {url}: {e}"))?;
                response
                    .bytes()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?
                    .to_vec()
            }
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?,
        };
        parse_jwks(&body)
    }
}

/// Parse a JWKS document. Keys we cannot parse (unknown curves, encryption keys) are skipped
/// rather than failing the whole set, since providers publish keys for other uses too.
fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    Ok(doc
        .keys
        .into_iter()
        .filter_map(|value| match serde_json::from_value::<Jwk>(value) {
            Ok(jwk) => {
                let for_signing = jwk.common.public_key_use != Some(PublicKeyUse::Encryption);
                let known_type = !matches!(jwk.algorithm, AlgorithmParameters::Other(_));
                (for_signing && known_type).then_some(jwk)
            }
            Err(e) => {
                tracing::debug!(error = %e, "skipping a JWKS key we cannot use");
                None
            }
        })
        .collect())
}

fn find<'a>(keys: &'a [Jwk], kid: &str) -> Option<&'a Jwk> {
    keys.iter()
        .find(|k| k.common.key_id.as_deref() == Some(kid))
}

/// Refuse a key of another family (or pinned to another `alg`) than the token claims, so a
/// token cannot choose how the provider's key is interpreted.
fn check_key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), AuthError> {
    let pinned_ok = jwk
        .common
        .key_algorithm
        .is_none_or(|pinned| pinned == KeyAlgorithm::from(alg));
    let family_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if pinned_ok && family_ok {
        Ok(())
    } else {
        Err(AuthError::Rejected(format!(
            "the signing key does not support algorithm {alg:?}"
        )))
    }
}

fn groups_error(claim: &str) -> AuthError {
    AuthError::Rejected(format!(
        "the {claim} claim must be a string or an array of strings"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{AUDIENCE, ISSUER, JwksServer, ProviderKey, claims, jwks};
    use serde_json::json;

    fn config() -> OidcConfig {
        serde_json::from_value(json!({
            "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "/nonexistent/jwks.json",
        }))
        .unwrap()
    }

    /// A verifier reading `keys` from a JWKS file (kept alive by the returned guard).
    fn file_verifier(
        keys: &[&ProviderKey],
        edit: impl FnOnce(&mut OidcConfig),
    ) -> (OidcVerifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(keys)).unwrap();
        let mut config = config();
        config.jwks_file = Some(path);
        edit(&mut config);
        (OidcVerifier::new(config).unwrap(), dir)
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = config();
        assert_eq!(c.groups_claim, "groups");
        assert_eq!(c.subject_claim, "sub");
        assert_eq!(c.default_kind, IdentityKind::Human);
        assert_eq!(c.kind_claim, None);
        assert!(c.validate().is_ok());

        let unknown = json!({"issuer": ISSUER, "audience": "a", "jwks_file": "x", "jwks": "y"});
        assert!(serde_json::from_value::<OidcConfig>(unknown).is_err());

        let mut both = config();
        both.jwks_url = Some("https://idp.example.com/keys".into());
        assert!(matches!(
            both.validate(),
            Err(OidcConfigError::JwksSource { .. })
        ));
        let mut neither = config();
        neither.jwks_file = None;
        assert!(matches!(
            neither.validate(),
            Err(OidcConfigError::JwksSource { .. })
        ));
        let mut ftp = neither.clone();
        ftp.jwks_url = Some("ftp://idp/keys".into());
        assert!(matches!(
            ftp.validate(),
            Err(OidcConfigError::JwksUrl { .. })
        ));
        let mut reserved = config();
        reserved.issuer = "postern".into();
        assert_eq!(reserved.validate(), Err(OidcConfigError::ReservedIssuer));
        let mut no_aud = config();
        no_aud.audience.clear();
        assert_eq!(no_aud.validate(), Err(OidcConfigError::Empty("audience")));
    }

    #[tokio::test]
    async fn accepts_rs256_es256_and_eddsa() {
        let keys = [
            ProviderKey::generate(Algorithm::RS256, "rsa"),
            ProviderKey::generate(Algorithm::ES256, "ec"),
            ProviderKey::generate(Algorithm::EdDSA, "ed"),
        ];
        let (verifier, _dir) = file_verifier(&keys.iter().collect::<Vec<_>>(), |_| {});
        for key in &keys {
            let identity = verifier.verify(&key.sign(&claims("bob"), true)).await;
            let identity = identity.unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
            assert_eq!(identity.subject, "bob");
            assert_eq!(identity.issuer, ISSUER);
            assert_eq!(identity.groups, ["eng", "dba"]);
            assert_eq!(identity.kind, IdentityKind::Human);
        }

        // Several keys: a token must say which one signed it.
        let no_kid = keys[0].sign(&claims("bob"), false);
        assert!(
            matches!(verifier.verify(&no_kid).await, Err(AuthError::Rejected(m)) if m.contains("kid"))
        );

        // A token cannot claim ES256 for the RSA key: relabel the header to point at "rsa".
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("rsa".into());
        let confused = crate::gateway::tests::replace_part(
            &keys[1].sign(&claims("bob"), true),
            0,
            &serde_json::to_value(&header).unwrap(),
        );
        assert!(
            matches!(verifier.verify(&confused).await, Err(AuthError::Rejected(m)) if m.contains("does not support")),
        );

        // A forged signature: token from a key that is not published, under a published kid.
        let impostor = ProviderKey::generate(Algorithm::EdDSA, "ed");
        assert_eq!(
            verifier.verify(&impostor.sign(&claims("bob"), true)).await,
            Err(AuthError::BadSignature)
        );
    }

    #[tokio::test]
    async fn single_key_needs_no_kid_and_claims_are_mapped() {
        let key = ProviderKey::generate(Algorithm::EdDSA, "only");
        let (verifier, _dir) = file_verifier(&[&key], |c| {
            c.subject_claim = "email".into();
            c.groups_claim = "roles".into();
            c.kind_claim = Some("postern_kind".into());
            c.default_kind = IdentityKind::Service;
        });
        let mut c = claims("ignored");
        c["email"] = json!("bob@example.com");
        c["roles"] = json!("admins");
        let identity = verifier.verify(&key.sign(&c, false)).await.unwrap();
        assert_eq!(identity.subject, "bob@example.com");
        assert_eq!(identity.groups, ["admins"]);
        assert_eq!(identity.kind, IdentityKind::Service);
        assert_eq!(identity.expires_at, c["exp"].as_i64().unwrap());

        c["postern_kind"] = json!("agent");
        let identity = verifier.verify(&key.sign(&c, false)).await.unwrap();
        assert_eq!(identity.kind, IdentityKind::Agent);

        c["postern_kind"] = json!("robot");
        let err = verifier.verify(&key.sign(&c, false)).await.unwrap_err();
        assert!(matches!(err, AuthError::Rejected(m) if m.contains("postern_kind")));

        c["postern_kind"] = json!("human");
        c["roles"] = json!(["a", 1]);
        let err = verifier.verify(&key.sign(&c, false)).await.unwrap_err();
        assert!(matches!(err, AuthError::Rejected(m) if m.contains("roles")));

        c["roles"] = json!([]);
        c.as_object_mut().unwrap().remove("email");
        let err = verifier.verify(&key.sign(&c, false)).await.unwrap_err();
        assert!(matches!(err, AuthError::Rejected(m) if m.contains("email")));
    }

    #[tokio::test]
    async fn time_audience_issuer_and_algorithm_checks() {
        let key = ProviderKey::generate(Algorithm::ES256, "k");
        let (verifier, _dir) = file_verifier(&[&key], |_| {});
        let now = crate::gateway::now();

        let mut c = claims("bob");
        c["exp"] = json!(now - 120);
        assert_eq!(
            verifier.verify(&key.sign(&c, true)).await,
            Err(AuthError::Expired)
        );
        c["exp"] = json!(now - 30); // within the 60 s leeway
        assert!(verifier.verify(&key.sign(&c, true)).await.is_ok());

        let mut c = claims("bob");
        c["nbf"] = json!(now + 600);
        assert_eq!(
            verifier.verify(&key.sign(&c, true)).await,
            Err(AuthError::NotYetValid)
        );

        let mut c = claims("bob");
        c["aud"] = json!(["someone-else"]);
        let err = verifier.verify(&key.sign(&c, true)).await.unwrap_err();
        assert!(matches!(err, AuthError::Rejected(m) if m.contains("audience")));
        c["aud"] = json!(["someone-else", AUDIENCE]);
        assert!(verifier.verify(&key.sign(&c, true)).await.is_ok());

        let mut c = claims("bob");
        c["iss"] = json!("https://other.example.com");
        let err = verifier.verify(&key.sign(&c, true)).await.unwrap_err();
        assert!(matches!(err, AuthError::Rejected(m) if m.contains("issuer")));

        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims("bob"),
            &jsonwebtoken::EncodingKey::from_secret(b"shared"),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&hs).await,
            Err(AuthError::Rejected(
                "algorithm HS256 is not accepted".into()
            ))
        );
    }

    #[tokio::test]
    async fn jwks_url_is_cached_and_refreshed_on_unknown_kid_with_rate_limit() {
        let a = ProviderKey::generate(Algorithm::EdDSA, "a");
        let b = ProviderKey::generate(Algorithm::ES256, "b");
        let server = JwksServer::start(jwks(&[&a])).await;
        let mut config = config();
        config.jwks_file = None;
        config.jwks_url = Some(server.url.clone());
        let interval = Duration::from_millis(1500);
        let verifier = OidcVerifier::new(config)
            .unwrap()
            .with_min_refresh_interval(interval);
        assert_eq!(server.hits(), 0, "the key set is loaded lazily");

        for _ in 0..3 {
            verifier
                .verify(&a.sign(&claims("bob"), true))
                .await
                .unwrap();
        }
        assert_eq!(server.hits(), 1, "known kids are served from the cache");

        // The provider rotates in key b. Right after the first load, reloading is rate-limited.
        server.serve(jwks(&[&a, &b]));
        let token_b = b.sign(&claims("bob"), true);
        let err = verifier.verify(&token_b).await.unwrap_err();
        assert!(matches!(err, AuthError::Rejected(m) if m.contains("kid b")));
        assert_eq!(server.hits(), 1);

        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        verifier.verify(&token_b).await.unwrap();
        assert_eq!(server.hits(), 2, "an unknown kid triggers one reload");
        verifier.verify(&token_b).await.unwrap();
        verifier
            .verify(&a.sign(&claims("bob"), true))
            .await
            .unwrap();
        assert_eq!(server.hits(), 2);

        // A flood of made-up kids costs no requests inside the interval.
        let stranger = ProviderKey::generate(Algorithm::EdDSA, "made-up");
        for _ in 0..5 {
            assert!(
                verifier
                    .verify(&stranger.sign(&claims("x"), true))
                    .await
                    .is_err()
            );
        }
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn unreachable_or_broken_jwks_is_unavailable() {
        let key = ProviderKey::generate(Algorithm::EdDSA, "k");
        let token = key.sign(&claims("bob"), true);

        // Nothing listens on this port once the listener is dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = config();
        config.jwks_file = None;
        config.jwks_url = Some(format!("http://127.0.0.1:{port}/jwks"));
        let verifier = OidcVerifier::new(config).unwrap();
        let err = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Unavailable(m) if m.contains("GET http://127.0.0.1")),
            "{err}"
        );
        // Within the interval the failure is reported again without a new attempt.
        assert!(matches!(
            verifier.verify(&token).await,
            Err(AuthError::Unavailable(_))
        ));

        let server = JwksServer::start("<html>oops</html>".into()).await;
        let mut config = self::config();
        config.jwks_file = None;
        config.jwks_url = Some(server.url.clone());
        let verifier = OidcVerifier::new(config).unwrap();
        let err = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Unavailable(m) if m.contains("not a JWKS")),
            "{err}"
        );

        let verifier = OidcVerifier::new(self::config()).unwrap();
        let err = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Unavailable(m) if m.contains("/nonexistent/jwks.json")),
            "{err}"
        );
    }

    #[test]
    fn unusable_keys_in_a_jwks_are_skipped() {
        let key = ProviderKey::generate(Algorithm::EdDSA, "k");
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "weird"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc", "kid": "enc"},
            serde_json::to_value(&key.jwk).unwrap(),
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].common.key_id.as_deref(), Some("k"));
    }
}
