//! Wiring of the MCP endpoint (crates/mcp): the gateway's authenticator, policy, store and
//! targets, and the way back into its own PostgreSQL listener with a short-lived token minted
//! for each caller.

use crate::config::RawConfig;
use anyhow::{Context, Result};
use postern_auth::{GatewayKey, TokenIssuer, TokenRequest};
use postern_core::{Identity, Target};
use postern_mcp::{Loopback, McpState, MintToken};
use postern_pg::{PgTarget, Seams, UpstreamTlsMode};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a loopback credential lives: long enough to log in, never longer than the caller's.
const LOOPBACK_TOKEN_TTL: Duration = Duration::from_secs(120);

/// What the endpoint needs, taken before the engine owns the seams; `None` when it is off.
pub struct Wiring(Option<Parts>);

struct Parts {
    state: McpState,
    require_tls: bool,
}

impl Wiring {
    /// The endpoint's parts for `config` (off without an HTTP listener or with `[mcp]
    /// enabled = false`).
    pub fn new(
        config: &RawConfig,
        key: &GatewayKey,
        seams: &Seams,
        targets: &[PgTarget],
    ) -> Result<Wiring> {
        if config.listen.http.is_none() || !config.mcp.enabled {
            return Ok(Wiring(None));
        }
        let state = McpState {
            authenticator: seams.authenticator.clone(),
            policy: seams.policy.clone(),
            store: seams.store.clone(),
            targets: targets
                .iter()
                .map(|t| t.target.clone())
                .collect::<Vec<Target>>(),
            loopback: Loopback {
                addr: config.listen.postgres,
                tls: None,
                mint: minter(TokenIssuer::new(key).with_max_ttl(config.auth.token_max_ttl)),
                connect_timeout: config.limits.connect_timeout + config.limits.handshake_timeout,
            },
            max_rows: config.mcp.max_rows,
            allowed_hosts: config.mcp.allowed_hosts.clone(),
            shutdown: CancellationToken::new(),
        };
        Ok(Wiring(Some(Parts {
            state,
            require_tls: config.listen.require_tls(),
        })))
    }

    /// The `/mcp` routes (none when the endpoint is off), reaching the PostgreSQL listener
    /// bound at `postgres`, until `shutdown`.
    pub fn router(
        self,
        postgres: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<axum::Router> {
        let Some(Parts {
            mut state,
            require_tls,
        }) = self.0
        else {
            return Ok(axum::Router::new());
        };
        state.loopback.addr = loopback(postgres);
        if require_tls {
            let tls = postern_pg::client_tls_config(
                UpstreamTlsMode::Require,
                rustls::RootCertStore::empty(),
            )
            .context("building the MCP endpoint's loopback TLS settings")?;
            state.loopback.tls = tls;
        }
        state.shutdown = shutdown.clone();
        Ok(postern_mcp::router(state))
    }
}

/// Where to reach a listener bound at `bound` from this host.
fn loopback(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// Mints gateway tokens for callers: same subject, groups and kind, valid for
/// [`LOOPBACK_TOKEN_TTL`] or until the caller's own credential expires, whichever is first.
fn minter(issuer: TokenIssuer) -> MintToken {
    Arc::new(move |identity: &Identity| {
        let now = postern_core::now_ms() / 1000;
        let left = u64::try_from(identity.expires_at.saturating_sub(now)).unwrap_or(0);
        let ttl = LOOPBACK_TOKEN_TTL.min(Duration::from_secs(left));
        if ttl < Duration::from_secs(1) {
            return Err("your token expires now: get a new one".into());
        }
        issuer
            .issue(&TokenRequest {
                subject: identity.subject.clone(),
                groups: identity.groups.clone(),
                kind: identity.kind,
                ttl,
            })
            .or_else(|e| match e {
                // token_max_ttl shorter than the loopback lifetime: as long as allowed.
                postern_auth::IssueError::TtlTooLong { max, .. } if max > 0 => {
                    issuer.issue(&TokenRequest {
                        subject: identity.subject.clone(),
                        groups: identity.groups.clone(),
                        kind: identity.kind,
                        ttl: Duration::from_secs(max),
                    })
                }
                other => Err(other),
            })
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_core::IdentityKind;

    #[test]
    fn listeners_on_every_address_are_reached_on_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(loopback(addr("0.0.0.0:5432")), addr("127.0.0.1:5432"));
        assert_eq!(loopback(addr("[::]:5432")), addr("[::1]:5432"));
        assert_eq!(loopback(addr("10.1.2.3:5432")), addr("10.1.2.3:5432"));
    }

    #[test]
    fn minted_tokens_never_outlive_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(dir.path()).unwrap();
        let verifier = postern_auth::GatewayTokenVerifier::new(&key.verifying_key());
        let mint = minter(TokenIssuer::new(&key));
        let now = postern_core::now_ms() / 1000;
        let caller = Identity {
            subject: "agent-7".into(),
            groups: vec!["agents".into()],
            kind: IdentityKind::Agent,
            issuer: "https://idp.example.com/".into(),
            expires_at: now + 3600,
        };
        let minted = verifier.verify(&mint(&caller).unwrap()).unwrap();
        assert_eq!(minted.subject, "agent-7");
        assert_eq!(minted.groups, ["agents"]);
        assert_eq!(minted.kind, IdentityKind::Agent);
        assert!(
            minted.expires_at <= now + 121,
            "{}",
            minted.expires_at - now
        );
        let soon = Identity {
            expires_at: now + 30,
            ..caller.clone()
        };
        let minted = verifier.verify(&mint(&soon).unwrap()).unwrap();
        assert!(minted.expires_at <= now + 31);
        let expired = Identity {
            expires_at: now,
            ..caller
        };
        assert!(mint(&expired).unwrap_err().contains("expires"));
    }
}
