//! The event model: what a recording says happened, in protocol-neutral terms.
//!
//! Every protocol engine (PostgreSQL now; MySQL, HTTP, SSH and MCP later) describes a session
//! with the same few event kinds, so `sessions show`, export, replay and verify work on all of
//! them. Protocol specifics go in free-form strings (`Command::kind`, `CommandComplete::tag`)
//! and in the sorted `attributes` maps, never in new event kinds.
//!
//! On disk each event is a binary header (sequence number, time offset, kind byte) followed by
//! the JSON object of its body (see `docs/recording-format.md`). The JSON form of an [`Event`]
//! (with a `type` tag) is the export format.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

pub use crate::packed_rows::{MalformedRow, PackedRows, RowValues};

/// One recorded event: where it sits in the session and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the session, from 0, without holes: also the Merkle leaf index, so a
    /// dropped or reordered event shows as a broken sequence.
    pub seq: u64,
    /// Microseconds since the session started, from a monotonic clock (wall-clock jumps do
    /// not reorder a timeline); the wall-clock start is in [`SessionStart`].
    pub offset_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened, by kind. The kind is stored as one byte ([`EventKind`]) next to the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// Who connected to what, from where, through which node, under which policy.
    SessionStart(SessionStart),
    /// A command exactly as the client sent it.
    Command(Command),
    /// What the gateway decided about the preceding command.
    Decision(DecisionRecord),
    /// The shape of a result set.
    RowDescription(RowDescription),
    /// A batch of result rows as the client received them (after masking).
    Rows(Rows),
    /// Rows as an engine captured them, in one buffer ([`PackedRows`]): written exactly like
    /// `Rows` (kind and JSON), and read back as `Rows`.
    #[serde(rename = "rows", skip_deserializing)]
    PackedRows(PackedRows),
    /// The end of one command's result (`SELECT 3`, `HTTP 200`, exit status...).
    CommandComplete(CommandComplete),
    /// An error the client received.
    Error(Diagnostic),
    /// A notice or warning the client received.
    Notice(Diagnostic),
    /// An asynchronous notification the client received (PostgreSQL `NOTIFY`).
    Notification(Notification),
    /// Bulk data in either direction (COPY, HTTP bodies, terminal output).
    CopyData(CopyData),
    /// Result data left out on purpose by the `record_results` cap.
    ResultsTruncated(ResultsTruncated),
    /// An agent's stated intent or prompt, linked to the commands it causes.
    Intent(Intent),
    /// Events the gateway could not record (best-effort mode only).
    Gap(Gap),
    /// The end of the session; always the last event of a sealed recording.
    SessionEnd(SessionEnd),
}

/// The one-byte code of an event kind, stored in every frame so a verifier can count gaps
/// and find the start and end without parsing JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// [`EventBody::SessionStart`].
    SessionStart = 1,
    /// [`EventBody::Command`].
    Command = 2,
    /// [`EventBody::Decision`].
    Decision = 3,
    /// [`EventBody::RowDescription`].
    RowDescription = 4,
    /// [`EventBody::Rows`].
    Rows = 5,
    /// [`EventBody::CommandComplete`].
    CommandComplete = 6,
    /// [`EventBody::Error`].
    Error = 7,
    /// [`EventBody::Notice`].
    Notice = 8,
    /// [`EventBody::Notification`].
    Notification = 9,
    /// [`EventBody::CopyData`].
    CopyData = 10,
    /// [`EventBody::ResultsTruncated`].
    ResultsTruncated = 11,
    /// [`EventBody::Intent`].
    Intent = 12,
    /// [`EventBody::Gap`].
    Gap = 13,
    /// [`EventBody::SessionEnd`].
    SessionEnd = 14,
}

impl EventKind {
    /// The kind for a stored byte, or `None` for a byte no writer produces.
    pub fn from_u8(byte: u8) -> Option<Self> {
        use EventKind::*;
        Some(match byte {
            1 => SessionStart,
            2 => Command,
            3 => Decision,
            4 => RowDescription,
            5 => Rows,
            6 => CommandComplete,
            7 => Error,
            8 => Notice,
            9 => Notification,
            10 => CopyData,
            11 => ResultsTruncated,
            12 => Intent,
            13 => Gap,
            14 => SessionEnd,
            _ => return None,
        })
    }

