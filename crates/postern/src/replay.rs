//! `postern replay`: re-run a recorded session's statements, in order, on a sandbox database
//! and report, statement by statement, whether each result matches the recording.
//!
//! The recording holds the client's commands (simple queries; Parse/Bind/Execute with statement
//! names and parameters) and what the client received (row descriptions, rows, command tags,
//! errors), but not the protocol's acknowledgements (ParseComplete, BindComplete,
//! ReadyForQuery). [`plan`] pairs each statement with its recorded outcome the way a server
//! answers: a client sends a run of commands, then the server answers them in order; row data
//! and command tags belong to the next statement still waiting for its result, and an error
//! ends that statement (and, in the extended protocol, the rest of its batch).
//!
//! Replaying uses one connection (so transactions and session state carry over):
//!
//! - simple queries run with the simple query protocol, so results come back in text, exactly
//!   as the recording holds them;
//! - extended-protocol statements whose result was text run as `PREPARE … AS <text>` and
//!   `EXECUTE …(<parameters as literals>)`, also in the simple protocol (without parameters,
//!   the text runs as is); those whose result was binary (as the Bind's recorded result
//!   formats say or, when they are not recorded, as the recorded bytes show) or that bound
//!   binary parameters run in the extended protocol with the recorded parameter bytes and
//!   compare binary values;
//! - `COPY … FROM STDIN` sends the recorded data, `COPY … TO STDOUT` compares the data;
//! - statements the gateway refused (blocked, held, denied) are skipped, not run.
//!
//! Rows are compared as bytes, in order; command tags by their row count (the client library
//! reports only the count); errors by SQLSTATE.

use crate::config::RawConfig;
use crate::sessions::{find_recording, offset, one_line, read_all, recordings_dir, sql_literal};
use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt, TryStreamExt};
use postern_record::{DecisionKind, Diagnostic, Direction, Event, EventBody, Value};
use std::collections::HashMap;
use std::process::ExitCode;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// `postern replay`
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The session id, or a unique prefix of it.
    id: String,
    /// The sandbox database to re-run the statements on: a `postgres://` URL (or libpq
    /// key=value string), connected to directly and without TLS. Without it, the statements
    /// and their recorded outcomes are listed and nothing is run.
    #[arg(long, value_name = "URL")]
    against: Option<String>,
}

/// Runs `postern replay`: exit 0 when every replayed statement matched, 1 otherwise.
pub fn run(args: ReplayArgs, config: &RawConfig) -> Result<ExitCode> {
    let dir = find_recording(&recordings_dir(config), &args.id)?;
    let (events, damage) = read_all(&dir)?;
    if let Some(e) = &damage {
        eprintln!(
            "postern: the recording is damaged; replaying the {} events before the damage: {e}",
            events.len()
        );
    }
    let steps = plan(&events);
    let Some(url) = args.against else {
        for (i, step) in steps.iter().enumerate() {
            println!(
                "#{:<4} {:>10}  {:<5} {}  — recorded: {}",
                i + 1,
                offset(step.offset_us),
                if step.skip.is_some() { "skip" } else { "run" },
                one_line(step.action.text(), 70),
                step.skip
                    .clone()
                    .unwrap_or_else(|| step.expected.describe())
            );
        }
        println!(
            "{} statement{} ({} to run); pass --against URL to replay them on a sandbox",
            steps.len(),
            if steps.len() == 1 { "" } else { "s" },
            steps.iter().filter(|s| s.skip.is_none()).count()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let failed = runtime.block_on(replay(&url, &steps))?;
    Ok(if failed || damage.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// The plan: statements and their recorded outcomes

/// What to run for one recorded statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A simple query (possibly several statements), run with the simple query protocol.
    Simple {
        /// The query text.
        text: String,
    },
    /// An extended-protocol execution: the parsed text with the bound parameters.
    Extended {
        /// The statement text from its Parse.
        text: String,
        /// The bound values.
        params: Vec<Value>,
        /// The result format codes the Bind asked for, when the recording says.
        result_formats: Option<String>,
    },
    /// A Parse whose only outcome was an error: prepare the text and expect that error.
    Prepare {
        /// The statement text.
        text: String,
    },
    /// `COPY … FROM STDIN`, sending the data the client sent.
    CopyIn {
        /// The COPY statement.
        text: String,
        /// The data, concatenated.
        data: Vec<u8>,
    },
    /// `COPY … TO STDOUT`, comparing the data the client received.
    CopyOut {
        /// The COPY statement.
        text: String,
    },
    /// Something replay cannot run (a function call, an execute of an unknown portal).
    Unsupported {
        /// What it was.
        what: String,
    },
}

impl Action {
    /// The statement text, for display.
    pub fn text(&self) -> &str {
        match self {
            Action::Simple { text }
            | Action::Extended { text, .. }
            | Action::Prepare { text }
            | Action::CopyIn { text, .. }
            | Action::CopyOut { text } => text,
            Action::Unsupported { what } => what,
        }
    }
}

/// One result set as the client received it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    /// Column names, when a row description was received.
    pub columns: Option<Vec<String>>,
    /// The rows.
    pub rows: Vec<Vec<Value>>,
    /// The command tag, once complete.
    pub tag: Option<String>,
}

/// What the recording says a statement produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Result sets, in order (a simple query can hold several statements).
    pub results: Vec<ResultSet>,
    /// The error that ended it.
    pub error: Option<Diagnostic>,
    /// COPY data sent to the client.
    pub copy_out: Vec<u8>,
    /// Some result data was left out of the recording (a results cap or a gap).
    pub truncated: bool,
}

impl Expected {
    fn is_empty(&self) -> bool {
        self.results.is_empty() && self.error.is_none() && self.copy_out.is_empty()
    }

    /// A short description: the tags, or the error.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .results
            .iter()
            .map(|r| match &r.tag {
                Some(tag) if r.columns.is_some() => format!(
                    "{tag} ({} row{} recorded)",
                    r.rows.len(),
                    if r.rows.len() == 1 { "" } else { "s" }
                ),
                Some(tag) => tag.clone(),
                None => format!("{} rows, no command tag", r.rows.len()),
            })
            .collect();
        if let Some(e) = &self.error {
            parts.push(format!(
                "error {}: {}",
                e.code.as_deref().unwrap_or("?"),
                e.message
            ));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }

    fn set(&mut self) -> &mut ResultSet {
        if self.results.last().is_none_or(|r| r.tag.is_some()) {
            self.results.push(ResultSet::default());
        }
        self.results.last_mut().expect("pushed")
    }
}

/// One statement to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The recorded command's sequence number.
    pub seq: u64,
    /// Its time offset.
    pub offset_us: u64,
    /// What to run.
    pub action: Action,
    /// Why it is not run (refused by the gateway, not run in the original session...).
    pub skip: Option<String>,
    /// Output columns the gateway masked: their recorded values are not the real ones, so
    /// they are not compared.
    pub masked: Vec<String>,
    /// The recorded outcome.
    pub expected: Expected,
}

