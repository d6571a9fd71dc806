//! Value masking (interim: redacts every masked value; content detectors and the partial and
//! hash strategies land with the full masker).

use crate::config::MaskConfig;
use postern_core::mask::{ColumnMask, Masker};

/// Rewrites masked values and scrubs detected content.
#[derive(Debug, Clone)]
pub struct ValueMasker;

impl ValueMasker {
    /// A masker for the session's applicable `masks` (config order), hashing with `hash_key`.
    pub fn new(_masks: &[&MaskConfig], _hash_key: [u8; 32]) -> ValueMasker {
        ValueMasker
    }
}

impl Masker for ValueMasker {
    fn mask_value(&self, mask: ColumnMask, value: &[u8], out: &mut Vec<u8>) {
        match mask {
            ColumnMask::Clean => out.extend_from_slice(value),
            _ => out.extend_from_slice(b"[masked]"),
        }
    }

    fn has_detectors(&self) -> bool {
        false
    }

    fn scrub(&self, _text: &[u8]) -> Option<Vec<u8>> {
        None
    }
}
