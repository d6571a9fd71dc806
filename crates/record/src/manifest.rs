//! The gateway-wide manifest log: an append-only Merkle log whose leaves are the manifests of
//! sealed recordings.
//!
//! A recording's own checkpoints prove that its events were not changed, but not that it
//! still exists: deleting a whole directory leaves nothing to verify. So every seal also
//! appends a manifest (session id, size, final root, status) to this log and signs a new
//! checkpoint over it; `verify_all` then finds each listed recording and checks it matches.
//! Dropping a manifest changes the log's root, which its signed checkpoints reveal.
//!
//! Each gateway node keeps its own log (`_log/<node>/`), so nodes sharing storage never
//! write the same file; a file lock keeps two processes off one log.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::error::RecordError;
use crate::frame::{MANIFESTS_MAGIC, header_fields, next_frame, push_frame};
use crate::layout::{CHECKPOINTS_FILE, LOG_DIR, MANIFESTS_FILE, validate_id};
use crate::merkle::MerkleTree;
use crate::note::{Checkpoint, Signer, open_checkpoint, split_notes};
use crate::sink::sync_dir;

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealStatus {
    /// The gateway saw the session end and sealed it.
    Closed,
    /// The gateway stopped first; the recording was sealed at the next start.
    Interrupted,
}

impl SealStatus {
    /// `closed` or `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            SealStatus::Closed => "closed",
            SealStatus::Interrupted => "interrupted",
        }
    }
}

/// One leaf of the manifest log: what a sealed recording committed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The session (and directory name).
    pub session_id: String,
    /// The origin of the recording's checkpoints.
    pub origin: String,
    /// Events in the recording.
    pub size: u64,
    /// The final root, standard base64 (as in the seal).
    pub root: String,
    /// How it ended.
    pub status: SealStatus,
    /// Chunks written.
    pub chunks: u32,
    /// Chunk bytes written.
    pub bytes: u64,
}

/// What the files of a manifest log hold, as read.
#[derive(Debug, Default)]
pub(crate) struct LogContents {
    pub manifests: Vec<Manifest>,
    pub tree: MerkleTree,
    /// Verified checkpoints (all of them, or only the last when `all` was false).
    pub checkpoints: Vec<Checkpoint>,
    /// Number of notes in the checkpoints file.
    pub notes: usize,
    /// Size covered by the last checkpoint.
    pub signed: u64,
    /// Valid lengths, and whether a torn tail follows them.
    pub entries_len: u64,
    pub entries_torn: bool,
    pub notes_len: u64,
    pub notes_torn: bool,
}

