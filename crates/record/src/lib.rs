//! Tamper-evident session recordings that anyone can verify offline.
//!
//! Every session through Postern becomes a recording: who connected, every command as sent,
//! every gateway decision, and everything the client received (after masking). The format
//! (specified in `docs/recording-format.md`) is built from standard parts so an auditor
//! needs only the files and the gateway's public key:
//!
//! - events are framed canonically and grouped into chunk files ([`layout`]);
//! - a per-session Merkle tree with RFC 9162 hashing commits to every event ([`merkle`]);
//! - the gateway signs checkpoints (C2SP signed notes) during the session and a final seal
//!   ([`note`]);
//! - a per-node append-only log of session manifests makes a deleted recording visible
//!   ([`ManifestLog`]).
//!
//! Writing is write-ahead and fails closed: the engine appends a command's event and
//! flushes it *before* forwarding the command; if that fails it stops forwarding
//! ([`OnFailure::FailClosed`]), or records a signed gap and carries on
//! ([`OnFailure::BestEffort`]).
//!
//! ```no_run
//! use postern_record::*;
//! # fn demo(signing_key: ed25519_dalek::SigningKey, start: SessionStart) -> Result<(), Box<dyn std::error::Error>> {
//! // Once per process.
//! let recordings = Recordings::open("/var/lib/postern/recordings", "node-1",
//!                                   Signer::new("postern.example.com", signing_key)?)?;
//! recordings.recover()?;
//!
//! // Per session.
//! let mut rec = recordings.start(start, RecorderConfig::default())?;
//! rec.append_durable(EventBody::Command(Command::query("select 1")))?; // before forwarding
//! rec.append(EventBody::Decision(DecisionRecord::new(DecisionKind::Allow)))?;
//! rec.append(EventBody::Rows(Rows { rows: vec![vec![Value::from("1")]] }))?;
//! rec.append(EventBody::CommandComplete(CommandComplete { tag: "SELECT 1".into() }))?;
//! rec.flush()?; // after the response, so a crash loses as little as possible
//! rec.seal(SessionEnd::new("client closed"))?;
//!
//! // Offline, anywhere.
//! let key = load_verifying_key("gateway.pub".as_ref())?;
//! println!("{}", verify_session("/var/lib/postern/recordings/<id>".as_ref(), &key)?.summary());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod audit;
mod cap;
mod error;
pub mod event;
mod frame;
pub mod layout;
mod manifest;
pub mod merkle;
pub mod note;
mod read;
mod recorder;
mod recordings;
mod recover;
pub mod s3;
mod seam;
mod sink;
mod verify;

pub use audit::{LogSummary, SessionSummary, VerifyAllReport, verify_all};
pub use cap::ResultCap;
pub use error::RecordError;
pub use event::{
    Column, Command, CommandComplete, CopyData, DecisionKind, DecisionRecord, Diagnostic,
    Direction, Event, EventBody, EventKind, Gap, Intent, Notification, PackedRows,
    ResultsTruncated, RowDescription, Rows, SessionEnd, SessionStart, Value,
};
pub use frame::MAX_RECORD;
pub use manifest::{Manifest, ManifestLog, SealStatus};
pub use note::{Checkpoint, KeyError, Signer, load_signing_key, load_verifying_key};
pub use read::{EventReader, read_events};
pub use recorder::{OnFailure, RecorderConfig, SealReceipt, SessionRecorder};
pub use recordings::Recordings;
pub use recover::{INTERRUPTED_REASON, RecoveryReport, recover_unsealed};
pub use s3::{S3Config, S3Sink, S3Store, download_prefix};
pub use sink::{Durability, LocalDirSink, Sink, SinkError};
pub use verify::{VerifyError, VerifyReport, verify_session};

/// The public-key type [`verify_session`] takes, re-exported so callers need not depend on
/// `ed25519-dalek` directly.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
