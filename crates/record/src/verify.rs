//! Offline verification of one recording with nothing but its files and the public key.
//!
//! The verifier walks the chunks once, in order, recomputing every leaf hash and the tree's
//! right edge; at each signed checkpoint's size it compares roots. It stops at the first
//! problem and says where it is and what it means:
//!
//! | tampering                           | reported as                                      |
//! |-------------------------------------|--------------------------------------------------|
//! | a byte flipped in an event          | that event: content does not match its check    |
//! | an event dropped                    | the next event: numbered n+1 where n expected    |
//! | two events reordered                | the first of them: numbered wrongly              |
//! | an event spliced from another session | that event: does not match its check (the session id is in every leaf) |
//! | a chunk replaced                    | its header names another session, its first event fails its check, or the next checkpoint's root differs |
//! | truncation after a checkpoint       | not sealed (or: a checkpoint covers more events than present) |
//! | an edited event with a recomputed check | the first checkpoint after it: root mismatch, naming the event range and chunks |
//! | a checkpoint edited or forged       | that checkpoint: signature does not verify       |

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;

use crate::event::{EventBody, EventKind, Gap, ResultsTruncated, SessionEnd, SessionStart};
use crate::frame::{FrameError, next_frame, parse_chunk_header, session_binding};
use crate::layout::{CHECKPOINTS_FILE, list_chunks, validate_id};
use crate::manifest::SealStatus;
use crate::merkle::{Hash, MerkleTree};
use crate::note::{Checkpoint, SplitError, open_checkpoint, split_notes};

/// Where and why a recording (or the manifest log) fails verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path holds no recording.
    #[error("{path} is not a recording: {reason}")]
    NotARecording {
        /// The path given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A checkpoint is malformed, forged, for another recording, or out of order.
    #[error("checkpoint #{index} (byte {at} of the checkpoints file): {reason}")]
    Checkpoint {
        /// Position in the checkpoints file, from 0.
        index: usize,
        /// Byte offset in the checkpoints file.
        at: usize,
        /// What is wrong.
        reason: String,
    },
    /// A chunk file is missing from the sequence.
    #[error("chunk {chunk} is missing: {reason}")]
    MissingChunk {
        /// The missing index.
        chunk: u32,
        /// What was found instead.
        reason: String,
    },
    /// A chunk's header does not belong where it is.
    #[error("chunk {chunk}: {reason}")]
    Chunk {
        /// The chunk index.
        chunk: u32,
        /// What is wrong.
        reason: String,
    },
    /// An event is damaged, out of place or foreign.
    #[error("event {seq} (chunk {chunk}, byte {at}): {reason}")]
    Event {
        /// The sequence number expected at this position.
        seq: u64,
        /// The chunk index.
        chunk: u32,
        /// Byte offset of the frame in the chunk file.
        at: usize,
        /// What is wrong.
        reason: String,
    },
    /// The events do not hash to a signed root.
    #[error(
        "signed checkpoint #{index} (size {size}) does not match the events: one of events \
         {from}..={to} (chunks {first_chunk}..={last_chunk}) was altered, replaced or spliced \
         in with a recomputed check"
    )]
    RootMismatch {
        /// The checkpoint's position in the checkpoints file.
        index: usize,
        /// Its tree size.
        size: u64,
        /// First event not covered by an earlier, matching checkpoint.
        from: u64,
        /// Last event covered by this checkpoint.
        to: u64,
        /// Chunk of `from`.
        first_chunk: u32,
        /// Chunk of `to`.
        last_chunk: u32,
    },
    /// A checkpoint covers events that are not there.
    #[error(
        "signed checkpoint #{index} covers {size} events but the recording holds {present}: \
         the recording was truncated (events or chunks removed from the end)"
    )]
    Truncated {
        /// The checkpoint's position.
        index: usize,
        /// Its tree size.
        size: u64,
        /// Events present.
        present: u64,
    },
    /// No seal: the recording ends without a signed `session_end`.
    #[error(
        "recording {session_id} is not sealed: {events} events, the last signed checkpoint \
         covers {signed}; it was truncated after a checkpoint, or the session is still open \
         or crashed (recovery seals it as interrupted)"
    )]
    Unsealed {
        /// The session.
        session_id: String,
        /// Events present.
        events: u64,
        /// Events covered by the last checkpoint.
        signed: u64,
    },
    /// A recording listed in a manifest log is gone.
    #[error(
        "recording {session_id} is listed in manifest log {node} (entry {entry}) but missing: \
         the recording was deleted"
    )]
    Missing {
        /// The session.
        session_id: String,
        /// The log's node.
        node: String,
        /// The manifest's index in the log.
        entry: u64,
    },
    /// A recording differs from its manifest.
    #[error("recording {session_id} does not match manifest log {node} (entry {entry}): {reason}")]
    ManifestMismatch {
        /// The session.
        session_id: String,
        /// The log's node.
        node: String,
        /// The manifest's index in the log.
        entry: u64,
        /// What differs.
        reason: String,
    },
    /// A manifest log is damaged or does not match its checkpoints.
    #[error("manifest log {node}: {reason}")]
    Log {
        /// The log's node.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A directory holds another session's (intact) recording.
    #[error(
        "directory {dir_name} holds the recording of session {session_id}: recordings were moved or swapped"
    )]
    WrongPlace {
        /// The directory's name.
        dir_name: String,
        /// The session the recording is of.
        session_id: String,
    },
    /// A recording is listed in a manifest log and also fails its own verification.
    #[error("recording {session_id}: {source}")]
    Session {
        /// The session.
        session_id: String,
        /// Its verification error.
        #[source]
        source: Box<VerifyError>,
    },
}

