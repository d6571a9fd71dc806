//! Wiring the recorder: per-target result caps and failure modes, and the `[[recording.rules]]`
//! that decide who is recorded how, in front of the recordings directory.

use crate::config::{RawConfig, RecordingMode, RecordingRule, RecordingSection};
use anyhow::{Context, Result};
use postern_core::event::{SessionEnd, SessionStart};
use postern_core::{NoRecording, Recorder, RecordingError, SessionRecording};
use postern_record::{
    RecorderConfig, Recordings, ResultCap, S3Config, S3Store, SessionRecorder, Signer,
    load_signing_key,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The gateway's [`Recorder`]: picks a [`RecorderConfig`] for each session and starts its
/// recording in the shared recordings directory.
pub struct GatewayRecorder {
    recordings: Recordings,
    defaults: RecorderConfig,
    targets: HashMap<String, RecorderConfig>,
    rules: Vec<RecordingRule>,
}

/// Builds the recorder for `config`, sealing recordings a crash left open.
pub fn build(config: &RawConfig, node: &str) -> Result<Arc<dyn Recorder>> {
    let section = &config.recording;
    if !section.enabled {
        return Ok(Arc::new(NoRecording));
    }
    let key = load_signing_key(&config.data_dir.join("keys/gateway.key"))
        .context("loading the gateway key for signing recordings")?;
    let signer = Signer::new(section.name.clone(), key).context("[recording] name")?;
    let dir = config.recordings_dir();
    let recordings = match &section.sink {
        None => Recordings::open(&dir, node, signer)
            .with_context(|| format!("opening the recordings directory {}", dir.display()))?,
        Some(url) => {
            let store = S3Store::new(s3_config(section, url)?)
                .with_context(|| format!("[recording] sink {url}"))?;
            store
                .check()
                .with_context(|| format!("reaching the recordings bucket {url}"))?;
            Recordings::open_s3(&dir, node, signer, store)
                .with_context(|| format!("opening the recordings directory {}", dir.display()))?
        }
    };
    let report = recordings
        .recover()
        .context("sealing interrupted recordings")?;
    tracing::info!(dir = %dir.display(), sink = %recordings.location(), recovered = ?report, "recordings ready");
    let defaults = RecorderConfig {
        durability: section.durability.parse().map_err(anyhow::Error::msg)?,
        checkpoint_events: section.checkpoint_events,
        checkpoint_interval: section.checkpoint_interval,
        ..RecorderConfig::default()
    };
    let mut targets = HashMap::new();
    for target in &config.targets {
        let mut cfg = defaults.clone();
        if let Some(cap) = &target.record_results {
            cfg.results = cap.parse().map_err(anyhow::Error::msg)?;
        }
        if let Some(mode) = &target.on_record_failure {
            cfg.on_failure = mode.parse().map_err(anyhow::Error::msg)?;
        }
        targets.insert(target.name.clone(), cfg);
    }
    Ok(Arc::new(GatewayRecorder {
        recordings,
        defaults,
        targets,
        rules: section.rules.clone(),
    }))
}

/// The S3 settings of `[recording]`, credentials read from the environment variables it names
/// (absent defaults: the usual AWS sources — `AWS_*` variables, web identity, instance role).
fn s3_config(section: &RecordingSection, url: &str) -> Result<S3Config> {
    let from_env = |key: &str, named: &Option<String>, default: &str| -> Result<Option<String>> {
        let var = named.as_deref().unwrap_or(default);
        match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            _ if named.is_some() => {
                anyhow::bail!("[recording] {key} = {var:?}, but {var} is not set")
            }
            _ => Ok(None),
        }
    };
    let access_key_id = from_env(
        "s3_access_key_env",
        &section.s3_access_key_env,
        "AWS_ACCESS_KEY_ID",
    )?;
    let secret_access_key = from_env(
        "s3_secret_key_env",
        &section.s3_secret_key_env,
        "AWS_SECRET_ACCESS_KEY",
    )?;
    if access_key_id.is_some() != secret_access_key.is_some() {
        anyhow::bail!(
            "[recording] S3 credentials: found an access key id or a secret access key, but not both"
        );
    }
    Ok(S3Config {
        endpoint: section.s3_endpoint.clone(),
        region: section.s3_region.clone(),
        access_key_id,
        secret_access_key,
        session_token: None,
        allow_http: section.s3_allow_http,
        timeout: section.s3_timeout,
        ..S3Config::from_url(url).map_err(|e| anyhow::anyhow!("[recording] sink: {e}"))?
    })
}

impl GatewayRecorder {
    fn rule_for(&self, start: &SessionStart) -> Option<&RecordingRule> {
        let matches = |rule: &RecordingRule| {
            let w = &rule.when;
            (w.subjects.is_empty() || w.subjects.contains(&start.subject))
                && (w.groups.is_empty() || w.groups.iter().any(|g| start.groups.contains(g)))
                && (w.kinds.is_empty() || w.kinds.iter().any(|k| k.as_str() == start.identity_kind))
                && (w.targets.is_empty() || w.targets.contains(&start.target))
        };
        self.rules.iter().find(|r| matches(r))
    }
}

impl Recorder for GatewayRecorder {
    fn start(
        &self,
        start: SessionStart,
    ) -> Result<Option<Box<dyn SessionRecording>>, RecordingError> {
        let mut cfg = self
            .targets
            .get(&start.target)
            .unwrap_or(&self.defaults)
            .clone();
        let rule = self.rule_for(&start);
        if let Some(rule) = rule {
            tracing::debug!(session = %start.session_id, rule = %rule.name, mode = ?rule.mode, "recording rule applies");
        }
        match rule.map_or(RecordingMode::Full, |r| r.mode) {
            RecordingMode::Off => return Ok(None),
            RecordingMode::Commands => cfg.results = ResultCap::None,
            RecordingMode::Full => {}
        }
        let recorder = self
            .recordings
            .start(start, cfg)
            .map_err(|e| RecordingError(e.to_string()))?;
        Ok(Some(Box::new(Metered {
            counted: recorder.bytes_written(),
            inner: recorder,
            bytes: metrics::counter!(RECORDING_BYTES),
        })))
    }
}

/// The Prometheus counter of bytes written to recordings.
pub const RECORDING_BYTES: &str = "postern_recording_bytes_total";

/// A session's recording that adds what it writes to [`RECORDING_BYTES`].
struct Metered {
    inner: SessionRecorder,
    /// Bytes already counted.
    counted: u64,
    /// The counter, looked up once per session rather than per event.
    bytes: metrics::Counter,
}

impl Metered {
    fn count(&mut self) {
        let now = self.inner.bytes_written();
        if now != self.counted {
            self.bytes.increment(now.saturating_sub(self.counted));
            self.counted = now;
        }
    }
}

impl SessionRecording for Metered {
    fn append(&mut self, event: postern_core::event::EventBody) -> Result<(), RecordingError> {
        let appended = SessionRecording::append(&mut self.inner, event);
        self.count();
        appended
    }

    fn commit(&mut self) -> Result<(), RecordingError> {
        let committed = SessionRecording::commit(&mut self.inner);
        self.count();
        committed
    }

    fn wants_results(&self) -> bool {
        SessionRecording::wants_results(&self.inner)
    }

    fn seal(self: Box<Self>, end: SessionEnd) -> Result<(), RecordingError> {
        let Metered {
            inner,
            counted,
            bytes,
        } = *self;
        let receipt = inner.seal(end).map_err(|e| RecordingError(e.to_string()))?;
        bytes.increment(receipt.bytes.saturating_sub(counted));
        Ok(())
    }
}
