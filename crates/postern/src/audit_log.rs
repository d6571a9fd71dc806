//! Audit events as JSON lines, for log aggregation: `[audit] file = "/var/log/postern/audit.jsonl"`
//! (or `"-"` for standard output). Every event the gateway stores is also written here, one
//! JSON object a line, in the form `GET /api/v1/audit` shows it.
//!
//! It wraps the metadata store, so the engines and the approvals seam need not know about it.

use crate::http::api::audit::event_json;
use anyhow::{Context, Result};
use postern_core::{
    ApprovalFilter, ApprovalRow, ApprovalState, AuditEvent, AuditQuery, SessionFilter, SessionRow,
    Store, StoreError,
};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where the lines go.
enum Out {
    Stdout,
    File(std::fs::File),
}

/// A [`Store`] that also writes each audit event as a JSON line.
pub struct AuditLines {
    inner: Arc<dyn Store>,
    out: Mutex<Out>,
}

impl AuditLines {
    /// Wraps `inner`, appending lines to `path` (created if missing; `-`: standard output).
    pub fn new(inner: Arc<dyn Store>, path: &Path) -> Result<AuditLines> {
        let out = if path == Path::new("-") {
            Out::Stdout
        } else {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            Out::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the audit log {}", path.display()))?,
            )
        };
        Ok(AuditLines {
            inner,
            out: Mutex::new(out),
        })
    }

    fn write(&self, event: &AuditEvent) {
        let mut line = event_json(event).to_string();
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let written = match &mut *out {
            Out::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            // One write per line on an O_APPEND file: lines never interleave.
            Out::File(file) => file.write_all(line.as_bytes()),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write the audit log line");
        }
    }
}

#[async_trait::async_trait]
impl Store for AuditLines {
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.write(event);
        self.inner.append_audit(event).await
    }
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.list_audit(query).await
    }
    async fn session_opened(&self, row: &SessionRow) -> Result<(), StoreError> {
        self.inner.session_opened(row).await
    }
    async fn session_closed(
        &self,
        id: &str,
        ended_at_ms: i64,
        bytes_in: u64,
        bytes_out: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .session_closed(id, ended_at_ms, bytes_in, bytes_out, reason)
            .await
    }
    async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRow>, StoreError> {
        self.inner.list_sessions(filter).await
    }
    async fn get_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.inner.get_session(id).await
    }
    async fn create_approval(&self, row: &ApprovalRow) -> Result<(), StoreError> {
        self.inner.create_approval(row).await
    }
    async fn get_approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        self.inner.get_approval(id).await
    }
    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        self.inner.list_approvals(filter).await
    }
    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        reason: Option<&str>,
        window_until_ms: Option<i64>,
    ) -> Result<ApprovalRow, StoreError> {
        self.inner
            .decide_approval(id, state, by, reason, window_until_ms)
            .await
    }
    async fn expire_approval(&self, id: &str, reason: &str) -> Result<ApprovalRow, StoreError> {
        self.inner.expire_approval(id, reason).await
    }
    async fn use_approval(
        &self,
        id: &str,
        subject: &str,
        target: &str,
        rule: &str,
        statement: &str,
    ) -> Result<ApprovalRow, StoreError> {
        self.inner
            .use_approval(id, subject, target, rule, statement)
            .await
    }
    async fn active_window(
        &self,
        subject: &str,
        target: &str,
        rule: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        self.inner
            .active_window(subject, target, rule, now_ms)
            .await
    }
}
