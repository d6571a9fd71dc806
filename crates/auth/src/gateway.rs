//! Gateway tokens: short-lived JWTs the gateway issues to its own callers (`postern token issue`)
//! and later verifies, signed with the [`GatewayKey`] (EdDSA / Ed25519).
//!
//! Claims: `iss` = `aud` = `"postern"`, `sub`, `groups`, `kind`, `iat`, `nbf`, `exp` and a random
//! `jti`. All are required on verification.

use crate::jwt;
use crate::key::GatewayKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use postern_core::{AuthError, Identity, IdentityKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `iss` and `aud` of every gateway token, and the [`Identity::issuer`] of its holder.
pub const GATEWAY_ISSUER: &str = "postern";

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The longest lifetime [`TokenIssuer`] grants unless configured otherwise.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The claims of a gateway token, as signed.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    groups: Vec<String>,
    kind: IdentityKind,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

/// What a token should say about its holder and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The holder's name (`sub`); must not be empty.
    pub subject: String,
    /// Groups for target access rules and policy; empty names are refused.
    pub groups: Vec<String>,
    /// Human, agent or service.
    pub kind: IdentityKind,
    /// Lifetime: at least one second and at most the issuer's maximum.
    pub ttl: Duration,
}

/// Why a token was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The subject is empty or blank.
    #[error("the subject must not be empty")]
    EmptySubject,
    /// A group name is empty or blank.
    #[error("group names must not be empty")]
    EmptyGroup,
    /// The ttl is under one second.
    #[error("the ttl must be at least one second")]
    TtlTooShort,
    /// The ttl exceeds the configured maximum.
    #[error("the ttl of {ttl}s exceeds the maximum of {max}s")]
    TtlTooLong {
        /// Requested lifetime in seconds.
        ttl: u64,
        /// Allowed maximum in seconds.
        max: u64,
    },
    /// Signing failed (should not happen with a valid key).
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Issues gateway tokens; used by `postern token issue` and anything else that mints
/// credentials for callers.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    key: EncodingKey,
    max_ttl: Duration,
}

impl TokenIssuer {
    /// An issuer signing with `key`, granting at most [`DEFAULT_MAX_TTL`].
    pub fn new(key: &GatewayKey) -> TokenIssuer {
        TokenIssuer {
            key: EncodingKey::from_ed_der(&key.pkcs8_der()),
            max_ttl: DEFAULT_MAX_TTL,
        }
    }

    /// Change the longest lifetime this issuer grants (from config).
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> TokenIssuer {
        self.max_ttl = max_ttl;
        self
    }

    /// Issue a signed token for `request`, valid from now for `request.ttl`.
    pub fn issue(&self, request: &TokenRequest) -> Result<String, IssueError> {
        self.issue_at(request, now())
    }

    /// Issue as if the clock read `now` (Unix seconds); lets tests mint expired tokens.
    fn issue_at(&self, request: &TokenRequest, now: i64) -> Result<String, IssueError> {
        if request.subject.trim().is_empty() {
            return Err(IssueError::EmptySubject);
        }
        if request.groups.iter().any(|g| g.trim().is_empty()) {
            return Err(IssueError::EmptyGroup);
        }
        let ttl = request.ttl.as_secs();
        if ttl == 0 {
            return Err(IssueError::TtlTooShort);
        }
        if request.ttl > self.max_ttl {
            return Err(IssueError::TtlTooLong {
                ttl,
                max: self.max_ttl.as_secs(),
            });
        }
        let claims = Claims {
            iss: GATEWAY_ISSUER.into(),
            aud: GATEWAY_ISSUER.into(),
            sub: request.subject.clone(),
            groups: request.groups.clone(),
            kind: request.kind,
            iat: now,
            nbf: now,
            exp: now + ttl as i64,
            jti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|e| IssueError::Sign(e.to_string()))
    }
}