/// A client command within the current exchange.
enum Item {
    /// A statement (index into the steps).
    Step(usize),
    /// A Parse: statement name, text, where it was.
    Parse(String, String, u64, u64),
    /// Bind, Describe, Close, ...: produce no result data of their own.
    Other,
}

#[derive(Clone)]
struct Statement {
    text: String,
    blocked: Option<String>,
    masked: Vec<String>,
}

/// Pairs each recorded statement with its recorded outcome.
pub fn plan(events: &[Event]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut statements: HashMap<String, Statement> = HashMap::new();
    let mut portals: HashMap<String, (String, Vec<Value>, Option<String>)> = HashMap::new();
    // The exchange: client commands, then the server's answers to them.
    let mut items: Vec<Item> = Vec::new();
    let mut cursor = 0usize;
    let mut answering = false;
    // Steps whose batch an error cut short: everything after the failed one without an outcome.
    let mut failed_at: Option<usize> = None;

    let finish = |items: &mut Vec<Item>,
                  cursor: &mut usize,
                  failed_at: &mut Option<usize>,
                  steps: &mut Vec<Step>| {
        if let Some(at) = failed_at.take() {
            for item in &items[at.min(items.len())..] {
                if let Item::Step(i) = item
                    && steps[*i].expected.is_empty()
                    && steps[*i].skip.is_none()
                {
                    steps[*i].skip = Some(
                        "not run in the recorded session: an earlier statement of its batch \
                         failed"
                            .into(),
                    );
                }
            }
        }
        items.clear();
        *cursor = 0;
    };

    for event in events {
        let client_side = matches!(&event.body, EventBody::Command(_) | EventBody::Decision(_))
            || matches!(&event.body, EventBody::CopyData(c) if c.direction == Direction::ToServer);
        if client_side && answering {
            finish(&mut items, &mut cursor, &mut failed_at, &mut steps);
            answering = false;
        }
        let new_step = |steps: &mut Vec<Step>, action: Action| {
            steps.push(Step {
                seq: event.seq,
                offset_us: event.offset_us,
                action,
                skip: None,
                masked: Vec::new(),
                expected: Expected::default(),
            });
            steps.len() - 1
        };
        // The first statement at or after the cursor: what server data belongs to.
        let current = |items: &[Item], cursor: &mut usize| -> Option<usize> {
            while *cursor < items.len() {
                if let Item::Step(i) = items[*cursor] {
                    return Some(i);
                }
                *cursor += 1;
            }
            None
        };
        match &event.body {
            EventBody::Command(c) => match c.kind.as_str() {
                "query" => {
                    let text = c.text.clone().unwrap_or_default();
                    let i = new_step(&mut steps, Action::Simple { text });
                    items.push(Item::Step(i));
                }
                "parse" => {
                    let name = c.statement.clone().unwrap_or_default();
                    let text = c.text.clone().unwrap_or_default();
                    statements.insert(
                        name.clone(),
                        Statement {
                            text: text.clone(),
                            blocked: None,
                            masked: Vec::new(),
                        },
                    );
                    items.push(Item::Parse(name, text, event.seq, event.offset_us));
                }
                "bind" => {
                    let portal = c.portal.clone().unwrap_or_default();
                    let statement = c.statement.clone().unwrap_or_default();
                    let formats = c.attributes.get("result_formats").cloned();
                    portals.insert(portal, (statement, c.params.clone(), formats));
                    items.push(Item::Other);
                }
                "execute" => {
                    let portal = c.portal.clone().unwrap_or_default();
                    let bound = portals.get(&portal).cloned();
                    let statement = bound
                        .as_ref()
                        .and_then(|(name, _, _)| statements.get(name).cloned());
                    let i = match (bound, statement) {
                        (Some((_, params, result_formats)), Some(st)) => {
                            let i = new_step(
                                &mut steps,
                                Action::Extended {
                                    text: st.text.clone(),
                                    params,
                                    result_formats,
                                },
                            );
                            steps[i].skip = st.blocked.clone();
                            steps[i].masked = st.masked.clone();
                            i
                        }
                        _ => {
                            let i = new_step(
                                &mut steps,
                                Action::Unsupported {
                                    what: format!(
                                        "execute of portal {portal:?}, whose statement is not in the recording"
                                    ),
                                },
                            );
                            steps[i].skip = Some("its statement is not in the recording".into());
                            i
                        }
                    };
                    items.push(Item::Step(i));
                }
                "function_call" => {
                    let i = new_step(
                        &mut steps,
                        Action::Unsupported {
                            what: "function call (fast-path protocol)".into(),
                        },
                    );
                    steps[i].skip = Some("fast-path function calls are not replayed".into());
                    items.push(Item::Step(i));
                }
                // copy_done / copy_fail continue the COPY in progress; describe, close, sync
                // and others produce no result data of their own.
                _ => items.push(Item::Other),
            },
            EventBody::Decision(d) => {
                let refused = match d.decision {
                    DecisionKind::Allow | DecisionKind::Approved => None,
                    other => Some(format!(
                        "{} by the gateway{}{}",
                        match other {
                            DecisionKind::Block => "blocked",
                            DecisionKind::Approve => "held for approval",
                            DecisionKind::Denied => "denied",
                            _ => "expired",
                        },
                        d.rule
                            .as_deref()
                            .map(|r| format!(" (rule \"{r}\")"))
                            .unwrap_or_default(),
                        d.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )),
                };
                match items.last() {
                    // The last decision counts: a held statement may be approved later.
                    Some(Item::Step(i)) => {
                        steps[*i].skip = refused;
                        steps[*i].masked = d.masked.clone();
                    }
                    Some(Item::Parse(name, ..)) => {
                        if let Some(st) = statements.get_mut(name) {
                            st.blocked = refused.map(|why| format!("its statement was {why}"));
                            st.masked = d.masked.clone();
                        }
                    }
                    _ => {}
                }
            }
            EventBody::CopyData(c) if c.direction == Direction::ToServer => {
                if let Some(i) = items.iter().rev().find_map(|item| match item {
                    Item::Step(i) => Some(*i),
                    _ => None,
                }) {
                    let bytes = c.data.as_bytes().unwrap_or_default();
                    match &mut steps[i].action {
                        Action::Simple { text } => {
                            steps[i].action = Action::CopyIn {
                                text: std::mem::take(text),
                                data: bytes.to_vec(),
                            }
                        }
                        Action::CopyIn { data, .. } => data.extend_from_slice(bytes),
                        _ => {}
                    }
                }
            }
            EventBody::CopyData(c) => {
                answering = true;
                if let Some(i) = current(&items, &mut cursor) {
                    let step = &mut steps[i];
                    if let Action::Simple { text } = &mut step.action {
                        step.action = Action::CopyOut {
                            text: std::mem::take(text),
                        };
                    }
                    step.expected
                        .copy_out
                        .extend_from_slice(c.data.as_bytes().unwrap_or_default());
                }
            }
            EventBody::RowDescription(r) => {
                answering = true;
                // A description with no statement waiting answers a Describe of a prepared
                // statement: nothing to compare.
                if let Some(i) = current(&items, &mut cursor) {
                    let expected = &mut steps[i].expected;
                    expected.results.push(ResultSet {
                        columns: Some(r.columns.iter().map(|c| c.name.clone()).collect()),
                        ..ResultSet::default()
                    });
                }
            }
            EventBody::Rows(r) => {
                answering = true;
                if let Some(i) = current(&items, &mut cursor) {
                    steps[i].expected.set().rows.extend(r.rows.iter().cloned());
                }
            }
            EventBody::CommandComplete(c) => {
                answering = true;
                if let Some(i) = current(&items, &mut cursor) {
                    steps[i].expected.set().tag = Some(c.tag.clone());
                    // An execution has one result; a simple query may have more.
                    if !matches!(steps[i].action, Action::Simple { .. }) {
                        cursor += 1;
                    }
                }
            }
            EventBody::Error(d) => {
                answering = true;
                // The error belongs to the next statement still waiting; when none is (a
                // Parse sent on its own), to the first Parse not yet answered.
                let from = cursor;
                let target = match current(&items, &mut cursor) {
                    Some(i) => Some(i),
                    None => {
                        let parse =
                            items[from.min(items.len())..]
                                .iter()
                                .find_map(|item| match item {
                                    Item::Parse(name, text, seq, at) => {
                                        Some((name.clone(), text.clone(), *seq, *at))
                                    }
                                    _ => None,
                                });
                        parse.map(|(name, text, seq, at)| {
                            steps.push(Step {
                                seq,
                                offset_us: at,
                                action: Action::Prepare { text },
                                skip: statements.get(&name).and_then(|s| s.blocked.clone()),
                                masked: Vec::new(),
                                expected: Expected::default(),
                            });
                            steps.len() - 1
                        })
                    }
                };
                if let Some(i) = target {
                    // Rows received before the error stay in an unfinished set, without a tag.
                    steps[i].expected.error = Some(d.clone());
                    cursor += 1;
                    if failed_at.is_none() {
                        failed_at = Some(cursor);
                    }
                }
            }
            EventBody::ResultsTruncated(_) | EventBody::Gap(_) => {
                let i = current(&items, &mut cursor).or(steps.len().checked_sub(1));
                if let Some(i) = i {
                    steps[i].expected.truncated = true;
                }
            }
            EventBody::Notice(_) | EventBody::Notification(_) => answering = true,
            EventBody::SessionStart(_) | EventBody::Intent(_) | EventBody::SessionEnd(_) => {}
            // Writers hold rows packed; a recording reads back as `Rows`.
            EventBody::PackedRows(_) => {}
        }
    }
    finish(&mut items, &mut cursor, &mut failed_at, &mut steps);
    // Parse-only steps were appended when their error arrived: put them in recorded order.
    steps.sort_by_key(|s| s.seq);
    // Bind's result formats are not always recorded: binary results show in their bytes.
    for step in &mut steps {
        if let Action::Extended { result_formats, .. } = &mut step.action
            && result_formats.is_none()
            && looks_binary(&step.expected)
        {
            *result_formats = Some("1".into());
        }
    }
    steps
}

