//! The SQLite store: the embedded default for a single gateway node.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use postern_core::approval::now_ms;
use postern_core::{
    ApprovalFilter, ApprovalRow, ApprovalState, AuditEvent, AuditKind, AuditQuery, Store,
    StoreError,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use postern_core::{SessionFilter, SessionRow};

/// Migrations embedded at compile time; `build.rs` makes new files trigger a rebuild.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Connections in the pool of a file-backed store: readers run concurrently under WAL, and
/// writers queue on SQLite's lock (bounded by the busy timeout).
const POOL_SIZE: u32 = 4;

/// How long a connection waits on a locked database before the write fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const AUDIT_COLUMNS: &str = "at_ms, kind, session_id, subject, identity_kind, groups, target, \
     client_addr, bytes_in, bytes_out, duration_ms, detail";

const SESSION_COLUMNS: &str = "id, subject, identity_kind, groups, target, client_addr, \
     started_at_ms, ended_at_ms, bytes_in, bytes_out, close_reason";

/// The columns of `approvals`, in [`ApprovalRow`] order (a macro so queries stay `&'static str`).
macro_rules! approval_columns {
    () => {
        "id, state, session_id, subject, identity_kind, groups, target, rule, statement, \
         approvers, requested_at_ms, expires_at_ms, decided_by, decided_at_ms, reason, \
         window_until_ms, used_at_ms"
    };
}

/// Audit events, the sessions index and approval requests in one SQLite database file.
///
/// Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating it and its parent directories if missing) the database at `path`, in WAL
    /// mode with `synchronous=NORMAL`, a 5 s busy timeout and foreign keys on, and migrate it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let store = Self::migrated(pool).await?;
        tracing::info!(path = %path.display(), "metadata store opened");
        Ok(store)
    }

    /// Open a private, empty in-memory database (for tests and throwaway runs).
    ///
    /// It lives on a single pooled connection that is never recycled, because an in-memory
    /// SQLite database vanishes with its last connection.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db("in-memory options"))?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db("cannot open in-memory database"))?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<SqliteStore, StoreError> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError(format!("migration failed: {e}")))?;
        Ok(SqliteStore { pool })
    }

    /// Approval `id` exactly as stored (a stale pending row stays pending).
    async fn raw_approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read approval"))?;
        row.as_ref().map(approval_from_row).transpose()
    }

    /// Close the pool, waiting for in-flight queries, so the WAL is checkpointed on shutdown.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    /// Record that a session opened. Fails if a session with the same id already exists.
    async fn session_opened(&self, row: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, subject, identity_kind, groups, target, client_addr, \
             started_at_ms, ended_at_ms, bytes_in, bytes_out, close_reason) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.id)
        .bind(&row.subject)
        .bind(&row.identity_kind)
        .bind(groups_to_json(&row.groups)?)
        .bind(&row.target)
        .bind(&row.client_addr)
        .bind(row.started_at_ms)
        .bind(row.ended_at_ms)
        .bind(to_i64(row.bytes_in, "bytes_in")?)
        .bind(to_i64(row.bytes_out, "bytes_out")?)
        .bind(&row.close_reason)
        .execute(&self.pool)
        .await
        .map_err(db("cannot record session open"))?;
        Ok(())
    }

    /// Record that session `id` closed, with its final byte counts and the reason.
    ///
    /// Fails if no open session has that id (unknown, or already closed), so a lost close is
    /// reported rather than ignored.
    async fn session_closed(
        &self,
        id: &str,
        ended_at_ms: i64,
        bytes_in: u64,
        bytes_out: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at_ms = ?, bytes_in = ?, bytes_out = ?, close_reason = ? \
             WHERE id = ? AND ended_at_ms IS NULL",
        )
        .bind(ended_at_ms)
        .bind(to_i64(bytes_in, "bytes_in")?)
        .bind(to_i64(bytes_out, "bytes_out")?)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("cannot record session close"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError(format!(
                "cannot record session close: no open session {id}"
            )));
        }
        Ok(())
    }

    /// List sessions matching `filter`, newest first (by start time).
    async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE 1 = 1"
        ));
        if let Some(subject) = &filter.subject {
            q.push(" AND subject = ").push_bind(subject.clone());
        }
        if let Some(target) = &filter.target {
            q.push(" AND target = ").push_bind(target.clone());
        }
        if let Some(since) = filter.since_ms {
            q.push(" AND started_at_ms >= ").push_bind(since);
        }
        if filter.open_only {
            q.push(" AND ended_at_ms IS NULL");
        }
        q.push(" ORDER BY started_at_ms DESC, rowid DESC LIMIT ")
            .push_bind(i64::from(crate::effective_limit(filter.limit)));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list sessions"))?;
        rows.iter().map(session_from_row).collect()
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = "
        ));
        q.push_bind(id.to_owned());
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot read a session"))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at_ms, kind, session_id, subject, identity_kind, groups, \
             target, client_addr, bytes_in, bytes_out, duration_ms, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(event.at_ms)
        .bind(event.kind.as_str())
        .bind(&event.session_id)
        .bind(&event.subject)
        .bind(&event.identity_kind)
        .bind(groups_to_json(&event.groups)?)
        .bind(&event.target)
        .bind(&event.client_addr)
        .bind(opt_to_i64(event.bytes_in, "bytes_in")?)
        .bind(opt_to_i64(event.bytes_out, "bytes_out")?)
        .bind(opt_to_i64(event.duration_ms, "duration_ms")?)
        .bind(&event.detail)
        .execute(&self.pool)
        .await
        .map_err(db("cannot append audit event"))?;
        Ok(())
    }

    async fn create_approval(&self, row: &ApprovalRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approvals (id, state, session_id, subject, identity_kind, groups, target, \
             rule, statement, approvers, requested_at_ms, expires_at_ms, decided_by, \
             decided_at_ms, reason, window_until_ms, used_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.id)
        .bind(row.state.as_str())
        .bind(&row.session_id)
        .bind(&row.subject)
        .bind(&row.identity_kind)
        .bind(groups_to_json(&row.groups)?)
        .bind(&row.target)
        .bind(&row.rule)
        .bind(&row.statement)
        .bind(groups_to_json(&row.approvers)?)
        .bind(row.requested_at_ms)
        .bind(row.expires_at_ms)
        .bind(&row.decided_by)
        .bind(row.decided_at_ms)
        .bind(&row.reason)
        .bind(row.window_until_ms)
        .bind(row.used_at_ms)
        .execute(&self.pool)
        .await
        .map_err(db("cannot store approval request"))?;
        Ok(())
    }

    async fn get_approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        let row = self.raw_approval(id).await?;
        let now = now_ms();
        Ok(row.map(|mut row| {
            row.state = row.effective_state(now);
            row
        }))
    }

    /// List approvals matching `filter`, newest first (by request time).
    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let now = now_ms();
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE 1 = 1"
        ));
        match filter.state {
            None => {}
            Some(ApprovalState::Pending) => {
                q.push(" AND state = 'pending' AND expires_at_ms > ")
                    .push_bind(now);
            }
            Some(ApprovalState::Expired) => {
                q.push(" AND (state = 'expired' OR (state = 'pending' AND expires_at_ms <= ")
                    .push_bind(now)
                    .push("))");
            }
            Some(state) => {
                q.push(" AND state = ").push_bind(state.as_str());
            }
        }
        if let Some(subject) = &filter.subject {
            q.push(" AND subject = ").push_bind(subject.clone());
        }
        if let Some(target) = &filter.target {
            q.push(" AND target = ").push_bind(target.clone());
        }
        if let Some(session_id) = &filter.session_id {
            q.push(" AND session_id = ").push_bind(session_id.clone());
        }
        q.push(" ORDER BY requested_at_ms DESC, rowid DESC LIMIT ")
            .push_bind(i64::from(crate::effective_limit(filter.limit)));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list approvals"))?;
        rows.iter()
            .map(|row| {
                let mut row = approval_from_row(row)?;
                row.state = row.effective_state(now);
                Ok(row)
            })
            .collect()
    }

    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        reason: Option<&str>,
        window_until_ms: Option<i64>,
    ) -> Result<ApprovalRow, StoreError> {
        match state {
            ApprovalState::Approved => {}
            ApprovalState::Denied if window_until_ms.is_none() => {}
            ApprovalState::Denied => {
                return Err(StoreError(format!(
                    "cannot decide approval {id}: a denial has no window"
                )));
            }
            other => {
                return Err(StoreError(format!(
                    "cannot decide approval {id}: a decision is approved or denied, not {other}"
                )));
            }
        }
        if by.trim().is_empty() {
            return Err(StoreError(format!(
                "cannot decide approval {id}: the decider has no name"
            )));
        }
        let now = now_ms();
        // One statement: the row changes only if it is still pending, unexpired and not the
        // decider's own, so two deciders (any node, the CLI) can never both win.
        let decided = sqlx::query(concat!(
            "UPDATE approvals SET state = ?, decided_by = ?, decided_at_ms = ?, reason = ?, \
             window_until_ms = ? \
             WHERE id = ? AND state = 'pending' AND expires_at_ms > ? AND subject <> ? \
             RETURNING ",
            approval_columns!()
        ))
        .bind(state.as_str())
        .bind(by)
        .bind(now)
        .bind(reason)
        .bind(window_until_ms)
        .bind(id)
        .bind(now)
        .bind(by)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot decide approval"))?;
        if let Some(row) = decided {
            return approval_from_row(&row);
        }
        // Nothing changed: say why.
        let why = match self.raw_approval(id).await? {
            None => format!("there is no approval {id}"),
            Some(row) if row.subject == by => format!(
                "approval {id} was requested by {by}: a requester cannot decide their own request"
            ),
            Some(row) if row.state == ApprovalState::Expired => {
                format!("approval {id} has expired: it can no longer be decided")
            }
            Some(row) if row.state != ApprovalState::Pending => format!(
                "approval {id} was already {} by {}",
                row.state,
                row.decided_by.as_deref().unwrap_or("someone")
            ),
            Some(row) if row.expires_at_ms <= now => format!(
                "approval {id} has expired ({} s ago): it can no longer be decided",
                (now - row.expires_at_ms) / 1000
            ),
            Some(_) => format!("approval {id} changed while it was being decided; try again"),
        };
        Err(StoreError(why))
    }

    async fn expire_approval(&self, id: &str, reason: &str) -> Result<ApprovalRow, StoreError> {
        sqlx::query(
            "UPDATE approvals SET state = 'expired', decided_at_ms = ?, reason = ? \
             WHERE id = ? AND state = 'pending'",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("cannot expire approval"))?;
        self.raw_approval(id)
            .await?
            .ok_or_else(|| StoreError(format!("cannot expire approval: there is no approval {id}")))
    }

    async fn use_approval(
        &self,
        id: &str,
        subject: &str,
        target: &str,
        rule: &str,
        statement: &str,
    ) -> Result<ApprovalRow, StoreError> {
        // One statement: of concurrent re-submissions (any node) exactly one finds the row
        // unused and stamps it.
        let used = sqlx::query(concat!(
            "UPDATE approvals SET used_at_ms = ? \
             WHERE id = ? AND state = 'approved' AND used_at_ms IS NULL AND subject = ? \
             AND target = ? AND rule = ? AND statement = ? \
             RETURNING ",
            approval_columns!()
        ))
        .bind(now_ms())
        .bind(id)
        .bind(subject)
        .bind(target)
        .bind(rule)
        .bind(statement)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot use approval"))?;
        if let Some(row) = used {
            return approval_from_row(&row);
        }
        let why = match self.get_approval(id).await? {
            None => format!("there is no approval {id}"),
            Some(row) if row.subject != subject => format!(
                "approval {id} was requested by {}, not by {subject}",
                row.subject
            ),
            Some(row) if row.target != target => {
                format!("approval {id} is for target {}, not {target}", row.target)
            }
            Some(row) if row.rule != rule => {
                format!("approval {id} is under rule {}, not {rule}", row.rule)
            }
            Some(row) if row.statement != statement => format!(
                "approval {id} was granted for another statement: {}",
                row.statement
            ),
            Some(row) if row.state != ApprovalState::Approved => {
                format!("approval {id} is {}, not approved", row.state)
            }
            Some(ApprovalRow {
                used_at_ms: Some(at),
                ..
            }) => format!(
                "approval {id} was already used ({} s ago): an approval runs its statement once",
                (now_ms() - at).max(0) / 1000
            ),
            Some(_) => format!("approval {id} changed while it was being used; try again"),
        };
        Err(StoreError(why))
    }

    async fn active_window(
        &self,
        subject: &str,
        target: &str,
        rule: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE state = 'approved' AND subject = ? AND target = ? \
             AND rule = ? AND window_until_ms > ? \
             ORDER BY window_until_ms DESC LIMIT 1"
        ))
        .bind(subject)
        .bind(target)
        .bind(rule)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot look up approval windows"))?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE 1 = 1"
        ));
        if let Some(subject) = &query.subject {
            q.push(" AND subject = ").push_bind(subject.clone());
        }
        if let Some(target) = &query.target {
            q.push(" AND target = ").push_bind(target.clone());
        }
        if let Some(since) = query.since_ms {
            q.push(" AND at_ms >= ").push_bind(since);
        }
        q.push(" ORDER BY at_ms DESC, id DESC LIMIT ")
            .push_bind(i64::from(crate::effective_limit(query.limit)));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list audit events"))?;
        rows.iter().map(audit_from_row).collect()
    }
}

