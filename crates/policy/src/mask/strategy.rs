//! Masking strategies: how a masked value, or a detector's finding, is rewritten.

use crate::config::MaskStrategy;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a redacted column value becomes: a fixed text, so the value's length never shows.
pub(crate) const REDACTED: &[u8] = b"[masked]";

/// How many characters `partial` leaves readable, at the end of the value.
const KEPT: usize = 4;

/// How many bytes of the MAC `hash` shows (as twice as many hex digits): 64 bits keep
/// accidental collisions among a column's values negligible while the output stays short.
const HASH_BYTES: usize = 8;

/// HMAC-SHA256 under the session's hash key, keyed once: each value clones the keyed state,
/// which spares hashing the key pads again.
#[derive(Clone)]
pub(crate) struct Keyed(Hmac<Sha256>);

impl Keyed {
    /// Keys the MAC.
    pub(crate) fn new(key: [u8; 32]) -> Keyed {
        Keyed(Hmac::new_from_slice(&key).expect("HMAC accepts keys of any length"))
    }

    /// Appends `hash:` and the first bytes of the MAC of `value` in lowercase hex.
    fn write(&self, value: &[u8], out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.0.clone();
        mac.update(value);
        let tag = mac.finalize().into_bytes();
        out.extend_from_slice(b"hash:");
        for b in tag.iter().take(HASH_BYTES) {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

/// Appends `value` rewritten by `strategy`; `redacted` is what a redaction writes (and what a
/// value too short, or not text enough, for `partial` becomes).
pub(crate) fn apply(
    strategy: MaskStrategy,
    value: &[u8],
    redacted: &[u8],
    keyed: &Keyed,
    out: &mut Vec<u8>,
) {
    match strategy {
        MaskStrategy::Redact => out.extend_from_slice(redacted),
        MaskStrategy::Partial => partial(value, redacted, out),
        MaskStrategy::Hash => keyed.write(value, out),
    }
}

/// Keeps the last [`KEPT`] characters and writes one `*` for each earlier one. Values of
/// [`KEPT`] characters or fewer would be shown whole, and bytes that are not UTF-8 have no
/// characters to count, so both are redacted instead.
fn partial(value: &[u8], redacted: &[u8], out: &mut Vec<u8>) {
    let Ok(text) = std::str::from_utf8(value) else {
        return out.extend_from_slice(redacted);
    };
    let chars = text.chars().count();
    let kept_at = text.char_indices().rev().nth(KEPT - 1).map(|(at, _)| at);
    match kept_at {
        Some(at) if chars > KEPT => {
            out.resize(out.len() + (chars - KEPT), b'*');
            out.extend_from_slice(&value[at..]);
        }
        _ => out.extend_from_slice(redacted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(strategy: MaskStrategy, value: &[u8]) -> String {
        let mut out = b"prefix|".to_vec();
        apply(strategy, value, REDACTED, &Keyed::new([7; 32]), &mut out);
        String::from_utf8(out).expect("strategies write UTF-8")
    }

    #[test]
    fn redact_hides_the_length() {
        assert_eq!(masked(MaskStrategy::Redact, b"a"), "prefix|[masked]");
        assert_eq!(
            masked(MaskStrategy::Redact, &[b'x'; 500]),
            "prefix|[masked]"
        );
    }

    #[test]
    fn partial_keeps_the_last_four_characters() {
        assert_eq!(
            masked(MaskStrategy::Partial, b"4111111111111111"),
            "prefix|************1111"
        );
        assert_eq!(masked(MaskStrategy::Partial, b"abcde"), "prefix|*bcde");
        assert_eq!(
            masked(MaskStrategy::Partial, "Zoë Müller-Ŝ".as_bytes()),
            "prefix|********er-Ŝ"
        );
        assert_eq!(
            masked(MaskStrategy::Partial, "日本語の名前".as_bytes()),
            "prefix|**語の名前"
        );
    }

    #[test]
    fn partial_redacts_short_values_and_invalid_text() {
        for value in [
            &b""[..],
            b"a",
            b"abcd",
            "ñañá".as_bytes(),
            b"\xff\xfe\xfd\xfc\xfb\xfa",
        ] {
            assert_eq!(masked(MaskStrategy::Partial, value), "prefix|[masked]");
        }
        let mut out = Vec::new();
        apply(
            MaskStrategy::Partial,
            b"abc",
            b"[email]",
            &Keyed::new([0; 32]),
            &mut out,
        );
        assert_eq!(out, b"[email]");
    }

    #[test]
    fn hash_is_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe" (HMAC zero-pads short keys, so padding it to 32 bytes
        // gives the same MAC).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut out = Vec::new();
        apply(
            MaskStrategy::Hash,
            b"what do ya want for nothing?",
            REDACTED,
            &Keyed::new(key),
            &mut out,
        );
        assert_eq!(out, b"hash:5bdcc146bf60754e");
    }

    #[test]
    fn hash_is_stable_and_keyed() {
        let a = masked(MaskStrategy::Hash, b"alice@example.com");
        assert_eq!(a, masked(MaskStrategy::Hash, b"alice@example.com"));
        assert_ne!(a, masked(MaskStrategy::Hash, b"bob@example.com"));
        assert_eq!(a.len(), "prefix|hash:".len() + 16);
        let mut other = Vec::new();
        let keyed = Keyed::new([8; 32]);
        apply(
            MaskStrategy::Hash,
            b"alice@example.com",
            REDACTED,
            &keyed,
            &mut other,
        );
        assert_ne!(a.as_bytes()["prefix|".len()..], other[..]);
    }
}
