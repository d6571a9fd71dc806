//! `postern sessions`: the sessions index (`list`, from the metadata store) and the readable
//! timeline of one recording (`show`, from the recording's files).
//!
//! Also the helpers the other recording commands share: where recordings are, how an id (or a
//! unique prefix of one) names a recording directory, and how times are printed.

use crate::config::RawConfig;
use anyhow::{Context, Result, bail};
use postern_core::now_ms;
use postern_core::{SessionFilter, SessionRow, StatementLineage, Store};
use postern_record::layout::{CHECKPOINTS_FILE, LOG_DIR};
use postern_record::{Event, EventBody, Value, VerifyError, load_verifying_key, read_events};
use postern_store::SqliteStore;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `postern sessions` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// List sessions from the sessions index, newest first.
    List(ListArgs),
    /// Print the timeline of one recorded session: each command with its time, the gateway's
    /// decision, the result (rows, bytes, command tag) and errors.
    Show(ShowArgs),
}

/// `postern sessions list`
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only sessions of this identity (its subject).
    #[arg(long, value_name = "SUBJECT")]
    identity: Option<String>,
    /// Only sessions against this target.
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// Only sessions started since: a duration ago (`90m`, `1h`, `2days`) or an RFC 3339 time
    /// (`2024-05-01T12:00:00Z`).
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    since: Option<i64>,
    /// Only sessions that are still open.
    #[arg(long)]
    open: bool,
    /// At most this many sessions (1 to 10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Print a JSON array of objects instead of a table.
    #[arg(long)]
    json: bool,
}

/// `postern sessions show`
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The session id, or a unique prefix of it.
    id: String,
    /// Print the events as JSON lines (the `export --format jsonl` format) instead.
    #[arg(long)]
    json: bool,
    /// Also print up to this many rows of each result.
    #[arg(long, value_name = "N", default_value_t = 0)]
    rows: usize,
    /// The gateway's public key (SPKI PEM) to verify the recording with before showing it
    /// (default: data_dir/keys/gateway.pub, when present).
    #[arg(long, value_name = "PUBKEY")]
    key: Option<PathBuf>,
}

/// Runs a `sessions` subcommand.
pub fn run(cmd: SessionsCommand, config: &RawConfig) -> Result<ExitCode> {
    match cmd {
        SessionsCommand::List(args) => list(args, config),
        SessionsCommand::Show(args) => show(args, config),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Where this configuration keeps its recordings.
pub fn recordings_dir(config: &RawConfig) -> PathBuf {
    config.recordings_dir()
}

/// The gateway's public key file: `data_dir/keys/gateway.pub`.
pub fn default_key_path(config: &RawConfig) -> PathBuf {
    config.data_dir.join("keys").join("gateway.pub")
}

/// The recording directory of session `id` (or of the one session whose id starts with `id`)
/// under `dir`.
pub fn find_recording(dir: &Path, id: &str) -> Result<PathBuf> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') || id.starts_with('_') {
        bail!("{id:?} is not a session id");
    }
    let exact = dir.join(id);
    if exact.is_dir() {
        return Ok(exact);
    }
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "reading the recordings directory {} (is --config the gateway's config?)",
            dir.display()
        )
    })?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| name != LOG_DIR && !name.starts_with('.') && name.starts_with(id))
        .collect();
    found.sort();
    match found.len() {
        0 => bail!("no recording of session {id} in {}", dir.display()),
        1 => Ok(dir.join(&found[0])),
        n => bail!(
            "{id} is the start of {n} session ids ({}{}): give more of it",
            found.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if n > 5 { ", ..." } else { "" }
        ),
    }
}

/// Whether `dir` looks like one session's recording (rather than a recordings directory).
pub fn is_session_dir(dir: &Path) -> bool {
    dir.join(CHECKPOINTS_FILE).is_file()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("chunk-") && name.ends_with(".rec")
            })
        })
}

/// Reads every event of the recording in `dir`. A damaged event ends the list; the error is
/// returned beside the events read before it.
pub fn read_all(dir: &Path) -> Result<(Vec<Event>, Option<VerifyError>)> {
    let reader = read_events(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut events = Vec::new();
    for item in reader {
        match item {
            Ok(event) => events.push(event),
            Err(e) => return Ok((events, Some(e))),
        }
    }
    Ok((events, None))
}

/// RFC 3339 (UTC) for a Unix time in microseconds.
pub fn rfc3339_us(unix_us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix_us}us"))
}

