//! Recordings in an S3-compatible object store (`[recording] sink = "s3://bucket/prefix"`).
//!
//! Object stores cannot append, so every append becomes a new, write-once **part object**
//! (`PutMode::Create`, i.e. `If-None-Match: *`) named after the file it belongs to:
//!
//! ```text
//! <prefix>/<session-id>/chunk-00000000.rec.part-00000000     the chunk header and first events
//! <prefix>/<session-id>/chunk-00000000.rec.part-00000001     the next flush
//! <prefix>/<session-id>/checkpoints.part-00000000            the first signed checkpoint
//! <prefix>/_log/<node>/manifests.part-00000000               the node's manifest log, mirrored
//! ```
//!
//! Concatenating a file's parts in order gives exactly the file a local recording has, so
//! [`download_prefix`] (or [`S3Store::download_session`]) produces a directory that
//! [`crate::verify_session`], [`crate::read_events`] and [`crate::verify_all`] read as is.
//!
//! **Write-ahead.** [`S3Sink::append_chunk`] returns only once the store has acknowledged the
//! part: the recorder calls it at every flush, and the engine flushes every command before
//! forwarding it, so a command reaches the upstream only once its event is in the bucket.
//! Nothing is acknowledged from memory: the only buffer is the recorder's own (flushed at
//! every command and at `buffer_bytes`).
//!
//! **Uploads** run on one background thread per [`S3Store`] with its own current-thread
//! Tokio runtime; a sink hands it the part and waits (inside `block_in_place` when called
//! from a multi-threaded runtime's worker), so the engine's runtime is never re-entered.
//!
//! **Fail closed.** Each append is retried with backoff until [`S3Config::timeout`] (default
//! 5 s) has passed, then fails with the cause (`connection refused`, `no answer within 5s`,
//! ...); the recorder then refuses the command. A part whose upload failed may or may not
//! have reached the store: the sink deletes it before the next append (best-effort mode),
//! and keeps failing until it could, so a chunk never holds bytes the recorder dropped.
//!
//! **Crash recovery.** A sink leaves a marker file `<recordings>/_s3/open/<session-id>` in the
//! local recordings directory until the recording is sealed. At start-up
//! [`crate::Recordings::recover`] downloads each marked recording, seals it as interrupted
//! (the same code as for local recordings), uploads the new bytes as further parts, and logs
//! the manifest. The node's manifest log stays in the local recordings directory and is
//! mirrored to `<prefix>/_log/<node>/` after every sealed session and at start-up.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig,
};

use crate::error::RecordError;
use crate::event::EventKind;
use crate::frame::{MANIFESTS_MAGIC, header_fields, next_frame, parse_chunk_header};
use crate::layout::{CHECKPOINTS_FILE, LOG_DIR, MANIFESTS_FILE, chunk_file_name, validate_id};
use crate::manifest::ManifestLog;
use crate::note::{Signer, split_notes};
use crate::recover::{RecoveryReport, manifest, recover_unsealed};
use crate::sink::{Durability, Sink, SinkError};
use crate::verify::verify_session;

/// What separates a file name from its part number in an object key.
pub const PART_SEPARATOR: &str = ".part-";

/// The local directory (under the recordings directory) holding the S3 sink's state.
const STATE_DIR: &str = "_s3";

/// How many part objects a download fetches at once.
const DOWNLOAD_CONCURRENCY: usize = 16;

/// The object name of part `part` of `file` (`chunk-00000000.rec.part-00000017`).
pub fn part_name(file: &str, part: u32) -> String {
    format!("{file}{PART_SEPARATOR}{part:08}")
}

