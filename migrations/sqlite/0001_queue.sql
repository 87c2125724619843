-- The job queue. Times are UTC text in one fixed format
-- (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), so they compare as strings and read well in
-- `sweeper query`.

CREATE TABLE sweeps (
    name        TEXT PRIMARY KEY,
    spec_text   TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    -- The checked Spec as JSON: what workers and stage promotion read.
    spec_json   TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    sweep            TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    stage            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    key              TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every claim and never lowered: the fencing token.
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    -- Attempts that do not count against max_attempts (released at shutdown, or used
    -- before a manual retry).
    free_attempts    INTEGER NOT NULL DEFAULT 0,
    -- Not claimable before this time (retry backoff).
    run_after        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    lease_expires_at TEXT,
    heartbeat_at     TEXT,
    progress_step    INTEGER,
    error_kind       TEXT,
    error_message    TEXT,
    result           TEXT,
    checkpoint       TEXT,
    parent_job_id    TEXT REFERENCES jobs (id),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at       TEXT,
    finished_at      TEXT,
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (sweep, key)
);

CREATE INDEX jobs_claim ON jobs (state, priority DESC, id);
CREATE INDEX jobs_lease ON jobs (state, lease_expires_at);
CREATE INDEX jobs_sweep_stage ON jobs (sweep, stage, state);

CREATE TABLE metrics (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    step        INTEGER NOT NULL,
    name        TEXT NOT NULL,
    value       REAL NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX metrics_job ON metrics (job_id, name, step);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    device       TEXT NOT NULL,
    started_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_seen_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    stopped_at   TEXT
);

CREATE TABLE promotions (
    sweep      TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    selection  TEXT NOT NULL,
    -- The group's parameters as canonical JSON.
    group_key  TEXT NOT NULL,
    decision   TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (sweep, selection, group_key)
);