/// Wrap a database error with what was being attempted.
fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError(format!("{context}: {e}"))
}

fn groups_to_json(groups: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(groups).map_err(|e| StoreError(format!("cannot encode groups: {e}")))
}

fn groups_from_json(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError(format!("corrupt groups column: {e}")))
}

/// SQLite integers are signed; refuse (rather than wrap) a count beyond `i64::MAX`.
fn to_i64(value: u64, field: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError(format!("{field} is too large to store: {value}")))
}

fn opt_to_i64(value: Option<u64>, field: &str) -> Result<Option<i64>, StoreError> {
    value.map(|v| to_i64(v, field)).transpose()
}

fn to_u64(value: i64, field: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError(format!("corrupt {field} column: {value}")))
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|e| StoreError(format!("cannot read column {column}: {e}")))
}

fn parse_kind(text: &str) -> Result<AuditKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError(format!("unknown audit kind in store: {text}")))
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let opt_u64 = |column: &str| -> Result<Option<u64>, StoreError> {
        get::<Option<i64>>(row, column)?
            .map(|v| to_u64(v, column))
            .transpose()
    };
    Ok(AuditEvent {
        at_ms: get(row, "at_ms")?,
        kind: parse_kind(&get::<String>(row, "kind")?)?,
        session_id: get(row, "session_id")?,
        subject: get(row, "subject")?,
        identity_kind: get(row, "identity_kind")?,
        groups: groups_from_json(&get::<String>(row, "groups")?)?,
        target: get(row, "target")?,
        client_addr: get(row, "client_addr")?,
        bytes_in: opt_u64("bytes_in")?,
        bytes_out: opt_u64("bytes_out")?,
        duration_ms: opt_u64("duration_ms")?,
        detail: get(row, "detail")?,
    })
}

