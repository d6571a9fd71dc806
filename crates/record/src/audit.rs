//! Verifying a whole recordings directory: every manifest log, every recording, and that the
//! two agree — which is what makes a deleted recording visible.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;

use crate::layout::{LOG_DIR, list_sessions, validate_id};
use crate::manifest::{Manifest, read_log};
use crate::merkle::Hash;
use crate::verify::{VerifyError, VerifyReport, scan, verify_session};

/// One manifest log, as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// The node that writes it.
    pub node: String,
    /// Its origin.
    pub origin: String,
    /// Manifests in it.
    pub size: u64,
    /// Signed checkpoints.
    pub checkpoints: usize,
    /// Its current root: compare with a copy kept elsewhere to detect a rolled-back log.
    pub root: Hash,
}

/// One recording directory, as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// The session (directory name).
    pub session_id: String,
    /// Listed in a manifest log.
    pub logged: bool,
    /// The report, when the recording verifies.
    pub report: Option<VerifyReport>,
    /// Unsealed and not yet logged: a live session, or one recovery has not sealed yet.
    /// Not a problem by itself.
    pub open: bool,
}

/// The result of [`verify_all`].
#[derive(Debug, Default)]
pub struct VerifyAllReport {
    /// Every manifest log found.
    pub logs: Vec<LogSummary>,
    /// Every recording found.
    pub sessions: Vec<SessionSummary>,
    /// Everything wrong, in the order found: damaged logs, missing or mismatched recordings,
    /// recordings that fail verification. Open recordings are not problems.
    pub problems: Vec<VerifyError>,
}

impl VerifyAllReport {
    /// No problems.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify every recording under `recordings_dir` and every manifest log in `_log/`, and
/// check each manifest against its recording: a manifest whose recording is gone is
/// reported as [`VerifyError::Missing`].
///
/// Only an unreadable directory is an `Err`; every finding is in the report.
pub fn verify_all(
    recordings_dir: &Path,
    key: &VerifyingKey,
) -> Result<VerifyAllReport, VerifyError> {
    let mut report = VerifyAllReport::default();
    // session id -> (node, entry, manifest)
    let mut listed: HashMap<String, (String, u64, Manifest)> = HashMap::new();
    let log_root = recordings_dir.join(LOG_DIR);
    if log_root.is_dir() {
        let mut nodes: Vec<String> = std::fs::read_dir(&log_root)
            .map_err(|source| VerifyError::Io {
                path: log_root.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| validate_id(n).is_ok())
            .collect();
        nodes.sort();
        for node in nodes {
            let dir = log_root.join(&node);
            let problem = |reason: String| VerifyError::Log {
                node: node.clone(),
                reason,
            };
            let contents = match read_log(&dir, &node, None, key, true) {
                Ok(c) => c,
                Err(reason) => {
                    report.problems.push(problem(reason));
                    continue;
                }
            };
            if contents.entries_torn || contents.notes_torn {
                report.problems.push(problem(
                    "it ends with an incomplete entry or checkpoint (a crash while appending; \
                     the gateway repairs it when it opens the log)"
                        .into(),
                ));
            }
            let unsigned = contents.tree.size() - contents.signed;
            if unsigned > 0 {
                report.problems.push(problem(format!(
                    "its last {unsigned} manifest(s) are not covered by a signed checkpoint"
                )));
            }
            report.logs.push(LogSummary {
                node: node.clone(),
                origin: contents
                    .checkpoints
                    .first()
                    .map(|c| c.origin.clone())
                    .unwrap_or_default(),
                size: contents.tree.size(),
                checkpoints: contents.checkpoints.len(),
                root: contents.tree.root(),
            });
            for (entry, m) in contents.manifests.into_iter().enumerate() {
                listed.insert(m.session_id.clone(), (node.clone(), entry as u64, m));
            }
        }
    }

    let sessions = if recordings_dir.is_dir() {
        list_sessions(recordings_dir).map_err(|source| VerifyError::Io {
            path: recordings_dir.to_owned(),
            source,
        })?
    } else {
        Vec::new()
    };
    for (id, dir) in sessions {
        let listing = listed.remove(&id);
        let mut summary = SessionSummary {
            session_id: id.clone(),
            logged: listing.is_some(),
            report: None,
            open: false,
        };
        let result = verify_session(&dir, key).and_then(|rep| {
            if rep.session_id == id {
                Ok(rep)
            } else {
                Err(VerifyError::WrongPlace {
                    dir_name: id.clone(),
                    session_id: rep.session_id,
                })
            }
        });
        match (result, listing) {
            (Ok(rep), Some((node, entry, m))) => {
                if let Some(reason) = mismatch(&m, &rep) {
                    report.problems.push(VerifyError::ManifestMismatch {
                        session_id: id,
                        node,
                        entry,
                        reason,
                    });
                }
                summary.report = Some(rep);
            }
            (Ok(rep), None) => summary.report = Some(rep),
            (Err(VerifyError::Unsealed { .. }), None) => summary.open = true,
            // An unfinished write at the very end (a live session, or a crash not yet
            // recovered) is what an open recording looks like too.
            (Err(_), None) if scan(&dir, key, true).is_ok_and(|st| st.end.is_none()) => {
                summary.open = true
            }
            (Err(e), _) => report.problems.push(VerifyError::Session {
                session_id: id,
                source: Box::new(e),
            }),
        }
        report.sessions.push(summary);
    }
    let mut missing: Vec<_> = listed.into_iter().collect();
    missing.sort_by(|a, b| (&a.1.0, a.1.1).cmp(&(&b.1.0, b.1.1)));
    for (session_id, (node, entry, _)) in missing {
        report.problems.push(VerifyError::Missing {
            session_id,
            node,
            entry,
        });
    }
    Ok(report)
}

fn mismatch(m: &Manifest, rep: &VerifyReport) -> Option<String> {
    if m.size != rep.events {
        return Some(format!(
            "the manifest says {} events, the recording holds {}",
            m.size, rep.events
        ));
    }
    if m.root != B64.encode(rep.root) {
        return Some(format!(
            "the manifest's root {} differs from the recording's {}: the recording was replaced",
            m.root,
            B64.encode(rep.root)
        ));
    }
    if m.status != rep.status {
        return Some(format!(
            "the manifest says {}, the recording says {}",
            m.status.as_str(),
            rep.status.as_str()
        ));
    }
    None
}
