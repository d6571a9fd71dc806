//! Canonical framing: how events and manifests are laid out in chunk and log files.
//!
//! ```text
//! file   = header-line frame*
//! frame  = length:u32be check:[8] record:[length]
//! record = seq:u64be offset_us:u64be kind:u8 body-json        (event chunks)
//!        | manifest-json                                      (manifest log)
//! leaf   = binding ‖ record          binding = len(session-id):u8 ‖ session-id   (events)
//!                                    binding = empty                              (manifests)
//! check  = first 8 bytes of SHA-256(0x00 ‖ leaf)   — the RFC 9162 leaf hash
//! ```
//!
//! The check names the exact event that was altered (or spliced in from another session,
//! because the session id is part of every leaf) without waiting for the next checkpoint;
//! the signed checkpoints then make the whole sequence unforgeable.

use crate::error::RecordError;
use crate::event::{EventBody, EventKind};
use crate::merkle::{Hash, leaf_hash_parts};

/// Bytes before a record: its length and its check.
pub(crate) const FRAME_PREFIX: usize = 12;
/// Bytes of an event record before its JSON body: seq, offset, kind.
pub(crate) const EVENT_HEADER: usize = 17;
/// The largest record a writer produces or a reader accepts (PostgreSQL's own message limit):
/// a corrupted length beyond it is reported as such rather than as a torn file.
pub const MAX_RECORD: usize = 1 << 30;
/// The longest header line accepted.
const MAX_HEADER_LINE: usize = 512;

/// The magic word of chunk files.
pub(crate) const CHUNK_MAGIC: &str = "postern-chunk/1";
/// The magic word of manifest log files.
pub(crate) const MANIFESTS_MAGIC: &str = "postern-manifests/1";

/// The leaf binding of a session: `len(id):u8 ‖ id`.
pub(crate) fn session_binding(session_id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(session_id.len() + 1);
    b.push(u8::try_from(session_id.len()).expect("session ids are at most 128 bytes"));
    b.extend_from_slice(session_id.as_bytes());
    b
}

/// The header line of chunk `index` of `session_id`, whose first event is `first_seq`.
pub(crate) fn chunk_header(session_id: &str, index: u32, first_seq: u64) -> String {
    format!("{CHUNK_MAGIC} {session_id} {index} {first_seq}\n")
}

/// A parsed chunk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    pub session_id: String,
    pub index: u32,
    pub first_seq: u64,
    /// Bytes the header occupies, newline included.
    pub len: usize,
}

/// Split off a header line (`magic field...\n`) and return its fields after the magic.
pub(crate) fn header_fields<'a>(
    bytes: &'a [u8],
    magic: &str,
) -> Result<(Vec<&'a str>, usize), String> {
    let window = &bytes[..bytes.len().min(MAX_HEADER_LINE)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return Err(if bytes.len() < MAX_HEADER_LINE {
            "the header line is incomplete".to_owned()
        } else {
            "no header line".to_owned()
        });
    };
    let line = std::str::from_utf8(&bytes[..nl]).map_err(|_| "the header is not UTF-8")?;
    let mut fields = line.split(' ');
    if fields.next() != Some(magic) {
        return Err(format!("the header does not start with {magic:?}"));
    }
    Ok((fields.collect(), nl + 1))
}

/// Parse a chunk header.
pub(crate) fn parse_chunk_header(bytes: &[u8]) -> Result<ChunkHeader, String> {
    let (fields, len) = header_fields(bytes, CHUNK_MAGIC)?;
    let [session_id, index, first_seq] = fields[..] else {
        return Err("the header does not have three fields".to_owned());
    };
    Ok(ChunkHeader {
        session_id: session_id.to_owned(),
        index: index.parse().map_err(|_| "bad chunk index in header")?,
        first_seq: first_seq
            .parse()
            .map_err(|_| "bad first sequence in header")?,
        len,
    })
}

/// Append a frame for `record` (already in `out` from `record_start`) by writing its prefix
/// in front: callers reserve [`FRAME_PREFIX`] bytes, write the record, then call this.
/// Returns the leaf hash.
pub(crate) fn seal_frame(out: &mut [u8], prefix_at: usize, binding: &[u8]) -> Hash {
    let record_start = prefix_at + FRAME_PREFIX;
    let len = out.len() - record_start;
    let hash = leaf_hash_parts(&[binding, &out[record_start..]]);
    out[prefix_at..prefix_at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out[prefix_at + 4..record_start].copy_from_slice(&hash[..8]);
    hash
}

/// Append a whole frame holding `record`; returns the leaf hash.
pub(crate) fn push_frame(out: &mut Vec<u8>, binding: &[u8], record: &[u8]) -> Hash {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX]);
    out.extend_from_slice(record);
    seal_frame(out, at, binding)
}

/// One frame as found in a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFrame<'a> {
    /// The stored check.
    pub check: [u8; 8],
    /// The record.
    pub record: &'a [u8],
}