/// Whether recorded rows look like binary-format values: bytes that are not UTF-8, or control
/// characters that text output of PostgreSQL's types never holds (NUL can never be in text).
fn looks_binary(expected: &Expected) -> bool {
    expected
        .results
        .iter()
        .flat_map(|r| r.rows.iter().flatten())
        .any(|v| match v {
            Value::Binary(_) => true,
            Value::Text(t) => t
                .bytes()
                .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')),
            Value::Null => false,
        })
}

// ---------------------------------------------------------------------------------------------
// Replaying

/// What the sandbox returned for one statement.
#[derive(Debug, Default)]
struct Got {
    results: Vec<GotSet>,
    /// SQLSTATE and message.
    error: Option<(String, String)>,
    copy_out: Vec<u8>,
    /// Rows COPY FROM STDIN loaded.
    copied: Option<u64>,
    /// Values came back in binary format.
    binary: bool,
    /// A COPY ran.
    copy: bool,
}

#[derive(Debug, Default)]
struct GotSet {
    columns: Option<Vec<String>>,
    rows: Vec<Vec<Option<Vec<u8>>>>,
    count: Option<u64>,
}

impl Got {
    fn set(&mut self) -> &mut GotSet {
        if self.results.last().is_none_or(|r| r.count.is_some()) {
            self.results.push(GotSet::default());
        }
        self.results.last_mut().expect("pushed")
    }
}

