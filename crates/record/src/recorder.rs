//! The writer: one [`SessionRecorder`] per session.
//!
//! The hot path is `append`: encode the event into an in-memory chunk buffer, hash it, add
//! the leaf to the tree's right edge — no I/O. `flush` hands the buffer to the sink and
//! syncs it per [`Durability`]; the engine calls it (or `append_durable`) after every client
//! command and before forwarding it, which is what makes recording write-ahead. Checkpoints
//! are signed at flushes, every N events or T seconds, and `seal` signs the last one.
//!
//! When the sink fails, a fail-closed recorder returns the error and refuses everything
//! after it (the engine stops forwarding); a best-effort recorder drops what it could not
//! write, rolls its tree back to what the sink holds, and records a signed `gap` event as
//! soon as the sink works again.
//!
//! The API is synchronous: writes go to the page cache and take microseconds; with
//! [`Durability::Fsync`] a flush waits for the disk, so async callers may prefer to flush
//! from `spawn_blocking`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::mem;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cap::{CapState, ResultCap};
use crate::error::RecordError;
use crate::event::{EventBody, EventKind, Gap, PackedRows, SessionEnd, SessionStart, Value};
use crate::frame::{chunk_header, push_event, session_binding};
use crate::layout::validate_id;
use crate::manifest::{Manifest, ManifestLog, SealStatus};
use crate::merkle::{Hash, MerkleTree};
use crate::note::{Checkpoint, Signer};
use crate::sink::{Durability, Sink};

/// Rows batches are split so no event holds much more than this many value bytes; readers
/// and verifiers then never need more memory than a chunk.
const SPLIT_BYTES: u64 = 1 << 20;

/// What to do when the sink fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Return the error and accept nothing more: the session must stop forwarding
    /// (`fail-closed`, the default).
    #[default]
    FailClosed,
    /// Drop what could not be written, record a signed gap, and carry on (`best-effort`).
    BestEffort,
}

impl FromStr for OnFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail-closed" => Ok(OnFailure::FailClosed),
            "best-effort" => Ok(OnFailure::BestEffort),
            other => Err(format!(
                "unknown on_record_failure {other:?} (expected \"fail-closed\" or \"best-effort\")"
            )),
        }
    }
}

/// Per-target recording settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderConfig {
    /// How durable a flush is.
    pub durability: Durability,
    /// Fail closed or best effort.
    pub on_failure: OnFailure,
    /// How much of each result to keep.
    pub results: ResultCap,
    /// Sign a checkpoint at the first flush after this many new events (default 1000).
    pub checkpoint_events: u64,
    /// Sign a checkpoint at the first flush this long after the last one, if there are new
    /// events (default 10 s).
    pub checkpoint_interval: Duration,
    /// Start a new chunk once the current one reaches this size (default 8 MiB): the unit an
    /// object store uploads and a reader loads.
    pub chunk_bytes: u64,
    /// Flush on its own once this much is buffered (default 1 MiB), so large results stream
    /// to the sink instead of accumulating in memory.
    pub buffer_bytes: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            durability: Durability::default(),
            on_failure: OnFailure::default(),
            results: ResultCap::default(),
            checkpoint_events: 1000,
            checkpoint_interval: Duration::from_secs(10),
            chunk_bytes: 8 << 20,
            buffer_bytes: 1 << 20,
        }
    }
}

/// What a sealed recording committed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReceipt {
    /// The session.
    pub session_id: String,
    /// Events recorded, `session_end` included.
    pub events: u64,
    /// The final tree root.
    pub root: Hash,
    /// Closed (or interrupted, for recovered recordings).
    pub status: SealStatus,
    /// The final signed checkpoint (the seal), as written.
    pub seal: String,
    /// Whether the manifest reached the manifest log (false when none is configured or the
    /// append failed; recovery logs it at the next start).
    pub logged: bool,
    /// Event bytes written to the sink over the recording's life (chunk files, without
    /// checkpoints).
    pub bytes: u64,
}

/// Where the writer stands; kept for the last successful sink append so a best-effort
/// recorder can roll back to it.
#[derive(Debug, Clone)]
struct Mark {
    tree: MerkleTree,
    chunk: u32,
    chunk_len: u64,
}