/// The file name and part number of a part object's name.
pub fn parse_part_name(name: &str) -> Option<(&str, u32)> {
    let (file, digits) = name.rsplit_once(PART_SEPARATOR)?;
    if file.is_empty() || digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((file, digits.parse().ok()?))
}

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The key prefix recordings go under, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The endpoint URL for S3-compatible stores (`http://127.0.0.1:9000`); `None` = AWS.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: String,
    /// The access key id; `None` = the usual AWS sources (`AWS_*` environment variables,
    /// web identity, instance metadata).
    pub access_key_id: Option<String>,
    /// The secret access key (with `access_key_id`).
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
    /// Allow `http://` endpoints (test servers, a store on localhost).
    pub allow_http: bool,
    /// How long an append may take, retries included, before the recording fails.
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl S3Config {
    /// The default region.
    pub const DEFAULT_REGION: &'static str = "us-east-1";
    /// The default time an append may take before the recording fails.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A configuration for `s3://bucket/prefix` with defaults for everything else.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let (bucket, prefix) = parse_s3_url(url)?;
        Ok(S3Config {
            bucket,
            prefix,
            endpoint: None,
            region: Self::DEFAULT_REGION.to_owned(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Split `s3://bucket/prefix` into the bucket and the prefix (no leading or trailing `/`).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3:// URL (expected s3://bucket/prefix)"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(format!(
            "{url:?}: {bucket:?} is not a bucket name (3 to 63 of a-z 0-9 . -)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        Path::parse(prefix).map_err(|e| format!("{url:?}: bad prefix {prefix:?}: {e}"))?;
        if prefix.split('/').any(|p| p.starts_with('_')) {
            return Err(format!(
                "{url:?}: prefix parts may not start with '_' (reserved for the manifest logs)"
            ));
        }
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// An error of the object store, the download or the local files it writes.
fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A connection to the bucket, shared by every session of the gateway (clone it freely), with
/// the background thread that performs the uploads.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    config: S3Config,
    prefix: Path,
    runtime: RuntimeThread,
    /// Set by [`crate::Recordings::open_s3`]: the local recordings directory and manifest log.
    attached: OnceLock<Attachment>,
    /// What of the local manifest log is already in the bucket.
    mirror: tokio::sync::Mutex<Option<MirrorState>>,
}

#[derive(Debug, Clone)]
struct Attachment {
    /// `<recordings>/_s3/open`: one marker per recording not sealed yet.
    open_dir: PathBuf,
    /// `<recordings>/_log/<node>`.
    log_dir: PathBuf,
    node: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location())
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A current-thread runtime on its own thread; stops when dropped.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RuntimeThread {
    fn start() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("postern-s3".into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
            })?;
        Ok(RuntimeThread {
            handle,
            _stop: stop,
        })
    }
}

/// Run `f`, which blocks, without stalling a multi-threaded runtime's worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl S3Store {
    /// Connect to the bucket (no request is made yet; see [`S3Store::check`]).
    pub fn new(config: S3Config) -> Result<Self, SinkError> {
        let url = config.url();
        let fail = |e: String| SinkError::new("configure", url.clone(), other(e));
        parse_s3_url(&url).map_err(&fail)?;
        let timeout = config.timeout.max(Duration::from_millis(100));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(timeout.min(Duration::from_secs(3)))
                    .with_timeout(timeout),
            )
            // Retries are ours (bounded by `timeout`, and aware of write-once parts).
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: timeout,
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(|e| fail(e.to_string()))?;
        let prefix = Path::from(config.prefix.as_str());
        let runtime = RuntimeThread::start()
            .map_err(|e| SinkError::new("start the uploader for", url.clone(), e))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                config,
                prefix,
                runtime,
                attached: OnceLock::new(),
                mirror: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        self.inner.config.url()
    }

    /// The configuration.
    pub fn config(&self) -> &S3Config {
        &self.inner.config
    }

    /// The underlying object store (for tools that read recordings with [`download_prefix`]).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store.clone()
    }

    /// The key prefix of one session's recording.
    pub fn session_prefix(&self, session_id: &str) -> Path {
        self.inner.prefix.clone().join(session_id)
    }

    fn url_of(&self, key: &Path) -> String {
        format!("s3://{}/{key}", self.inner.config.bucket)
    }

    /// Run `fut` on the uploader thread and wait for it, at most `limit` (`None`: as long as
    /// it takes — downloads).
    fn run<T: Send + 'static>(
        &self,
        limit: Option<Duration>,
        fut: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = self.inner.runtime.handle.spawn(async move {
            let out = match limit {
                // A margin over the operation's own deadline, so its error (which says what
                // failed) wins; this only catches an operation that ignores its deadline.
                Some(limit) => tokio::time::timeout(limit + Duration::from_millis(500), fut)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "the object store did not answer within {}",
                            humanize(limit)
                        ))
                    }),
                None => fut.await,
            };
            let _ = tx.send(out);
        });
        let received = blocking(|| match limit {
            // The task times itself out; the margin only covers a stalled uploader thread.
            Some(limit) => rx
                .recv_timeout(limit + Duration::from_secs(2))
                .map_err(|_| ()),
            None => rx.recv().map_err(|_| ()),
        });
        received.unwrap_or_else(|()| {
            task.abort();
            Err("the uploader thread did not answer".to_owned())
        })
    }

    /// Check that the bucket can be listed with these credentials (call it at start-up to fail
    /// early on a wrong endpoint, bucket or key).
    pub fn check(&self) -> Result<(), SinkError> {
        let store = self.inner.store.clone();
        let prefix = self.inner.prefix.clone();
        self.run(Some(self.inner.config.timeout), async move {
            store
                .list_with_delimiter(Some(&prefix))
                .await
                .map(|_| ())
                .map_err(|e| describe(&e))
        })
        .map_err(|e| SinkError::new("list", self.location(), other(e)))
    }

    /// A sink for a new recording of `session_id`: `<prefix>/<session-id>/...`. Nothing is
    /// uploaded until the first append; the first part is created write-once, so a second
    /// writer of the same session fails.
    pub fn create_sink(&self, session_id: &str) -> Result<S3Sink, SinkError> {
        validate_id(session_id).map_err(|reason| {
            SinkError::new(
                "create",
                session_id.to_owned(),
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            )
        })?;
        let mut marker = None;
        if let Some(att) = self.inner.attached.get() {
            let path = att.open_dir.join(session_id);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|f| f.sync_all())
                .and_then(|()| crate::sink::sync_dir(&att.open_dir).map_err(|e| e.source))
                .map_err(|e| SinkError::new("create", path.display().to_string(), e))?;
            marker = Some(path);
        }
        Ok(S3Sink {
            store: self.clone(),
            session_id: session_id.to_owned(),
            dir: self.session_prefix(session_id),
            chunk: None,
            checkpoint_part: 0,
            doubt: None,
            end_written: false,
            sealed: false,
            marker,
        })
    }

    /// Upload `data` as the write-once object `key`, retrying until the timeout.
    fn put_part(&self, key: &Path, data: &[u8]) -> Result<(), SinkError> {
        let store = self.inner.store.clone();
        let data = Bytes::copy_from_slice(data);
        let owned = key.clone();
        let timeout = self.inner.config.timeout;
        self.run(Some(timeout), async move {
            put_once(store.as_ref(), &owned, data, Instant::now() + timeout).await
        })
        .map_err(|e| SinkError::new("upload", self.url_of(key), other(e)))
    }

    /// Delete `key` (a part whose upload failed and may have landed anyway).
    fn delete_part(&self, key: &Path) -> Result<(), SinkError> {
        let store = self.inner.store.clone();
        let owned = key.clone();
        let timeout = self.inner.config.timeout;
        self.run(Some(timeout), async move {
            let deadline = Instant::now() + timeout;
            retry(deadline, || async {
                match store.delete(&owned).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
        })
        .map_err(|e| SinkError::new("remove a failed upload", self.url_of(key), other(e)))
    }

    /// Download the recording of `session_id` into `<into>/<session-id>/` (parts
    /// concatenated into the files of a local recording) and return that directory.
    pub fn download_session(&self, session_id: &str, into: &FsPath) -> Result<PathBuf, SinkError> {
        validate_id(session_id).map_err(|reason| {
            SinkError::new(
                "download",
                session_id.to_owned(),
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            )
        })?;
        let dir = into.join(session_id);
        self.download_into(&self.session_prefix(session_id), &dir)?;
        Ok(dir)
    }

    /// Download everything under the prefix — every recording and the mirrored manifest logs —
    /// into `into`, laid out like a local recordings directory (for [`crate::verify_all`]).
    pub fn download_all(&self, into: &FsPath) -> Result<Downloaded, SinkError> {
        self.download_into(&self.inner.prefix, into)
    }

    fn download_into(&self, prefix: &Path, into: &FsPath) -> Result<Downloaded, SinkError> {
        let store = self.inner.store.clone();
        let (p, dir) = (prefix.clone(), into.to_owned());
        self.run(None, async move {
            download_prefix(store.as_ref(), &p, &dir)
                .await
                .map_err(|e| e.to_string())
        })
        .map_err(|e| SinkError::new("download", self.url_of(prefix), other(e)))
    }

    /// The session ids with objects under the prefix.
    pub fn list_sessions(&self) -> Result<Vec<String>, SinkError> {
        let store = self.inner.store.clone();
        let prefix = self.inner.prefix.clone();
        self.run(None, async move {
            let listed = store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| describe(&e))?;
            let mut ids: Vec<String> = listed
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_owned))
                .filter(|id| validate_id(id).is_ok())
                .collect();
            ids.sort();
            Ok(ids)
        })
        .map_err(|e| SinkError::new("list", self.location(), other(e)))
    }

    /// Tie this store to a local recordings directory and node (done by
    /// [`crate::Recordings::open_s3`]): recovery markers go to `<dir>/_s3/open/`, and the
    /// node's manifest log is mirrored to `<prefix>/_log/<node>/`.
    pub(crate) fn attach(
        &self,
        recordings_dir: &FsPath,
        log: &ManifestLog,
    ) -> Result<(), RecordError> {
        let open_dir = recordings_dir.join(STATE_DIR).join("open");
        std::fs::create_dir_all(&open_dir).map_err(|e| RecordError::io(&open_dir, e))?;
        let att = Attachment {
            open_dir,
            log_dir: log.dir().to_owned(),
            node: log.node().to_owned(),
        };
        self.inner.attached.set(att).map_err(|_| RecordError::Log {
            path: recordings_dir.to_owned(),
            reason: "this S3 store is already attached to a recordings directory".into(),
        })
    }

    /// Upload what the local manifest log holds beyond what the bucket has, and wait.
    pub fn mirror_log(&self) -> Result<(), SinkError> {
        let this = self.clone();
        self.run(Some(self.inner.config.timeout * 4), async move {
            this.mirror_log_async().await
        })
        .map_err(|e| SinkError::new("mirror the manifest log to", self.location(), other(e)))
    }

    /// Start mirroring the manifest log in the background (after a seal).
    fn mirror_log_later(&self) {
        let this = self.clone();
        let limit = self.inner.config.timeout * 4;
        self.inner.runtime.handle.spawn(async move {
            match tokio::time::timeout(limit, this.mirror_log_async()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not mirror the manifest log to the object store; will retry after the next seal"),
                Err(_) => tracing::warn!("mirroring the manifest log to the object store timed out; will retry after the next seal"),
            }
        });
    }

    async fn mirror_log_async(&self) -> Result<(), String> {
        let Some(att) = self.inner.attached.get() else {
            return Ok(());
        };
        let store = self.inner.store.as_ref();
        let remote = self
            .inner
            .prefix
            .clone()
            .join(LOG_DIR)
            .join(att.node.as_str());
        let mut guard = self.inner.mirror.lock().await;
        if guard.is_none() {
            *guard = Some(MirrorState::load(store, &remote).await?);
        }
        let state = guard.as_mut().expect("loaded above");
        // Entries before the checkpoints that cover them, as the log itself is written.
        for (name, kind) in [
            (MANIFESTS_FILE, LogFile::Manifests),
            (CHECKPOINTS_FILE, LogFile::Notes),
        ] {
            let path = att.log_dir.join(name);
            let have = state.files.entry(name.to_owned()).or_default();
            let tail =
                read_from(&path, have.len).map_err(|e| format!("{}: {e}", path.display()))?;
            let complete = kind.complete_len(&tail, have.len == 0);
            if complete == 0 {
                continue;
            }
            let key = remote.clone().join(part_name(name, have.parts).as_str());
            put_once(
                store,
                &key,
                Bytes::copy_from_slice(&tail[..complete]),
                Instant::now() + self.inner.config.timeout,
            )
            .await?;
            have.parts += 1;
            have.len += complete as u64;
        }
        Ok(())
    }
}