    /// The snake_case name, as used for `type` in exports.
    pub fn as_str(self) -> &'static str {
        use EventKind::*;
        match self {
            SessionStart => "session_start",
            Command => "command",
            Decision => "decision",
            RowDescription => "row_description",
            Rows => "rows",
            CommandComplete => "command_complete",
            Error => "error",
            Notice => "notice",
            Notification => "notification",
            CopyData => "copy_data",
            ResultsTruncated => "results_truncated",
            Intent => "intent",
            Gap => "gap",
            SessionEnd => "session_end",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventBody {
    /// The kind byte of this body.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::SessionStart(_) => EventKind::SessionStart,
            EventBody::Command(_) => EventKind::Command,
            EventBody::Decision(_) => EventKind::Decision,
            EventBody::RowDescription(_) => EventKind::RowDescription,
            EventBody::Rows(_) | EventBody::PackedRows(_) => EventKind::Rows,
            EventBody::CommandComplete(_) => EventKind::CommandComplete,
            EventBody::Error(_) => EventKind::Error,
            EventBody::Notice(_) => EventKind::Notice,
            EventBody::Notification(_) => EventKind::Notification,
            EventBody::CopyData(_) => EventKind::CopyData,
            EventBody::ResultsTruncated(_) => EventKind::ResultsTruncated,
            EventBody::Intent(_) => EventKind::Intent,
            EventBody::Gap(_) => EventKind::Gap,
            EventBody::SessionEnd(_) => EventKind::SessionEnd,
        }
    }

