//! Where recordings are written: the [`Sink`] trait and the local-directory sink.
//!
//! The recorder owns the format and hands a sink opaque byte strings to append to two kinds
//! of logical object: numbered chunks and one checkpoints stream. That is all an object
//! store needs too: an S3 sink can upload a chunk's bytes as they arrive (re-putting the
//! bounded chunk object, or writing numbered parts that a reader concatenates) and the files
//! a verifier reads are the same.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::layout::{CHECKPOINTS_FILE, chunk_file_name, validate_id};

/// How far an append must get before a flush returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Handed to the operating system (`write(2)`): survives a gateway crash (`kill -9`),
    /// not a power loss. The default, because it costs microseconds per command.
    #[default]
    Write,
    /// On stable storage (`fdatasync(2)`, and the directory entry for new files): survives a
    /// power loss, at the cost of a disk flush per write-ahead append.
    Fsync,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "write" => Ok(Durability::Write),
            "fsync" => Ok(Durability::Fsync),
            other => Err(format!(
                "unknown durability {other:?} (expected \"write\" or \"fsync\")"
            )),
        }
    }
}

/// A sink operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {target}: {source}")]
pub struct SinkError {
    /// What was being done (`append to`, `sync`, `create`).
    pub op: &'static str,
    /// Which file or object.
    pub target: String,
    /// The cause; object-store sinks wrap theirs with [`io::Error::other`].
    #[source]
    pub source: io::Error,
}

impl SinkError {
    /// An error for `op` on `target`.
    pub fn new(op: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        SinkError {
            op,
            target: target.into(),
            source,
        }
    }
}

/// Durable storage for one recording.
///
/// Contract the recorder relies on:
/// - when `append_chunk` returns `Ok`, the bytes are stored at least to the
///   [`Durability::Write`] level (readable by a verifier, surviving a gateway crash);
/// - appends are all-or-nothing: on error, the chunk is left as it was before the call (a
///   sink that cannot restore it must keep failing until it has), so a best-effort recorder
///   can drop what failed and carry on with a consistent file;
/// - chunk `i + 1` is only appended to after chunk `i` is complete;
/// - after `sync(d)` returns, every earlier append is durable to level `d`.
///
/// The recorder calls `append_chunk` once per flush and chunk, so an object-store sink
/// uploads there — as a numbered part object of the chunk (`chunk-00000003.rec.part-000017`,
/// concatenated by readers) or by re-putting the size-bounded chunk object — and returns once
/// the store has acknowledged; its `sync` has nothing left to do. Uploads may run on the
/// sink's own runtime; callers on a Tokio worker then flush inside `block_in_place` or
/// `spawn_blocking`, as they would for [`Durability::Fsync`].
pub trait Sink: Send {
    /// Append `data` to chunk `index`, creating it on first use.
    fn append_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), SinkError>;
    /// Append one signed note to the checkpoints stream.
    fn append_checkpoint(&mut self, note: &[u8]) -> Result<(), SinkError>;
    /// Make every earlier append durable to `durability`.
    fn sync(&mut self, durability: Durability) -> Result<(), SinkError>;
    /// Where the recording goes, for messages (`/data/recordings/<id>`, `s3://b/p/<id>`).
    fn location(&self) -> String;
}

/// A file opened for appending, with the length it had after the last successful append.
#[derive(Debug)]
struct AppendFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// The file may hold a partial append beyond `len` that could not be cut off yet.
    dirty: bool,
}

