//! Refusals: every way a session can be turned away, and the one place each becomes the
//! ErrorResponse (and SQLSTATE) a PostgreSQL client understands.

use crate::frame::{self, FrameError};
use bytes::BytesMut;
use postern_core::AuthError;

/// SQLSTATE codes the gateway itself raises.
pub mod sqlstate {
    /// invalid_password: missing, malformed, expired or forged token.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// invalid_authorization_specification: identity may not open the target; TLS required.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// invalid_catalog_name: no such target.
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// connection_failure: the target could not be reached.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// protocol_violation: malformed or oversized frames.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// too_many_connections.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// insufficient_privilege: a command refused by policy.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// io_error: the recording could not be written.
    pub const IO_ERROR: &str = "58030";
    /// admin_shutdown: the gateway is shutting down.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
}

/// Why a session was refused or ended by the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token did not verify.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The connection's `user` is not the token's subject.
    #[error("user \"{user}\" does not match the token's subject \"{subject}\"")]
    SubjectMismatch {
        /// The `user` startup parameter.
        user: String,
        /// The verified subject.
        subject: String,
    },
    /// The listener requires TLS and the client did not ask for it.
    #[error("this gateway requires TLS: connect with sslmode=require (or stronger)")]
    TlsRequired,
    /// The identity may not open the target.
    #[error("\"{subject}\" is not allowed to connect to target \"{target}\"")]
    AccessDenied {
        /// The verified subject.
        subject: String,
        /// The target asked for.
        target: String,
    },
    /// No target has that name.
    #[error("target \"{0}\" does not exist")]
    UnknownTarget(String),
    /// The target could not be reached or refused the gateway.
    #[error("target \"{target}\" is unavailable: {reason}")]
    Upstream {
        /// The target's name.
        target: String,
        /// What went wrong, without secrets.
        reason: String,
    },
    /// A message broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client asked for something the gateway does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The gateway is at its connection limit.
    #[error("the gateway has too many connections; try again later")]
    TooManyConnections,
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Shutdown,
    /// An administrator ended the session.
    #[error("the session was {0}")]
    Terminated(crate::live::Termination),
    /// The session's recording cannot be written, so nothing more is forwarded.
    #[error(
        "the session recording cannot be written ({0}); the gateway stopped forwarding this session"
    )]
    Recording(String),
    /// Masks apply to the session but could not be set up on the target: nothing is
    /// forwarded unmasked.
    #[error(
        "masking could not be set up for this session ({0}); the session was refused rather than run unmasked"
    )]
    Masking(String),
}

impl From<FrameError> for Refusal {
    fn from(e: FrameError) -> Self {
        Refusal::Protocol(e.to_string())
    }
}

impl Refusal {
    /// The SQLSTATE the client sees.
    pub fn sqlstate(&self) -> &'static str {
        use sqlstate::*;
        match self {
            Refusal::Auth(_) | Refusal::SubjectMismatch { .. } => INVALID_PASSWORD,
            Refusal::TlsRequired | Refusal::AccessDenied { .. } => INVALID_AUTHORIZATION,
            Refusal::UnknownTarget(_) => INVALID_CATALOG_NAME,
            Refusal::Upstream { .. } => CONNECTION_FAILURE,
            Refusal::Protocol(_) => PROTOCOL_VIOLATION,
            Refusal::Unsupported(_) => FEATURE_NOT_SUPPORTED,
            Refusal::TooManyConnections => TOO_MANY_CONNECTIONS,
            Refusal::Shutdown | Refusal::Terminated(_) => ADMIN_SHUTDOWN,
            Refusal::Recording(_) | Refusal::Masking(_) => IO_ERROR,
        }
    }

    /// Appends the FATAL ErrorResponse for this refusal.
    pub fn encode(&self, out: &mut BytesMut) {
        let hint = match self {
            Refusal::Auth(_) => Some(
                "connect with user = the token's subject and password = a token from `postern token issue`",
            ),
            Refusal::UnknownTarget(_) => {
                Some("dbname must be the name of a target configured on the gateway")
            }
            _ => None,
        };
        frame::error_response(out, "FATAL", self.sqlstate(), &self.to_string(), None, hint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_documented_sqlstate() {
        let cases: Vec<(Refusal, &str)> = vec![
            (Refusal::Auth(AuthError::Expired), "28P01"),
            (
                Refusal::SubjectMismatch {
                    user: "a".into(),
                    subject: "b".into(),
                },
                "28P01",
            ),
            (
                Refusal::AccessDenied {
                    subject: "a".into(),
                    target: "t".into(),
                },
                "28000",
            ),
            (Refusal::UnknownTarget("x".into()), "3D000"),
            (
                Refusal::Upstream {
                    target: "t".into(),
                    reason: "down".into(),
                },
                "08006",
            ),
            (Refusal::from(FrameError::BadLength(1)), "08P01"),
        ];
        for (refusal, code) in cases {
            let mut out = BytesMut::new();
            refusal.encode(&mut out);
            let fields = frame::ErrorFields::decode(frame::body(&out)).unwrap();
            assert_eq!(fields.code, code, "{refusal}");
            assert_eq!(fields.severity, "FATAL");
        }
    }
}