/// What an intact recording contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The session.
    pub session_id: String,
    /// The signed origin.
    pub origin: String,
    /// Events, `session_start` and `session_end` included.
    pub events: u64,
    /// Chunk files.
    pub chunks: u32,
    /// Signed checkpoints, the seal included.
    pub checkpoints: usize,
    /// Closed or interrupted.
    pub status: SealStatus,
    /// `gap` events (best-effort losses).
    pub gaps: u64,
    /// Events the gaps account for.
    pub lost_events: u64,
    /// `results_truncated` markers (results capped on purpose).
    pub truncated_results: u64,
    /// Chunk bytes.
    pub bytes: u64,
    /// The sealed root.
    pub root: Hash,
    /// The session's start, Unix microseconds (0 for a recording interrupted before it).
    pub started_at_unix_us: i64,
    /// Time from start to the last event.
    pub duration_us: u64,
    /// The identity's subject, if the start was recorded.
    pub subject: Option<String>,
    /// The target, if the start was recorded.
    pub target: Option<String>,
}

impl VerifyReport {
    /// The one-line summary `postern verify` prints.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "intact: session {} ({} → {}), {} events in {} chunk{} ({} bytes), {} signed checkpoint{}, sealed {}",
            self.session_id,
            self.subject.as_deref().unwrap_or("?"),
            self.target.as_deref().unwrap_or("?"),
            self.events,
            self.chunks,
            if self.chunks == 1 { "" } else { "s" },
            self.bytes,
            self.checkpoints,
            if self.checkpoints == 1 { "" } else { "s" },
            self.status.as_str(),
        );
        if self.gaps > 0 {
            s.push_str(&format!(
                ", {} gap{} ({} events lost)",
                self.gaps,
                if self.gaps == 1 { "" } else { "s" },
                self.lost_events
            ));
        }
        if self.truncated_results > 0 {
            s.push_str(&format!(", {} results capped", self.truncated_results));
        }
        s.push_str(&format!(", root {}", B64.encode(self.root)));
        s
    }
}

/// A torn end of the last chunk: bytes after `valid_len` are an incomplete frame.
#[derive(Debug, Clone)]
pub(crate) struct TornTail {
    pub path: PathBuf,
    pub valid_len: usize,
}

