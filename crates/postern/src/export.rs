//! `postern export`: a recording as JSON lines (one event per line, with a `type` tag) or as an
//! asciicast v2 file that plays the session back like a psql transcript.

use crate::config::RawConfig;
use crate::sessions::{cell, find_recording, read_all, recordings_dir, rfc3339_us};
use anyhow::{Context, Result};
use postern_record::{Column, Diagnostic, Event, EventBody, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `postern export`
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The session id, or a unique prefix of it.
    id: String,
    /// `jsonl`: one event per line, as JSON with a `type` tag; `asciicast`: an asciicast v2
    /// recording (play it with `asciinema play`) that renders the session like psql.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// What `postern export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// JSON lines: one event per line.
    Jsonl,
    /// asciicast v2: a terminal recording of the session as a psql transcript.
    Asciicast,
}

/// Runs `postern export`.
pub fn run(args: ExportArgs, config: &RawConfig) -> Result<ExitCode> {
    let dir = find_recording(&recordings_dir(config), &args.id)?;
    let (events, damage) = read_all(&dir)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match args.format {
        ExportFormat::Jsonl => {
            for event in &events {
                serde_json::to_writer(&mut out, event)?;
                writeln!(out)?;
            }
        }
        ExportFormat::Asciicast => write_asciicast(&mut out, &events)?,
    }
    out.flush()?;
    if let Some(e) = damage {
        eprintln!(
            "postern: the recording is damaged; exported the {} events before: {e}",
            events.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Characters of one value rendered in the transcript at most.
const MAX_CELL_CHARS: usize = 80;

/// A cell cut to [`MAX_CELL_CHARS`].
fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_CELL_CHARS {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    }
}

/// Rows of one result rendered in the transcript at most; the rest are counted.
const MAX_TABLE_ROWS: usize = 200;

/// Renders `events` as an asciicast v2 stream: a header line, then `[seconds, "o", text]`.
pub fn write_asciicast(out: &mut dyn Write, events: &[Event]) -> Result<()> {
    let mut screen = Transcript::default();
    for event in events {
        screen.event(event);
    }
    screen.flush_table(events.last().map_or(0, |e| e.offset_us));
    let width = screen
        .output
        .iter()
        .flat_map(|(_, text)| text.split("\r\n"))
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(80)
        .clamp(80, 240);
    let header = serde_json::json!({
        "version": 2,
        "width": width,
        "height": 40,
        "timestamp": screen.started_unix_us / 1_000_000,
        "title": screen.title,
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"},
    });
    writeln!(out, "{header}")?;
    for (us, text) in &screen.output {
        let line = serde_json::json!([*us as f64 / 1e6, "o", text]);
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// What the terminal shows, built event by event.
#[derive(Default)]
struct Transcript {
    output: Vec<(u64, String)>,
    title: String,
    started_unix_us: i64,
    prompt: String,
    /// Prepared statement texts, by name.
    statements: HashMap<String, String>,
    /// Bound portals: statement name and parameters.
    portals: HashMap<String, (String, Vec<Value>)>,
    /// The result being received: columns and rows.
    columns: Option<Vec<Column>>,
    rows: Vec<Vec<Value>>,
    omitted_rows: u64,
}

impl Transcript {
    fn print(&mut self, at_us: u64, text: impl Into<String>) {
        let text = text.into().replace("\r\n", "\n").replace('\n', "\r\n");
        match self.output.last_mut() {
            Some((t, last)) if *t == at_us => last.push_str(&text),
            _ => self.output.push((at_us, text)),
        }
    }

    fn echo(&mut self, at_us: u64, sql: &str) {
        let cont = format!("{}-> ", self.prompt.trim_end_matches("=> "));
        let mut text = self.prompt.clone() + "=> ";
        for (i, line) in sql.lines().enumerate() {
            if i > 0 {
                text.push('\n');
                text.push_str(&cont);
            }
            text.push_str(line);
        }
        text.push('\n');
        self.print(at_us, text);
    }

    fn diagnostic(&mut self, at_us: u64, d: &Diagnostic, default: &str) {
        let mut text = format!(
            "{}:  {}\n",
            d.severity.as_deref().unwrap_or(default),
            d.message
        );
        if let Some(detail) = &d.detail {
            text.push_str(&format!("DETAIL:  {detail}\n"));
        }
        if let Some(hint) = &d.hint {
            text.push_str(&format!("HINT:  {hint}\n"));
        }
        self.print(at_us, text);
    }

    fn event(&mut self, event: &Event) {
        let t = event.offset_us;
        match &event.body {
            EventBody::SessionStart(s) => {
                self.started_unix_us = s.started_at_unix_us;
                self.prompt = s.target.clone();
                self.title = format!(
                    "postern session {}: {} → {} at {}",
                    s.session_id,
                    s.subject,
                    s.target,
                    rfc3339_us(s.started_at_unix_us)
                );
                let banner = format!(
                    "-- {} ({}) connected to {} from {}\n",
                    s.subject,
                    s.identity_kind,
                    s.target,
                    s.client_addr.as_deref().unwrap_or("?")
                );
                self.print(t, banner);
            }
            EventBody::Command(c) => {
                self.flush_table(t);
                match c.kind.as_str() {
                    "query" => self.echo(t, c.text.as_deref().unwrap_or("")),
                    "parse" => {
                        let name = c.statement.clone().unwrap_or_default();
                        self.statements
                            .insert(name, c.text.clone().unwrap_or_default());
                    }
                    "bind" => {
                        let portal = c.portal.clone().unwrap_or_default();
                        let statement = c.statement.clone().unwrap_or_default();
                        self.portals.insert(portal, (statement, c.params.clone()));
                    }
                    "execute" => {
                        let portal = c.portal.clone().unwrap_or_default();
                        let (statement, params) =
                            self.portals.get(&portal).cloned().unwrap_or_default();
                        let sql = self.statements.get(&statement).cloned().unwrap_or_default();
                        let mut line = sql.trim_end().trim_end_matches(';').to_owned();
                        line.push_str(" \\bind");
                        for p in &params {
                            line.push(' ');
                            line.push_str(&crate::sessions::sql_literal(p));
                        }
                        line.push_str(" \\g");
                        self.echo(t, &line);
                    }
                    _ => {}
                }
            }
            EventBody::Decision(_) => {}
            // Writers hold rows packed; a recording reads back as `Rows`.
            EventBody::PackedRows(_) => {}
            EventBody::RowDescription(r) => {
                self.flush_table(t);
                self.columns = Some(r.columns.clone());
            }
            EventBody::Rows(r) => {
                for row in &r.rows {
                    if self.rows.len() < MAX_TABLE_ROWS {
                        self.rows.push(row.clone());
                    } else {
                        self.omitted_rows += 1;
                    }
                }
            }
            EventBody::CommandComplete(c) => {
                if self.columns.is_some() {
                    self.flush_table(t);
                } else {
                    self.print(t, format!("{}\n", c.tag));
                }
            }
            EventBody::Error(d) => {
                self.flush_table(t);
                self.diagnostic(t, d, "ERROR");
            }
            EventBody::Notice(d) => self.diagnostic(t, d, "NOTICE"),
            EventBody::Notification(n) => self.print(
                t,
                format!(
                    "Asynchronous notification \"{}\" with payload \"{}\" received{}.\n",
                    n.channel,
                    n.payload,
                    n.process_id
                        .map(|p| format!(" from server process with PID {p}"))
                        .unwrap_or_default()
                ),
            ),
            EventBody::CopyData(c) => self.print(t, cell(&c.data)),
            EventBody::ResultsTruncated(r) => {
                self.omitted_rows += r.omitted_rows;
            }
            EventBody::Intent(i) => {
                self.print(t, format!("-- intent [{}]: {}\n", i.causal_id, i.text))
            }
            EventBody::Gap(g) => self.print(
                t,
                format!("-- {} events not recorded: {}\n", g.lost_events, g.reason),
            ),
            EventBody::SessionEnd(e) => {
                self.flush_table(t);
                self.print(t, format!("-- session ended: {}\n", e.reason));
            }
        }
    }

    /// Prints the result table collected so far, psql style.
    fn flush_table(&mut self, at_us: u64) {
        let Some(columns) = self.columns.take() else {
            return;
        };
        let rows = std::mem::take(&mut self.rows);
        let omitted = std::mem::take(&mut self.omitted_rows);
        let numeric =
            |c: &Column| matches!(c.type_id, Some(20 | 21 | 23 | 26 | 700 | 701 | 790 | 1700));
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| fit(&cell(v).replace('\n', "↵")))
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = columns.iter().map(|c| c.name.chars().count()).collect();
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let pad = |s: &str, w: usize, right: bool| {
            let fill = " ".repeat(w.saturating_sub(s.chars().count()));
            if right {
                format!("{fill}{s}")
            } else {
                format!("{s}{fill}")
            }
        };
        let mut text = String::new();
        let head: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(c, &w)| {
                let n = c.name.chars().count();
                let left = (w.saturating_sub(n)) / 2;
                pad(&format!("{}{}", " ".repeat(left), c.name), w, false)
            })
            .collect();
        text.push_str(&format!(" {} \n", head.join(" | ")));
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w + 2)).collect();
        text.push_str(&format!("{}\n", rule.join("+")));
        for row in &cells {
            let line: Vec<String> = row
                .iter()
                .zip(columns.iter().zip(&widths))
                .map(|(c, (col, &w))| pad(c, w, numeric(col)))
                .collect();
            text.push_str(&format!(" {} \n", line.join(" | ")));
        }
        if omitted > 0 {
            text.push_str(&format!("... ({omitted} more rows not shown)\n"));
        }
        let total = rows.len() as u64 + omitted;
        text.push_str(&format!(
            "({total} row{})\n\n",
            if total == 1 { "" } else { "s" }
        ));
        self.print(at_us, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_record::{Command, CommandComplete, RowDescription, Rows, SessionStart};

    fn ev(seq: u64, offset_us: u64, body: EventBody) -> Event {
        Event {
            seq,
            offset_us,
            body,
        }
    }

    #[test]
    fn asciicast_is_a_header_then_timed_output() {
        let start = SessionStart {
            session_id: "s1".into(),
            started_at_unix_us: 1_714_566_896_000_000,
            subject: "alice".into(),
            groups: vec![],
            identity_kind: "human".into(),
            issuer: None,
            target: "shop".into(),
            protocol: "postgres".into(),
            client_addr: None,
            node: "n".into(),
            policy_version: None,
            attributes: Default::default(),
        };
        let events = vec![
            ev(0, 0, EventBody::SessionStart(start)),
            ev(
                1,
                1_000,
                EventBody::Command(Command::query("select 1 as one")),
            ),
            ev(
                2,
                2_000,
                EventBody::RowDescription(RowDescription {
                    columns: vec![Column {
                        type_id: Some(23),
                        ..Column::named("one")
                    }],
                }),
            ),
            ev(
                3,
                2_000,
                EventBody::Rows(Rows {
                    rows: vec![vec![Value::from("1")]],
                }),
            ),
            ev(
                4,
                2_500,
                EventBody::CommandComplete(CommandComplete {
                    tag: "SELECT 1".into(),
                }),
            ),
        ];
        let mut out = Vec::new();
        write_asciicast(&mut out, &events).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["timestamp"], 1_714_566_896);
        let all: String = lines[1..]
            .iter()
            .map(|l| l[2].as_str().unwrap().to_owned())
            .collect();
        assert!(all.contains("shop=> select 1 as one\r\n"), "{all}");
        assert!(all.contains(" one \r\n-----\r\n   1 \r\n(1 row)"), "{all}");
        assert_eq!(lines.last().unwrap()[0], 0.0025);
    }
}
