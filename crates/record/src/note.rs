//! Signed checkpoints: C2SP `tlog-checkpoint` bodies in C2SP `signed-note` envelopes.
//!
//! A checkpoint says "the tree with origin O has N leaves and root R", signed by the gateway
//! with Ed25519. It is the only thing in a recording that needs the gateway's key; everything
//! else is recomputed from the events. The format is the one transparency logs (Go's
//! `sumdb/note`, Sigstore, the witness network) already use:
//!
//! ```text
//! postern.example/session/0192f3c4-...\n      origin
//! 1000\n                                      tree size
//! 3q2+7w...=\n                                base64 root
//! \n
//! — postern.example/session/0192f3c4-... AAAAAO7M...=\n
//! ```
//!
//! The signature line's key name is the origin (the spec's recommendation), so each
//! session's checkpoints carry their own key id, derived from the one gateway key.

use crate::merkle::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// The signed-note signature type byte of Ed25519.
const SIG_TYPE_ED25519: u8 = 0x01;
/// The em dash and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not a PEM Ed25519 key of the expected kind.
    #[error("{path} is not an Ed25519 {expected} PEM file: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `public key (SPKI)` or `private key (PKCS#8)`.
        expected: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The key name cannot be used in a signed note.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    Name(String),
}

/// Load the gateway's public key from an SPKI PEM file (`data_dir/keys/gateway.pub`), as
/// `postern verify --key` does.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::Pem {
        path: path.to_owned(),
        expected: "public key (SPKI)",
        reason: e.to_string(),
    })
}

/// Load the gateway's signing key from a PKCS#8 PEM file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Pem {
        path: path.to_owned(),
        expected: "private key (PKCS#8)",
        reason: e.to_string(),
    })
}

/// The signed-note key id: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', SIG_TYPE_ED25519]);
    h.update(key.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The `name+keyid+base64(0x01 ‖ key)` verifier key string that Go's `sumdb/note` and other
/// signed-note tools take, for checking a checkpoint of origin `name` with third-party tools.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> String {
    let mut typed = vec![SIG_TYPE_ED25519];
    typed.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex_lower(&key_id(name, key)),
        B64.encode(typed)
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+' || c.is_control())
}

/// The gateway's signing identity: an Ed25519 key and the name that prefixes every origin
/// it signs (a schema-less URL such as `postern.example.com`).
pub struct Signer {
    key: SigningKey,
    name: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field(
                "public_key",
                &B64.encode(self.key.verifying_key().as_bytes()),
            )
            .finish()
    }
}

impl Signer {
    /// A signer for `key` under `name`.
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, KeyError> {
        let name = name.into();
        if !valid_key_name(&name) {
            return Err(KeyError::Name(name));
        }
        Ok(Signer { key, name })
    }

    /// The name that prefixes origins.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, for verifying what this signer signs.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The origin of a session's checkpoints: `<name>/session/<session-id>`.
    pub fn session_origin(&self, session_id: &str) -> String {
        format!("{}/session/{session_id}", self.name)
    }

    /// The origin of a node's manifest log: `<name>/manifests/<node>`.
    pub fn log_origin(&self, node: &str) -> String {
        format!("{}/manifests/{node}", self.name)
    }

    /// Sign `checkpoint` into a complete signed note, with the origin as key name.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        sign_text(&self.key, &checkpoint.origin, &checkpoint.text())
    }
}

/// Sign note `text` (ending in a newline) with `key` under `name`.
pub(crate) fn sign_text(key: &SigningKey, name: &str, text: &str) -> String {
    let sig: Signature = key.sign(text.as_bytes());
    let mut blob = Vec::with_capacity(68);
    blob.extend_from_slice(&key_id(name, &key.verifying_key()));
    blob.extend_from_slice(&sig.to_bytes());
    format!("{text}\n{SIG_PREFIX}{name} {}\n", B64.encode(blob))
}