/// Per-connection replay state: statements prepared on the sandbox.
struct Sandbox {
    client: Client,
    /// `PREPARE`d names by statement text.
    prepared: HashMap<String, String>,
    /// Extended-protocol statements by text.
    statements: HashMap<String, tokio_postgres::Statement>,
}

/// Runs every step on the sandbox at `url`, printing a line per step and a summary. Returns
/// whether anything differed.
async fn replay(url: &str, steps: &[Step]) -> Result<bool> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("{url:?} is not a PostgreSQL connection URL"))?;
    if config.get_application_name().is_none() {
        config.application_name("postern replay");
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to the sandbox {}", redact(url)))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postern: the sandbox connection failed: {e}");
        }
    });
    let mut sandbox = Sandbox {
        client,
        prepared: HashMap::new(),
        statements: HashMap::new(),
    };
    let (mut ok, mut diff, mut skipped) = (0usize, 0usize, 0usize);
    for (n, step) in steps.iter().enumerate() {
        let head = format!("#{:<4} {:>10}", n + 1, offset(step.offset_us));
        let text = one_line(step.action.text(), 60);
        if let Some(why) = &step.skip {
            skipped += 1;
            println!("{head}  skip  {text}  — {why}");
            continue;
        }
        let got = sandbox.run(&step.action).await?;
        match compare(&step.expected, &got, &step.masked) {
            Ok(note) => {
                ok += 1;
                println!("{head}  ok    {text}  — {note}");
            }
            Err(why) => {
                diff += 1;
                println!("{head}  DIFF  {text}  — {why}");
            }
        }
    }
    drop(sandbox);
    let _ = driver.await;
    println!(
        "replayed {} of {} statement{}: {ok} matched, {diff} differed, {skipped} skipped",
        ok + diff,
        steps.len(),
        if steps.len() == 1 { "" } else { "s" }
    );
    Ok(diff > 0)
}

