-- The sessions index: one row per gateway session, opened then closed.
CREATE TABLE sessions (
    id            TEXT    PRIMARY KEY NOT NULL,
    subject       TEXT    NOT NULL,
    identity_kind TEXT    NOT NULL,
    groups        TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    target        TEXT    NOT NULL,
    client_addr   TEXT,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,                       -- NULL while the session is open
    bytes_in      INTEGER NOT NULL DEFAULT 0,
    bytes_out     INTEGER NOT NULL DEFAULT 0,
    close_reason  TEXT
) STRICT;

CREATE INDEX sessions_started ON sessions (started_at_ms);
CREATE INDEX sessions_subject_started ON sessions (subject, started_at_ms);
CREATE INDEX sessions_target_started ON sessions (target, started_at_ms);
CREATE INDEX sessions_open ON sessions (started_at_ms) WHERE ended_at_ms IS NULL;