/// A tree head: the body of a checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which tree: `<name>/session/<id>` or `<name>/manifests/<node>`.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 9162 root at that size.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parse a note text; extension lines are rejected since Postern never writes any.
    pub fn parse_text(text: &str) -> Result<Self, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("the checkpoint text does not end in a newline")?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root] = lines[..] else {
            return Err(format!(
                "a checkpoint has 3 lines (origin, size, root), this one has {}",
                lines.len()
            ));
        };
        if origin.is_empty() {
            return Err("the origin is empty".into());
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(format!("the tree size {size:?} is not a decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| format!("the tree size {size:?} is too large"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| format!("the root {root:?} is not base64 of 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The root as standard base64, as it appears in the note.
    pub fn root_b64(&self) -> String {
        B64.encode(self.root)
    }
}

/// Verify a signed checkpoint note against `key` and return its body.
///
/// Follows the signed-note rules: signatures from other keys (other name or key id) are
/// ignored, a signature from this key under the origin's name must verify, and a note
/// with none is rejected.
pub fn open_checkpoint(note: &str, key: &VerifyingKey) -> Result<Checkpoint, String> {
    if let Some(c) = note.chars().find(|&c| c.is_control() && c != '\n') {
        return Err(format!("the note contains the control character {c:?}"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or("the note has no blank line before its signatures")?;
    let text = &note[..split + 1];
    let sigs = &note[split + 2..];
    let checkpoint = Checkpoint::parse_text(text)?;
    let name = checkpoint.origin.as_str();
    let want_id = key_id(name, key);
    let mut seen = Vec::new();
    let mut lines = sigs
        .strip_suffix('\n')
        .ok_or("the note does not end in a newline")?
        .split('\n');
    let verdict = lines.try_fold(None, |verdict: Option<bool>, line| {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| format!("malformed signature line {line:?}"))?;
        let (line_name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| format!("malformed signature line {line:?}"))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| format!("signature of {line_name:?} is not base64"))?;
        if blob.len() < 4 {
            return Err(format!("signature of {line_name:?} is too short"));
        }
        seen.push(format!("{line_name} ({})", hex_lower(&blob[..4])));
        if verdict.is_some() || line_name != name || blob[..4] != want_id {
            return Ok(verdict);
        }
        let ok = <[u8; 64]>::try_from(&blob[4..])
            .map(|s| {
                key.verify_strict(text.as_bytes(), &Signature::from_bytes(&s))
                    .is_ok()
            })
            .unwrap_or(false);
        Ok(Some(ok))
    })?;
    match verdict {
        Some(true) => Ok(checkpoint),
        Some(false) => Err(format!(
            "the signature by {name} ({}) does not verify: the checkpoint was altered",
            hex_lower(&want_id)
        )),
        None => Err(format!(
            "not signed by the given key: expected {name} ({}), found {}",
            hex_lower(&want_id),
            if seen.is_empty() {
                "no signature".to_owned()
            } else {
                seen.join(", ")
            }
        )),
    }
}

/// One note found in a checkpoints file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoteSpan<'a> {
    /// Byte offset of the note in the file.
    pub at: usize,
    /// The whole note, signatures included.
    pub note: &'a str,
}

/// A checkpoints file that does not split cleanly into notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitError {
    /// Byte offset where the bad note starts.
    pub at: usize,
    /// Whether the problem is an incomplete note at the end of the file (a torn append).
    pub torn: bool,
    /// What is wrong.
    pub reason: String,
}

/// Split a checkpoints file (signed notes written back to back) into notes. Returns the notes
/// before the first problem, and the problem if any.
pub(crate) fn split_notes(bytes: &[u8]) -> (Vec<NoteSpan<'_>>, Option<SplitError>) {
    let mut notes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match note_at(bytes, at) {
            Ok((note, next)) => {
                notes.push(NoteSpan { at, note });
                at = next;
            }
            Err(e) => return (notes, Some(e)),
        }
    }
    (notes, None)
}