impl AppendFile {
    fn open(path: PathBuf) -> Result<(Self, bool), SinkError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SinkError::new("open", path.display().to_string(), e))?;
        let len = file
            .metadata()
            .map_err(|e| SinkError::new("open", path.display().to_string(), e))?
            .len();
        Ok((
            AppendFile {
                path,
                file,
                len,
                dirty: false,
            },
            !existed,
        ))
    }

    /// Append all of `data` or, on failure, cut the file back to its previous length.
    fn append(&mut self, data: &[u8]) -> Result<(), SinkError> {
        self.repair()?;
        if let Err(e) = self.file.write_all(data) {
            self.dirty = true;
            let _ = self.repair();
            return Err(SinkError::new(
                "append to",
                self.path.display().to_string(),
                e,
            ));
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Cut off a partial append left by an earlier failure.
    fn repair(&mut self) -> Result<(), SinkError> {
        if self.dirty {
            self.file.set_len(self.len).map_err(|e| {
                SinkError::new(
                    "cut a failed append from",
                    self.path.display().to_string(),
                    e,
                )
            })?;
            self.dirty = false;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SinkError> {
        self.file
            .sync_data()
            .map_err(|e| SinkError::new("sync", self.path.display().to_string(), e))
    }
}

/// A recording in a local directory: `<recordings>/<session-id>/`.
#[derive(Debug)]
pub struct LocalDirSink {
    dir: PathBuf,
    chunk: Option<(u32, AppendFile)>,
    /// Chunks rotated out since the last sync, still to be fsynced.
    retired: Vec<AppendFile>,
    checkpoints: Option<AppendFile>,
    /// Directories whose entries changed since the last fsync.
    dirs_to_sync: Vec<PathBuf>,
}

impl LocalDirSink {
    /// Create the directory of a new recording under `recordings_dir`; fails if it exists, so
    /// two sessions can never write one recording.
    pub fn create(recordings_dir: &Path, session_id: &str) -> Result<Self, SinkError> {
        validate_id(session_id).map_err(|reason| {
            SinkError::new(
                "create",
                session_id.to_owned(),
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            )
        })?;
        std::fs::create_dir_all(recordings_dir)
            .map_err(|e| SinkError::new("create", recordings_dir.display().to_string(), e))?;
        let dir = recordings_dir.join(session_id);
        std::fs::create_dir(&dir)
            .map_err(|e| SinkError::new("create", dir.display().to_string(), e))?;
        Ok(LocalDirSink {
            dirs_to_sync: vec![dir.clone(), recordings_dir.to_owned()],
            ..Self::open(dir)
        })
    }

    /// Append to an existing recording directory (crash recovery).
    pub fn open(dir: PathBuf) -> Self {
        LocalDirSink {
            dir,
            chunk: None,
            retired: Vec::new(),
            checkpoints: None,
            dirs_to_sync: Vec::new(),
        }
    }

    /// The recording's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn opened(&mut self, created: bool) {
        if created && !self.dirs_to_sync.contains(&self.dir) {
            self.dirs_to_sync.push(self.dir.clone());
        }
    }
}

impl Sink for LocalDirSink {
    fn append_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), SinkError> {
        if self.chunk.as_ref().map(|(i, _)| *i) != Some(index) {
            let (file, created) = AppendFile::open(self.dir.join(chunk_file_name(index)))?;
            self.opened(created);
            if let Some((_, old)) = self.chunk.replace((index, file)) {
                self.retired.push(old);
            }
        }
        let (_, file) = self.chunk.as_mut().expect("opened above");
        file.append(data)
    }

    fn append_checkpoint(&mut self, note: &[u8]) -> Result<(), SinkError> {
        if self.checkpoints.is_none() {
            let (file, created) = AppendFile::open(self.dir.join(CHECKPOINTS_FILE))?;
            self.opened(created);
            self.checkpoints = Some(file);
        }
        self.checkpoints
            .as_mut()
            .expect("opened above")
            .append(note)
    }

    fn sync(&mut self, durability: Durability) -> Result<(), SinkError> {
        if durability == Durability::Write {
            self.retired.clear();
            return Ok(());
        }
        for file in &mut self.retired {
            file.sync()?;
        }
        self.retired.clear();
        if let Some((_, file)) = &mut self.chunk {
            file.sync()?;
        }
        if let Some(file) = &mut self.checkpoints {
            file.sync()?;
        }
        while let Some(dir) = self.dirs_to_sync.last() {
            sync_dir(dir)?;
            self.dirs_to_sync.pop();
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Fsync a directory so that the files created in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SinkError::new("sync", dir.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_go_to_numbered_chunks_and_one_checkpoint_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sink = LocalDirSink::create(tmp.path(), "s1").unwrap();
        sink.append_chunk(0, b"ab").unwrap();
        sink.append_chunk(0, b"cd").unwrap();
        sink.append_chunk(1, b"ef").unwrap();
        sink.append_checkpoint(b"note\n").unwrap();
        sink.sync(Durability::Fsync).unwrap();
        let dir = tmp.path().join("s1");
        assert_eq!(
            std::fs::read(dir.join("chunk-00000000.rec")).unwrap(),
            b"abcd"
        );
        assert_eq!(
            std::fs::read(dir.join("chunk-00000001.rec")).unwrap(),
            b"ef"
        );
        assert_eq!(std::fs::read(dir.join("checkpoints")).unwrap(), b"note\n");
        assert!(LocalDirSink::create(tmp.path(), "s1").is_err());
        assert!(LocalDirSink::create(tmp.path(), "../x").is_err());
    }
}
