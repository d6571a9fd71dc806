//! `postern approvals`: list held statements and decide them, as the identity of a token.
//!
//! Decisions go straight to the metadata store (`data_dir/postern.db`), which every gateway node
//! holding a statement polls, so the CLI works with or without a running gateway on this host.

use crate::approvals::{DecideError, Verdict, decide};
use crate::config::RawConfig;
use crate::sessions::{one_line, rfc3339_ms};
use anyhow::{Context, Result, bail};
use postern_auth::{GatewayTokenVerifier, load_public_key_pem};
use postern_core::approval::now_ms;
use postern_core::{ApprovalFilter, ApprovalRow, ApprovalState, Authenticator, Identity, Store};
use postern_store::SqliteStore;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `postern approvals` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List approval requests, newest first.
    List(ListArgs),
    /// Approve a held statement: it runs, and with --for, later statements of the same identity,
    /// target and rule pass without a new request until the window ends.
    Approve(ApproveArgs),
    /// Deny a held statement: the client gets an error (SQLSTATE 42501) with the reason.
    Deny(DenyArgs),
}

/// `postern approvals list`
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only approvals in this state: pending, approved, denied, expired or all.
    #[arg(long, default_value = "all", value_parser = parse_state_filter)]
    state: StateFilter,
    /// Only approvals requested by this identity (its subject).
    #[arg(long, value_name = "SUBJECT")]
    identity: Option<String>,
    /// Only approvals for this target.
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// At most this many approvals (1 to 10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Print a JSON array of objects instead of a table.
    #[arg(long)]
    json: bool,
}

/// The identity that decides.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The token of the identity deciding (a member of the rule's approvers, never the
    /// requester); default: $POSTERN_TOKEN.
    #[arg(long, env = "POSTERN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `postern approvals approve`
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The approval id (APR-...).
    id: String,
    /// Open a JIT window this long (`30m`, `2h`): later matching statements of the same
    /// identity, target and rule pass until it ends.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_window)]
    window: Option<Duration>,
    #[command(flatten)]
    token: TokenArgs,
}

/// `postern approvals deny`
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// The approval id (APR-...).
    id: String,
    /// Why, shown to the requester in the error.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
}

/// `--state`: one state, or all of them.
#[derive(Debug, Clone, Copy)]
pub struct StateFilter(Option<ApprovalState>);

fn parse_state_filter(s: &str) -> Result<StateFilter, String> {
    match s {
        "all" => Ok(StateFilter(None)),
        other => other
            .parse()
            .map(|state| StateFilter(Some(state)))
            .map_err(|e: String| format!("{e}, or all")),
    }
}

pub fn parse_window(s: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if window < Duration::from_secs(1) {
        return Err("a window lasts at least 1s".into());
    }
    if window > Duration::from_secs(366 * 24 * 3600) {
        return Err("a window lasts at most a year".into());
    }
    Ok(window)
}

/// Runs an `approvals` subcommand.
pub fn run(cmd: ApprovalsCommand, config: &RawConfig) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match cmd {
            ApprovalsCommand::List(args) => list(args, config).await,
            ApprovalsCommand::Approve(args) => {
                let verdict = Verdict::Approve {
                    window: args.window,
                };
                decide_as_token(config, &args.id, &args.token, verdict).await
            }
            ApprovalsCommand::Deny(args) => {
                let reason = args.reason.filter(|r| !r.trim().is_empty());
                decide_as_token(config, &args.id, &args.token, Verdict::Deny { reason }).await
            }
        }
    })
}

/// Opens the gateway's metadata store, which must exist (a gateway has run with this config).
async fn open_store(config: &RawConfig) -> Result<SqliteStore> {
    let db = config.data_dir.join("postern.db");
    if !db.is_file() {
        bail!(
            "no approvals store at {}: no gateway has run with data_dir {} (is --config the \
             gateway's config?)",
            db.display(),
            config.data_dir.display()
        );
    }
    SqliteStore::open(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))
}