    /// Append the stored JSON form of the body (no `type` tag: the kind byte carries it); the
    /// recording format hashes exactly these bytes.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            EventBody::SessionStart(b) => serde_json::to_writer(out, b),
            EventBody::Command(b) => serde_json::to_writer(out, b),
            EventBody::Decision(b) => serde_json::to_writer(out, b),
            EventBody::RowDescription(b) => serde_json::to_writer(out, b),
            EventBody::Rows(b) => serde_json::to_writer(out, b),
            EventBody::PackedRows(b) => serde_json::to_writer(out, b),
            EventBody::CommandComplete(b) => serde_json::to_writer(out, b),
            EventBody::Error(b) | EventBody::Notice(b) => serde_json::to_writer(out, b),
            EventBody::Notification(b) => serde_json::to_writer(out, b),
            EventBody::CopyData(b) => serde_json::to_writer(out, b),
            EventBody::ResultsTruncated(b) => serde_json::to_writer(out, b),
            EventBody::Intent(b) => serde_json::to_writer(out, b),
            EventBody::Gap(b) => serde_json::to_writer(out, b),
            EventBody::SessionEnd(b) => serde_json::to_writer(out, b),
        }
    }

    /// Parse a stored body of `kind`.
    pub fn from_json(kind: EventKind, json: &[u8]) -> serde_json::Result<Self> {
        use serde_json::from_slice as p;
        Ok(match kind {
            EventKind::SessionStart => EventBody::SessionStart(p(json)?),
            EventKind::Command => EventBody::Command(p(json)?),
            EventKind::Decision => EventBody::Decision(p(json)?),
            EventKind::RowDescription => EventBody::RowDescription(p(json)?),
            EventKind::Rows => EventBody::Rows(p(json)?),
            EventKind::CommandComplete => EventBody::CommandComplete(p(json)?),
            EventKind::Error => EventBody::Error(p(json)?),
            EventKind::Notice => EventBody::Notice(p(json)?),
            EventKind::Notification => EventBody::Notification(p(json)?),
            EventKind::CopyData => EventBody::CopyData(p(json)?),
            EventKind::ResultsTruncated => EventBody::ResultsTruncated(p(json)?),
            EventKind::Intent => EventBody::Intent(p(json)?),
            EventKind::Gap => EventBody::Gap(p(json)?),
            EventKind::SessionEnd => EventBody::SessionEnd(p(json)?),
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The first event of every recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    /// The session id; also the recording's directory name and part of every signed origin.
    pub session_id: String,
    /// Wall-clock start as Unix microseconds. [`crate::SessionRecorder::start`] sets it at the
    /// same instant it starts the monotonic clock that event offsets count from.
    pub started_at_unix_us: i64,
    /// The verified subject.
    pub subject: String,
    /// The identity's groups.
    pub groups: Vec<String>,
    /// `human`, `agent` or `service`.
    pub identity_kind: String,
    /// Who vouched for the identity (`postern` or an OIDC issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The target name.
    pub target: String,
    /// The protocol spoken (`postgres`, `mysql`, `http`, `ssh`, `mcp`).
    pub protocol: String,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// The gateway node that served the session.
    pub node: String,
    /// The version of the policy that decided the session's commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Protocol-specific facts (database user, application name, TLS version...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl SessionStart {
    /// A start event for `identity` connecting to `target` through `node`; the engine adds
    /// `client_addr`, `policy_version` and attributes as it knows them.
    pub fn new(
        session_id: impl Into<String>,
        identity: &crate::Identity,
        target: &crate::Target,
        node: impl Into<String>,
    ) -> Self {
        SessionStart {
            session_id: session_id.into(),
            started_at_unix_us: 0,
            subject: identity.subject.clone(),
            groups: identity.groups.clone(),
            identity_kind: identity.kind.as_str().to_owned(),
            issuer: Some(identity.issuer.clone()),
            target: target.name.clone(),
            protocol: target.kind.as_str().to_owned(),
            client_addr: None,
            node: node.into(),
            policy_version: None,
            attributes: BTreeMap::new(),
        }
    }
}

/// A client command as sent, before the gateway decides about it.
///
/// `kind` names the protocol step: `query` (PostgreSQL simple query), `parse`, `bind`,
/// `execute`, `describe`, `close`, `function_call`, `copy_fail`; other engines use their own
/// words (`http_request`, `exec`, `tool_call`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The protocol step.
    pub kind: String,
    /// The prepared-statement name (empty string = unnamed), when the step names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// The portal name, for steps that bind or execute one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// The statement text exactly as sent (SQL, `GET /path`, a shell command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Bound parameter values, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Value>,
    /// The causal id of the agent tool call that produced this command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal_id: Option<String>,
    /// Protocol-specific details (parameter type ids, `max_rows`, HTTP headers...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Command {
    /// A command of `kind` with nothing else filled in.
    pub fn new(kind: impl Into<String>) -> Self {
        Command {
            kind: kind.into(),
            statement: None,
            portal: None,
            text: None,
            params: Vec::new(),
            causal_id: None,
            attributes: BTreeMap::new(),
        }
    }

    /// A simple query.
    pub fn query(text: impl Into<String>) -> Self {
        Command {
            text: Some(text.into()),
            ..Command::new("query")
        }
    }

    /// An extended-protocol Parse of `text` as `statement`.
    pub fn parse(statement: impl Into<String>, text: impl Into<String>) -> Self {
        Command {
            statement: Some(statement.into()),
            text: Some(text.into()),
            ..Command::new("parse")
        }
    }

    /// An extended-protocol Bind of `statement` into `portal` with `params`.
    pub fn bind(
        portal: impl Into<String>,
        statement: impl Into<String>,
        params: Vec<Value>,
    ) -> Self {
        Command {
            statement: Some(statement.into()),
            portal: Some(portal.into()),
            params,
            ..Command::new("bind")
        }
    }

    /// An extended-protocol Execute of `portal`.
    pub fn execute(portal: impl Into<String>) -> Self {
        Command {
            portal: Some(portal.into()),
            ..Command::new("execute")
        }
    }
}

/// The gateway's verdict, including the outcome of an approval hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Forwarded.
    Allow,
    /// Refused.
    Block,
    /// Held for a human approval.
    Approve,
    /// A held command was approved and forwarded.
    Approved,
    /// A held command was denied.
    Denied,
    /// A held command timed out waiting for approval.
    Expired,
    /// The caller asked not to wait: the approval request is pending and the command was
    /// refused for now (it is re-submitted once approved).
    Pending,
}

/// A gateway decision about the preceding command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The verdict.
    pub decision: DecisionKind,
    /// The policy rule that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, as told to the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The approval request, for holds and their outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Output columns the mask plan rewrote, so a reader knows recorded values are masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
}

