//! Crash recovery: seal what a stopped gateway left open.
//!
//! A crash (`kill -9`, power loss) leaves recordings without a seal, possibly with half a
//! frame or half a checkpoint at the end. At start-up, before serving, the gateway cuts those
//! torn tails, appends a `session_end` marked interrupted, signs the seal, and logs the
//! manifest — so every recording verifies, and says honestly that its end was not seen.
//! Events after the last flush are lost; everything the engine flushed (every command, since
//! commands are flushed before they are forwarded) is kept.
//!
//! Recovery refuses to seal a recording that fails verification for any other reason: the
//! gateway's signature must never bless tampering.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::RecordError;
use crate::event::{EventBody, SessionEnd};
use crate::frame::{chunk_header, push_event, session_binding};
use crate::layout::{CHECKPOINTS_FILE, list_sessions, parse_chunk_file_name};
use crate::manifest::{Manifest, ManifestLog};
use crate::note::{Checkpoint, Signer};
use crate::sink::{Durability, LocalDirSink, Sink};
use crate::verify::{Scan, VerifyError, VerifyReport, finish, scan, verify_session};

/// The reason recorded in the `session_end` of a recording sealed by recovery.
pub const INTERRUPTED_REASON: &str = "interrupted: the gateway stopped before the session ended";

/// What recovery did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Recordings sealed now, as interrupted.
    pub sealed: Vec<VerifyReport>,
    /// Recordings already sealed whose manifest was missing from the log, now logged.
    pub logged: Vec<String>,
    /// Recordings left alone because they fail verification; each needs a human.
    pub failed: Vec<(String, RecordError)>,
}

/// Seal every unsealed recording under `recordings_dir` as interrupted and make sure every
/// sealed one is in `log`. Run it at start-up, before any session starts: it would seal a
/// live session too.
pub fn recover_unsealed(
    recordings_dir: &Path,
    signer: &Signer,
    log: &ManifestLog,
) -> Result<RecoveryReport, RecordError> {
    let mut report = RecoveryReport::default();
    if !recordings_dir.exists() {
        return Ok(report);
    }
    let logged = log.logged_sessions()?;
    let sessions = list_sessions(recordings_dir).map_err(|e| RecordError::io(recordings_dir, e))?;
    for (id, dir) in sessions {
        match recover_one(&id, &dir, signer) {
            Ok(Outcome::Sealed(rep)) => {
                if let Err(e) = log.append(&manifest(&rep)) {
                    report.failed.push((id, e));
                } else {
                    report.sealed.push(rep);
                }
            }
            Ok(Outcome::AlreadySealed(rep)) => {
                if !logged.contains(&id) {
                    match log.append(&manifest(&rep)) {
                        Ok(_) => report.logged.push(id),
                        Err(e) => report.failed.push((id, e)),
                    }
                }
            }
            Err(e) => report.failed.push((id, e)),
        }
    }
    Ok(report)
}

/// The manifest of a verified recording.
pub(crate) fn manifest(rep: &VerifyReport) -> Manifest {
    Manifest {
        session_id: rep.session_id.clone(),
        origin: rep.origin.clone(),
        size: rep.events,
        root: B64.encode(rep.root),
        status: rep.status,
        chunks: rep.chunks,
        bytes: rep.bytes,
    }
}

enum Outcome {
    Sealed(VerifyReport),
    AlreadySealed(VerifyReport),
}

fn recover_one(id: &str, dir: &Path, signer: &Signer) -> Result<Outcome, RecordError> {
    let key = signer.verifying_key();
    let st = match scan(dir, &key, true) {
        // A chunk file cut back to nothing (its first write failed, e.g. a full disk) holds
        // no event and no session id: the same as a recording never written.
        Ok(st) if st.session_id.is_empty() && st.tree.size() == 0 && st.checkpoints.is_empty() => {
            empty_scan(id)
        }
        Ok(st) => st,
        // Created, then the gateway stopped before the first write.
        Err(VerifyError::NotARecording { .. }) => empty_scan(id),
        Err(e) => return Err(e.into()),
    };
    if st.session_id != id {
        return Err(RecordError::InvalidEvent(format!(
            "{} holds session {}, not {id}",
            dir.display(),
            st.session_id
        )));
    }
    let torn = st.chunk_tail.is_some() || st.notes_torn.is_some();
    let signed = st.checkpoints.last().map_or(0, |c| c.size);
    if st.end.is_some() && signed == st.tree.size() && !torn {
        return Ok(Outcome::AlreadySealed(finish(st)?));
    }
    if let Some(cp) = st.checkpoints.iter().find(|c| c.size > st.tree.size()) {
        return Err(VerifyError::Truncated {
            index: 0,
            size: cp.size,
            present: st.tree.size(),
        }
        .into());
    }
    seal_interrupted(dir, signer, st)?;
    Ok(Outcome::Sealed(verify_session(dir, &key)?))
}

fn empty_scan(id: &str) -> Scan {
    Scan {
        session_id: id.to_owned(),
        origin: None,
        tree: Default::default(),
        checkpoints: Vec::new(),
        notes_torn: None,
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
    }
}

/// Cut torn tails, append an interrupted `session_end` (unless the end was written but not
/// signed), and sign the seal.
fn seal_interrupted(dir: &Path, signer: &Signer, mut st: Scan) -> Result<(), RecordError> {
    if let Some(torn) = &st.notes_torn {
        let path = dir.join(CHECKPOINTS_FILE);
        cut(&path, torn.at as u64)?;
    }
    // Where the next frame goes: after the last complete one.
    let mut target = st.last_chunk.clone().map(|(i, _)| i);
    let mut needs_header = target.is_none();
    if let Some(tail) = &st.chunk_tail {
        cut(&tail.path, tail.valid_len as u64)?;
        if tail.valid_len == 0 {
            let name = tail.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            target = parse_chunk_file_name(name);
            needs_header = true;
        }
    }
    let chunk = target.unwrap_or(0);
    let mut sink = LocalDirSink::open(dir.to_owned());
    if st.end.is_none() {
        let seq = st.tree.size();
        let mut bytes = Vec::new();
        if needs_header {
            bytes.extend_from_slice(chunk_header(&st.session_id, chunk, seq).as_bytes());
        }
        let end = EventBody::SessionEnd(SessionEnd {
            interrupted: true,
            ..SessionEnd::new(INTERRUPTED_REASON)
        });
        let binding = session_binding(&st.session_id);
        let hash = push_event(&mut bytes, &binding, seq, st.last_offset, &end)?;
        sink.append_chunk(chunk, &bytes)?;
        sink.sync(Durability::Fsync)?;
        st.tree.push(hash);
    }
    let note = signer.sign_checkpoint(&Checkpoint {
        origin: st
            .origin
            .clone()
            .unwrap_or_else(|| signer.session_origin(&st.session_id)),
        size: st.tree.size(),
        root: st.tree.root(),
    });
    sink.append_checkpoint(note.as_bytes())?;
    sink.sync(Durability::Fsync)?;
    Ok(())
}

fn cut(path: &Path, len: u64) -> Result<(), RecordError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_data()))
        .map_err(|e| RecordError::io(path, e))
}