/// Bytes of a finished chunk not yet handed to the sink.
#[derive(Debug)]
struct Segment {
    chunk: u32,
    bytes: Vec<u8>,
    end: Mark,
}

/// Events lost in best-effort mode, waiting to be recorded as a gap.
#[derive(Debug, Clone, Default)]
struct Lost {
    reason: String,
    events: u64,
    bytes: u64,
}

/// Records one session. See the module documentation for the life cycle.
pub struct SessionRecorder {
    session_id: String,
    origin: String,
    binding: Vec<u8>,
    sink: Box<dyn Sink>,
    signer: Arc<Signer>,
    log: Option<Arc<ManifestLog>>,
    cfg: RecorderConfig,
    clock: Instant,
    last_offset: u64,
    /// Every event appended, written or not.
    tree: MerkleTree,
    chunk: u32,
    chunk_len: u64,
    chunks: u32,
    /// Pending bytes of chunk `chunk`.
    buf: Vec<u8>,
    /// Pending bytes of earlier chunks (only after a rotation).
    full: Vec<Segment>,
    /// What the sink holds.
    durable: Mark,
    written: u64,
    unsynced: bool,
    cap: CapState,
    last_cp_size: u64,
    last_cp_at: Instant,
    lost: Option<Lost>,
    /// A gap event not yet written: its sequence number and what it accounts for.
    gap_in_flight: Option<(u64, Lost)>,
    failed: Option<String>,
    sealed: bool,
}

impl std::fmt::Debug for SessionRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecorder")
            .field("session_id", &self.session_id)
            .field("location", &self.sink.location())
            .field("events", &self.tree.size())
            .field("durable_events", &self.durable.tree.size())
            .field("failed", &self.failed)
            .finish()
    }
}

fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl SessionRecorder {
    /// Start recording: stamps `start` with the wall-clock time, starts the monotonic clock,
    /// and durably writes the `session_start` event. A failure here is an error in both
    /// failure modes — a recording that does not say whose session it is proves nothing.
    pub fn start(
        mut start: SessionStart,
        sink: Box<dyn Sink>,
        signer: Arc<Signer>,
        config: RecorderConfig,
    ) -> Result<Self, RecordError> {
        validate_id(&start.session_id).map_err(RecordError::InvalidId)?;
        let clock = Instant::now();
        start.started_at_unix_us = now_unix_us();
        let session_id = start.session_id.clone();
        let empty = Mark {
            tree: MerkleTree::new(),
            chunk: 0,
            chunk_len: 0,
        };
        let mut rec = SessionRecorder {
            origin: signer.session_origin(&session_id),
            binding: session_binding(&session_id),
            session_id,
            sink,
            signer,
            log: None,
            cfg: config,
            clock,
            last_offset: 0,
            tree: MerkleTree::new(),
            chunk: 0,
            chunk_len: 0,
            chunks: 0,
            buf: Vec::with_capacity(64 << 10),
            full: Vec::new(),
            durable: empty,
            written: 0,
            unsynced: false,
            cap: CapState::default(),
            last_cp_size: 0,
            last_cp_at: clock,
            lost: None,
            gap_in_flight: None,
            failed: None,
            sealed: false,
        };
        rec.encode_at(&EventBody::SessionStart(start), 0)?;
        rec.write_pending(true)?;
        rec.sync(rec.cfg.durability, true)?;
        Ok(rec)
    }

    /// Also append the session's manifest to `log` when sealing, so that deleting the
    /// recording later is detectable.
    pub fn with_manifest_log(mut self, log: Arc<ManifestLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// The configuration this recorder runs with.
    pub fn config(&self) -> &RecorderConfig {
        &self.cfg
    }

    /// The session id this recorder writes.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The origin of this recording's checkpoints.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Where the recording is written.
    pub fn location(&self) -> String {
        self.sink.location()
    }

    /// Events appended so far (written or buffered).
    pub fn events(&self) -> u64 {
        self.tree.size()
    }

    /// Events the sink holds.
    pub fn durable_events(&self) -> u64 {
        self.durable.tree.size()
    }

    /// The failure that stopped this recorder, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Event bytes written to the sink so far (chunk files, without checkpoints).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Events lost in best-effort mode and not yet recorded as a gap (the sink is still
    /// failing), if any.
    pub fn pending_gap(&self) -> Option<u64> {
        self.lost.as_ref().map(|l| l.events)
    }

    /// Append an event to the buffer. Rows and COPY data pass through the results cap (and
    /// large row batches are split); a result's first boundary after an omission gets a
    /// `results_truncated` marker. Returns an error only when the recorder has failed, the
    /// event cannot be encoded, or an automatic flush (buffer full) fails.
    pub fn append(&mut self, body: EventBody) -> Result<(), RecordError> {
        self.usable()?;
        self.emit_gap()?;
        match body {
            EventBody::SessionStart(_) | EventBody::SessionEnd(_) => {
                return Err(RecordError::InvalidEvent(format!(
                    "{} is written by the recorder itself (start / seal)",
                    body.kind()
                )));
            }
            EventBody::PackedRows(rows) => self.append_rows(rows)?,
            EventBody::Rows(rows) => self.append_rows(PackedRows::from(&rows))?,
            EventBody::CopyData(mut copy) => {
                let kept = match copy.data.as_bytes() {
                    Some(bytes) => self.cap.admit_bytes(self.cfg.results, bytes).len(),
                    None => 0,
                };
                if kept > 0 {
                    if kept < copy.data.len() {
                        let bytes = copy.data.as_bytes().expect("not null");
                        copy.data = Value::from_bytes(&bytes[..kept]);
                    }
                    self.encode(&EventBody::CopyData(copy))?;
                }
            }
            other => {
                if matches!(
                    other.kind(),
                    EventKind::Command
                        | EventKind::RowDescription
                        | EventKind::CommandComplete
                        | EventKind::Error
                ) {
                    self.result_boundary()?;
                }
                self.encode(&other)?;
            }
        }
        if self.pending_bytes() >= self.cfg.buffer_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Append and flush: the write-ahead step for a client command, to call before
    /// forwarding it. `Ok` means the event is durable per the configured durability.
    pub fn append_durable(&mut self, body: EventBody) -> Result<(), RecordError> {
        self.append(body)?;
        self.flush()
    }

    /// Write buffered events to the sink, sync them per the configured durability, and sign
    /// a checkpoint if one is due.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.usable()?;
        self.emit_gap()?;
        self.write_pending(false)?;
        self.sync(self.cfg.durability, false)?;
        if self.checkpoint_due() {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    /// Flush and sign a checkpoint now (if there is anything new to sign).
    pub fn checkpoint(&mut self) -> Result<(), RecordError> {
        self.flush()?;
        if self.durable.tree.size() > self.last_cp_size {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    /// End the recording: append `session_end`, write and fsync everything, sign the final
    /// checkpoint (the seal), and append the manifest to the manifest log if one is set.
    /// Failures are errors in both modes; an unsealed recording is sealed as interrupted by
    /// [`crate::recover_unsealed`] at the next start.
    pub fn seal(mut self, end: SessionEnd) -> Result<SealReceipt, RecordError> {
        self.usable()?;
        self.emit_gap()?;
        self.result_boundary()?;
        let status = if end.interrupted {
            SealStatus::Interrupted
        } else {
            SealStatus::Closed
        };
        self.encode(&EventBody::SessionEnd(end))?;
        self.write_pending(true)?;
        self.sync(Durability::Fsync, true)?;
        let seal = self.write_checkpoint(true)?;
        self.sealed = true;
        let manifest = Manifest {
            session_id: self.session_id.clone(),
            origin: self.origin.clone(),
            size: self.tree.size(),
            root: B64.encode(self.tree.root()),
            status,
            chunks: self.chunks,
            bytes: self.written,
        };
        let logged = match &self.log {
            Some(log) => log.append(&manifest).is_ok(),
            None => false,
        };
        Ok(SealReceipt {
            session_id: self.session_id.clone(),
            events: self.tree.size(),
            root: self.tree.root(),
            status,
            seal,
            logged,
            bytes: self.written,
        })
    }

    fn usable(&self) -> Result<(), RecordError> {
        if self.sealed {
            return Err(RecordError::Sealed);
        }
        match &self.failed {
            Some(why) => Err(RecordError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn pending_bytes(&self) -> usize {
        self.buf.len() + self.full.iter().map(|s| s.bytes.len()).sum::<usize>()
    }

    fn mark(&self) -> Mark {
        Mark {
            tree: self.tree.clone(),
            chunk: self.chunk,
            chunk_len: self.chunk_len,
        }
    }

    fn append_rows(&mut self, mut rows: PackedRows) -> Result<(), RecordError> {
        self.cap.admit_rows(self.cfg.results, &mut rows);
        if rows.is_empty() {
            return Ok(());
        }
        // Split so that no event holds much more than SPLIT_BYTES of values (at least a row).
        let mut cuts = Vec::new();
        let mut size = 0;
        for i in 0..rows.len() {
            size += rows.value_bytes(i);
            if size >= SPLIT_BYTES && i + 1 < rows.len() {
                cuts.push(i + 1);
                size = 0;
            }
        }
        if cuts.is_empty() {
            return self.encode_rows(rows);
        }
        let mut from = 0;
        for to in cuts.into_iter().chain([rows.len()]) {
            self.encode_rows(rows.slice(from, to))?;
            from = to;
        }
        Ok(())
    }

    /// Encode one batch; a single row too large to frame is left out (and counted) instead.
    fn encode_rows(&mut self, rows: PackedRows) -> Result<(), RecordError> {
        let single = (rows.len() == 1).then(|| rows.value_bytes(0));
        match (self.encode(&EventBody::PackedRows(rows)), single) {
            (Err(RecordError::TooLarge(_)), Some(value_bytes)) => {
                self.cap.omit_oversized(value_bytes);
                Ok(())
            }
            (other, _) => other,
        }
    }

    fn result_boundary(&mut self) -> Result<(), RecordError> {
        if let Some(marker) = self.cap.boundary(self.cfg.results) {
            self.encode(&EventBody::ResultsTruncated(marker))?;
        }
        Ok(())
    }

    fn emit_gap(&mut self) -> Result<(), RecordError> {
        if let Some(lost) = self.lost.take() {
            let seq = self.tree.size();
            let gap = EventBody::Gap(Gap {
                reason: lost.reason.clone(),
                lost_events: lost.events,
                lost_bytes: lost.bytes,
            });
            if let Err(e) = self.encode(&gap) {
                self.lost = Some(lost);
                return Err(e);
            }
            self.gap_in_flight = Some((seq, lost));
        }
        Ok(())
    }

    fn encode(&mut self, body: &EventBody) -> Result<(), RecordError> {
        let offset = (self.clock.elapsed().as_micros() as u64).max(self.last_offset);
        self.encode_at(body, offset)
    }

    /// Frame `body` into the buffer and add its leaf to the tree.
    fn encode_at(&mut self, body: &EventBody, offset: u64) -> Result<(), RecordError> {
        let seq = self.tree.size();
        // Rotate once the chunk is full; a chunk always gets at least one frame.
        if self.chunk_len > 0 && self.chunk_len >= self.cfg.chunk_bytes {
            let bytes = mem::take(&mut self.buf);
            if !bytes.is_empty() {
                let end = self.mark();
                self.full.push(Segment {
                    chunk: self.chunk,
                    bytes,
                    end,
                });
            }
            self.chunk += 1;
            self.chunk_len = 0;
        }
        let at = self.buf.len();
        if self.chunk_len == 0 {
            let header = chunk_header(&self.session_id, self.chunk, seq);
            self.buf.extend_from_slice(header.as_bytes());
        }
        let hash = match push_event(&mut self.buf, &self.binding, seq, offset, body) {
            Ok(hash) => hash,
            Err(e) => {
                self.buf.truncate(at);
                return Err(e);
            }
        };
        self.tree.push(hash);
        self.chunk_len += (self.buf.len() - at) as u64;
        self.chunks = self.chunks.max(self.chunk + 1);
        self.last_offset = offset;
        Ok(())
    }

    /// Hand pending bytes to the sink, chunk by chunk.
    fn write_pending(&mut self, strict: bool) -> Result<(), RecordError> {
        while !self.full.is_empty() {
            let seg = &self.full[0];
            if let Err(e) = self.sink.append_chunk(seg.chunk, &seg.bytes) {
                return self.write_failed(e, strict);
            }
            let seg = self.full.remove(0);
            self.written += seg.bytes.len() as u64;
            self.durable = seg.end;
            self.unsynced = true;
            self.settle_gap();
        }
        if !self.buf.is_empty() {
            if let Err(e) = self.sink.append_chunk(self.chunk, &self.buf) {
                return self.write_failed(e, strict);
            }
            self.written += self.buf.len() as u64;
            self.buf.clear();
            self.durable = self.mark();
            self.unsynced = true;
            self.settle_gap();
        }
        Ok(())
    }

    fn settle_gap(&mut self) {
        if let Some((seq, _)) = &self.gap_in_flight
            && *seq < self.durable.tree.size()
        {
            self.gap_in_flight = None;
        }
    }

    fn write_failed(&mut self, e: crate::sink::SinkError, strict: bool) -> Result<(), RecordError> {
        if strict || self.cfg.on_failure == OnFailure::FailClosed {
            self.failed = Some(e.to_string());
            return Err(RecordError::Sink(e));
        }
        // Best effort: forget what the sink does not hold and remember to say so.
        let mut lost_events = self.tree.size() - self.durable.tree.size();
        let lost_bytes = self.pending_bytes() as u64;
        let mut lost = self.lost.take().unwrap_or_default();
        if let Some((_, in_flight)) = self.gap_in_flight.take() {
            // The unwritten gap event itself is not a lost session event.
            lost_events -= 1;
            lost.events += in_flight.events;
            lost.bytes += in_flight.bytes;
        }
        lost.events += lost_events;
        lost.bytes += lost_bytes;
        lost.reason = e.to_string();
        self.lost = Some(lost);
        self.tree = self.durable.tree.clone();
        self.chunk = self.durable.chunk;
        self.chunk_len = self.durable.chunk_len;
        self.chunks = self.chunks.min(self.chunk + 1);
        self.buf.clear();
        self.full.clear();
        Ok(())
    }

    fn sync(&mut self, durability: Durability, strict: bool) -> Result<(), RecordError> {
        if !self.unsynced || durability == Durability::Write && !strict {
            return Ok(());
        }
        match self.sink.sync(durability) {
            Ok(()) => {
                self.unsynced = false;
                Ok(())
            }
            // What was written stays written; in best-effort mode a failed sync only weakens
            // durability, it does not lose events.
            Err(_) if !strict && self.cfg.on_failure == OnFailure::BestEffort => Ok(()),
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(RecordError::Sink(e))
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        let new = self.durable.tree.size().saturating_sub(self.last_cp_size);
        new > 0
            && (new >= self.cfg.checkpoint_events
                || self.last_cp_at.elapsed() >= self.cfg.checkpoint_interval)
    }

    /// Sign and append a checkpoint over what the sink holds; returns the note.
    fn write_checkpoint(&mut self, strict: bool) -> Result<String, RecordError> {
        let tree = &self.durable.tree;
        let note = self.signer.sign_checkpoint(&Checkpoint {
            origin: self.origin.clone(),
            size: tree.size(),
            root: tree.root(),
        });
        let size = tree.size();
        match self.sink.append_checkpoint(note.as_bytes()) {
            Ok(()) => {
                self.unsynced = true;
                let durability = if strict {
                    Durability::Fsync
                } else {
                    self.cfg.durability
                };
                self.sync(durability, strict)?;
                self.last_cp_size = size;
                self.last_cp_at = Instant::now();
                Ok(note)
            }
            // Best effort: try again at the next flush.
            Err(_) if !strict && self.cfg.on_failure == OnFailure::BestEffort => Ok(note),
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(RecordError::Sink(e))
            }
        }
    }
}

impl Drop for SessionRecorder {
    /// A recorder dropped without `seal` (a panicking session task) still hands its buffer
    /// to the sink, so recovery can seal more of the session.
    fn drop(&mut self) {
        if !self.sealed && self.failed.is_none() {
            let _ = self.write_pending(true);
        }
    }
}