/// RFC 3339 (UTC) for a Unix time in milliseconds.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    rfc3339_us(unix_ms.saturating_mul(1000))
}

/// A short UTC time for tables: `2024-05-01 12:34:56`.
fn short_time(unix_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix_ms}ms"),
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `12 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A time offset in seconds with millisecond precision: `+12.345s`.
pub fn offset(us: u64) -> String {
    format!("+{}.{:03}s", us / 1_000_000, (us % 1_000_000) / 1000)
}

/// A value for people to read: `'text'` (quotes doubled), `NULL`, or `'\x…' (bytes)` for raw
/// bytes and for text holding control characters (such as binary-format values).
pub fn sql_literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Text(s) if !has_control_chars(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Text(s) => format!("'\\x{}' (bytes)", hex(s.as_bytes())),
        Value::Binary(b) => format!("'\\x{}' (bytes)", hex(b)),
    }
}

/// Whether `s` holds control characters other than tab, newline and carriage return.
fn has_control_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

/// `text` on one line (whitespace collapsed), cut to about `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// A value as a result cell: the text, empty for NULL, `\x…` for raw bytes and for text
/// holding control characters.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Text(s) if !has_control_chars(s) => s.clone(),
        Value::Text(s) => format!("\\x{}", hex(s.as_bytes())),
        Value::Binary(b) => format!("\\x{}", hex(b)),
    }
}

