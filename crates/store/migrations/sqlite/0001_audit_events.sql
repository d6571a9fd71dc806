-- The audit trail: one row per event, append-only.
CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    session_id    TEXT,
    subject       TEXT,
    identity_kind TEXT,
    groups        TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    target        TEXT,
    client_addr   TEXT,
    bytes_in      INTEGER,
    bytes_out     INTEGER,
    duration_ms   INTEGER,
    detail        TEXT
) STRICT;

CREATE INDEX audit_events_at ON audit_events (at_ms);
CREATE INDEX audit_events_subject_at ON audit_events (subject, at_ms);
CREATE INDEX audit_events_target_at ON audit_events (target, at_ms);
CREATE INDEX audit_events_session ON audit_events (session_id);
