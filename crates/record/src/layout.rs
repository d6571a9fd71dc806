//! Where things live: file names inside a recording and inside the recordings directory.
//!
//! ```text
//! <recordings>/<session-id>/chunk-00000000.rec   framed events, appended, rotated by size
//! <recordings>/<session-id>/checkpoints          signed notes, appended
//! <recordings>/_log/<node>/manifests             framed session manifests, appended
//! <recordings>/_log/<node>/checkpoints           signed notes over the manifests
//! ```
//!
//! An object-store sink keeps the same names as object keys under its prefix.

use std::io;
use std::path::{Path, PathBuf};

/// The file holding a recording's signed checkpoints.
pub const CHECKPOINTS_FILE: &str = "checkpoints";
/// The directory (under the recordings directory) holding the manifest logs, one per node.
pub const LOG_DIR: &str = "_log";
/// The file holding a manifest log's entries.
pub const MANIFESTS_FILE: &str = "manifests";

/// The longest session id (and node name) accepted.
pub const MAX_ID_LEN: usize = 128;

/// The file name of chunk `index`.
pub fn chunk_file_name(index: u32) -> String {
    format!("chunk-{index:08}.rec")
}

/// The chunk index of a file name, if it is a chunk file.
pub(crate) fn parse_chunk_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("chunk-")?.strip_suffix(".rec")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The chunk files of a recording, sorted by index (holes are the caller's to report).
pub(crate) fn list_chunks(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut chunks = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_chunk_file_name) {
            chunks.push((index, entry.path()));
        }
    }
    chunks.sort_by_key(|(i, _)| *i);
    Ok(chunks)
}

/// Check that `id` can name a session (or a node): it becomes a directory name and part of
/// a signed-note origin, so it is limited to `[A-Za-z0-9._-]`, 1 to 128 characters, and may
/// not start with `_` (reserved for [`LOG_DIR`]) or `.`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("{id:?} must be 1 to {MAX_ID_LEN} characters long"));
    }
    if id.starts_with('_') || id.starts_with('.') {
        return Err(format!("{id:?} may not start with '_' or '.'"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{id:?} contains {c:?} (allowed: A-Z a-z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// The session directories under a recordings directory (everything that is not the log or
/// hidden), sorted by name.
pub(crate) fn list_sessions(recordings: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(recordings)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str()
            && validate_id(name).is_ok()
        {
            out.push((name.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_round_trip() {
        assert_eq!(chunk_file_name(7), "chunk-00000007.rec");
        assert_eq!(parse_chunk_file_name("chunk-00000007.rec"), Some(7));
        assert_eq!(parse_chunk_file_name("chunk-7.rec"), None);
        assert_eq!(parse_chunk_file_name("chunk-0000000x.rec"), None);
    }

    #[test]
    fn ids_are_restricted() {
        assert!(validate_id("0192f3c4-7d2e-7a10-9b1c-2f6a8e4d1c00").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("_log").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id(&"x".repeat(129)).is_err());
    }
}
