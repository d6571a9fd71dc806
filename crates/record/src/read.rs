//! Reading events back, for `sessions show`, export and replay.
//!
//! The reader checks what is cheap and local — each frame's check and the sequence — so a
//! timeline never shows a damaged event as if it were real; it does not check signatures
//! (use [`crate::verify_session`] to trust a recording). It stops quietly at an incomplete
//! frame at the very end, which is what a session still being written looks like.

use std::path::{Path, PathBuf};

use crate::event::{Event, EventBody, EventKind};
use crate::frame::{FrameError, next_frame, parse_chunk_header, session_binding};
use crate::layout::list_chunks;
use crate::verify::VerifyError;

/// Open the recording in `dir` for reading, event by event, a chunk in memory at a time.
pub fn read_events(dir: &Path) -> Result<EventReader, VerifyError> {
    let chunks = list_chunks(dir).map_err(|source| VerifyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if chunks.is_empty() {
        return Err(VerifyError::NotARecording {
            path: dir.to_owned(),
            reason: "no chunk files".into(),
        });
    }
    Ok(EventReader {
        total: chunks.len(),
        chunks: chunks
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>()
            .into_iter(),
        current: None,
        session_id: None,
        binding: Vec::new(),
        next_seq: 0,
        done: false,
    })
}

/// An iterator over the events of a recording. Yields at most one error, then ends.
#[derive(Debug)]
pub struct EventReader {
    chunks: std::vec::IntoIter<(usize, (u32, PathBuf))>,
    total: usize,
    /// The chunk being read: index, whether it is the last, bytes, position.
    current: Option<(u32, bool, Vec<u8>, usize)>,
    session_id: Option<String>,
    binding: Vec<u8>,
    next_seq: u64,
    done: bool,
}

impl EventReader {
    /// The session id, once the first chunk has been opened.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    fn open_next_chunk(&mut self) -> Result<bool, VerifyError> {
        let Some((i, (chunk, path))) = self.chunks.next() else {
            return Ok(false);
        };
        let is_last = i + 1 == self.total;
        let bytes = std::fs::read(&path).map_err(|source| VerifyError::Io {
            path: path.clone(),
            source,
        })?;
        if bytes.is_empty() && is_last {
            return Ok(false);
        }
        let header =
            parse_chunk_header(&bytes).map_err(|reason| VerifyError::Chunk { chunk, reason })?;
        match &self.session_id {
            None => {
                self.binding = session_binding(&header.session_id);
                self.session_id = Some(header.session_id.clone());
            }
            Some(id) if *id != header.session_id => {
                return Err(VerifyError::Chunk {
                    chunk,
                    reason: format!("it belongs to session {}, not {id}", header.session_id),
                });
            }
            Some(_) => {}
        }
        let at = header.len;
        self.current = Some((chunk, is_last, bytes, at));
        Ok(true)
    }

    fn next_event(&mut self) -> Result<Option<Event>, VerifyError> {
        loop {
            if self.current.is_none() && !self.open_next_chunk()? {
                return Ok(None);
            }
            let (chunk, is_last, bytes, at) = self.current.as_mut().expect("opened");
            let (chunk, is_last, at_now) = (*chunk, *is_last, *at);
            let seq = self.next_seq;
            let fail = |reason: String| VerifyError::Event {
                seq,
                chunk,
                at: at_now,
                reason,
            };
            let frame = match next_frame(bytes, at_now, true) {
                None => {
                    self.current = None;
                    continue;
                }
                Some(Err(FrameError::Torn { .. })) if is_last => return Ok(None),
                Some(Err(e)) => return Err(fail(e.to_string())),
                Some(Ok(f)) => f,
            };
            if !frame.check_matches(&frame.leaf_hash(&self.binding)) {
                return Err(fail("its content does not match its check".into()));
            }
            let (found, offset_us, kind) = frame.event_header();
            if found != seq {
                return Err(fail(format!(
                    "it is numbered {found} where {seq} was expected"
                )));
            }
            let kind =
                EventKind::from_u8(kind).ok_or_else(|| fail(format!("unknown kind {kind}")))?;
            let body = EventBody::from_json(kind, frame.event_body())
                .map_err(|e| fail(format!("its {kind} body is not valid: {e}")))?;
            *at += frame.len();
            self.next_seq += 1;
            return Ok(Some(Event {
                seq,
                offset_us,
                body,
            }));
        }
    }
}

impl Iterator for EventReader {
    type Item = Result<Event, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_event() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
