//! Errors of the writing side (recorder, manifest log, recovery).
//!
//! Verification has its own error type, [`crate::VerifyError`], because it names *where* a
//! recording is bad rather than what failed to happen.

use std::path::PathBuf;

use crate::note::KeyError;
use crate::sink::SinkError;
use crate::verify::VerifyError;

/// Why an event could not be recorded, or a recording could not be sealed, logged or
/// recovered. The messages are meant for the caller whose command was refused: they name
/// the cause (`No space left on device`) and the place.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The sink failed: the event is not durable, so the command must not be forwarded.
    #[error("the session recording could not be written: {0}")]
    Sink(#[from] SinkError),
    /// An earlier failure stopped this recording; nothing more is accepted.
    #[error("the session recording stopped after an earlier failure: {0}")]
    Failed(String),
    /// The recording was already sealed.
    #[error("the session recording is already sealed")]
    Sealed,
    /// The session id cannot name a recording.
    #[error("invalid session id: {0}")]
    InvalidId(String),
    /// An event the caller may not append (the recorder writes start and end itself).
    #[error("{0}")]
    InvalidEvent(String),
    /// The event could not be encoded.
    #[error("cannot encode the event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The event is larger than a frame may be.
    #[error("the event is {0} bytes, larger than a record may be")]
    TooLarge(usize),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest log is unusable (locked by another process, or does not match its own
    /// signed checkpoints).
    #[error("manifest log {path}: {reason}")]
    Log {
        /// The log directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A recording is damaged in a way recovery must not paper over.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl RecordError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecordError::Io {
            path: path.into(),
            source,
        }
    }
}