fn approval_from_row(row: &SqliteRow) -> Result<ApprovalRow, StoreError> {
    let state: String = get(row, "state")?;
    Ok(ApprovalRow {
        id: get(row, "id")?,
        state: state
            .parse()
            .map_err(|e: String| StoreError(format!("corrupt approvals.state column: {e}")))?,
        session_id: get(row, "session_id")?,
        subject: get(row, "subject")?,
        identity_kind: get(row, "identity_kind")?,
        groups: groups_from_json(&get::<String>(row, "groups")?)?,
        target: get(row, "target")?,
        rule: get(row, "rule")?,
        statement: get(row, "statement")?,
        approvers: groups_from_json(&get::<String>(row, "approvers")?)?,
        requested_at_ms: get(row, "requested_at_ms")?,
        expires_at_ms: get(row, "expires_at_ms")?,
        decided_by: get(row, "decided_by")?,
        decided_at_ms: get(row, "decided_at_ms")?,
        reason: get(row, "reason")?,
        window_until_ms: get(row, "window_until_ms")?,
        used_at_ms: get(row, "used_at_ms")?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: get(row, "id")?,
        subject: get(row, "subject")?,
        identity_kind: get(row, "identity_kind")?,
        groups: groups_from_json(&get::<String>(row, "groups")?)?,
        target: get(row, "target")?,
        client_addr: get(row, "client_addr")?,
        started_at_ms: get(row, "started_at_ms")?,
        ended_at_ms: get(row, "ended_at_ms")?,
        bytes_in: to_u64(get(row, "bytes_in")?, "bytes_in")?,
        bytes_out: to_u64(get(row, "bytes_out")?, "bytes_out")?,
        close_reason: get(row, "close_reason")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_applies_the_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let mut pragma = async |name: &'static str| -> String {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            match row.try_get::<String, _>(0) {
                Ok(s) => s,
                Err(_) => row.try_get::<i64, _>(0).unwrap().to_string(),
            }
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        assert_eq!(pragma("synchronous").await, "1"); // NORMAL
        assert_eq!(pragma("foreign_keys").await, "1");
        assert_eq!(pragma("busy_timeout").await, "5000");
    }
}