async fn list(args: ListArgs, config: &RawConfig) -> Result<ExitCode> {
    let store = open_store(config).await?;
    let rows = store
        .list_approvals(&ApprovalFilter {
            state: args.state.0,
            subject: args.identity,
            target: args.target,
            session_id: None,
            limit: Some(args.limit),
        })
        .await
        .context("listing approvals")?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    if args.json {
        let items: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
        serde_json::to_writer_pretty(&mut out, &items)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One approval as `approvals list --json` prints it (and the REST API shows it).
pub fn row_json(row: &ApprovalRow) -> serde_json::Value {
    json!({
        "id": row.id,
        "state": row.state,
        "subject": row.subject,
        "kind": row.identity_kind,
        "groups": row.groups,
        "target": row.target,
        "rule": row.rule,
        "statement": row.statement,
        "session_id": row.session_id,
        "approvers": row.approvers,
        "requested_at": rfc3339_ms(row.requested_at_ms),
        "expires_at": rfc3339_ms(row.expires_at_ms),
        "decided_by": row.decided_by,
        "decided_at": row.decided_at_ms.map(rfc3339_ms),
        "reason": row.reason,
        "window_until": row.window_until_ms.map(rfc3339_ms),
        "used_at": row.used_at_ms.map(rfc3339_ms),
    })
}

fn write_table(out: &mut impl Write, rows: &[ApprovalRow]) -> Result<()> {
    if rows.is_empty() {
        writeln!(out, "no approvals")?;
        return Ok(());
    }
    let now = now_ms();
    let header = [
        "ID",
        "STATE",
        "REQUESTED (UTC)",
        "SUBJECT",
        "TARGET",
        "RULE",
        "DECISION",
        "STATEMENT",
    ];
    let lines: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.state.to_string(),
                short_time(r.requested_at_ms),
                r.subject.clone(),
                r.target.clone(),
                r.rule.clone(),
                decision_cell(r, now),
                one_line(&r.statement, 60),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut print = |cells: &[String]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    print(&header.map(str::to_owned))?;
    for line in &lines {
        print(line)?;
    }
    Ok(())
}

/// What the DECISION column says: who and, for windows and pending requests, until when.
fn decision_cell(row: &ApprovalRow, now: i64) -> String {
    let by = row.decided_by.as_deref().unwrap_or("");
    match row.state {
        ApprovalState::Pending => format!("expires in {}", seconds(row.expires_at_ms - now)),
        ApprovalState::Approved => match row.window_until_ms {
            Some(until) if until > now => format!("by {by}, window {} left", seconds(until - now)),
            Some(_) => format!("by {by}, window ended"),
            None if row.used_at_ms.is_some() => format!("by {by}, re-submitted and run"),
            None => format!("by {by}"),
        },
        ApprovalState::Denied => match &row.reason {
            Some(reason) => format!("by {by}: {}", one_line(reason, 30)),
            None => format!("by {by}"),
        },
        ApprovalState::Expired => row
            .reason
            .as_deref()
            .map(|r| one_line(r, 40))
            .unwrap_or_else(|| "nobody decided in time".into()),
    }
}

/// A positive span of milliseconds in whole seconds, humanly: `4m 10s`.
fn seconds(ms: i64) -> String {
    let secs = u64::try_from(ms.max(0) / 1000).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `2024-05-01 12:34:56` (UTC).
fn short_time(unix_ms: i64) -> String {
    let full = rfc3339_ms(unix_ms);
    match full.split_once('T') {
        Some((day, time)) => format!("{day} {}", time.get(..8).unwrap_or(time)),
        None => full,
    }
}

/// Verifies the token, then decides as its identity.
async fn decide_as_token(
    config: &RawConfig,
    id: &str,
    token: &TokenArgs,
    verdict: Verdict,
) -> Result<ExitCode> {
    let Some(token) = token.token.as_deref().filter(|t| !t.trim().is_empty()) else {
        bail!(
            "no token: pass --token or set POSTERN_TOKEN to the token of an approver (for \
             example `postern token issue --subject dana --group dba`)"
        );
    };
    let decider = authenticate(config, token).await?;
    let store = open_store(config).await?;
    // The decision's audit event also goes to `[audit] file`, like the gateway's (not to
    // standard output, which is this command's own).
    let result = match config
        .audit
        .file
        .as_deref()
        .filter(|f| *f != Path::new("-"))
    {
        Some(path) => {
            let lines = crate::audit_log::AuditLines::new(Arc::new(store.clone()), path)?;
            decide(&lines, &decider, id, verdict).await
        }
        None => decide(&store, &decider, id, verdict).await,
    };
    store.close().await;
    let decided = match result {
        Ok(decided) => decided,
        Err(DecideError::Store(e)) => return Err(e).context(format!("deciding approval {id}")),
        Err(e) => bail!("{e}"),
    };
    if let Err(e) = &decided.audit {
        eprintln!("postern: warning: the decision stands, but its audit event was not stored: {e}");
    }
    let row = &decided.row;
    let what = format!(
        "{} on {} (rule {}): {}",
        row.subject,
        row.target,
        row.rule,
        one_line(&row.statement, 200)
    );
    match row.state {
        ApprovalState::Approved => {
            println!("approved {} as {}: {what}", row.id, decider.subject);
            if let Some(until) = row.window_until_ms {
                println!(
                    "window: {}'s statements on {} matching rule {} pass without approval until {}",
                    row.subject,
                    row.target,
                    row.rule,
                    rfc3339_ms(until)
                );
            }
        }
        _ => println!(
            "denied {} as {}: {what}\nreason: {}",
            row.id,
            decider.subject,
            row.reason.as_deref().unwrap_or("no reason given")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The identity `token` proves: a gateway token of this data_dir's key, or an OIDC token of a
/// configured provider.
async fn authenticate(config: &RawConfig, token: &str) -> Result<Identity> {
    let public: PathBuf = config.data_dir.join("keys").join("gateway.pub");
    let key = load_public_key_pem(&public).context(
        "loading the gateway's public key to verify the token (is --config the gateway's config?)",
    )?;
    let authenticator = crate::serve::authenticator(config, GatewayTokenVerifier::new(&key))?;
    authenticator
        .authenticate(token)
        .await
        .map_err(|e| anyhow::anyhow!("the token was refused: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filters_parse() {
        assert!(parse_state_filter("all").unwrap().0.is_none());
        assert_eq!(
            parse_state_filter("pending").unwrap().0,
            Some(ApprovalState::Pending)
        );
        let err = parse_state_filter("held").unwrap_err();
        assert!(err.contains("or all"), "{err}");
    }

    #[test]
    fn windows_are_bounded() {
        assert_eq!(parse_window("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("500ms").is_err());
        assert!(parse_window("2years").is_err());
        assert!(parse_window("soon").is_err());
    }

    #[test]
    fn times_print_short() {
        assert_eq!(short_time(0), "1970-01-01 00:00:00");
        assert_eq!(seconds(61_500), "1m 1s");
        assert_eq!(seconds(-5), "0s");
    }
}