/// Read and check a node's manifest log. `all` verifies every checkpoint (an audit);
/// otherwise only the last one (opening the log at start-up), which already commits to
/// every earlier entry. Torn tails are reported, not errors; everything else is.
pub(crate) fn read_log(
    dir: &Path,
    node: &str,
    origin: Option<&str>,
    key: &VerifyingKey,
    all: bool,
) -> Result<LogContents, String> {
    let suffix = format!("/manifests/{node}");
    let mut out = LogContents::default();
    let notes_bytes = read_or_empty(&dir.join(CHECKPOINTS_FILE))?;
    let (notes, split_err) = split_notes(&notes_bytes);
    if let Some(e) = split_err {
        if !e.torn {
            return Err(format!("checkpoint at byte {}: {}", e.at, e.reason));
        }
        out.notes_torn = true;
        out.notes_len = e.at as u64;
    } else {
        out.notes_len = notes_bytes.len() as u64;
    }
    out.notes = notes.len();
    let mut prev = None;
    for (i, span) in notes.iter().enumerate() {
        if !all && i + 1 != notes.len() {
            continue;
        }
        let cp = open_checkpoint(span.note, key).map_err(|e| format!("checkpoint #{i}: {e}"))?;
        let expected = origin.or(out.checkpoints.first().map(|c| c.origin.as_str()));
        if expected.is_some_and(|o| o != cp.origin) || !cp.origin.ends_with(&suffix) {
            return Err(format!(
                "checkpoint #{i} is for {:?}, not this log ({})",
                cp.origin,
                expected.unwrap_or(&suffix)
            ));
        }
        if let Some(p) = prev
            && cp.size <= p
        {
            return Err(format!(
                "checkpoint #{i} has size {} after size {p}: the log was rolled back",
                cp.size
            ));
        }
        prev = Some(cp.size);
        out.checkpoints.push(cp);
    }
    out.signed = out.checkpoints.last().map_or(0, |c| c.size);

    let bytes = read_or_empty(&dir.join(MANIFESTS_FILE))?;
    if !bytes.contains(&b'\n') {
        // Empty, or a crash while the header line was being written.
        out.entries_len = 0;
        out.entries_torn = !bytes.is_empty();
    } else {
        let (fields, header_len) = header_fields(&bytes, MANIFESTS_MAGIC)?;
        if fields != [node] {
            return Err(format!(
                "the manifests file header names {fields:?}, not {node:?}"
            ));
        }
        let mut at = header_len;
        let mut next_cp = 0;
        while let Some(frame) = next_frame(&bytes, at, false) {
            let index = out.tree.size();
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    if matches!(e, crate::frame::FrameError::Torn { .. }) {
                        out.entries_torn = true;
                        break;
                    }
                    return Err(format!("entry {index} (byte {at}): {e}"));
                }
            };
            let hash = frame.leaf_hash(&[]);
            if !frame.check_matches(&hash) {
                return Err(format!(
                    "entry {index} (byte {at}) does not match its check: the manifest was altered"
                ));
            }
            let manifest: Manifest = serde_json::from_slice(frame.record)
                .map_err(|e| format!("entry {index} (byte {at}) is not a manifest: {e}"))?;
            out.tree.push(hash);
            out.manifests.push(manifest);
            at += frame.len();
            while let Some(cp) = out.checkpoints.get(next_cp) {
                if cp.size > out.tree.size() {
                    break;
                }
                if cp.size == out.tree.size() && cp.root != out.tree.root() {
                    return Err(format!(
                        "the signed checkpoint at size {} does not match the manifests: \
                         an entry before it was removed, changed or reordered",
                        cp.size
                    ));
                }
                next_cp += 1;
            }
        }
        out.entries_len = at as u64;
    }
    if let Some(cp) = out.checkpoints.iter().find(|c| c.size > out.tree.size()) {
        return Err(format!(
            "a signed checkpoint covers {} manifests but the log holds {}: entries were removed",
            cp.size,
            out.tree.size()
        ));
    }
    Ok(out)
}

