//! `postern`: the identity-aware gateway binary.
//!
//! Every subcommand reads one TOML configuration (`--config`, `$POSTERN_CONFIG`, or
//! `./postern.toml`; without any, built-in defaults). See the README for every key.

mod approvals;
mod approvals_cli;
mod audit_log;
mod config;
mod demo;
mod export;
mod http;
mod mcp;
mod recording;
mod replay;
mod serve;
mod sessions;
mod tls;
mod token;
mod verify;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{LogFormat, RawConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Identity-aware gateway for PostgreSQL: verified identities, in-line enforcement, recordings.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about, propagate_version = true)]
struct Cli {
    /// The configuration file (default: $POSTERN_CONFIG, else ./postern.toml if present).
    #[arg(long, global = true, env = "POSTERN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway in the foreground until SIGINT or SIGTERM.
    Serve,
    /// Start a throwaway PostgreSQL with sample data and a gateway on it, and print how to connect.
    Demo(demo::DemoArgs),
    /// Issue and inspect gateway tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// List sessions and show a recorded session's timeline.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Verify recordings offline with the gateway's public key.
    Verify(verify::VerifyArgs),
    /// Re-run a recorded session's statements on a sandbox database and compare the results.
    Replay(replay::ReplayArgs),
    /// List, approve and deny statements held for approval.
    #[command(subcommand)]
    Approvals(approvals_cli::ApprovalsCommand),
    /// Export a recording as JSON lines or asciicast.
    Export(export::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    match cli.command {
        Command::Serve => {
            let config = load_config(cli.config.as_deref())?;
            init_logging(config.log.format, &config.log.level);
            runtime()?.block_on(serve::run(&config))?;
        }
        Command::Demo(args) => {
            init_logging(LogFormat::Text, "warn");
            runtime()?.block_on(demo::run(args))?;
        }
        Command::Token(cmd) => {
            let config = load_config(cli.config.as_deref())?;
            token::run(cmd, &config)?;
        }
        Command::Sessions(cmd) => return sessions::run(cmd, &load_config(cli.config.as_deref())?),
        Command::Verify(args) => return verify::run(args, &load_config(cli.config.as_deref())?),
        Command::Replay(args) => return replay::run(args, &load_config(cli.config.as_deref())?),
        Command::Export(args) => return export::run(args, &load_config(cli.config.as_deref())?),
        Command::Approvals(cmd) => {
            return approvals_cli::run(cmd, &load_config(cli.config.as_deref())?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the configuration named on the command line, or `./postern.toml`, or the defaults.
fn load_config(path: Option<&Path>) -> Result<RawConfig> {
    match path {
        Some(path) => Ok(RawConfig::load(path)?),
        None if Path::new("postern.toml").exists() => {
            Ok(RawConfig::load(Path::new("postern.toml"))?)
        }
        None => Ok(RawConfig::parse("", Path::new("(defaults)"))?),
    }
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    // The MCP SDK logs every stateless request at info; it speaks up only when asked by name.
    let level = if level.contains("rmcp") {
        level.to_owned()
    } else {
        format!("{level},rmcp=warn")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
