//! `postern verify`: check recordings offline, with nothing but their files and the gateway's
//! public key.
//!
//! Given one session's recording it recomputes every event's leaf hash and every signed root
//! and prints a one-line summary (exit 0), or the first bad event, chunk or checkpoint and what
//! that means (exit 1). Given a recordings directory it also checks the manifest logs, which
//! makes a deleted recording visible.

use crate::config::RawConfig;
use crate::sessions::{default_key_path, find_recording, is_session_dir, recordings_dir};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use postern_record::{load_verifying_key, verify_all, verify_session};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `postern verify`
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// What to verify: a session's recording directory; a recordings directory (every recording
    /// and manifest log in it); or a session id (or a unique prefix of one) under the
    /// configured recordings directory.
    #[arg(value_name = "PATH|ID")]
    target: String,
    /// The gateway's public key, SPKI PEM, as in data_dir/keys/gateway.pub (the default).
    #[arg(long, value_name = "PUBKEY")]
    key: Option<PathBuf>,
    /// For a recordings directory: also print one line per recording.
    #[arg(long, short)]
    verbose: bool,
}

/// Runs `postern verify`: exit 0 when everything is intact, 1 when something is not.
pub fn run(args: VerifyArgs, config: &RawConfig) -> Result<ExitCode> {
    let key_path = args.key.clone().unwrap_or_else(|| default_key_path(config));
    if !key_path.is_file() {
        bail!(
            "no public key at {}: pass --key with the gateway's public key \
             (data_dir/keys/gateway.pub, or the output of `postern token public-key`)",
            key_path.display()
        );
    }
    let key = load_verifying_key(&key_path)
        .with_context(|| format!("loading the public key {}", key_path.display()))?;

    let given = Path::new(&args.target);
    let path = if given.exists() {
        if !given.is_dir() {
            bail!(
                "{} is not a directory: give a session's recording directory, a recordings \
                 directory, or a session id",
                given.display()
            );
        }
        given.to_owned()
    } else {
        find_recording(&recordings_dir(config), &args.target)?
    };

    if is_session_dir(&path) {
        match verify_session(&path, &key) {
            Ok(report) => {
                println!("{}", report.summary());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("FAILED: {}: {e}", path.display());
                Ok(ExitCode::FAILURE)
            }
        }
    } else {
        verify_directory(&path, &key, args.verbose)
    }
}

fn verify_directory(
    dir: &Path,
    key: &postern_record::VerifyingKey,
    verbose: bool,
) -> Result<ExitCode> {
    let report = match verify_all(dir, key) {
        Ok(report) => report,
        Err(e) => {
            println!("FAILED: {}: {e}", dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    if verbose {
        for s in &report.sessions {
            match (&s.report, s.open) {
                (Some(r), _) => println!("{}", r.summary()),
                (None, true) => println!("open: session {} (not sealed yet)", s.session_id),
                (None, false) => {}
            }
        }
    }
    let sealed = report
        .sessions
        .iter()
        .filter(|s| s.report.is_some())
        .count();
    let open = report.sessions.iter().filter(|s| s.open).count();
    let events: u64 = report
        .sessions
        .iter()
        .filter_map(|s| s.report.as_ref())
        .map(|r| r.events)
        .sum();
    let logs: Vec<String> = report
        .logs
        .iter()
        .map(|l| format!("{} (size {}, root {})", l.node, l.size, B64.encode(l.root)))
        .collect();
    let logs = if logs.is_empty() {
        "no manifest log".to_owned()
    } else {
        format!(
            "manifest log{} {}",
            if logs.len() == 1 { "" } else { "s" },
            logs.join(", ")
        )
    };
    if report.is_intact() {
        println!(
            "intact: {} — {sealed} sealed recording{} ({events} events), {open} open, {logs}",
            dir.display(),
            if sealed == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &report.problems {
        println!("FAILED: {problem}");
    }
    println!(
        "{} problem{} in {}: {sealed} recording{} intact, {open} open, {logs}",
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" },
        dir.display(),
        if sealed == 1 { "" } else { "s" }
    );
    Ok(ExitCode::FAILURE)
}