fn read_or_empty(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The open files of a log, behind the mutex.
#[derive(Debug)]
struct LogState {
    tree: MerkleTree,
    entries: File,
    entries_len: u64,
    checkpoints: File,
    checkpoints_len: u64,
    latest: Option<String>,
}

/// A node's manifest log, open for appending. Share it (`Arc`) between all sessions of a
/// gateway process; appends are serialized internally.
#[derive(Debug)]
pub struct ManifestLog {
    dir: PathBuf,
    node: String,
    origin: String,
    signer: Arc<Signer>,
    state: Mutex<LogState>,
}

impl ManifestLog {
    /// Open (creating if needed) the log of `node` under `recordings_dir`, lock it against
    /// other processes, cut off a torn tail left by a crash, check it against its last signed
    /// checkpoint, and sign one if the last entry is not covered yet.
    ///
    /// Refuses a log that does not match its checkpoints, or with more than one unsigned
    /// entry (more than a crash can leave): signing over it would launder tampering.
    pub fn open(
        recordings_dir: &Path,
        node: &str,
        signer: Arc<Signer>,
    ) -> Result<Self, RecordError> {
        validate_id(node).map_err(RecordError::InvalidId)?;
        let dir = recordings_dir.join(LOG_DIR).join(node);
        let log_err = |reason: String| RecordError::Log {
            path: dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&dir).map_err(|e| RecordError::io(&dir, e))?;
        let entries_path = dir.join(MANIFESTS_FILE);
        let mut entries = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&entries_path)
            .map_err(|e| RecordError::io(&entries_path, e))?;
        entries.try_lock().map_err(|e| {
            log_err(format!(
                "cannot lock {}: {e} (another gateway process uses this node name)",
                entries_path.display()
            ))
        })?;
        let origin = signer.log_origin(node);
        let contents =
            read_log(&dir, node, Some(&origin), &signer.verifying_key(), false).map_err(log_err)?;
        let cp_path = dir.join(CHECKPOINTS_FILE);
        let checkpoints = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&cp_path)
            .map_err(|e| RecordError::io(&cp_path, e))?;
        if contents.notes_torn {
            checkpoints
                .set_len(contents.notes_len)
                .map_err(|e| RecordError::io(&cp_path, e))?;
        }
        let mut entries_len = contents.entries_len;
        if contents.entries_torn {
            entries
                .set_len(entries_len)
                .map_err(|e| RecordError::io(&entries_path, e))?;
        }
        if entries_len == 0 {
            let header = format!("{MANIFESTS_MAGIC} {node}\n");
            entries
                .set_len(0)
                .and_then(|()| entries.write_all(header.as_bytes()))
                .and_then(|()| entries.sync_data())
                .map_err(|e| RecordError::io(&entries_path, e))?;
            entries_len = header.len() as u64;
            sync_dir(&dir)?;
        }
        let unsigned = contents.tree.size() - contents.signed;
        if unsigned > 1 {
            return Err(log_err(format!(
                "{unsigned} manifests are not covered by a signed checkpoint (a crash leaves at \
                 most one): the checkpoints were removed"
            )));
        }
        let log = ManifestLog {
            origin,
            node: node.to_owned(),
            signer,
            state: Mutex::new(LogState {
                tree: contents.tree,
                entries,
                entries_len,
                checkpoints,
                checkpoints_len: contents.notes_len,
                latest: None,
            }),
            dir,
        };
        {
            let mut st = log.state.lock().expect("not poisoned");
            if unsigned == 1 || (st.tree.size() == 0 && contents.notes == 0) {
                log.sign(&mut st)?;
            }
        }
        Ok(log)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node whose log this is.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The origin of the log's checkpoints.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of manifests.
    pub fn size(&self) -> u64 {
        self.state.lock().expect("not poisoned").tree.size()
    }

    /// The latest checkpoint signed by this process, for anchoring outside the data
    /// directory (the metadata store, a witness): a copy elsewhere is what makes rolling the
    /// whole log back detectable.
    pub fn latest_checkpoint(&self) -> Option<String> {
        self.state.lock().expect("not poisoned").latest.clone()
    }

    /// Append `manifest` and sign a checkpoint covering it; both are fsynced before this
    /// returns. On failure the entry is cut off again, so the log stays signed end to end.
    pub fn append(&self, manifest: &Manifest) -> Result<u64, RecordError> {
        let mut st = self.state.lock().expect("not poisoned");
        let record = serde_json::to_vec(manifest)?;
        let mut frame = Vec::with_capacity(record.len() + 12);
        let hash = push_frame(&mut frame, &[], &record);
        let path = self.dir.join(MANIFESTS_FILE);
        let before = st.entries_len;
        let written = st
            .entries
            .write_all(&frame)
            .and_then(|()| st.entries.sync_data());
        if let Err(e) = written {
            let _ = st.entries.set_len(before);
            return Err(RecordError::io(path, e));
        }
        st.entries_len += frame.len() as u64;
        let old_tree = st.tree.clone();
        st.tree.push(hash);
        if let Err(e) = self.sign(&mut st) {
            let _ = st.entries.set_len(before);
            st.entries_len = before;
            st.tree = old_tree;
            return Err(e);
        }
        Ok(st.tree.size() - 1)
    }

    fn sign(&self, st: &mut LogState) -> Result<(), RecordError> {
        let note = self.signer.sign_checkpoint(&Checkpoint {
            origin: self.origin.clone(),
            size: st.tree.size(),
            root: st.tree.root(),
        });
        let path = self.dir.join(CHECKPOINTS_FILE);
        let written = st
            .checkpoints
            .write_all(note.as_bytes())
            .and_then(|()| st.checkpoints.sync_data());
        if let Err(e) = written {
            let _ = st.checkpoints.set_len(st.checkpoints_len);
            return Err(RecordError::io(path, e));
        }
        st.checkpoints_len += note.len() as u64;
        st.latest = Some(note);
        Ok(())
    }

    /// The session ids listed in the log (read from disk).
    pub fn logged_sessions(&self) -> Result<HashSet<String>, RecordError> {
        let _st = self.state.lock().expect("not poisoned");
        let path = self.dir.join(MANIFESTS_FILE);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| RecordError::io(&path, e))?;
        let mut ids = HashSet::new();
        let Ok((_, mut at)) = header_fields(&bytes, MANIFESTS_MAGIC) else {
            return Ok(ids);
        };
        while let Some(Ok(frame)) = next_frame(&bytes, at, false) {
            if let Ok(m) = serde_json::from_slice::<Manifest>(frame.record) {
                ids.insert(m.session_id);
            }
            at += frame.len();
        }
        Ok(ids)
    }
}
