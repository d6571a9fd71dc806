-- Statements held for a human's approval: one row per request, pending until approved, denied
-- or expired. Any gateway node or the CLI may decide; the node holding the statement polls.
CREATE TABLE approvals (
    id              TEXT    PRIMARY KEY NOT NULL,           -- APR-XXXXXXXXXX
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    session_id      TEXT    NOT NULL,
    subject         TEXT    NOT NULL,                       -- the requester
    identity_kind   TEXT    NOT NULL,
    groups          TEXT    NOT NULL DEFAULT '[]',          -- JSON array of strings
    target          TEXT    NOT NULL,
    rule            TEXT    NOT NULL,
    statement       TEXT    NOT NULL,
    approvers       TEXT    NOT NULL DEFAULT '[]',          -- JSON array of group names
    requested_at_ms INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    decided_by      TEXT,
    decided_at_ms   INTEGER,
    reason          TEXT,
    window_until_ms INTEGER                                 -- JIT window end (approved only)
) STRICT;

CREATE INDEX approvals_requested ON approvals (requested_at_ms);
CREATE INDEX approvals_pending ON approvals (expires_at_ms) WHERE state = 'pending';
CREATE INDEX approvals_window ON approvals (subject, target, rule, window_until_ms)
    WHERE state = 'approved' AND window_until_ms IS NOT NULL;
CREATE INDEX approvals_session ON approvals (session_id);