impl DecisionRecord {
    /// A decision with only its verdict set.
    pub fn new(decision: DecisionKind) -> Self {
        DecisionRecord {
            decision,
            rule: None,
            reason: None,
            approval_id: None,
            masked: Vec::new(),
        }
    }
}

impl From<&crate::Decision> for DecisionRecord {
    fn from(d: &crate::Decision) -> Self {
        use crate::Decision as D;
        match d {
            D::Allow => DecisionRecord::new(DecisionKind::Allow),
            D::Block { rule, reason } => DecisionRecord {
                rule: Some(rule.clone()),
                reason: Some(reason.clone()),
                ..DecisionRecord::new(DecisionKind::Block)
            },
            D::Approve { rule } => DecisionRecord {
                rule: Some(rule.clone()),
                ..DecisionRecord::new(DecisionKind::Approve)
            },
        }
    }
}

/// The columns of a result set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDescription {
    /// Columns in order.
    pub columns: Vec<Column>,
}

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column name the client saw.
    pub name: String,
    /// The protocol's type id (PostgreSQL type OID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_id: Option<u32>,
    /// The type name, when the engine knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
}

impl Column {
    /// A column with only its name.
    pub fn named(name: impl Into<String>) -> Self {
        Column {
            name: name.into(),
            type_id: None,
            type_name: None,
        }
    }
}

/// A batch of rows; how rows are batched carries no meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    /// Each row is a list of values, one per column.
    pub rows: Vec<Vec<Value>>,
}

/// A field value: SQL NULL, text, or bytes that are not UTF-8 text.
///
/// Stored as JSON `null`, a JSON string, or `{"b64": "<standard base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// No value (SQL NULL).
    Null,
    /// A UTF-8 value (PostgreSQL text format).
    Text(String),
    /// Raw bytes (binary format, or text in a non-UTF-8 encoding).
    Binary(Vec<u8>),
}

impl Value {
    /// `Text` when `bytes` are UTF-8, `Binary` otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Binary(bytes.to_vec()),
        }
    }

    /// The value's size in bytes as the client received it (0 for NULL); the unit of the
    /// `record_results` cap.
    pub fn len(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Text(s) => s.len(),
            Value::Binary(b) => b.len(),
        }
    }

    /// True for NULL and empty values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes (`None` for NULL).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Null => None,
            Value::Text(s) => Some(s.as_bytes()),
            Value::Binary(b) => Some(b),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Text(t) => s.serialize_str(t),
            Value::Binary(b) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("b64", &B64.encode(b))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null, a string, or {\"b64\": \"...\"}")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
                Ok(Value::Text(s))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut bytes = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "b64" || bytes.is_some() {
                        return Err(de::Error::custom(format!(
                            "unexpected key {key:?} in value"
                        )));
                    }
                    let text: String = map.next_value()?;
                    bytes = Some(B64.decode(text).map_err(de::Error::custom)?);
                }
                bytes
                    .map(Value::Binary)
                    .ok_or_else(|| de::Error::custom("missing key \"b64\""))
            }
        }
        d.deserialize_any(V)
    }
}

/// The end of one command's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandComplete {
    /// The protocol's completion tag (`SELECT 3`, `INSERT 0 1`, `200 OK`).
    pub tag: String,
}

/// An error or notice, with the fields every protocol has some version of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// `ERROR`, `FATAL`, `WARNING`, `NOTICE`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// The machine-readable code (SQLSTATE, HTTP status, errno).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The primary message.
    pub message: String,
    /// Secondary detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A hint for the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with a severity, code and message.
    pub fn new(severity: &str, code: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Some(severity.to_owned()),
            code: Some(code.to_owned()),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
}

/// An asynchronous notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The channel.
    pub channel: String,
    /// The payload.
    pub payload: String,
    /// The notifying backend, when the protocol says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<u32>,
}

/// Which way bulk data flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Sent by the client (COPY FROM STDIN, a request body, keystrokes).
    ToServer,
    /// Received by the client (COPY TO STDOUT, a response body, terminal output).
    ToClient,
}

/// A piece of bulk data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyData {
    /// Which way it flowed.
    pub direction: Direction,
    /// The bytes: text when UTF-8, base64 otherwise; never NULL.
    pub data: Value,
}