/// Everything learned from one pass over a recording.
#[derive(Debug)]
pub(crate) struct Scan {
    pub session_id: String,
    pub origin: Option<String>,
    pub tree: MerkleTree,
    pub checkpoints: Vec<Checkpoint>,
    pub notes_torn: Option<SplitError>,
    pub chunk_tail: Option<TornTail>,
    /// The last chunk holding frames: index and path.
    pub last_chunk: Option<(u32, PathBuf)>,
    pub chunks: u32,
    pub bytes: u64,
    pub start: Option<SessionStart>,
    pub end: Option<SessionEnd>,
    pub gaps: u64,
    pub lost: u64,
    pub truncated: u64,
    pub last_offset: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One pass over `dir`. With `lenient`, an incomplete frame at the end of the last chunk and
/// an incomplete note at the end of the checkpoints file (what a crash leaves) are recorded
/// in the scan instead of failing it.
pub(crate) fn scan(dir: &Path, key: &VerifyingKey, lenient: bool) -> Result<Scan, VerifyError> {
    if !dir.is_dir() {
        return Err(VerifyError::NotARecording {
            path: dir.to_owned(),
            reason: "no such directory".into(),
        });
    }
    // Checkpoints first: their origin names the session, with a signature behind it.
    let cp_path = dir.join(CHECKPOINTS_FILE);
    let cp_bytes = match std::fs::read(&cp_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&cp_path)(e)),
    };
    let (notes, split_err) = split_notes(&cp_bytes);
    let notes_torn = match split_err {
        Some(e) if lenient && e.torn => Some(e),
        Some(e) => {
            return Err(VerifyError::Checkpoint {
                index: notes.len(),
                at: e.at,
                reason: e.reason,
            });
        }
        None => None,
    };
    let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(notes.len());
    for (index, span) in notes.iter().enumerate() {
        let fail = |reason: String| VerifyError::Checkpoint {
            index,
            at: span.at,
            reason,
        };
        let cp = open_checkpoint(span.note, key).map_err(fail)?;
        if let Some(first) = checkpoints.first()
            && cp.origin != first.origin
        {
            return Err(fail(format!(
                "its origin {:?} differs from the first checkpoint's {:?}: checkpoints of \
                 another recording were mixed in",
                cp.origin, first.origin
            )));
        }
        if let Some(prev) = checkpoints.last()
            && cp.size <= prev.size
        {
            return Err(fail(format!(
                "its size {} is not larger than the previous checkpoint's {}",
                cp.size, prev.size
            )));
        }
        checkpoints.push(cp);
    }
    let origin = checkpoints.first().map(|c| c.origin.clone());
    let signed_id = match &origin {
        Some(o) => Some(
            o.rsplit_once("/session/")
                .map(|(_, id)| id.to_owned())
                .filter(|id| validate_id(id).is_ok())
                .ok_or_else(|| VerifyError::Checkpoint {
                    index: 0,
                    at: 0,
                    reason: format!("origin {o:?} is not a session origin (<name>/session/<id>)"),
                })?,
        ),
        None => None,
    };

    let chunk_files = list_chunks(dir).map_err(io_err(dir))?;
    if chunk_files.is_empty() && checkpoints.is_empty() {
        return Err(VerifyError::NotARecording {
            path: dir.to_owned(),
            reason: "no chunk files and no checkpoints".into(),
        });
    }
    for (expected, (index, _)) in chunk_files.iter().enumerate() {
        if *index != expected as u32 {
            return Err(VerifyError::MissingChunk {
                chunk: expected as u32,
                reason: format!("the next chunk file is chunk {index}"),
            });
        }
    }

    let mut st = Scan {
        session_id: signed_id.clone().unwrap_or_default(),
        origin,
        tree: MerkleTree::new(),
        checkpoints,
        notes_torn,
        chunk_tail: None,
        last_chunk: None,
        chunks: 0,
        bytes: 0,
        start: None,
        end: None,
        gaps: 0,
        lost: 0,
        truncated: 0,
        last_offset: 0,
    };
    let mut binding = signed_id.as_deref().map(session_binding);
    let mut next_cp = 0;
    // The chunk of the first event not yet covered by a matching checkpoint.
    let mut range_first_chunk = 0;
    let mut range_open = true;
    let count = chunk_files.len();
    // One buffer for every chunk: its pages stay mapped from one chunk to the next.
    let mut bytes = Vec::new();
    for (i, (chunk, path)) in chunk_files.into_iter().enumerate() {
        let is_last = i + 1 == count;
        bytes.clear();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(&path))?;
        if bytes.is_empty() && is_last {
            // A chunk file created by an append that then failed and was cut back.
            continue;
        }
        let chunk_err = |reason: String| VerifyError::Chunk { chunk, reason };
        let header = match parse_chunk_header(&bytes) {
            Ok(h) => h,
            Err(_) if lenient && is_last && bytes.len() < 512 && !bytes.contains(&b'\n') => {
                // A crash while the header of a new chunk was being written.
                st.chunk_tail = Some(TornTail {
                    path: path.clone(),
                    valid_len: 0,
                });
                continue;
            }
            Err(reason) => return Err(chunk_err(reason)),
        };
        if st.session_id.is_empty() {
            validate_id(&header.session_id).map_err(chunk_err)?;
            st.session_id = header.session_id.clone();
            binding = Some(session_binding(&st.session_id));
        }
        if header.session_id != st.session_id {
            return Err(chunk_err(if signed_id.is_some() {
                format!(
                    "it belongs to session {}, but the signed checkpoints are for {}: the \
                     chunk (or the checkpoints file) was replaced",
                    header.session_id, st.session_id
                )
            } else {
                format!(
                    "it belongs to session {}, not {}: the chunk was replaced",
                    header.session_id, st.session_id
                )
            }));
        }
        if header.index != chunk {
            return Err(chunk_err(format!(
                "its header says chunk {}: chunk files were renamed or swapped",
                header.index
            )));
        }
        if header.first_seq != st.tree.size() {
            return Err(chunk_err(format!(
                "it starts at event {} but event {} comes next: events or chunks are missing, \
                 duplicated or swapped",
                header.first_seq,
                st.tree.size()
            )));
        }
        let binding = binding.as_deref().expect("set with the session id");
        st.chunks = chunk + 1;
        st.last_chunk = Some((chunk, path.clone()));
        let mut at = header.len;
        while let Some(frame) = next_frame(&bytes, at, true) {
            let seq = st.tree.size();
            let fail = |reason: String| VerifyError::Event {
                seq,
                chunk,
                at,
                reason,
            };
            let frame = match frame {
                Ok(f) => f,
                Err(FrameError::Torn { .. } | FrameError::TooShort(0)) if lenient && is_last => {
                    st.chunk_tail = Some(TornTail {
                        path: path.clone(),
                        valid_len: at,
                    });
                    break;
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            let hash = frame.leaf_hash(binding);
            if !frame.check_matches(&hash) {
                return Err(fail(
                    "its content does not match its check: the event was altered, or spliced \
                     in from another session"
                        .into(),
                ));
            }
            let (found, offset, kind_byte) = frame.event_header();
            if found != seq {
                return Err(fail(out_of_sequence(&bytes, at, found, seq, binding)));
            }
            let kind = EventKind::from_u8(kind_byte)
                .ok_or_else(|| fail(format!("unknown event kind {kind_byte}")))?;
            if offset < st.last_offset {
                return Err(fail(format!(
                    "its time offset {offset} µs is before the previous event's {} µs",
                    st.last_offset
                )));
            }
            if st.end.is_some() {
                return Err(fail(format!("a {kind} event follows session_end")));
            }
            let parse = |what| {
                EventBody::from_json(kind, frame.event_body())
                    .map_err(|e| fail(format!("its {what} body is not valid: {e}")))
            };
            match kind {
                EventKind::SessionStart => {
                    if seq != 0 {
                        return Err(fail("session_start in the middle of a recording".into()));
                    }
                    let EventBody::SessionStart(start) = parse("session_start")? else {
                        unreachable!()
                    };
                    if start.session_id != st.session_id {
                        return Err(fail(format!(
                            "session_start names session {}, not {}",
                            start.session_id, st.session_id
                        )));
                    }
                    st.start = Some(start);
                }
                EventKind::SessionEnd => {
                    let EventBody::SessionEnd(end) = parse("session_end")? else {
                        unreachable!()
                    };
                    if seq == 0 && !end.interrupted {
                        return Err(fail("the recording has no session_start".into()));
                    }
                    st.end = Some(end);
                }
                _ if seq == 0 => {
                    return Err(fail(format!(
                        "the first event is {kind}, not session_start"
                    )));
                }
                EventKind::Gap => {
                    let EventBody::Gap(Gap { lost_events, .. }) = parse("gap")? else {
                        unreachable!()
                    };
                    st.gaps += 1;
                    st.lost += lost_events;
                }
                EventKind::ResultsTruncated => {
                    let EventBody::ResultsTruncated(ResultsTruncated { .. }) =
                        parse("results_truncated")?
                    else {
                        unreachable!()
                    };
                    st.truncated += 1;
                }
                _ => {}
            }
            if range_open {
                range_first_chunk = chunk;
                range_open = false;
            }
            st.tree.push(hash);
            st.last_offset = offset;
            at += frame.len();
            if let Some(cp) = st.checkpoints.get(next_cp)
                && cp.size == st.tree.size()
            {
                if cp.root != st.tree.root() {
                    let from = if next_cp == 0 {
                        0
                    } else {
                        st.checkpoints[next_cp - 1].size
                    };
                    return Err(VerifyError::RootMismatch {
                        index: next_cp,
                        size: cp.size,
                        from,
                        to: cp.size - 1,
                        first_chunk: range_first_chunk,
                        last_chunk: chunk,
                    });
                }
                next_cp += 1;
                range_open = true;
            }
        }
        st.bytes += at as u64;
    }
    Ok(st)
}

