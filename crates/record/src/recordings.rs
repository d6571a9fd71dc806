//! The gateway's handle on its recordings directory: one per process, shared by sessions.
//!
//! It bundles what every session needs — the directory, the signer, this node's manifest
//! log — so an engine starts a recording with one call, and start-up recovery is one call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::RecordError;
use crate::event::SessionStart;
use crate::manifest::ManifestLog;
use crate::note::Signer;
use crate::recorder::{RecorderConfig, SessionRecorder};
use crate::recover::{RecoveryReport, recover_unsealed};
use crate::sink::LocalDirSink;

/// A recordings directory (default `data_dir/recordings`) opened for writing by one node.
#[derive(Debug, Clone)]
pub struct Recordings {
    dir: PathBuf,
    signer: Arc<Signer>,
    log: Arc<ManifestLog>,
}

impl Recordings {
    /// Open `dir` for `node`: creates it if needed and opens (locks, repairs, checks) the
    /// node's manifest log. Call [`Recordings::recover`] next, before serving.
    pub fn open(dir: impl Into<PathBuf>, node: &str, signer: Signer) -> Result<Self, RecordError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| RecordError::io(&dir, e))?;
        let signer = Arc::new(signer);
        let log = Arc::new(ManifestLog::open(&dir, node, signer.clone())?);
        Ok(Recordings { dir, signer, log })
    }

    /// Seal recordings a previous process left open (as interrupted) and log sealed ones the
    /// log is missing. Must run before the first session starts.
    pub fn recover(&self) -> Result<RecoveryReport, RecordError> {
        recover_unsealed(&self.dir, &self.signer, &self.log)
    }

    /// Start recording a session into `<dir>/<session-id>/`; the manifest goes to this
    /// node's log when the session is sealed.
    pub fn start(
        &self,
        start: SessionStart,
        config: RecorderConfig,
    ) -> Result<SessionRecorder, RecordError> {
        let sink = LocalDirSink::create(&self.dir, &start.session_id)?;
        Ok(
            SessionRecorder::start(start, Box::new(sink), self.signer.clone(), config)?
                .with_manifest_log(self.log.clone()),
        )
    }

    /// The recordings directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one session's recording.
    pub fn session_dir(&self, session_id: &str) -> PathBuf {
        self.dir.join(session_id)
    }

    /// The signer.
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// This node's manifest log.
    pub fn log(&self) -> &Arc<ManifestLog> {
        &self.log
    }
}
