//! Authentication for Postern: who is on the other end of a connection.
//!
//! Two kinds of credential are accepted, both as JWTs sent where a database client sends its
//! password:
//!
//! - **gateway tokens**, issued by the gateway itself ([`TokenIssuer`]) and signed with its
//!   Ed25519 [`GatewayKey`] — the same key that signs recording checkpoints;
//! - **OIDC tokens** from configured identity providers ([`OidcVerifier`]), checked against the
//!   provider's JWKS, which is cached in memory.
//!
//! [`MultiAuthenticator`] implements [`postern_core::Authenticator`] over both, routing on the
//! token's issuer. Every refusal is an [`postern_core::AuthError`] naming the failed check.

#![deny(missing_docs)]

mod gateway;
mod jwt;
mod key;
mod multi;
mod oidc;
#[cfg(test)]
mod testutil;

pub use gateway::{
    DEFAULT_MAX_TTL, GATEWAY_ISSUER, GatewayTokenVerifier, IssueError, TokenIssuer, TokenRequest,
};
pub use key::{GatewayKey, KeyError, load_public_key_pem};
pub use multi::MultiAuthenticator;
pub use oidc::{DEFAULT_MIN_REFRESH, OidcConfig, OidcConfigError, OidcVerifier};