/// Explain an event numbered `found` where `seq` was expected at byte `at`: look further on in
/// the chunk for the expected event to tell a reordering from a drop.
fn out_of_sequence(bytes: &[u8], at: usize, found: u64, seq: u64, binding: &[u8]) -> String {
    let mut pos = at;
    let mut later = None;
    while let Some(Ok(frame)) = next_frame(bytes, pos, true) {
        if frame.event_header().0 == seq && frame.check_matches(&frame.leaf_hash(binding)) {
            later = Some(pos);
            break;
        }
        pos += frame.len();
    }
    let head = format!("it is numbered {found} where {seq} was expected");
    match later {
        Some(pos) => format!("{head}: events were reordered (event {seq} is at byte {pos})"),
        None if found > seq => {
            let n = found - seq;
            let s = if n == 1 { " was" } else { "s were" };
            format!("{head}: {n} event{s} dropped")
        }
        None => format!("{head}: events were reordered or duplicated (event {found} again)"),
    }
}

/// Verify the recording in `dir` against the gateway's public key.
///
/// `Ok` means: every event is present, in order, unaltered and from this session; the
/// events hash to every signed checkpoint; and the last checkpoint seals a `session_end`.
/// Anything else is an error naming the first bad chunk, event or checkpoint and why.
pub fn verify_session(dir: &Path, key: &VerifyingKey) -> Result<VerifyReport, VerifyError> {
    finish(scan(dir, key, false)?)
}