impl Sandbox {
    async fn run(&mut self, action: &Action) -> Result<Got> {
        match action {
            Action::Simple { text } => self.simple(text).await,
            Action::Extended {
                text,
                params,
                result_formats,
            } => self.extended(text, params, result_formats.as_deref()).await,
            Action::Prepare { text } => {
                let mut got = Got::default();
                if let Err(e) = self.client.prepare(text).await {
                    got.error = Some(db_error(e)?);
                }
                Ok(got)
            }
            Action::CopyIn { text, data } => {
                let mut got = Got {
                    copy: true,
                    ..Got::default()
                };
                let outcome = async {
                    let sink = self
                        .client
                        .copy_in::<_, bytes::Bytes>(text.as_str())
                        .await?;
                    futures::pin_mut!(sink);
                    sink.send(bytes::Bytes::from(data.clone())).await?;
                    sink.finish().await
                }
                .await;
                match outcome {
                    Ok(n) => got.copied = Some(n),
                    Err(e) => got.error = Some(db_error(e)?),
                }
                Ok(got)
            }
            Action::CopyOut { text } => {
                let mut got = Got {
                    copy: true,
                    ..Got::default()
                };
                let outcome = async {
                    let stream = self.client.copy_out(text.as_str()).await?;
                    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
                    Ok::<_, tokio_postgres::Error>(chunks.concat())
                }
                .await;
                match outcome {
                    Ok(data) => got.copy_out = data,
                    Err(e) => got.error = Some(db_error(e)?),
                }
                Ok(got)
            }
            Action::Unsupported { what } => bail!("cannot replay {what}"),
        }
    }

    /// Runs `text` with the simple query protocol; results are text.
    async fn simple(&mut self, text: &str) -> Result<Got> {
        let mut got = Got::default();
        let stream = match self.client.simple_query_raw(text).await {
            Ok(s) => s,
            Err(e) => {
                got.error = Some(db_error(e)?);
                return Ok(got);
            }
        };
        futures::pin_mut!(stream);
        while let Some(message) = stream.next().await {
            match message {
                Ok(SimpleQueryMessage::RowDescription(columns)) => got.results.push(GotSet {
                    columns: Some(columns.iter().map(|c| c.name().to_owned()).collect()),
                    ..GotSet::default()
                }),
                Ok(SimpleQueryMessage::Row(row)) => {
                    let values = (0..row.len())
                        .map(|i| row.get(i).map(|s| s.as_bytes().to_vec()))
                        .collect();
                    got.set().rows.push(values);
                }
                Ok(SimpleQueryMessage::CommandComplete(n)) => got.set().count = Some(n),
                Ok(_) => {}
                Err(e) => {
                    got.error = Some(db_error(e)?);
                    break;
                }
            }
        }
        Ok(got)
    }

    async fn extended(
        &mut self,
        text: &str,
        params: &[Value],
        result_formats: Option<&str>,
    ) -> Result<Got> {
        let binary_params = params.iter().any(|p| matches!(p, Value::Binary(_)));
        let binary_results = match result_formats {
            Some(f) => f.split(',').any(|code| code.trim() == "1"),
            None => false,
        };
        if !binary_results && !binary_params {
            if params.is_empty() {
                return self.simple(text).await;
            }
            let name = match self.prepared.get(text) {
                Some(name) => name.clone(),
                None => {
                    let name = format!("postern_replay_{}", self.prepared.len() + 1);
                    let prepare = format!("PREPARE {name} AS {text}");
                    if let Err(e) = self.client.batch_execute(&prepare).await {
                        return Ok(Got {
                            error: Some(db_error(e)?),
                            ..Got::default()
                        });
                    }
                    self.prepared.insert(text.to_owned(), name.clone());
                    name
                }
            };
            let args: Vec<String> = params.iter().map(literal).collect();
            return self
                .simple(&format!("EXECUTE {name}({})", args.join(", ")))
                .await;
        }
        // Binary: the extended protocol with the recorded parameter bytes; results in binary.
        let mut got = Got {
            binary: true,
            ..Got::default()
        };
        let statement = match self.statements.get(text) {
            Some(s) => s.clone(),
            None => match self.client.prepare(text).await {
                Ok(s) => {
                    self.statements.insert(text.to_owned(), s.clone());
                    s
                }
                Err(e) => {
                    got.error = Some(db_error(e)?);
                    return Ok(got);
                }
            },
        };
        let columns = statement
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let outcome = async {
            let stream = self
                .client
                .query_raw(&statement, params.iter().map(RawParam))
                .await?;
            futures::pin_mut!(stream);
            let mut rows = Vec::new();
            while let Some(row) = stream.next().await {
                let row = row?;
                let mut values = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    values.push(row.try_get::<_, Option<RawValue>>(i)?.map(|v| v.0));
                }
                rows.push(values);
            }
            Ok::<_, tokio_postgres::Error>((rows, stream.rows_affected()))
        }
        .await;
        match outcome {
            Ok((rows, count)) => got.results.push(GotSet {
                columns: (!statement.columns().is_empty()).then_some(columns),
                rows,
                count,
            }),
            Err(e) => got.error = Some(db_error(e)?),
        }
        Ok(got)
    }
}

