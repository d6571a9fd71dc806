//! Cancel keys: the gateway hands each client its own BackendKeyData and maps it to the
//! upstream backend, so a client never learns (or forges) the server's key.

use crate::target::PgTarget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Maps gateway-issued cancel keys to upstream backends.
///
/// A plain `Mutex`: it is touched once when a session opens, once when it closes and once per
/// cancel request, never across an `.await`.
#[derive(Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

struct Entry {
    secret: i32,
    target: Arc<PgTarget>,
    upstream: (i32, i32),
}

/// Removes its key from the registry when the session ends.
pub struct CancelKey<'a> {
    registry: &'a CancelRegistry,
    /// The process id the client was given.
    pub pid: i32,
    /// The secret the client was given.
    pub secret: i32,
}

impl Drop for CancelKey<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues a fresh key for a session whose upstream backend is `upstream`.
    pub fn register(&self, target: Arc<PgTarget>, upstream: (i32, i32)) -> CancelKey<'_> {
        let secret: i32 = rand::random();
        let mut entries = self.lock();
        let pid = loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !entries.contains_key(&pid) {
                break pid;
            }
        };
        entries.insert(
            pid,
            Entry {
                secret,
                target,
                upstream,
            },
        );
        CancelKey {
            registry: self,
            pid,
            secret,
        }
    }

    /// The upstream backend for a client's cancel key, if the key is current and the secret matches.
    pub fn resolve(&self, pid: i32, secret: i32) -> Option<(Arc<PgTarget>, (i32, i32))> {
        let entries = self.lock();
        let entry = entries.get(&pid)?;
        let matches: bool = entry
            .secret
            .to_be_bytes()
            .ct_eq(&secret.to_be_bytes())
            .into();
        matches.then(|| (entry.target.clone(), entry.upstream))
    }
}
