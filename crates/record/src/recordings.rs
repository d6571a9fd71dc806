//! The gateway's handle on its recordings directory: one per process, shared by sessions.
//!
//! It bundles what every session needs — the directory, the signer, this node's manifest
//! log, and where recordings go (the directory itself, or an S3 bucket) — so an engine starts
//! a recording with one call, and start-up recovery is one call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::RecordError;
use crate::event::SessionStart;
use crate::manifest::ManifestLog;
use crate::note::Signer;
use crate::recorder::{RecorderConfig, SessionRecorder};
use crate::recover::{RecoveryReport, recover_unsealed};
use crate::s3::S3Store;
use crate::sink::{LocalDirSink, Sink};

/// A recordings directory (default `data_dir/recordings`) opened for writing by one node.
///
/// Recordings go into the directory ([`Recordings::open`]) or into an S3 bucket
/// ([`Recordings::open_s3`]); either way the node's manifest log lives in the directory.
#[derive(Debug, Clone)]
pub struct Recordings {
    dir: PathBuf,
    signer: Arc<Signer>,
    log: Arc<ManifestLog>,
    s3: Option<S3Store>,
}

impl Recordings {
    /// Open `dir` for `node`: creates it if needed and opens (locks, repairs, checks) the
    /// node's manifest log. Call [`Recordings::recover`] next, before serving.
    pub fn open(dir: impl Into<PathBuf>, node: &str, signer: Signer) -> Result<Self, RecordError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| RecordError::io(&dir, e))?;
        let signer = Arc::new(signer);
        let log = Arc::new(ManifestLog::open(&dir, node, signer.clone())?);
        Ok(Recordings {
            dir,
            signer,
            log,
            s3: None,
        })
    }

    /// Like [`Recordings::open`], but new recordings go to `store`
    /// (`s3://bucket/prefix/<session-id>/`, uploaded as they are written). `dir` keeps the
    /// node's manifest log (mirrored to `<prefix>/_log/<node>/`) and the markers of
    /// recordings not sealed yet, which [`Recordings::recover`] seals after a crash.
    pub fn open_s3(
        dir: impl Into<PathBuf>,
        node: &str,
        signer: Signer,
        store: S3Store,
    ) -> Result<Self, RecordError> {
        let mut rec = Self::open(dir, node, signer)?;
        store.attach(&rec.dir, &rec.log)?;
        rec.s3 = Some(store);
        Ok(rec)
    }

    /// Seal recordings a previous process left open (as interrupted) and log sealed ones the
    /// log is missing — in the directory and, with an S3 sink, in the bucket. Must run before
    /// the first session starts.
    pub fn recover(&self) -> Result<RecoveryReport, RecordError> {
        let mut report = recover_unsealed(&self.dir, &self.signer, &self.log)?;
        if let Some(store) = &self.s3 {
            let remote = crate::s3::recover(store, &self.dir, &self.signer, &self.log)?;
            report.sealed.extend(remote.sealed);
            report.logged.extend(remote.logged);
            report.failed.extend(remote.failed);
        }
        Ok(report)
    }

    /// Start recording a session into `<dir>/<session-id>/` (or the bucket's
    /// `<prefix>/<session-id>/`); the manifest goes to this node's log when the session is
    /// sealed.
    pub fn start(
        &self,
        start: SessionStart,
        config: RecorderConfig,
    ) -> Result<SessionRecorder, RecordError> {
        let sink: Box<dyn Sink> = match &self.s3 {
            Some(store) => Box::new(store.create_sink(&start.session_id)?),
            None => Box::new(LocalDirSink::create(&self.dir, &start.session_id)?),
        };
        Ok(
            SessionRecorder::start(start, sink, self.signer.clone(), config)?
                .with_manifest_log(self.log.clone()),
        )
    }

    /// The S3 store new recordings go to, if not the directory.
    pub fn s3(&self) -> Option<&S3Store> {
        self.s3.as_ref()
    }

    /// Where new recordings go: the directory, or `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        match &self.s3 {
            Some(store) => store.location(),
            None => self.dir.display().to_string(),
        }
    }

    /// The recordings directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one session's recording (with an S3 sink, where
    /// [`S3Store::download_session`] into [`Recordings::dir`] would put it).
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