/// `--since` (and the API's time filters): a duration ago or an RFC 3339 time, as Unix
/// milliseconds.
pub fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        let d: Duration = d;
        return Ok(now_ms() - d.as_millis().min(i64::MAX as u128) as i64);
    }
    match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => Ok((t.unix_timestamp_nanos() / 1_000_000) as i64),
        Err(_) => Err(format!(
            "{s:?} is neither a duration (90m, 1h, 2days) nor an RFC 3339 time \
             (2024-05-01T12:00:00Z)"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// list

fn list(args: ListArgs, config: &RawConfig) -> Result<ExitCode> {
    let db = config.data_dir.join("postern.db");
    if !db.is_file() {
        bail!(
            "no sessions index at {}: no gateway has run with data_dir {} (is --config the \
             gateway's config?)",
            db.display(),
            config.data_dir.display()
        );
    }
    let filter = SessionFilter {
        subject: args.identity,
        target: args.target,
        since_ms: args.since,
        open_only: args.open,
        limit: Some(args.limit),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let rows = runtime.block_on(async {
        let store = SqliteStore::open(&db).await?;
        store.list_sessions(&filter).await
    });
    let rows = rows.with_context(|| format!("listing sessions from {}", db.display()))?;
    let recordings = recordings_dir(config);
    let mut out = std::io::stdout().lock();
    if args.json {
        let items: Vec<serde_json::Value> =
            rows.iter().map(|row| row_json(row, &recordings)).collect();
        serde_json::to_writer_pretty(&mut out, &items)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One session as `sessions list --json` prints it.
fn row_json(row: &SessionRow, recordings: &Path) -> serde_json::Value {
    let recording = recordings.join(&row.id);
    let mut v = session_fields(row);
    v["recording"] = json!(recording.is_dir().then(|| recording.display().to_string()));
    v
}

/// What the sessions index says of a session, as JSON (shared by the CLI and the REST API).
pub fn session_fields(row: &SessionRow) -> serde_json::Value {
    json!({
        "id": row.id,
        "subject": row.subject,
        "kind": row.identity_kind,
        "groups": row.groups,
        "target": row.target,
        "client_addr": row.client_addr,
        "started_at": rfc3339_ms(row.started_at_ms),
        "ended_at": row.ended_at_ms.map(rfc3339_ms),
        "open": row.ended_at_ms.is_none(),
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
        "close_reason": row.close_reason,
    })
}

fn write_table(out: &mut impl Write, rows: &[SessionRow]) -> Result<()> {
    if rows.is_empty() {
        writeln!(out, "no sessions")?;
        return Ok(());
    }
    let header = [
        "ID",
        "SUBJECT",
        "KIND",
        "TARGET",
        "STARTED (UTC)",
        "ENDED (UTC)",
        "BYTES IN/OUT",
    ];
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.subject.clone(),
                r.identity_kind.clone(),
                r.target.clone(),
                short_time(r.started_at_ms),
                r.ended_at_ms.map_or_else(|| "open".to_owned(), short_time),
                format!("{} / {}", human_bytes(r.bytes_in), human_bytes(r.bytes_out)),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    print(out, &header.map(str::to_owned))?;
    for line in &lines {
        print(out, line)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// show

fn show(args: ShowArgs, config: &RawConfig) -> Result<ExitCode> {
    let dir = find_recording(&recordings_dir(config), &args.id)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let reader = read_events(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for event in reader {
            match event {
                Ok(event) => {
                    serde_json::to_writer(&mut out, &event)?;
                    writeln!(out)?;
                }
                Err(e) => {
                    out.flush()?;
                    eprintln!("postern: the recording is damaged: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Verify first, when a key is at hand, so the reader knows what the timeline is worth.
    let key_path = args.key.clone().unwrap_or_else(|| default_key_path(config));
    let verdict = if key_path.is_file() {
        let key = load_verifying_key(&key_path)
            .with_context(|| format!("loading the public key {}", key_path.display()))?;
        match postern_record::verify_session(&dir, &key) {
            Ok(report) => format!("verified {}", report.summary()),
            Err(e @ VerifyError::Unsealed { .. }) => {
                format!("not sealed yet (the session is open, or awaits recovery): {e}")
            }
            Err(e) => format!("VERIFICATION FAILED: {e}"),
        }
    } else if args.key.is_some() {
        bail!("no public key at {}", key_path.display());
    } else {
        format!("not verified (no public key at {})", key_path.display())
    };

    let (events, damage) = read_all(&dir)?;
    let mut timeline = Timeline::new(&mut out, args.rows);
    timeline.header(&events, &verdict)?;
    for event in &events {
        timeline.event(event)?;
    }
    timeline.flush_results()?;
    if let Some(e) = damage {
        writeln!(out, "\nthe recording is damaged after this point: {e}")?;
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders events as an indented, human-readable timeline.
struct Timeline<'a, W: Write> {
    out: &'a mut W,
    /// Rows to print per result.
    show_rows: usize,
    /// Rows and value bytes of the result being received.
    rows: u64,
    bytes: u64,
    printed_rows: usize,
    /// COPY data of the current statement: messages and bytes, per direction.
    copy: [(u64, u64); 2],
    /// Prepared statements' texts by name, and bound portals' statements by name, so an
    /// execute can show the SQL it runs.
    statements: std::collections::HashMap<String, String>,
    portals: std::collections::HashMap<String, String>,
}

const INDENT: &str = "             ";

impl<'a, W: Write> Timeline<'a, W> {
    fn new(out: &'a mut W, show_rows: usize) -> Self {
        Timeline {
            out,
            show_rows,
            rows: 0,
            bytes: 0,
            printed_rows: 0,
            copy: [(0, 0); 2],
            statements: Default::default(),
            portals: Default::default(),
        }
    }

    fn header(&mut self, events: &[Event], verdict: &str) -> std::io::Result<()> {
        match events.first().map(|e| &e.body) {
            Some(EventBody::SessionStart(s)) => {
                let groups = if s.groups.is_empty() {
                    String::new()
                } else {
                    format!(", groups {}", s.groups.join(", "))
                };
                writeln!(self.out, "session {}", s.session_id)?;
                writeln!(
                    self.out,
                    "  who:     {} ({}{}{})",
                    s.subject,
                    s.identity_kind,
                    groups,
                    s.issuer
                        .as_deref()
                        .map(|i| format!(", vouched for by {i}"))
                        .unwrap_or_default()
                )?;
                writeln!(self.out, "  target:  {} ({})", s.target, s.protocol)?;
                writeln!(
                    self.out,
                    "  from:    {} via node {}",
                    s.client_addr.as_deref().unwrap_or("?"),
                    s.node
                )?;
                writeln!(self.out, "  started: {}", rfc3339_us(s.started_at_unix_us))?;
                if let Some(v) = &s.policy_version {
                    writeln!(self.out, "  policy:  version {v}")?;
                }
                for (k, v) in &s.attributes {
                    writeln!(self.out, "  {k}: {v}")?;
                }
            }
            _ => writeln!(self.out, "session (its start was not recorded)")?,
        }
        writeln!(self.out, "  recording: {verdict}")?;
        writeln!(self.out)
    }

    /// A line at a time offset, in the command column.
    fn at(&mut self, us: u64, what: &str, text: &str) -> std::io::Result<()> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        writeln!(self.out, "{:>11}  {what:<8} {first}", offset(us))?;
        let pad = format!("{INDENT}{:9}", "");
        for line in lines {
            writeln!(self.out, "{pad}{line}")?;
        }
        Ok(())
    }

    /// An indented line under the current command.
    fn note(&mut self, text: &str) -> std::io::Result<()> {
        for line in text.lines() {
            writeln!(self.out, "{INDENT}{line}")?;
        }
        Ok(())
    }

    /// Prints the row and COPY counts collected since the last boundary, if any.
    fn flush_results(&mut self) -> std::io::Result<()> {
        if self.rows > 0 {
            let rows = self.rows;
            let line = format!(
                "{rows} row{}, {}",
                if rows == 1 { "" } else { "s" },
                human_bytes(self.bytes)
            );
            self.note(&line)?;
        }
        for (i, dir) in ["to the server", "to the client"].iter().enumerate() {
            let (n, b) = self.copy[i];
            if n > 0 {
                let line = format!("copy data {dir}: {n} message(s), {}", human_bytes(b));
                self.note(&line)?;
            }
        }
        self.rows = 0;
        self.bytes = 0;
        self.printed_rows = 0;
        self.copy = [(0, 0); 2];
        Ok(())
    }

    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        let t = event.offset_us;
        match &event.body {
            EventBody::SessionStart(s) => {
                let text = format!("{} → {}", s.subject, s.target);
                self.at(t, "start", &text)?;
            }
            EventBody::Command(c) => {
                self.flush_results()?;
                let name = |s: &Option<String>| match s.as_deref() {
                    None => String::new(),
                    Some("") => "(unnamed)".to_owned(),
                    Some(n) => n.to_owned(),
                };
                match c.kind.as_str() {
                    "parse" => {
                        let statement = c.statement.clone().unwrap_or_default();
                        let sql = c.text.clone().unwrap_or_default();
                        self.statements.insert(statement, sql);
                    }
                    "bind" => {
                        let portal = c.portal.clone().unwrap_or_default();
                        let statement = c.statement.clone().unwrap_or_default();
                        self.portals.insert(portal, statement);
                    }
                    _ => {}
                }
                // A lineage comment is shown as its intent event, not inside the SQL.
                let sql = c.text.as_deref().map(|text| {
                    StatementLineage::split(text).map_or(text, |(_, rest)| rest.trim_start())
                });
                let mut text = match c.kind.as_str() {
                    "query" => sql.unwrap_or("").to_owned(),
                    "parse" => format!("statement {}: {}", name(&c.statement), sql.unwrap_or("")),
                    "bind" => format!(
                        "statement {} into portal {}",
                        name(&c.statement),
                        name(&c.portal)
                    ),
                    "execute" => {
                        let portal = c.portal.clone().unwrap_or_default();
                        let statement = self.portals.get(&portal);
                        let sql = statement.and_then(|s| self.statements.get(s));
                        match (statement, sql) {
                            (Some(st), Some(sql)) => format!(
                                "portal {} (statement {}): {}",
                                name(&c.portal),
                                name(&Some(st.clone())),
                                one_line(sql, 100)
                            ),
                            _ => format!("portal {}", name(&c.portal)),
                        }
                    }
                    _ => {
                        let mut parts = Vec::new();
                        if c.statement.is_some() {
                            parts.push(format!("statement {}", name(&c.statement)));
                        }
                        if c.portal.is_some() {
                            parts.push(format!("portal {}", name(&c.portal)));
                        }
                        if let Some(text) = sql {
                            parts.push(text.to_owned());
                        }
                        parts.join(" ")
                    }
                };
                if !c.params.is_empty() {
                    let params: Vec<String> = c
                        .params
                        .iter()
                        .enumerate()
                        .map(|(i, v)| format!("${}={}", i + 1, sql_literal(v)))
                        .collect();
                    if c.kind == "bind" {
                        text.push_str(&format!(": {}", params.join(", ")));
                    } else {
                        text.push_str(&format!("\nparams: {}", params.join(", ")));
                    }
                }
                if !c.attributes.is_empty() {
                    let attrs: Vec<String> = c
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    text.push_str(&format!("\n({})", attrs.join(", ")));
                }
                if let Some(id) = &c.causal_id {
                    text.push_str(&format!("\ncaused by {id}"));
                }
                self.at(t, &c.kind, &text)?;
            }
            EventBody::Decision(d) => {
                use postern_record::DecisionKind as K;
                let verdict = match d.decision {
                    K::Allow => "allowed",
                    K::Block => "BLOCKED",
                    K::Approve => "HELD for approval",
                    K::Approved => "approved",
                    K::Denied => "DENIED",
                    K::Expired => "EXPIRED waiting for approval",
                    K::Pending => "PENDING approval (not held; re-submit once approved)",
                };
                let mut line = format!("→ {verdict}");
                if let Some(rule) = &d.rule {
                    line.push_str(&format!(" by rule \"{rule}\""));
                }
                if let Some(reason) = &d.reason {
                    line.push_str(&format!(": {reason}"));
                }
                if let Some(id) = &d.approval_id {
                    line.push_str(&format!(" (approval {id})"));
                }
                if !d.masked.is_empty() {
                    line.push_str(&format!("; masked: {}", d.masked.join(", ")));
                }
                self.note(&line)?;
            }
            EventBody::RowDescription(r) => {
                self.flush_results()?;
                let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
                self.note(&format!("columns: {}", names.join(", ")))?;
            }
            EventBody::Rows(r) => {
                for row in &r.rows {
                    self.rows += 1;
                    self.bytes += row.iter().map(|v| v.len() as u64).sum::<u64>();
                    if self.printed_rows < self.show_rows {
                        self.printed_rows += 1;
                        let cells: Vec<String> = row.iter().map(sql_literal).collect();
                        let line = format!("| {}", cells.join(" | "));
                        self.note(&line)?;
                    }
                }
            }
            EventBody::CommandComplete(c) => {
                self.flush_results()?;
                self.note(&format!("✓ {}", c.tag))?;
            }
            EventBody::Error(d) | EventBody::Notice(d) => {
                self.flush_results()?;
                let what = if matches!(event.body, EventBody::Error(_)) {
                    "error"
                } else {
                    "notice"
                };
                let mut text = format!(
                    "{}{}: {}",
                    d.severity.as_deref().unwrap_or(what),
                    d.code
                        .as_deref()
                        .map(|c| format!(" {c}"))
                        .unwrap_or_default(),
                    d.message
                );
                if let Some(detail) = &d.detail {
                    text.push_str(&format!("\nDETAIL: {detail}"));
                }
                if let Some(hint) = &d.hint {
                    text.push_str(&format!("\nHINT: {hint}"));
                }
                self.at(t, what, &text)?;
            }
            EventBody::Notification(n) => {
                let pid = n
                    .process_id
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                self.at(t, "notify", &format!("{}: {}{pid}", n.channel, n.payload))?;
            }
            EventBody::CopyData(c) => {
                let i = match c.direction {
                    postern_record::Direction::ToServer => 0,
                    postern_record::Direction::ToClient => 1,
                };
                self.copy[i].0 += 1;
                self.copy[i].1 += c.data.len() as u64;
            }
            EventBody::ResultsTruncated(r) => {
                self.flush_results()?;
                self.note(&format!(
                    "results capped ({}): {} more row(s), {} not recorded",
                    r.reason,
                    r.omitted_rows,
                    human_bytes(r.omitted_bytes)
                ))?;
            }
            EventBody::Intent(i) => {
                self.flush_results()?;
                self.at(t, "intent", &intent_text(&i.causal_id, &i.text))?;
            }
            EventBody::Gap(g) => {
                self.flush_results()?;
                self.at(
                    t,
                    "GAP",
                    &format!(
                        "{} event(s), {} not recorded: {}",
                        g.lost_events,
                        human_bytes(g.lost_bytes),
                        g.reason
                    ),
                )?;
            }
            // Writers hold rows packed; a recording reads back as `Rows`.
            EventBody::PackedRows(_) => {}
            EventBody::SessionEnd(e) => {
                self.flush_results()?;
                let mut text = e.reason.clone();
                if e.interrupted {
                    text.push_str(" (interrupted: sealed at the gateway's restart)");
                }
                if let (Some(from), Some(to)) = (e.bytes_from_client, e.bytes_to_client) {
                    text.push_str(&format!(
                        "\n{} from the client, {} to the client",
                        human_bytes(from),
                        human_bytes(to)
                    ));
                }
                self.at(t, "end", &text)?;
            }
        }
        Ok(())
    }
}

/// An intent event for people: the tool call (tool, arguments, stated intent, prompt, trace
/// context) when it is an MCP tool call's lineage, else the text as sent.
fn intent_text(causal_id: &str, text: &str) -> String {
    let Ok(serde_json::Value::Object(lineage)) = serde_json::from_str(text) else {
        return format!("[{causal_id}] {text}");
    };
    let string = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut lines = vec![match lineage.get("tool") {
        Some(tool) => format!("tool call {} (causal id {causal_id})", string(tool)),
        None => format!("causal id {causal_id}"),
    }];
    if let Some(serde_json::Value::Object(arguments)) = lineage.get("arguments") {
        let arguments: Vec<String> = arguments
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", one_line(&string(v), 200)))
            .collect();
        if !arguments.is_empty() {
            lines.push(format!("arguments: {}", arguments.join(", ")));
        }
    }
    for (key, label) in [
        ("intent", "intent"),
        ("approval", "approval id"),
        ("mcp_session", "mcp session"),
    ] {
        if let Some(value) = lineage.get(key) {
            lines.push(format!("{label}: {}", one_line(&string(value), 2000)));
        }
    }
    if let Some(serde_json::Value::Object(meta)) = lineage.get("meta") {
        for (key, value) in meta {
            lines.push(format!("{key}: {}", one_line(&string(value), 2000)));
        }
    }
    let known = [
        "causal_id",
        "tool",
        "arguments",
        "intent",
        "approval",
        "mcp_session",
        "meta",
        "wait",
    ];
    for (key, value) in lineage.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
        lines.push(format!("{key}: {}", one_line(&string(value), 2000)));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_print_as_tool_calls() {
        let text = r#"{"causal_id":"c-1","tool":"query","arguments":{"target":"shop","approval_id":null},"wait":false,"intent":"count\n orders","meta":{"prompt":"how many?"},"approval":"APR-1","agent":"x"}"#;
        assert_eq!(
            intent_text("c-1", text),
            "tool call query (causal id c-1)\narguments: target=shop\nintent: count orders\n\
             approval id: APR-1\nprompt: how many?\nagent: x"
        );
        assert_eq!(intent_text("c-2", "not json"), "[c-2] not json");
    }

    #[test]
    fn since_takes_durations_and_times() {
        let an_hour_ago = parse_since("1h").unwrap();
        assert!((now_ms() - an_hour_ago - 3_600_000).abs() < 5_000);
        assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn times_and_sizes_print_plainly() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_us(1_500_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(offset(1_250), "+0.001s");
        assert_eq!(sql_literal(&Value::from("it's")), "'it''s'");
        assert_eq!(sql_literal(&Value::from("\0\u{1}")), r"'\x0001' (bytes)");
        assert_eq!(cell(&Value::Binary(vec![0xff])), r"\xff");
        assert_eq!(cell(&Value::from("tab\there")), "tab\there");
    }

    #[test]
    fn ids_resolve_by_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["0190aaaa", "0190abcd", "_log"] {
            std::fs::create_dir(dir.path().join(id)).unwrap();
        }
        assert_eq!(
            find_recording(dir.path(), "0190ab").unwrap(),
            dir.path().join("0190abcd")
        );
        assert_eq!(
            find_recording(dir.path(), "0190aaaa").unwrap(),
            dir.path().join("0190aaaa")
        );
        let ambiguous = find_recording(dir.path(), "0190").unwrap_err().to_string();
        assert!(ambiguous.contains("0190aaaa, 0190abcd"), "{ambiguous}");
        assert!(find_recording(dir.path(), "ffff").is_err());
        assert!(find_recording(dir.path(), "_l").is_err());
    }
}