/// Verifies gateway tokens against the gateway's public key.
#[derive(Clone, Debug)]
pub struct GatewayTokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl GatewayTokenVerifier {
    /// A verifier trusting `key` (the gateway's own, or one loaded from `gateway.pub`).
    pub fn new(key: &VerifyingKey) -> GatewayTokenVerifier {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[GATEWAY_ISSUER]);
        validation.set_audience(&[GATEWAY_ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        GatewayTokenVerifier {
            // For Ed25519 the "DER" jsonwebtoken wants is the raw 32-byte public key.
            key: DecodingKey::from_ed_der(key.as_bytes()),
            validation,
        }
    }

    /// Check signature, algorithm (EdDSA only), issuer, audience and validity window.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        jwt::accepted_alg(&jwt::header(token)?.alg, &[Algorithm::EdDSA])?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(jwt::auth_error)?
            .claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Malformed("the sub claim is empty".into()));
        }
        Ok(Identity {
            subject: claims.sub,
            groups: claims.groups,
            kind: claims.kind,
            issuer: GATEWAY_ISSUER.into(),
            expires_at: claims.exp,
        })
    }
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn key() -> GatewayKey {
        let dir = tempfile::tempdir().unwrap();
        GatewayKey::load_or_create(dir.path()).unwrap()
    }

    fn request(subject: &str, ttl: Duration) -> TokenRequest {
        TokenRequest {
            subject: subject.into(),
            groups: vec!["dba".into(), "oncall".into()],
            kind: IdentityKind::Agent,
            ttl,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Re-encode one part of a token (0 = header, 1 = payload) without re-signing.
    pub(crate) fn replace_part(token: &str, index: usize, json: &serde_json::Value) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[index] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap());
        parts.join(".")
    }

    fn decode_part(token: &str, index: usize) -> serde_json::Value {
        let part = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn issue_and_verify_round_trip() {
        let key = key();
        let token = TokenIssuer::new(&key)
            .issue(&request("alice", HOUR))
            .unwrap();
        let identity = GatewayTokenVerifier::new(&key.verifying_key())
            .verify(&token)
            .unwrap();
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.groups, ["dba", "oncall"]);
        assert_eq!(identity.kind, IdentityKind::Agent);
        assert_eq!(identity.issuer, "postern");
        assert!((identity.expires_at - now() - 3600).abs() <= 2);

        let claims = decode_part(&token, 1);
        assert_eq!(claims["aud"], "postern");
        assert_eq!(claims["kind"], "agent");
        assert!(claims["jti"].as_str().unwrap().len() >= 16);
        assert_eq!(decode_part(&token, 0)["alg"], "EdDSA");
    }

    #[test]
    fn issue_refuses_bad_requests() {
        let issuer = TokenIssuer::new(&key()).with_max_ttl(HOUR);
        assert_eq!(
            issuer.issue(&request(" ", HOUR)),
            Err(IssueError::EmptySubject)
        );
        assert_eq!(
            issuer.issue(&request("a", Duration::ZERO)),
            Err(IssueError::TtlTooShort)
        );
        assert_eq!(
            issuer.issue(&request("a", HOUR * 2)),
            Err(IssueError::TtlTooLong {
                ttl: 7200,
                max: 3600
            })
        );
        let mut bad_group = request("a", HOUR);
        bad_group.groups.push(String::new());
        assert_eq!(issuer.issue(&bad_group), Err(IssueError::EmptyGroup));
        assert!(
            TokenIssuer::new(&key())
                .issue(&request("a", DEFAULT_MAX_TTL))
                .is_ok()
        );
    }

    #[test]
    fn expired_and_future_tokens() {
        let key = key();
        let issuer = TokenIssuer::new(&key);
        let verifier = GatewayTokenVerifier::new(&key.verifying_key());
        let expired = issuer
            .issue_at(&request("a", HOUR), now() - 2 * 3600)
            .unwrap();
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));
        // Within the 30 s leeway.
        let barely = issuer
            .issue_at(&request("a", Duration::from_secs(60)), now() - 80)
            .unwrap();
        assert!(verifier.verify(&barely).is_ok());
        let future = issuer.issue_at(&request("a", HOUR), now() + 600).unwrap();
        assert_eq!(verifier.verify(&future), Err(AuthError::NotYetValid));
    }

    #[test]
    fn other_keys_and_tampering_are_bad_signatures() {
        let key = key();
        let verifier = GatewayTokenVerifier::new(&key.verifying_key());
        let foreign = TokenIssuer::new(&self::key())
            .issue(&request("a", HOUR))
            .unwrap();
        assert_eq!(verifier.verify(&foreign), Err(AuthError::BadSignature));

        let token = TokenIssuer::new(&key)
            .issue(&request("alice", HOUR))
            .unwrap();
        let mut claims = decode_part(&token, 1);
        claims["groups"] = serde_json::json!(["admin"]);
        let tampered = replace_part(&token, 1, &claims);
        assert_eq!(verifier.verify(&tampered), Err(AuthError::BadSignature));
        // An expired forgery is still reported as a forgery.
        claims["exp"] = serde_json::json!(1);
        let tampered = replace_part(&token, 1, &claims);
        assert_eq!(verifier.verify(&tampered), Err(AuthError::BadSignature));
    }

    #[test]
    fn wrong_audience_or_algorithm_is_rejected() {
        let key = key();
        let verifier = GatewayTokenVerifier::new(&key.verifying_key());
        // A correctly signed token for another audience.
        let claims = serde_json::json!({
            "iss": "postern", "aud": "elsewhere", "sub": "a", "groups": [], "kind": "human",
            "iat": now(), "nbf": now(), "exp": now() + 60, "jti": "x",
        });
        let encoding = EncodingKey::from_ed_der(&key.pkcs8_der());
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &encoding).unwrap();
        assert!(
            matches!(verifier.verify(&token), Err(AuthError::Rejected(m)) if m.contains("audience"))
        );

        // HS256 signed with the public key bytes (classic algorithm confusion).
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.verifying_key().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&hs),
            Err(AuthError::Rejected(
                "algorithm HS256 is not accepted".into()
            ))
        );

        let token = TokenIssuer::new(&key).issue(&request("a", HOUR)).unwrap();
        let none = replace_part(&token, 0, &serde_json::json!({"alg": "none"}));
        assert_eq!(
            verifier.verify(&none),
            Err(AuthError::Rejected("algorithm none is not accepted".into()))
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let verifier = GatewayTokenVerifier::new(&key().verifying_key());
        for token in ["garbage", "a.b.c", "e30.e30.e30"] {
            assert!(
                matches!(verifier.verify(token), Err(AuthError::Malformed(_))),
                "{token}: {:?}",
                verifier.verify(token)
            );
        }
    }
}
