//! Shared helpers: a fixed test key, scripted sessions, and a frame walker written from
//! `docs/recording-format.md` alone (so the tests double as a check that the document is
//! enough to re-implement a reader).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postern_record::*;

/// The test signer: seed 0x01 × 32 under the name `postern.test`.
pub fn signer() -> Arc<Signer> {
    Arc::new(Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap())
}

pub fn key() -> VerifyingKey {
    signer().verifying_key()
}

pub fn start(id: &str) -> SessionStart {
    SessionStart {
        session_id: id.into(),
        started_at_unix_us: 0,
        subject: "alice".into(),
        groups: vec!["dba".into()],
        identity_kind: "human".into(),
        issuer: Some("postern".into()),
        target: "orders".into(),
        protocol: "postgres".into(),
        client_addr: Some("192.0.2.7:50432".into()),
        node: "node-1".into(),
        policy_version: Some("7".into()),
        attributes: Default::default(),
    }
}

/// Checkpoints every 4 events so tests see several.
pub fn config() -> RecorderConfig {
    RecorderConfig {
        checkpoint_events: 4,
        checkpoint_interval: Duration::from_secs(3600),
        ..RecorderConfig::default()
    }
}

pub fn open(dir: &Path, id: &str, cfg: RecorderConfig) -> SessionRecorder {
    let sink = LocalDirSink::create(dir, id).unwrap();
    SessionRecorder::start(start(id), Box::new(sink), signer(), cfg).unwrap()
}

/// One statement's worth of events: command (durable), decision, description, rows, tag.
pub fn statement(rec: &mut SessionRecorder, i: usize) {
    rec.append_durable(EventBody::Command(Command::query(format!(
        "select id, email from users where id = {i}"
    ))))
    .unwrap();
    rec.append(EventBody::Decision(DecisionRecord::new(
        DecisionKind::Allow,
    )))
    .unwrap();
    rec.append(EventBody::RowDescription(RowDescription {
        columns: vec![Column::named("id"), Column::named("email")],
    }))
    .unwrap();
    rec.append(EventBody::Rows(Rows {
        rows: vec![vec![
            Value::from(i.to_string()),
            Value::from("a***@example.com"),
        ]],
    }))
    .unwrap();
    rec.append(EventBody::CommandComplete(CommandComplete {
        tag: "SELECT 1".into(),
    }))
    .unwrap();
    rec.flush().unwrap();
}

/// A sealed recording of `n` statements: 1 + 5n + 1 events.
pub fn record(dir: &Path, id: &str, n: usize, cfg: RecorderConfig) -> SealReceipt {
    let mut rec = open(dir, id, cfg);
    for i in 0..n {
        statement(&mut rec, i);
    }
    rec.seal(SessionEnd::new("client closed")).unwrap()
}

pub fn chunk_path(dir: &Path, id: &str, chunk: u32) -> PathBuf {
    dir.join(id).join(format!("chunk-{chunk:08}.rec"))
}

/// A frame as the document describes it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Byte offset in the chunk file.
    pub at: usize,
    /// The whole frame (length, check, record).
    pub bytes: Vec<u8>,
}

impl Frame {
    pub fn seq(&self) -> u64 {
        u64::from_be_bytes(self.bytes[12..20].try_into().unwrap())
    }
    pub fn kind(&self) -> u8 {
        self.bytes[28]
    }
}

/// Split a chunk file into its header line and frames.
pub fn frames(chunk: &[u8]) -> (Vec<u8>, Vec<Frame>) {
    let nl = chunk.iter().position(|&b| b == b'\n').unwrap();
    let header = chunk[..=nl].to_vec();
    let mut at = nl + 1;
    let mut out = Vec::new();
    while at < chunk.len() {
        let len = u32::from_be_bytes(chunk[at..at + 4].try_into().unwrap()) as usize;
        out.push(Frame {
            at,
            bytes: chunk[at..at + 12 + len].to_vec(),
        });
        at += 12 + len;
    }
    (header, out)
}

pub fn join(header: &[u8], frames: &[Frame]) -> Vec<u8> {
    let mut out = header.to_vec();
    for f in frames {
        out.extend_from_slice(&f.bytes);
    }
    out
}

/// Recompute a frame's check for `session_id` after editing its record (what a careful
/// attacker would do): leaf = SHA-256(0x00 ‖ len(id) ‖ id ‖ record).
pub fn recheck(frame: &mut Frame, session_id: &str) {
    let mut leaf = vec![session_id.len() as u8];
    leaf.extend_from_slice(session_id.as_bytes());
    leaf.extend_from_slice(&frame.bytes[12..]);
    let hash = postern_record::merkle::leaf_hash(&leaf);
    frame.bytes[4..12].copy_from_slice(&hash[..8]);
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