impl CopyData {
    /// A piece of data flowing `direction`.
    pub fn new(direction: Direction, bytes: &[u8]) -> Self {
        CopyData {
            direction,
            data: Value::from_bytes(bytes),
        }
    }
}

/// Result data the recorder left out on purpose, written where the omission ended (before the
/// next command, row description, completion or error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsTruncated {
    /// Rows left out.
    pub omitted_rows: u64,
    /// Value bytes (rows) or data bytes (COPY) left out.
    pub omitted_bytes: u64,
    /// Why: the configured cap (`first:10MB`, `none`) or `oversized` for a single row too
    /// large to frame.
    pub reason: String,
}

/// An agent's stated intent, prompt or tool call, recorded beside the commands it causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The causal id stamped on the resulting commands.
    pub causal_id: String,
    /// The intent, prompt or tool-call arguments as sent.
    pub text: String,
}

/// Events lost in best-effort mode, recorded (and signed) where they were lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The sink failure that lost them.
    pub reason: String,
    /// How many events were lost.
    pub lost_events: u64,
    /// How many framed bytes were lost.
    pub lost_bytes: u64,
}

/// The last event of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    /// Why it ended (`client closed`, `upstream closed`, `recording failed: ...`).
    pub reason: String,
    /// True when the gateway did not see the end (the recording was sealed at restart).
    #[serde(default, skip_serializing_if = "is_false")]
    pub interrupted: bool,
    /// Bytes received from the client, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_from_client: Option<u64>,
    /// Bytes sent to the client, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_client: Option<u64>,
}

impl SessionEnd {
    /// A normal end for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        SessionEnd {
            reason: reason.into(),
            interrupted: false,
            bytes_from_client: None,
            bytes_to_client: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_their_three_forms() {
        let rows = Rows {
            rows: vec![vec![
                Value::Null,
                Value::from("héllo"),
                Value::Binary(vec![0xff, 0x00]),
            ]],
        };
        let json = serde_json::to_string(&rows).unwrap();
        assert_eq!(json, r#"{"rows":[[null,"héllo",{"b64":"/wA="}]]}"#);
        assert_eq!(serde_json::from_str::<Rows>(&json).unwrap(), rows);
        assert_eq!(
            Value::from_bytes(&[0xc3, 0x28]),
            Value::Binary(vec![0xc3, 0x28])
        );
    }

    #[test]
    fn every_kind_byte_round_trips() {
        for b in 0..=255u8 {
            if let Some(k) = EventKind::from_u8(b) {
                assert_eq!(k as u8, b);
            }
        }
        assert_eq!(EventKind::from_u8(0), None);
        assert_eq!(EventKind::from_u8(15), None);
    }

    #[test]
    fn export_form_is_tagged_and_flat() {
        let e = Event {
            seq: 3,
            offset_us: 1200,
            body: EventBody::Command(Command::query("select 1")),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"offset_us":1200,"type":"command","kind":"query","text":"select 1"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }

    #[test]
    fn built_from_core_types() {
        use crate::{Identity, IdentityKind, Target, TargetAccess, TargetKind};
        let who = Identity {
            subject: "bot".into(),
            groups: vec!["agents".into()],
            kind: IdentityKind::Agent,
            issuer: "postern".into(),
            expires_at: 0,
        };
        let target = Target {
            name: "orders".into(),
            kind: TargetKind::Postgres,
            access: TargetAccess::default(),
        };
        let s = SessionStart::new("s1", &who, &target, "node-1");
        assert_eq!(
            (
                s.identity_kind.as_str(),
                s.protocol.as_str(),
                s.target.as_str()
            ),
            ("agent", "postgres", "orders")
        );
        let d = DecisionRecord::from(&crate::Decision::Approve {
            rule: "prod-writes".into(),
        });
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"decision":"approve","rule":"prod-writes"}"#);
    }

    #[test]
    fn stored_body_omits_the_tag() {
        let body = EventBody::CommandComplete(CommandComplete {
            tag: "SELECT 1".into(),
        });
        let mut out = Vec::new();
        body.write_json(&mut out).unwrap();
        assert_eq!(out, br#"{"tag":"SELECT 1"}"#);
        assert_eq!(EventBody::from_json(body.kind(), &out).unwrap(), body);
    }
}
