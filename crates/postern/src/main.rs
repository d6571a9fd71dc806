//! `postern`: the identity-aware gateway binary.
//!
//! Every subcommand reads one TOML configuration (`--config`, `$POSTERN_CONFIG`, or
//! `./postern.toml`; without any, built-in defaults). See the README for every key.

mod config;
mod demo;
mod health;
mod recording;
mod serve;
mod tls;
mod token;

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
    /// List and show recorded sessions (not available yet).
    Sessions(NotYet),
    /// Verify a recording offline (not available yet).
    Verify(NotYet),
    /// Re-run a recorded session against a sandbox (not available yet).
    Replay(NotYet),
    /// List, approve and deny held statements (not available yet).
    Approvals(NotYet),
    /// Export a recording as JSON lines or asciicast (not available yet).
    Export(NotYet),
}

/// Arguments of commands that have not landed yet.
#[derive(Debug, clap::Args)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
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
        Command::Sessions(_)
        | Command::Verify(_)
        | Command::Replay(_)
        | Command::Approvals(_)
        | Command::Export(_) => {
            eprintln!("postern: this command is not available yet in this version");
            return Ok(ExitCode::from(2));
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