impl RawFrame<'_> {
    /// The leaf hash of this frame's record under `binding`.
    pub fn leaf_hash(&self, binding: &[u8]) -> Hash {
        leaf_hash_parts(&[binding, self.record])
    }

    /// Whether the stored check matches `hash`.
    pub fn check_matches(&self, hash: &Hash) -> bool {
        self.check == hash[..8]
    }

    /// The total bytes of the frame.
    pub fn len(&self) -> usize {
        FRAME_PREFIX + self.record.len()
    }

    /// The event header fields: seq, offset, kind byte (records shorter than the header are
    /// rejected by [`next_frame`] when `event` is set).
    pub fn event_header(&self) -> (u64, u64, u8) {
        let r = self.record;
        let seq = u64::from_be_bytes(r[0..8].try_into().expect("8 bytes"));
        let off = u64::from_be_bytes(r[8..16].try_into().expect("8 bytes"));
        (seq, off, r[16])
    }

    /// The JSON body of an event record.
    pub fn event_body(&self) -> &[u8] {
        &self.record[EVENT_HEADER..]
    }
}

/// Why bytes could not be read as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The file ends inside the frame: `needed` bytes from its start, `available` present.
    Torn { needed: usize, available: usize },
    /// The length field is larger than [`MAX_RECORD`].
    Oversized(usize),
    /// The record is shorter than an event header (or empty).
    TooShort(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Torn { needed, available } => write!(
                f,
                "the file ends inside a frame ({available} of {needed} bytes present)"
            ),
            FrameError::Oversized(n) => write!(
                f,
                "the frame claims {n} bytes, more than the {MAX_RECORD}-byte limit (corrupt length)"
            ),
            FrameError::TooShort(n) => {
                write!(f, "the frame claims {n} bytes, too short for a record")
            }
        }
    }
}

/// Read the frame at `at` in `buf`; `None` at the end. `event` requires room for an event
/// header.
pub(crate) fn next_frame(
    buf: &[u8],
    at: usize,
    event: bool,
) -> Option<Result<RawFrame<'_>, FrameError>> {
    let rest = buf.len().checked_sub(at)?;
    if rest == 0 {
        return None;
    }
    if rest < FRAME_PREFIX {
        return Some(Err(FrameError::Torn {
            needed: FRAME_PREFIX,
            available: rest,
        }));
    }
    let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD {
        return Some(Err(FrameError::Oversized(len)));
    }
    let min = if event { EVENT_HEADER } else { 1 };
    if len < min {
        return Some(Err(FrameError::TooShort(len)));
    }
    if rest < FRAME_PREFIX + len {
        return Some(Err(FrameError::Torn {
            needed: FRAME_PREFIX + len,
            available: rest,
        }));
    }
    let check = buf[at + 4..at + FRAME_PREFIX].try_into().expect("8 bytes");
    Some(Ok(RawFrame {
        check,
        record: &buf[at + FRAME_PREFIX..at + FRAME_PREFIX + len],
    }))
}

/// Write an event record header into `out`.
pub(crate) fn push_event_header(out: &mut Vec<u8>, seq: u64, offset_us: u64, kind: EventKind) {
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&offset_us.to_be_bytes());
    out.push(kind as u8);
}

/// Append the frame of one event to `out` and return its leaf hash; on error `out` is left
/// as it was.
pub(crate) fn push_event(
    out: &mut Vec<u8>,
    binding: &[u8],
    seq: u64,
    offset_us: u64,
    body: &EventBody,
) -> Result<Hash, RecordError> {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX]);
    push_event_header(out, seq, offset_us, body.kind());
    let encoded = body.write_json(out);
    let len = out.len() - at - FRAME_PREFIX;
    if let Err(e) = encoded {
        out.truncate(at);
        return Err(e.into());
    }
    if len > MAX_RECORD {
        out.truncate(at);
        return Err(RecordError::TooLarge(len));
    }
    Ok(seal_frame(out, at, binding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_tears_are_named() {
        let binding = session_binding("s1");
        let mut buf = b"header\n".to_vec();
        let mut record = Vec::new();
        push_event_header(&mut record, 0, 5, EventKind::Command);
        record.extend_from_slice(b"{}");
        let hash = push_frame(&mut buf, &binding, &record);
        let frame = next_frame(&buf, 7, true).unwrap().unwrap();
        assert_eq!(frame.record, &record[..]);
        assert!(frame.check_matches(&hash));
        assert_eq!(frame.leaf_hash(&binding), hash);
        assert_eq!(frame.event_header(), (0, 5, 2));
        assert!(next_frame(&buf, 7 + frame.len(), true).is_none());
        let torn = &buf[..buf.len() - 1];
        assert!(matches!(
            next_frame(torn, 7, true),
            Some(Err(FrameError::Torn { .. }))
        ));
    }

    #[test]
    fn chunk_headers_parse() {
        let h = chunk_header("abc", 3, 4000);
        let parsed = parse_chunk_header(h.as_bytes()).unwrap();
        assert_eq!(parsed.session_id, "abc");
        assert_eq!(parsed.index, 3);
        assert_eq!(parsed.first_seq, 4000);
        assert_eq!(parsed.len, h.len());
        assert!(parse_chunk_header(b"postern-chunk/2 abc 3 4000\n").is_err());
        assert!(parse_chunk_header(b"postern-chunk/1 abc 3").is_err());
    }
}
