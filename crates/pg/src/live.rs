//! The sessions live on this node, so the console and the REST API can list them and an
//! administrator can end one: the session's relay stops, the client gets a FATAL 57P01 naming
//! who ended it, and the recording and the audit trail say so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A live session as the registry knows it.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The session id.
    pub id: String,
    /// The verified subject.
    pub subject: String,
    /// The target.
    pub target: String,
    /// Unix time in milliseconds when the session opened.
    pub started_at_ms: i64,
}

#[derive(Debug)]
struct Entry {
    info: LiveSession,
    stop: CancellationToken,
    by: Arc<Mutex<Option<Termination>>>,
}

/// Who ended a session, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The subject of the administrator.
    pub by: String,
    /// Their reason, if they gave one.
    pub reason: Option<String>,
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "terminated by {}", self.by)?;
        match &self.reason {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

/// The registry: session id → how to end it.
#[derive(Debug, Default)]
pub struct LiveSessions {
    sessions: Mutex<HashMap<String, Entry>>,
}

impl LiveSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session; it stays listed until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, info: LiveSession) -> LiveGuard {
        let stop = CancellationToken::new();
        let by = Arc::new(Mutex::new(None));
        let id = info.id.clone();
        self.lock().insert(
            id.clone(),
            Entry {
                info,
                stop: stop.clone(),
                by: by.clone(),
            },
        );
        LiveGuard {
            registry: self.clone(),
            id,
            stop,
            by,
        }
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<LiveSession> {
        let mut all: Vec<LiveSession> = self.lock().values().map(|e| e.info.clone()).collect();
        all.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        all
    }

    /// Whether session `id` is live on this node.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Ends session `id`; false when it is not live here. The first termination wins.
    pub fn terminate(&self, id: &str, termination: Termination) -> bool {
        let sessions = self.lock();
        let Some(entry) = sessions.get(id) else {
            return false;
        };
        let mut by = entry.by.lock().unwrap_or_else(|p| p.into_inner());
        if by.is_none() {
            *by = Some(termination);
        }
        entry.stop.cancel();
        true
    }
}

/// A session's registration: resolves [`LiveGuard::terminated`] when an administrator ends
/// it, and removes the session from the registry when dropped.
#[derive(Debug)]
pub struct LiveGuard {
    registry: Arc<LiveSessions>,
    id: String,
    stop: CancellationToken,
    by: Arc<Mutex<Option<Termination>>>,
}

impl LiveGuard {
    /// Completes when the session is terminated, with who did it.
    pub async fn terminated(&self) -> Termination {
        self.stop.cancelled().await;
        self.by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(Termination {
                by: "an administrator".into(),
                reason: None,
            })
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, at: i64) -> LiveSession {
        LiveSession {
            id: id.into(),
            subject: "alice".into(),
            target: "shop".into(),
            started_at_ms: at,
        }
    }

    #[tokio::test]
    async fn a_terminated_session_learns_who_ended_it_and_leaves_the_registry() {
        let live = Arc::new(LiveSessions::default());
        let a = live.register(info("a", 2));
        let b = live.register(info("b", 1));
        assert_eq!(
            live.list()
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!(!live.terminate(
            "zzz",
            Termination {
                by: "olga".into(),
                reason: None
            }
        ));
        let olga = Termination {
            by: "olga".into(),
            reason: Some("runaway query".into()),
        };
        assert!(live.terminate("a", olga.clone()));
        // A second termination does not change who did it.
        assert!(live.terminate(
            "a",
            Termination {
                by: "x".into(),
                reason: None
            }
        ));
        assert_eq!(a.terminated().await, olga);
        assert_eq!(olga.to_string(), "terminated by olga: runaway query");
        drop(a);
        assert!(!live.contains("a"));
        assert!(live.contains("b"));
        drop(b);
        assert!(live.list().is_empty());
    }
}