/// Turn a clean scan into a report, or the reason it is not a complete recording.
pub(crate) fn finish(st: Scan) -> Result<VerifyReport, VerifyError> {
    let events = st.tree.size();
    if let Some((index, cp)) = st
        .checkpoints
        .iter()
        .enumerate()
        .find(|(_, c)| c.size > events)
    {
        return Err(VerifyError::Truncated {
            index,
            size: cp.size,
            present: events,
        });
    }
    let signed = st.checkpoints.last().map_or(0, |c| c.size);
    let Some(end) = st.end.filter(|_| signed == events) else {
        return Err(VerifyError::Unsealed {
            session_id: st.session_id,
            events,
            signed,
        });
    };
    Ok(VerifyReport {
        origin: st.origin.unwrap_or_default(),
        events,
        chunks: st.chunks,
        checkpoints: st.checkpoints.len(),
        status: if end.interrupted {
            SealStatus::Interrupted
        } else {
            SealStatus::Closed
        },
        gaps: st.gaps,
        lost_events: st.lost,
        truncated_results: st.truncated,
        bytes: st.bytes,
        root: st.tree.root(),
        started_at_unix_us: st.start.as_ref().map_or(0, |s| s.started_at_unix_us),
        duration_us: st.last_offset,
        subject: st.start.as_ref().map(|s| s.subject.clone()),
        target: st.start.as_ref().map(|s| s.target.clone()),
        session_id: st.session_id,
    })
}
