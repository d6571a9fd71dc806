//! One [`Authenticator`] for every trusted issuer: the token's (unverified) `iss` picks the
//! verifier, which then checks everything, including that `iss` again.

use crate::gateway::{GATEWAY_ISSUER, GatewayTokenVerifier};
use crate::jwt;
use crate::oidc::{OidcConfigError, OidcVerifier};
use postern_core::{AuthError, Authenticator, Identity};

/// The authenticator the gateway's listeners use: gateway tokens plus any configured OIDC
/// providers.
#[derive(Debug)]
pub struct MultiAuthenticator {
    gateway: GatewayTokenVerifier,
    oidc: Vec<OidcVerifier>,
}

impl MultiAuthenticator {
    /// Route tokens between `gateway` and `oidc`; refuses two providers with the same issuer.
    pub fn new(
        gateway: GatewayTokenVerifier,
        oidc: Vec<OidcVerifier>,
    ) -> Result<MultiAuthenticator, OidcConfigError> {
        for (i, v) in oidc.iter().enumerate() {
            if oidc[..i].iter().any(|w| w.issuer() == v.issuer()) {
                return Err(OidcConfigError::DuplicateIssuer(v.issuer().to_owned()));
            }
        }
        Ok(MultiAuthenticator { gateway, oidc })
    }
}

#[async_trait::async_trait]
impl Authenticator for MultiAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let issuer = jwt::unverified_issuer(token)?;
        if issuer == GATEWAY_ISSUER {
            return self.gateway.verify(token);
        }
        match self.oidc.iter().find(|v| v.issuer() == issuer) {
            Some(verifier) => verifier.verify(token).await,
            None => Err(AuthError::Rejected(format!(
                "issuer {} is not trusted",
                jwt::shown(&issuer)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ISSUER, JwksServer, ProviderKey, claims, jwks};
    use crate::{GatewayKey, OidcConfig, TokenIssuer, TokenRequest};
    use jsonwebtoken::Algorithm;
    use postern_core::IdentityKind;
    use std::time::Duration;

    struct Setup {
        auth: MultiAuthenticator,
        issuer: TokenIssuer,
        provider: ProviderKey,
        _server: JwksServer,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(dir.path()).unwrap();
        let provider = ProviderKey::generate(Algorithm::RS256, "rsa-1");
        let server = JwksServer::start(jwks(&[&provider])).await;
        let config: OidcConfig = serde_json::from_value(serde_json::json!({
            "issuer": ISSUER, "audience": crate::testutil::AUDIENCE, "jwks_url": server.url,
        }))
        .unwrap();
        let auth = MultiAuthenticator::new(
            GatewayTokenVerifier::new(&key.verifying_key()),
            vec![OidcVerifier::new(config).unwrap()],
        )
        .unwrap();
        Setup {
            auth,
            issuer: TokenIssuer::new(&key),
            provider,
            _server: server,
        }
    }

    fn request() -> TokenRequest {
        TokenRequest {
            subject: "agent-7".into(),
            groups: vec!["readers".into()],
            kind: IdentityKind::Agent,
            ttl: Duration::from_secs(600),
        }
    }

    #[tokio::test]
    async fn routes_by_issuer() {
        let s = setup().await;
        let gateway = s.issuer.issue(&request()).unwrap();
        let identity = s.auth.authenticate(&gateway).await.unwrap();
        assert_eq!(
            (identity.subject.as_str(), identity.issuer.as_str()),
            ("agent-7", "postern")
        );
        assert_eq!(identity.kind, IdentityKind::Agent);

        let oidc = s.provider.sign(&claims("carol"), true);
        let identity = s.auth.authenticate(&oidc).await.unwrap();
        assert_eq!(
            (identity.subject.as_str(), identity.issuer.as_str()),
            ("carol", ISSUER)
        );
        assert_eq!(identity.kind, IdentityKind::Human);

        let mut c = claims("mallory");
        c["iss"] = "https://evil.example.com".into();
        assert_eq!(
            s.auth.authenticate(&s.provider.sign(&c, true)).await,
            Err(AuthError::Rejected(
                "issuer https://evil.example.com is not trusted".into()
            ))
        );
    }

    #[tokio::test]
    async fn missing_malformed_and_forged() {
        let s = setup().await;
        assert_eq!(s.auth.authenticate("").await, Err(AuthError::Missing));
        assert_eq!(s.auth.authenticate("  ").await, Err(AuthError::Missing));
        for garbage in ["hunter2", "a.b.c", "e30.e30.e30"] {
            assert!(
                matches!(
                    s.auth.authenticate(garbage).await,
                    Err(AuthError::Malformed(_))
                ),
                "{garbage}"
            );
        }

        // A gateway token whose payload was edited, signature kept.
        let token = s.issuer.issue(&request()).unwrap();
        let mut c = claims("root");
        c["iss"] = "postern".into();
        c["aud"] = "postern".into();
        c["kind"] = "human".into();
        c["jti"] = "x".into();
        let forged = crate::gateway::tests::replace_part(&token, 1, &c);
        let err = s.auth.authenticate(&forged).await.unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        // Messages name the check but never carry the credential.
        let signature = token.rsplit('.').next().unwrap();
        assert!(!err.to_string().contains(signature));
    }

    #[test]
    fn duplicate_issuers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(dir.path()).unwrap();
        let config: OidcConfig = serde_json::from_value(serde_json::json!({
            "issuer": ISSUER, "audience": "a", "jwks_file": "/dev/null",
        }))
        .unwrap();
        let result = MultiAuthenticator::new(
            GatewayTokenVerifier::new(&key.verifying_key()),
            vec![
                OidcVerifier::new(config.clone()).unwrap(),
                OidcVerifier::new(config).unwrap(),
            ],
        );
        assert!(matches!(result, Err(OidcConfigError::DuplicateIssuer(i)) if i == ISSUER));
    }
}