/// What [`download_prefix`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Downloaded {
    /// Every file written: its path relative to the target directory, how many parts it was
    /// made of, and its size.
    pub files: Vec<DownloadedFile>,
}

/// One file assembled from part objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedFile {
    /// The path relative to the directory downloaded into (`<session-id>/checkpoints`).
    pub path: PathBuf,
    /// The number of part objects.
    pub parts: u32,
    /// The size in bytes.
    pub bytes: u64,
}

impl Downloaded {
    /// The file at `path` (relative), if one was written.
    pub fn file(&self, path: &FsPath) -> Option<&DownloadedFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Download every part object under `prefix` from `store` into `dir`: the parts of each file
/// (`<name>.part-NNNNNNNN`, see the module docs) are concatenated in order into `dir/<path
/// below prefix>/<name>`. Part numbers must run from 0 without holes (the sink never skips
/// one), so a missing part is an error naming it: a part object was deleted. Objects that are
/// not parts are ignored.
pub async fn download_prefix(
    store: &dyn ObjectStore,
    prefix: &Path,
    dir: &FsPath,
) -> io::Result<Downloaded> {
    // (relative directory parts, file name) -> part number -> key
    let mut files: BTreeMap<(Vec<String>, String), BTreeMap<u32, Path>> = BTreeMap::new();
    let mut listing = store.list(Some(prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| other(format!("listing {prefix}: {}", describe(&e))))?;
        let Some(rel) = meta.location.prefix_match(prefix) else {
            continue;
        };
        let mut rel: Vec<String> = rel.map(|p| p.as_ref().to_owned()).collect();
        let Some(name) = rel.pop() else { continue };
        let Some((file, part)) = parse_part_name(&name) else {
            continue;
        };
        // Only names a local recordings directory can hold.
        if rel.iter().any(|p| p.starts_with('.') || p.is_empty()) || file.starts_with('.') {
            continue;
        }
        files
            .entry((rel, file.to_owned()))
            .or_default()
            .insert(part, meta.location.clone());
    }
    let mut out = Downloaded::default();
    for ((rel, name), parts) in files {
        let mut rel_path: PathBuf = rel.iter().collect();
        rel_path.push(&name);
        let expected = parts.len() as u32;
        let last = parts.keys().last().copied().unwrap_or(0);
        if let Some(missing) = (0..=last).find(|i| !parts.contains_key(i)) {
            return Err(other(format!(
                "{}: part {missing} is missing ({expected} parts present, up to part {last}): \
                 a part object was deleted",
                key_of(prefix, &rel, &name),
            )));
        }
        let target = dir.join(&rel_path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut bodies = futures::stream::iter(parts.into_values().map(|key| async move {
            let got = store.get(&key).await.map_err(|e| (key.clone(), e))?;
            got.bytes().await.map_err(|e| (key, e))
        }))
        .buffered(DOWNLOAD_CONCURRENCY);
        let mut file = tokio::fs::File::create(&target).await?;
        let mut bytes = 0u64;
        while let Some(body) = bodies
            .try_next()
            .await
            .map_err(|(key, e)| other(format!("reading {key}: {}", describe(&e))))?
        {
            tokio::io::AsyncWriteExt::write_all(&mut file, &body).await?;
            bytes += body.len() as u64;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        out.files.push(DownloadedFile {
            path: rel_path,
            parts: expected,
            bytes,
        });
    }
    Ok(out)
}

fn key_of(prefix: &Path, rel: &[String], name: &str) -> String {
    let mut key = prefix.to_string();
    for p in rel.iter().map(String::as_str).chain([name]) {
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(p);
    }
    key
}

/// A readable cause: object_store's messages nest the transport error several levels deep.
fn describe(e: &object_store::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            let _ = write!(msg, ": {text}");
        }
        source = s.source();
    }
    msg
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Retry `op` with backoff (50 ms doubling to 1 s) until it succeeds, fails for good, or the
/// next attempt would start after `deadline`.
async fn retry<F, Fut>(deadline: Instant, mut op: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), object_store::Error>>,
{
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let e = match op().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + backoff >= deadline {
            return Err(format!("{} ({attempts} attempts)", describe(&e)));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Create `key` with `data`, write-once, retrying with backoff (50 ms doubling to 1 s) until
/// `deadline`. An earlier attempt that landed although it failed (its answer was lost) makes
/// `AlreadyExists`: that is success if the object holds `data`.
async fn put_once(
    store: &dyn ObjectStore,
    key: &Path,
    data: Bytes,
    deadline: Instant,
) -> Result<(), String> {
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let opts = PutOptions::from(PutMode::Create);
        let e = match store.put_opts(key, data.clone().into(), opts).await {
            Ok(_) => return Ok(()),
            Err(
                e @ (object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }),
            ) => match store.get(key).await {
                Ok(got) => match got.bytes().await {
                    Ok(existing) if existing == data => return Ok(()),
                    Ok(_) => {
                        return Err(format!(
                            "{}: the object already exists with other content (is another \
                             gateway writing the same recording?)",
                            describe(&e)
                        ));
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() + backoff >= deadline {
            return Err(format!("{} ({attempts} attempts)", describe(&e)));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The local manifest log files and how much of each is in the bucket.
#[derive(Debug, Default)]
struct MirrorState {
    files: BTreeMap<String, MirroredFile>,
}

#[derive(Debug, Default, Clone, Copy)]
struct MirroredFile {
    parts: u32,
    len: u64,
}

impl MirrorState {
    async fn load(store: &dyn ObjectStore, remote: &Path) -> Result<Self, String> {
        let mut parts: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
        let mut listing = store.list(Some(remote));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| describe(&e))?;
            if let Some((file, n)) = meta.location.filename().and_then(parse_part_name) {
                parts
                    .entry(file.to_owned())
                    .or_default()
                    .insert(n, meta.size);
            }
        }
        let mut state = MirrorState::default();
        for (file, p) in parts {
            if p.keys().copied().ne(0..p.len() as u32) {
                return Err(format!(
                    "{remote}/{file}: the mirrored parts have a hole; not mirroring over it"
                ));
            }
            state.files.insert(
                file,
                MirroredFile {
                    parts: p.len() as u32,
                    len: p.values().sum(),
                },
            );
        }
        Ok(state)
    }
}

#[derive(Debug, Clone, Copy)]
enum LogFile {
    Manifests,
    Notes,
}

impl LogFile {
    /// How much of `tail` (the file from a unit boundary on) is complete units.
    fn complete_len(self, tail: &[u8], from_start: bool) -> usize {
        match self {
            LogFile::Manifests => {
                let mut at = 0;
                if from_start {
                    match header_fields(tail, MANIFESTS_MAGIC) {
                        Ok((_, len)) => at = len,
                        Err(_) => return 0,
                    }
                }
                while let Some(Ok(frame)) = next_frame(tail, at, false) {
                    at += frame.len();
                }
                at
            }
            LogFile::Notes => match split_notes(tail) {
                (_, None) => tail.len(),
                (_, Some(e)) => e.at,
            },
        }
    }
}

/// The bytes of `path` from `offset` on (empty if the file does not exist).
fn read_from(path: &FsPath, offset: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len < offset {
        return Err(other(format!(
            "the file has {len} bytes but {offset} are already in the object store: the local \
             log was replaced"
        )));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// One recording in the bucket, written part by part. See the module documentation.
pub struct S3Sink {
    store: S3Store,
    session_id: String,
    dir: Path,
    /// The chunk being written and its next part number.
    chunk: Option<(u32, u32)>,
    checkpoint_part: u32,
    /// A part whose upload failed: it may exist, and must be removed before anything else.
    doubt: Option<Path>,
    /// The last event appended is `session_end`.
    end_written: bool,
    /// A checkpoint was appended after `session_end`: the recording is sealed.
    sealed: bool,
    /// The local recovery marker, removed once sealed.
    marker: Option<PathBuf>,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("location", &self.location())
            .field("chunk", &self.chunk)
            .field("checkpoint_part", &self.checkpoint_part)
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl S3Sink {
    /// The session this sink writes.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    fn settle_doubt(&mut self) -> Result<(), SinkError> {
        if let Some(key) = &self.doubt {
            self.store.delete_part(key)?;
            self.doubt = None;
        }
        Ok(())
    }

    fn upload(&mut self, key: Path, data: &[u8]) -> Result<(), SinkError> {
        self.settle_doubt()?;
        match self.store.put_part(&key, data) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.doubt = Some(key);
                Err(e)
            }
        }
    }
}

/// The kind of the last complete event frame in `data` (a chunk's bytes from a frame
/// boundary, or from its start when `header` is set).
fn last_event_kind(data: &[u8], header: bool) -> Option<u8> {
    let mut at = 0;
    if header {
        at = parse_chunk_header(data).ok()?.len;
    }
    let mut last = None;
    while let Some(Ok(frame)) = next_frame(data, at, true) {
        last = Some(frame.event_header().2);
        at += frame.len();
    }
    last
}

impl Sink for S3Sink {
    fn append_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), SinkError> {
        let part = match self.chunk {
            Some((i, next)) if i == index => next,
            _ => 0,
        };
        let key = self
            .dir
            .clone()
            .join(part_name(&chunk_file_name(index), part).as_str());
        self.upload(key, data)?;
        self.chunk = Some((index, part + 1));
        if let Some(kind) = last_event_kind(data, part == 0) {
            self.end_written = kind == EventKind::SessionEnd as u8;
        }
        Ok(())
    }

    fn append_checkpoint(&mut self, note: &[u8]) -> Result<(), SinkError> {
        let key = self
            .dir
            .clone()
            .join(part_name(CHECKPOINTS_FILE, self.checkpoint_part).as_str());
        self.upload(key, note)?;
        self.checkpoint_part += 1;
        self.sealed = self.end_written;
        Ok(())
    }

    /// Every append was acknowledged by the store before it returned: nothing to wait for.
    fn sync(&mut self, _durability: Durability) -> Result<(), SinkError> {
        Ok(())
    }

    fn location(&self) -> String {
        self.store.url_of(&self.dir)
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        // Nothing reached the bucket (the session was refused at its start): nothing to seal.
        let untouched = self.chunk.is_none() && self.checkpoint_part == 0 && self.doubt.is_none();
        if !self.sealed && !untouched {
            return;
        }
        if let Some(marker) = self.marker.take()
            && let Err(e) = std::fs::remove_file(&marker)
        {
            tracing::warn!(marker = %marker.display(), error = %e, "could not remove the recovery marker of a recording");
        }
        if self.sealed {
            self.store.mirror_log_later();
        }
    }
}

/// Seal what a stopped gateway left open in the bucket (every recording with a marker), log
/// the manifests, and mirror the manifest log. Recordings that fail are reported, not fatal.
pub(crate) fn recover(
    store: &S3Store,
    recordings_dir: &FsPath,
    signer: &Arc<Signer>,
    log: &ManifestLog,
) -> Result<RecoveryReport, RecordError> {
    let mut report = RecoveryReport::default();
    let Some(att) = store.inner.attached.get() else {
        return Ok(report);
    };
    let mut ids: Vec<String> = std::fs::read_dir(&att.open_dir)
        .map_err(|e| RecordError::io(&att.open_dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    if !ids.is_empty() {
        let logged = log.logged_sessions()?;
        let staging = recordings_dir.join(STATE_DIR).join("recover");
        for id in ids {
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).map_err(|e| RecordError::io(&staging, e))?;
            match recover_one(store, &staging, &id, signer, log, &logged) {
                Ok(outcome) => {
                    match outcome {
                        Outcome::Sealed(rep) => report.sealed.push(*rep),
                        Outcome::Logged => report.logged.push(id.clone()),
                        Outcome::Nothing => {}
                    }
                    let marker = att.open_dir.join(&id);
                    std::fs::remove_file(&marker).map_err(|e| RecordError::io(&marker, e))?;
                }
                Err(e) => report.failed.push((id, e)),
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    if let Err(e) = store.mirror_log() {
        tracing::warn!(error = %e, "could not mirror the manifest log to the object store");
    }
    Ok(report)
}

enum Outcome {
    Sealed(Box<crate::verify::VerifyReport>),
    Logged,
    Nothing,
}

fn recover_one(
    store: &S3Store,
    staging: &FsPath,
    id: &str,
    signer: &Arc<Signer>,
    log: &ManifestLog,
    logged: &HashSet<String>,
) -> Result<Outcome, RecordError> {
    let dir = staging.join(id);
    let before = store.download_into(&store.session_prefix(id), &dir)?;
    if before.files.is_empty() {
        // The session's first append never reached the store: the session was refused.
        return Ok(Outcome::Nothing);
    }
    // Seal with the local recovery code, against a throwaway log in the staging directory.
    let scratch_log = ManifestLog::open(staging, log.node(), signer.clone())?;
    let local = recover_unsealed(staging, signer, &scratch_log)?;
    if let Some((_, e)) = local.failed.into_iter().next() {
        return Err(e);
    }
    // Upload what recovery appended, as further parts.
    for entry in std::fs::read_dir(&dir).map_err(|e| RecordError::io(&dir, e))? {
        let entry = entry.map_err(|e| RecordError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let (parts, len) = before
            .file(FsPath::new(&name))
            .map_or((0, 0), |f| (f.parts, f.bytes));
        let bytes = std::fs::read(&path).map_err(|e| RecordError::io(&path, e))?;
        if (bytes.len() as u64) < len {
            return Err(RecordError::InvalidEvent(format!(
                "recovering {}: {name} shrank from {len} to {} bytes; refusing to upload",
                store.url_of(&store.session_prefix(id)),
                bytes.len()
            )));
        }
        if bytes.len() as u64 > len {
            let key = store
                .session_prefix(id)
                .join(part_name(&name, parts).as_str());
            store.put_part(&key, &bytes[len as usize..])?;
        }
    }
    let sealed = !local.sealed.is_empty();
    if sealed || !logged.contains(id) {
        let rep = verify_session(&dir, &signer.verifying_key())?;
        log.append(&manifest(&rep))?;
        if sealed {
            return Ok(Outcome::Sealed(Box::new(rep)));
        }
        return Ok(Outcome::Logged);
    }
    Ok(Outcome::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        Column, Command, CommandComplete, DecisionKind, DecisionRecord, EventBody, RowDescription,
        Rows, SessionEnd, SessionStart, Value,
    };
    use crate::recorder::{OnFailure, RecorderConfig, SessionRecorder};
    use crate::{Recordings, SealStatus, SigningKey, read_events, verify_all};
    use postern_testkit::Moto;

    // -----------------------------------------------------------------------------------------
    // A throwaway S3 server: moto (postern_testkit::Moto).

    /// A sink config for a fresh bucket on `moto`.
    fn s3_config(moto: &Moto, bucket: &str, prefix: &str) -> S3Config {
        moto.create_bucket(bucket);
        S3Config {
            endpoint: Some(moto.endpoint()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
            timeout: Duration::from_secs(2),
            ..S3Config::from_url(&format!("s3://{bucket}/{prefix}")).unwrap()
        }
    }

    // -----------------------------------------------------------------------------------------
    // Helpers

    fn signer() -> Arc<Signer> {
        Arc::new(Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap())
    }

    fn session_start(id: &str) -> SessionStart {
        SessionStart {
            session_id: id.into(),
            started_at_unix_us: 0,
            subject: "alice".into(),
            groups: vec!["dba".into()],
            identity_kind: "human".into(),
            issuer: Some("postern".into()),
            target: "orders".into(),
            protocol: "postgres".into(),
            client_addr: None,
            node: "node-1".into(),
            policy_version: None,
            attributes: Default::default(),
        }
    }

    fn config() -> RecorderConfig {
        RecorderConfig {
            checkpoint_events: 4,
            checkpoint_interval: Duration::from_secs(3600),
            ..RecorderConfig::default()
        }
    }

    fn statement(rec: &mut SessionRecorder, i: usize) -> Result<(), RecordError> {
        rec.append_durable(EventBody::Command(Command::query(format!("select {i}"))))?;
        rec.append(EventBody::Decision(DecisionRecord::new(
            DecisionKind::Allow,
        )))?;
        rec.append(EventBody::RowDescription(RowDescription {
            columns: vec![Column::named("?column?")],
        }))?;
        rec.append(EventBody::Rows(Rows {
            rows: vec![vec![Value::from(i.to_string())]],
        }))?;
        rec.append(EventBody::CommandComplete(CommandComplete {
            tag: "SELECT 1".into(),
        }))?;
        rec.flush()
    }

    /// The object keys under `prefix`, sorted.
    fn keys(store: &S3Store, prefix: &Path) -> Vec<String> {
        let os = store.object_store();
        let prefix = prefix.clone();
        let mut keys = store
            .run(None, async move {
                os.list(Some(&prefix))
                    .map_ok(|m| m.location.to_string())
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| e.to_string())
            })
            .unwrap();
        keys.sort();
        keys
    }

    fn command_texts(dir: &FsPath) -> Vec<String> {
        read_events(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter_map(|e| match e.body {
                EventBody::Command(c) => c.text,
                _ => None,
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Without a server

    #[test]
    fn urls_and_part_names() {
        assert_eq!(
            parse_s3_url("s3://rec-bucket/a/b/").unwrap(),
            ("rec-bucket".to_owned(), "a/b".to_owned())
        );
        assert_eq!(
            parse_s3_url("s3://rec-bucket").unwrap(),
            ("rec-bucket".to_owned(), String::new())
        );
        assert!(parse_s3_url("http://rec-bucket/x").is_err());
        assert!(parse_s3_url("s3://UPPER/x").is_err());
        assert!(parse_s3_url("s3://rec-bucket/_log").is_err());
        assert!(parse_s3_url("s3://rec-bucket/a//b").is_err());
        assert_eq!(
            S3Config::from_url("s3://b12/p").unwrap().url(),
            "s3://b12/p"
        );
        assert_eq!(
            part_name("chunk-00000003.rec", 17),
            "chunk-00000003.rec.part-00000017"
        );
        assert_eq!(
            parse_part_name("chunk-00000003.rec.part-00000017"),
            Some(("chunk-00000003.rec", 17))
        );
        assert_eq!(parse_part_name("checkpoints.part-7"), None);
        assert_eq!(parse_part_name("checkpoints"), None);
    }

    // -----------------------------------------------------------------------------------------
    // Against moto

    #[test]
    fn parts_are_uploaded_at_every_flush_and_download_into_a_verifiable_recording() {
        let Some(moto) = Moto::start() else { return };
        let store = S3Store::new(s3_config(&moto, "rec", "gw/recordings")).unwrap();
        store.check().unwrap();
        let prefix = store.session_prefix("s1");
        let sink = store.create_sink("s1").unwrap();
        assert_eq!(sink.location(), "s3://rec/gw/recordings/s1");
        let mut rec =
            SessionRecorder::start(session_start("s1"), Box::new(sink), signer(), config())
                .unwrap();
        // The start is durable before start() returns.
        assert_eq!(
            keys(&store, &prefix),
            ["gw/recordings/s1/chunk-00000000.rec.part-00000000"]
        );
        statement(&mut rec, 1).unwrap();
        let after_one = keys(&store, &prefix);
        assert!(
            after_one.len() >= 3,
            "the command's write-ahead flush and the response's flush are parts: {after_one:?}"
        );
        assert!(
            after_one
                .iter()
                .any(|k| k.ends_with("/checkpoints.part-00000000")),
            "a checkpoint after 4 events: {after_one:?}"
        );
        // The session, still open, can be read back already.
        let tmp = tempfile::tempdir().unwrap();
        let dir = store.download_session("s1", tmp.path()).unwrap();
        assert_eq!(command_texts(&dir), ["select 1"]);
        assert!(
            verify_session(&dir, &signer().verifying_key()).is_err(),
            "not sealed yet"
        );

        for i in 2..=5 {
            statement(&mut rec, i).unwrap();
        }
        let receipt = rec.seal(SessionEnd::new("client closed")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = store.download_session("s1", tmp.path()).unwrap();
        let report = verify_session(&dir, &signer().verifying_key()).unwrap();
        assert_eq!(report.status, SealStatus::Closed);
        assert_eq!(report.events, receipt.events);
        assert_eq!(report.root, receipt.root);
        assert_eq!(
            command_texts(&dir),
            ["select 1", "select 2", "select 3", "select 4", "select 5"]
        );

        // A deleted part is named by the download.
        let os = store.object_store();
        let victim = Path::from("gw/recordings/s1/chunk-00000000.rec.part-00000002");
        store
            .run(None, async move {
                os.delete(&victim).await.map_err(|e| e.to_string())
            })
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = store
            .download_session("s1", tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chunk-00000000.rec: part 2 is missing"),
            "{err}"
        );
    }

    #[test]
    fn parts_are_write_once_so_two_writers_cannot_share_a_recording() {
        let Some(moto) = Moto::start() else { return };
        let store = S3Store::new(s3_config(&moto, "rec", "")).unwrap();
        let mut a = store.create_sink("dup").unwrap();
        let mut b = store.create_sink("dup").unwrap();
        a.append_chunk(0, b"first writer").unwrap();
        // The same bytes again (a retried upload whose answer was lost) are fine...
        b.append_chunk(0, b"first writer").unwrap();
        // ... other bytes under the same name are not.
        let err = a
            .append_chunk(0, b"x")
            .and_then(|()| b.append_chunk(0, b"second writer"));
        let err = err.unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
    }

    #[test]
    fn fail_closed_an_unreachable_store_fails_the_flush_within_the_timeout() {
        let Some(mut moto) = Moto::start() else {
            return;
        };
        let store = S3Store::new(s3_config(&moto, "rec", "p")).unwrap();
        let sink = store.create_sink("s1").unwrap();
        let mut rec =
            SessionRecorder::start(session_start("s1"), Box::new(sink), signer(), config())
                .unwrap();
        statement(&mut rec, 1).unwrap();

        // Hanging: SIGSTOP (the kernel still accepts the connection).
        moto.pause();
        let t = Instant::now();
        let err = statement(&mut rec, 2).unwrap_err().to_string();
        let took = t.elapsed();
        eprintln!("hanging store, after {took:?}: {err}");
        assert!(took < Duration::from_secs(8), "took {took:?}");
        assert!(
            err.contains("s3://rec/p/s1/chunk-00000000.rec.part-"),
            "{err}"
        );
        assert!(
            err.contains("did not answer") || err.contains("timed out") || err.contains("timeout"),
            "{err}"
        );
        assert!(rec.failure().is_some());
        assert!(matches!(
            statement(&mut rec, 3),
            Err(RecordError::Failed(_))
        ));
        moto.resume();

        // Gone: connection refused.
        let sink = store.create_sink("s2").unwrap();
        let mut rec =
            SessionRecorder::start(session_start("s2"), Box::new(sink), signer(), config())
                .unwrap();
        moto.kill();
        let t = Instant::now();
        let err = statement(&mut rec, 1).unwrap_err().to_string();
        eprintln!("stopped store, after {:?}: {err}", t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "took {:?}",
            t.elapsed()
        );
        assert!(err.contains("s3://rec/p/s2/"), "{err}");
        // A new session cannot even start.
        let sink = store.create_sink("s3").unwrap();
        let err = SessionRecorder::start(session_start("s3"), Box::new(sink), signer(), config())
            .unwrap_err()
            .to_string();
        assert!(err.contains("could not be written"), "{err}");
    }

    #[test]
    fn best_effort_an_outage_becomes_a_signed_gap() {
        let Some(moto) = Moto::start() else { return };
        let store = S3Store::new(s3_config(&moto, "rec", "p")).unwrap();
        let sink = store.create_sink("s1").unwrap();
        let cfg = RecorderConfig {
            on_failure: OnFailure::BestEffort,
            ..config()
        };
        let mut rec =
            SessionRecorder::start(session_start("s1"), Box::new(sink), signer(), cfg).unwrap();
        statement(&mut rec, 1).unwrap();
        moto.pause();
        statement(&mut rec, 2).unwrap();
        moto.resume();
        for i in 3..=4 {
            statement(&mut rec, i).unwrap();
        }
        rec.seal(SessionEnd::new("client closed")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = store.download_session("s1", tmp.path()).unwrap();
        let report = verify_session(&dir, &signer().verifying_key()).unwrap();
        assert!(report.gaps >= 1, "{}", report.summary());
        let texts = command_texts(&dir);
        assert!(
            texts.contains(&"select 1".to_owned()) && texts.contains(&"select 4".to_owned()),
            "{texts:?}"
        );
        assert!(!texts.contains(&"select 2".to_owned()), "{texts:?}");
    }

    #[test]
    fn recordings_in_s3_are_recovered_logged_and_mirrored() {
        let Some(moto) = Moto::start() else { return };
        let cfg = s3_config(&moto, "rec", "gw");
        let local = tempfile::tempdir().unwrap();
        let open = || {
            let signer = Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap();
            Recordings::open_s3(
                local.path(),
                "node-1",
                signer,
                S3Store::new(cfg.clone()).unwrap(),
            )
            .unwrap()
        };
        let recordings = open();
        assert_eq!(recordings.location(), "s3://rec/gw");
        assert!(recordings.recover().unwrap().sealed.is_empty());
        // One session sealed normally, one left open as by a crash after a flush.
        let mut closed = recordings.start(session_start("closed"), config()).unwrap();
        statement(&mut closed, 1).unwrap();
        closed.seal(SessionEnd::new("client closed")).unwrap();
        let mut open_one = recordings
            .start(session_start("crashed"), config())
            .unwrap();
        statement(&mut open_one, 1).unwrap();
        statement(&mut open_one, 2).unwrap();
        drop(open_one);
        let markers: Vec<_> = std::fs::read_dir(local.path().join("_s3/open"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            markers,
            ["crashed"],
            "only the unsealed recording keeps its marker"
        );
        drop(recordings);

        let recordings = open();
        let report = recordings.recover().unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.sealed.len(), 1, "{report:?}");
        assert_eq!(report.sealed[0].session_id, "crashed");
        assert_eq!(report.sealed[0].status, SealStatus::Interrupted);
        assert_eq!(
            std::fs::read_dir(local.path().join("_s3/open"))
                .unwrap()
                .count(),
            0
        );
        // Idempotent.
        let again = recordings.recover().unwrap();
        assert!(again.sealed.is_empty() && again.logged.is_empty() && again.failed.is_empty());

        // The bucket alone is a complete, verifiable recordings directory: both recordings,
        // and the node's manifest log listing them.
        let tmp = tempfile::tempdir().unwrap();
        let got = recordings.s3().unwrap().download_all(tmp.path()).unwrap();
        assert!(
            got.file(FsPath::new("_log/node-1/manifests")).is_some(),
            "{got:?}"
        );
        let all = verify_all(tmp.path(), &signer().verifying_key()).unwrap();
        assert!(all.is_intact(), "{:?}", all.problems);
        assert_eq!(all.sessions.len(), 2);
        let crashed = tmp.path().join("crashed");
        assert_eq!(command_texts(&crashed), ["select 1", "select 2"]);

        // Deleting a whole recording from the bucket is visible in the mirrored log.
        let os = recordings.s3().unwrap().object_store();
        let doomed = keys(recordings.s3().unwrap(), &Path::from("gw/closed"));
        recordings
            .s3()
            .unwrap()
            .run(None, async move {
                for k in doomed {
                    os.delete(&Path::from(k)).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        recordings.s3().unwrap().download_all(tmp.path()).unwrap();
        let all = verify_all(tmp.path(), &signer().verifying_key()).unwrap();
        let problems: Vec<String> = all.problems.iter().map(ToString::to_string).collect();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("closed") && p.contains("missing")),
            "{problems:?}"
        );
    }
}
