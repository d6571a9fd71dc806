//! The gateway's own Ed25519 key: it signs gateway tokens and (through the recorder) recording
//! checkpoints, so anyone holding `gateway.pub` can check both offline.
//!
//! Layout under the data directory:
//!
//! ```text
//! keys/            mode 0700
//!   gateway.key    PKCS#8 PEM private key, mode 0600
//!   gateway.pub    SPKI PEM public key
//! ```
//!
//! `postern serve` and `postern token issue` may both be the first to run, possibly at the same
//! time, so creation is race-safe: the private key is written in full to a private temporary file
//! and then hard-linked into place, which fails if another process got there first; the loser
//! drops its key and loads the winner's. Readers therefore never see a half-written key.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::TryRngCore;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the gateway key could not be loaded or created. Each variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file does not exist (only from [`GatewayKey::load`]).
    #[error("no gateway key at {0} (run `postern serve` or `postern token issue` to create one)")]
    NotFound(PathBuf),
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A key file exists but does not hold a key of the expected form.
    #[error("{path}: not a valid Ed25519 {what}: {reason}")]
    Invalid {
        /// The file involved.
        path: PathBuf,
        /// "PKCS#8 private key" or "SPKI public key".
        what: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// The gateway's Ed25519 signing key, loaded once at start-up and shared by the token issuer
/// and the recorder.
#[derive(Clone)]
pub struct GatewayKey {
    signing: SigningKey,
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret half.
        f.debug_struct("GatewayKey")
            .field("public", &self.signing.verifying_key())
            .finish_non_exhaustive()
    }
}

const PRIVATE_FILE: &str = "gateway.key";
const PUBLIC_FILE: &str = "gateway.pub";

impl GatewayKey {
    /// Load the key from `data_dir/keys/`, creating it (and the public key file) if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<GatewayKey, KeyError> {
        let dir = keys_dir(data_dir);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| io_error(&dir, source))?;

        let key = match GatewayKey::load(data_dir) {
            Ok(key) => key,
            Err(KeyError::NotFound(_)) => create_private(&dir)?,
            Err(e) => return Err(e),
        };
        key.ensure_public_file(&dir)?;
        Ok(key)
    }

    /// Load an existing key from `data_dir/keys/gateway.key`; never creates one.
    pub fn load(data_dir: &Path) -> Result<GatewayKey, KeyError> {
        read_private(keys_dir(data_dir).join(PRIVATE_FILE))
    }

    /// The public key as SPKI PEM, as written to `gateway.pub` and handed to verifiers.
    pub fn public_key_pem(&self) -> String {
        self.signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key always encodes as SPKI")
    }

    /// The public half, for verifying gateway tokens and checkpoints in-process.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Sign `message` (e.g. a recording checkpoint) with plain Ed25519.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The private key as PKCS#8 DER, for the JWT signer.
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        self.signing
            .to_pkcs8_der()
            .expect("an Ed25519 private key always encodes as PKCS#8")
            .as_bytes()
            .to_vec()
    }

    /// Write `gateway.pub` if it is missing or does not match the private key. The content is
    /// derived from the private key, so concurrent writers write the same bytes.
    fn ensure_public_file(&self, dir: &Path) -> Result<(), KeyError> {
        let path = dir.join(PUBLIC_FILE);
        let pem = self.public_key_pem();
        match fs::read_to_string(&path) {
            Ok(existing) if existing == pem => return Ok(()),
            Ok(_) => tracing::warn!(path = %path.display(),
                "gateway.pub does not match gateway.key; rewriting it"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(&path, source)),
        }
        let tmp = write_temp(dir, PUBLIC_FILE, pem.as_bytes(), 0o644)?;
        fs::rename(&tmp, &path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            io_error(&path, source)
        })
    }
}

/// Read an SPKI PEM Ed25519 public key (a copy of `gateway.pub`), for offline verification of
/// tokens and recordings without the private key.
pub fn load_public_key_pem(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        what: "SPKI public key",
        reason: e.to_string(),
    })
}

/// Read and decode a PKCS#8 PEM private key file.
fn read_private(path: PathBuf) -> Result<GatewayKey, KeyError> {
    let pem = match fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KeyError::NotFound(path)),
        Err(source) => return Err(io_error(&path, source)),
    };
    if let Ok(meta) = fs::metadata(&path)
        && meta.mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777),
                "the gateway private key is readable by other users; chmod 600 it");
    }
    let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Invalid {
        path,
        what: "PKCS#8 private key",
        reason: e.to_string(),
    })?;
    Ok(GatewayKey { signing })
}

fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

fn io_error(path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generate a key and publish it as `gateway.key`, or adopt the key another process published
/// first.
fn create_private(dir: &Path) -> Result<GatewayKey, KeyError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    let key = GatewayKey {
        signing: SigningKey::from_bytes(&seed),
    };
    let pem = key
        .signing
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 private key always encodes as PKCS#8");

    let path = dir.join(PRIVATE_FILE);
    let tmp = write_temp(dir, PRIVATE_FILE, pem.as_bytes(), 0o600)?;
    // `link` refuses to replace an existing file: the first process to get here wins.
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Best effort: make the new directory entry durable too.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
            tracing::info!(path = %path.display(), "created the gateway signing key");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_private(path),
        Err(source) => Err(io_error(&path, source)),
    }
}

/// Write `bytes` to a fresh, uniquely named file in `dir` with `mode`, synced to disk.
fn write_temp(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, KeyError> {
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        io_error(&tmp, source)
    })?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn load_or_create_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayKey::load_or_create(dir.path()).unwrap();
        let second = GatewayKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.verifying_key(), second.verifying_key());
        assert_eq!(
            GatewayKey::load(dir.path()).unwrap().verifying_key(),
            first.verifying_key()
        );

        let keys = dir.path().join("keys");
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&keys.join("gateway.key")), 0o600);
        assert_eq!(mode(&keys), 0o700);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let public = load_public_key_pem(&keys.join("gateway.pub")).unwrap();
        assert_eq!(public, first.verifying_key());
        assert_eq!(
            fs::read_to_string(keys.join("gateway.pub")).unwrap(),
            first.public_key_pem()
        );
    }

    #[test]
    fn concurrent_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| GatewayKey::load_or_create(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for key in &keys {
            assert_eq!(key.verifying_key(), keys[0].verifying_key());
        }
    }

    #[test]
    fn load_without_a_key_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            GatewayKey::load(dir.path()),
            Err(KeyError::NotFound(_))
        ));
    }

    #[test]
    fn garbage_key_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("keys")).unwrap();
        fs::write(dir.path().join("keys/gateway.key"), "not a key").unwrap();
        let err = GatewayKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("gateway.key"), "{err}");
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(dir.path()).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&key.sign(b"checkpoint"));
        assert!(key.verifying_key().verify(b"checkpoint", &sig).is_ok());
        assert!(key.verifying_key().verify(b"checkpoinT", &sig).is_err());
        assert!(!format!("{key:?}").contains("signing"));
    }
}
