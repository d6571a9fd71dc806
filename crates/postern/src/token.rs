//! `postern token`: issue gateway tokens from the command line.

use crate::config::RawConfig;
use anyhow::{Context, Result};
use postern_auth::{GatewayKey, TokenIssuer, TokenRequest};
use postern_core::IdentityKind;
use std::time::Duration;

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new token signed with the gateway's key (created in data_dir if absent).
    Issue(IssueArgs),
    /// Print the gateway's public key (PEM), for `postern verify --key` and other verifiers.
    PublicKey,
}

/// `postern token issue`
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The identity's name; clients connect with it as `user`.
    #[arg(long)]
    subject: String,
    /// A group the identity belongs to (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// What sort of caller holds the token.
    #[arg(long, default_value = "human", value_parser = parse_kind)]
    kind: IdentityKind,
    /// How long the token is valid, e.g. 15m, 1h, 8h (at most auth.token_max_ttl).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

fn parse_kind(s: &str) -> Result<IdentityKind, String> {
    s.parse()
}

/// Runs a token subcommand, printing to stdout.
pub fn run(cmd: TokenCommand, config: &RawConfig) -> Result<()> {
    let key = GatewayKey::load_or_create(&config.data_dir)
        .with_context(|| format!("loading the gateway key in {}", config.data_dir.display()))?;
    match cmd {
        TokenCommand::Issue(args) => {
            let issuer = TokenIssuer::new(&key).with_max_ttl(config.auth.token_max_ttl);
            let token = issuer.issue(&TokenRequest {
                subject: args.subject,
                groups: args.groups,
                kind: args.kind,
                ttl: args.ttl,
            })?;
            println!("{token}");
        }
        TokenCommand::PublicKey => print!("{}", key.public_key_pem()),
    }
    Ok(())
}
