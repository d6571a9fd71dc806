//! JWT plumbing shared by the gateway and OIDC verifiers.
//!
//! The unverified header and payload are read only to *route* a token (its `iss`) and to *pick*
//! a key (`alg`, `kid`); nothing read here is trusted until `jsonwebtoken::decode` has checked
//! the signature. Errors become [`AuthError`]s whose messages name the failed check and never
//! include the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::{Error, ErrorKind};
use postern_core::AuthError;
use serde::Deserialize;
use std::str::FromStr;

const NOT_A_JWT: &str = "expected a JWT (three base64url parts separated by dots)";

/// The header fields needed before verification.
#[derive(Debug, Deserialize)]
pub(crate) struct UnverifiedHeader {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// Decode one base64url JSON part of a compact JWT.
fn part<T: for<'de> Deserialize<'de>>(
    token: &str,
    index: usize,
    what: &str,
) -> Result<T, AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(AuthError::Malformed(NOT_A_JWT.into()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[index])
        .map_err(|_| AuthError::Malformed(NOT_A_JWT.into()))?;
    serde_json::from_slice(&bytes).map_err(|_| {
        AuthError::Malformed(format!(
            "the {what} is not a JSON object of the expected form"
        ))
    })
}

/// The header, unverified.
pub(crate) fn header(token: &str) -> Result<UnverifiedHeader, AuthError> {
    part(token, 0, "header")
}

/// The `iss` claim, unverified: used only to choose which verifier checks the token.
pub(crate) fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<serde_json::Value>,
    }
    match part::<Iss>(token, 1, "payload")?.iss {
        Some(serde_json::Value::String(iss)) => Ok(iss),
        Some(_) => Err(AuthError::Malformed("the iss claim is not a string".into())),
        None => Err(AuthError::Malformed(
            "the token has no iss (issuer) claim".into(),
        )),
    }
}

/// The header's `alg` if it is one of `allowed`; anything else (HS*, `none`, unknown names) is
/// refused before any key is looked at.
pub(crate) fn accepted_alg(alg: &str, allowed: &[Algorithm]) -> Result<Algorithm, AuthError> {
    Algorithm::from_str(alg)
        .ok()
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| AuthError::Rejected(format!("algorithm {} is not accepted", shown(alg))))
}

/// A caller-supplied value made safe to put in a message: short and printable.
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX && value.chars().all(|c| c.is_ascii_graphic()) {
        value.to_owned()
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!(
            "{head:?}{}",
            if head.len() < value.len() { "…" } else { "" }
        )
    }
}

/// Map a `jsonwebtoken` failure to the check that failed.
pub(crate) fn auth_error(err: Error) -> AuthError {
    match err.into_kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => {
            AuthError::Rejected("the token is meant for another audience (aud)".into())
        }
        ErrorKind::InvalidIssuer => {
            AuthError::Rejected("the token is from another issuer (iss)".into())
        }
        ErrorKind::InvalidSubject => {
            AuthError::Rejected("the token's subject is not accepted".into())
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => {
            AuthError::Rejected("the token's algorithm does not match the signing key".into())
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::Malformed(format!("the required {claim} claim is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Malformed(format!("the {claim} claim has the wrong type"))
        }
        ErrorKind::Json(e) => {
            AuthError::Malformed(format!("the claims are not of the expected form: {e}"))
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed(NOT_A_JWT.into())
        }
        // Key problems are the issuer's (or our configuration's), not the caller's.
        other => AuthError::Unavailable(format!("the signing key cannot be used: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_keeps_short_values_and_tames_long_ones() {
        assert_eq!(shown("HS256"), "HS256");
        assert_eq!(shown("a b"), "\"a b\"");
        let long = "x".repeat(100);
        assert!(shown(&long).len() < 80);
    }

    #[test]
    fn non_jwts_are_malformed() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.x"] {
            assert!(
                matches!(header(token), Err(AuthError::Malformed(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn none_and_hmac_are_refused_by_name() {
        let allowed = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
        assert_eq!(
            accepted_alg("none", &allowed),
            Err(AuthError::Rejected("algorithm none is not accepted".into()))
        );
        assert!(accepted_alg("HS256", &allowed).is_err());
        assert_eq!(accepted_alg("ES256", &allowed), Ok(Algorithm::ES256));
    }
}