/// The note starting at `at` and the offset after it. Postern's note texts contain no blank
/// line, so the first blank line ends the text; signature lines follow until a line that is
/// not one.
fn note_at(bytes: &[u8], at: usize) -> Result<(&str, usize), SplitError> {
    let fail = |torn: bool, reason: &str| SplitError {
        at,
        torn,
        reason: reason.to_owned(),
    };
    let rest = &bytes[at..];
    let blank = rest.windows(2).position(|w| w == b"\n\n").ok_or_else(|| {
        fail(
            true,
            "incomplete note (no blank line before the signatures)",
        )
    })?;
    let mut end = blank + 2;
    let prefix = SIG_PREFIX.as_bytes();
    let mut sigs = 0;
    while rest[end..].starts_with(prefix) {
        let nl = rest[end..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| fail(true, "incomplete signature line"))?;
        end += nl + 1;
        sigs += 1;
    }
    if sigs == 0 {
        let torn = end == rest.len() || prefix.starts_with(&rest[end..]);
        return Err(fail(torn, "note without a signature line"));
    }
    let note = std::str::from_utf8(&rest[..end]).map_err(|_| fail(false, "note is not UTF-8"))?;
    Ok((note, at + end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed-note vector of Go's golang.org/x/mod/sumdb/note (also in the C2SP
    /// ecosystem's test suites): the key `PeterNeumann+c74f20a3+ARpc2Qc...`, whose private key
    /// is `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALV...` (type byte 0x01 then the seed).
    const PETER_SKEY: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n";
    const PETER_SIG: &str = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

    fn peter() -> SigningKey {
        let raw = B64.decode(PETER_SKEY).unwrap();
        assert_eq!(raw[0], SIG_TYPE_ED25519);
        SigningKey::from_bytes(&raw[1..].try_into().unwrap())
    }

    #[test]
    fn matches_the_go_sumdb_note_vector() {
        let key = peter();
        assert_eq!(
            verifier_key("PeterNeumann", &key.verifying_key()),
            PETER_VKEY
        );
        let note = sign_text(&key, "PeterNeumann", PETER_TEXT);
        assert_eq!(
            note,
            format!("{PETER_TEXT}\n\u{2014} PeterNeumann {PETER_SIG}\n")
        );
    }

    fn signer() -> Signer {
        Signer::new("postern.test", SigningKey::from_bytes(&[7; 32])).unwrap()
    }

    #[test]
    fn checkpoints_sign_and_open() {
        let s = signer();
        let cp = Checkpoint {
            origin: s.session_origin("abc"),
            size: 12,
            root: [9; 32],
        };
        let note = s.sign_checkpoint(&cp);
        assert!(note.starts_with("postern.test/session/abc\n12\nCQkJ"));
        assert_eq!(open_checkpoint(&note, &s.verifying_key()).unwrap(), cp);

        // Another key: rejected, naming what was found.
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let err = open_checkpoint(&note, &other).unwrap_err();
        assert!(err.contains("not signed by the given key"), "{err}");

        // One changed digit in the size: the signature no longer verifies.
        let forged = note.replacen("\n12\n", "\n13\n", 1);
        let err = open_checkpoint(&forged, &s.verifying_key()).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");

        // Unknown extra signatures are ignored.
        let extra = format!("{note}\u{2014} witness.example AAAAAAAA\n");
        assert!(open_checkpoint(&extra, &s.verifying_key()).is_ok());
    }

    #[test]
    fn checkpoint_text_is_strict() {
        assert!(Checkpoint::parse_text("o\n01\nAAAA\n").is_err());
        assert!(Checkpoint::parse_text("o\n1\nAAAA\n").is_err());
        assert!(Checkpoint::parse_text("o\n1\n").is_err());
        let ok = Checkpoint {
            origin: "o".into(),
            size: 0,
            root: crate::merkle::EMPTY_ROOT,
        };
        assert_eq!(Checkpoint::parse_text(&ok.text()).unwrap(), ok);
    }

    #[test]
    fn files_split_into_notes_and_torn_tails_are_flagged() {
        let s = signer();
        let a = s.sign_checkpoint(&Checkpoint {
            origin: "o/session/x".into(),
            size: 1,
            root: [1; 32],
        });
        let b = s.sign_checkpoint(&Checkpoint {
            origin: "o/session/x".into(),
            size: 2,
            root: [2; 32],
        });
        let file = format!("{a}{b}");
        let (notes, err) = split_notes(file.as_bytes());
        assert!(err.is_none());
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[1].at, a.len());
        assert_eq!(notes[1].note, b);

        for cut in [1, 10, b.len() - 1] {
            let torn = &file.as_bytes()[..a.len() + cut];
            let (notes, err) = split_notes(torn);
            assert_eq!(notes.len(), 1, "cut {cut}");
            let err = err.unwrap();
            assert!(err.torn, "cut {cut}: {err:?}");
            assert_eq!(err.at, a.len());
        }
    }
}