/// A text parameter as an SQL literal that means the same whatever
/// `standard_conforming_strings` is: with backslashes, an `E''` string.
fn literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Text(s) if s.contains('\\') => {
            format!("E'{}'", s.replace('\\', r"\\").replace('\'', "''"))
        }
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("decode('{hex}', 'hex')")
        }
    }
}

/// The SQLSTATE and message of a server error; any other failure (the connection broke) ends
/// the replay.
fn db_error(e: tokio_postgres::Error) -> Result<(String, String)> {
    match e.as_db_error() {
        Some(db) => Ok((db.code().code().to_owned(), db.message().to_owned())),
        None => Err(anyhow::Error::new(e).context("the sandbox connection failed")),
    }
}

/// A recorded parameter, sent as recorded: text values in text format, bytes in binary.
#[derive(Debug)]
struct RawParam<'a>(&'a Value);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0.as_bytes() {
            None => Ok(IsNull::Yes),
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        match self.0 {
            Value::Binary(_) => tokio_postgres::types::Format::Binary,
            _ => tokio_postgres::types::Format::Text,
        }
    }

    to_sql_checked!();
}

/// A result value's bytes, whatever its type.
struct RawValue(Vec<u8>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw.to_vec()))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// The row count at the end of a command tag (`SELECT 3`, `INSERT 0 1`); 0 for tags without.
fn tag_count(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn show_row(row: &[Value]) -> String {
    let cells: Vec<String> = row.iter().map(sql_literal).collect();
    one_line(&format!("({})", cells.join(", ")), 120)
}

fn show_got_row(row: &[Option<Vec<u8>>]) -> String {
    let values: Vec<Value> = row
        .iter()
        .map(|v| v.as_deref().map_or(Value::Null, Value::from_bytes))
        .collect();
    show_row(&values)
}

/// `Ok(note)` when the sandbox's outcome matches the recording, `Err(what differs)` otherwise.
fn compare(expected: &Expected, got: &Got, masked: &[String]) -> Result<String, String> {
    if got.copy {
        return compare_copy(expected, got);
    }
    for (n, (e, g)) in expected.results.iter().zip(&got.results).enumerate() {
        let which = if expected.results.len() > 1 {
            format!("result {}: ", n + 1)
        } else {
            String::new()
        };
        if let (Some(ec), Some(gc)) = (&e.columns, &g.columns)
            && ec != gc
        {
            return Err(format!(
                "{which}columns differ: recorded ({}), the sandbox returned ({})",
                ec.join(", "),
                gc.join(", ")
            ));
        }
        let recorded_count = e.tag.as_deref().map(tag_count);
        // Commands-only recordings keep the tag but no rows.
        let rows_recorded =
            !(e.rows.is_empty() && recorded_count.is_some_and(|c| c > 0) && !expected.truncated);
        // Masked columns hold what the client saw, not the data: leave them out.
        let names = e.columns.as_ref().or(g.columns.as_ref());
        let skipped: Vec<usize> = names
            .map(|names| {
                (0..names.len())
                    .filter(|&i| masked.contains(&names[i]))
                    .collect()
            })
            .unwrap_or_default();
        if rows_recorded {
            for (i, (er, gr)) in e.rows.iter().zip(&g.rows).enumerate() {
                let same = er.len() == gr.len()
                    && er.iter().zip(gr).enumerate().all(|(c, (ev, gv))| {
                        skipped.contains(&c) || ev.as_bytes() == gv.as_deref()
                    });
                if !same {
                    return Err(format!(
                        "{which}row {} differs: recorded {}, the sandbox returned {}",
                        i + 1,
                        show_row(er),
                        show_got_row(gr)
                    ));
                }
            }
            let short = if expected.truncated {
                g.rows.len() < e.rows.len()
            } else {
                g.rows.len() != e.rows.len()
            };
            if short {
                return Err(format!(
                    "{which}recorded {} row{}, the sandbox returned {}",
                    e.rows.len(),
                    if e.rows.len() == 1 { "" } else { "s" },
                    g.rows.len()
                ));
            }
        }
        if let (Some(tag), Some(count)) = (&e.tag, g.count)
            && tag_count(tag) != count
        {
            return Err(format!(
                "{which}recorded {tag}, the sandbox reported {count} rows"
            ));
        }
    }
    compare_errors(expected, got)?;
    // Result sets before an error were compared pairwise; without errors the counts must match.
    if expected.error.is_none() && expected.results.len() != got.results.len() {
        return Err(format!(
            "recorded {} result set{}, the sandbox returned {}",
            expected.results.len(),
            if expected.results.len() == 1 { "" } else { "s" },
            got.results.len()
        ));
    }
    if let Some((code, _)) = &got.error {
        return Ok(format!("error {code}, as recorded"));
    }
    if expected.is_empty() {
        return Ok("ran (nothing recorded to compare with)".into());
    }
    let mut note = expected.describe();
    if got.binary {
        note.push_str(", compared in binary");
    }
    if expected.truncated {
        note.push_str(", recorded results capped: compared the recorded part");
    }
    if !masked.is_empty() {
        note.push_str(&format!(
            ", masked columns not compared: {}",
            masked.join(", ")
        ));
    }
    Ok(note)
}

/// Errors: both or neither, with the same SQLSTATE.
fn compare_errors(expected: &Expected, got: &Got) -> Result<(), String> {
    match (&expected.error, &got.error) {
        (Some(e), Some((code, message))) => {
            let recorded = e.code.as_deref().unwrap_or("");
            if recorded != code {
                return Err(format!(
                    "recorded error {recorded} ({}), the sandbox failed with {code} ({message})",
                    e.message
                ));
            }
        }
        (Some(e), None) => {
            return Err(format!(
                "recorded error {} ({}), the sandbox ran it without error",
                e.code.as_deref().unwrap_or("?"),
                e.message
            ));
        }
        (None, Some((code, message))) => {
            return Err(format!(
                "the sandbox failed with {code} ({message}); the recording has {}",
                expected.describe()
            ));
        }
        (None, None) => {}
    }
    Ok(())
}

/// COPY: the data sent to the client, or the rows loaded, and errors.
fn compare_copy(expected: &Expected, got: &Got) -> Result<String, String> {
    compare_errors(expected, got)?;
    if let Some((code, _)) = &got.error {
        return Ok(format!("error {code}, as recorded"));
    }
    if expected.copy_out != got.copy_out
        && !(expected.truncated && got.copy_out.starts_with(&expected.copy_out))
    {
        let at = expected
            .copy_out
            .iter()
            .zip(&got.copy_out)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.copy_out.len().min(got.copy_out.len()));
        return Err(format!(
            "COPY data differs at byte {at} (recorded {} bytes, the sandbox sent {})",
            expected.copy_out.len(),
            got.copy_out.len()
        ));
    }
    let tag = expected.results.last().and_then(|r| r.tag.as_deref());
    if let (Some(n), Some(tag)) = (got.copied, tag)
        && tag_count(tag) != n
    {
        return Err(format!("recorded {tag}, the sandbox copied {n} rows"));
    }
    Ok(match got.copied {
        Some(n) => format!("copied {n} rows, as recorded"),
        None => format!("{} bytes of COPY data, as recorded", got.copy_out.len()),
    })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_record::{
        Column, Command, CommandComplete, CopyData, DecisionRecord, RowDescription, Rows,
    };

    fn events(bodies: Vec<EventBody>) -> Vec<Event> {
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                seq: i as u64,
                offset_us: i as u64 * 10,
                body,
            })
            .collect()
    }

    fn allow() -> EventBody {
        EventBody::Decision(DecisionRecord::new(DecisionKind::Allow))
    }

    fn desc(names: &[&str]) -> EventBody {
        EventBody::RowDescription(RowDescription {
            columns: names.iter().map(|n| Column::named(*n)).collect(),
        })
    }

    fn rows(rows: &[&[&str]]) -> EventBody {
        EventBody::Rows(Rows {
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| Value::from(*v)).collect())
                .collect(),
        })
    }

    fn done(tag: &str) -> EventBody {
        EventBody::CommandComplete(CommandComplete { tag: tag.into() })
    }

    fn error(code: &str) -> EventBody {
        EventBody::Error(Diagnostic::new("ERROR", code, "boom"))
    }

    #[test]
    fn simple_queries_get_the_results_that_follow_them() {
        let steps = plan(&events(vec![
            EventBody::Command(Command::query("select 1; select 2")),
            allow(),
            desc(&["a"]),
            rows(&[&["1"]]),
            done("SELECT 1"),
            desc(&["b"]),
            rows(&[&["2"]]),
            done("SELECT 1"),
            EventBody::Command(Command::query("select nope")),
            allow(),
            error("42703"),
        ]));
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].expected.results.len(), 2);
        assert_eq!(
            steps[0].expected.results[1].rows,
            vec![vec![Value::from("2")]]
        );
        assert_eq!(
            steps[1].expected.error.as_ref().unwrap().code.as_deref(),
            Some("42703")
        );
    }

    #[test]
    fn extended_batches_pair_results_with_executes_and_skip_after_an_error() {
        let steps = plan(&events(vec![
            EventBody::Command(Command::parse("s1", "select $1::int")),
            allow(),
            EventBody::Command(Command::bind("", "s1", vec![Value::from("7")])),
            EventBody::Command(Command::execute("")),
            EventBody::Command(Command::parse("", "select broken(")),
            allow(),
            EventBody::Command(Command::bind("", "", vec![])),
            EventBody::Command(Command::execute("")),
            EventBody::Command(Command::bind("", "s1", vec![Value::from("8")])),
            EventBody::Command(Command::execute("")),
            desc(&["int4"]),
            rows(&[&["7"]]),
            done("SELECT 1"),
            error("42601"),
        ]));
        assert_eq!(steps.len(), 3);
        assert_eq!(
            steps[0].action,
            Action::Extended {
                text: "select $1::int".into(),
                params: vec![Value::from("7")],
                result_formats: None
            }
        );
        assert_eq!(
            steps[0].expected.results[0].tag.as_deref(),
            Some("SELECT 1")
        );
        assert_eq!(
            steps[1].expected.error.as_ref().unwrap().code.as_deref(),
            Some("42601")
        );
        assert!(
            steps[2]
                .skip
                .as_deref()
                .unwrap()
                .contains("earlier statement")
        );
    }

    #[test]
    fn a_parse_error_on_its_own_becomes_a_prepare_step_and_blocks_are_skipped() {
        let mut block = DecisionRecord::new(DecisionKind::Block);
        block.rule = Some("no-drop".into());
        let steps = plan(&events(vec![
            EventBody::Command(Command::parse("bad", "selec 1")),
            allow(),
            error("42601"),
            EventBody::Command(Command::query("drop table customers")),
            EventBody::Decision(block.clone()),
            error("42501"),
            EventBody::Command(Command::parse("p", "delete from t")),
            EventBody::Decision(block),
            error("42501"),
            EventBody::Command(Command::bind("", "p", vec![])),
            EventBody::Command(Command::execute("")),
            error("26000"),
        ]));
        assert_eq!(steps.len(), 4, "{steps:#?}");
        assert_eq!(
            steps[0].action,
            Action::Prepare {
                text: "selec 1".into()
            }
        );
        assert!(steps[0].skip.is_none());
        assert!(steps[1].skip.as_deref().unwrap().contains("no-drop"));
        assert!(steps[2].skip.is_some(), "the blocked parse itself");
        assert!(steps[3].skip.as_deref().unwrap().contains("blocked"));
    }

    #[test]
    fn copy_in_collects_the_client_data() {
        let steps = plan(&events(vec![
            EventBody::Command(Command::query("copy t from stdin")),
            allow(),
            EventBody::CopyData(CopyData::new(Direction::ToServer, b"1\n")),
            EventBody::CopyData(CopyData::new(Direction::ToServer, b"2\n")),
            EventBody::Command(Command::new("copy_done")),
            done("COPY 2"),
        ]));
        assert_eq!(steps.len(), 1);
        assert_eq!(
            steps[0].action,
            Action::CopyIn {
                text: "copy t from stdin".into(),
                data: b"1\n2\n".to_vec()
            }
        );
        assert_eq!(steps[0].expected.results[0].tag.as_deref(), Some("COPY 2"));
    }

    #[test]
    fn comparisons_name_the_first_difference() {
        let expected = Expected {
            results: vec![ResultSet {
                columns: Some(vec!["a".into()]),
                rows: vec![vec![Value::from("1")], vec![Value::from("2")]],
                tag: Some("SELECT 2".into()),
            }],
            ..Expected::default()
        };
        let got = |values: &[&str]| Got {
            results: vec![GotSet {
                columns: Some(vec!["a".into()]),
                rows: values
                    .iter()
                    .map(|v| vec![Some(v.as_bytes().to_vec())])
                    .collect(),
                count: Some(values.len() as u64),
            }],
            ..Got::default()
        };
        assert!(compare(&expected, &got(&["1", "2"]), &[]).is_ok());
        let diff = compare(&expected, &got(&["1", "3"]), &[]).unwrap_err();
        assert!(
            diff.contains("row 2 differs: recorded ('2'), the sandbox returned ('3')"),
            "{diff}"
        );
        let masked = compare(&expected, &got(&["1", "3"]), &["a".into()]).unwrap();
        assert!(
            masked.contains("masked columns not compared: a"),
            "{masked}"
        );
        let diff = compare(&expected, &got(&["1"]), &[]).unwrap_err();
        assert!(
            diff.contains("recorded 2 rows, the sandbox returned 1"),
            "{diff}"
        );
        let failed = Got {
            error: Some(("42P01".into(), "nope".into())),
            ..Got::default()
        };
        assert!(
            compare(&expected, &failed, &[])
                .unwrap_err()
                .contains("42P01")
        );
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal(&Value::from("it's")), "'it''s'");
        assert_eq!(literal(&Value::from(r"a\b'")), r"E'a\\b'''");
        assert_eq!(literal(&Value::Null), "NULL");
    }

    #[test]
    fn passwords_are_kept_out_of_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
