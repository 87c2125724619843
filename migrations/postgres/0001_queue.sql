-- The job queue. Every time comes from the server's clock (now()).

CREATE TABLE sweeps (
    name        TEXT PRIMARY KEY,
    spec_text   TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    -- The checked Spec as JSON: what workers and stage promotion read.
    spec_json   JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id               UUID PRIMARY KEY,
    sweep            TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    stage            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    key              TEXT NOT NULL,
    params           JSONB NOT NULL,
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
    run_after        TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    worker           TEXT,
    lease_expires_at TIMESTAMPTZ,
    heartbeat_at     TIMESTAMPTZ,
    progress_step    BIGINT,
    error_kind       TEXT,
    error_message    TEXT,
    result           JSONB,
    checkpoint       TEXT,
    parent_job_id    UUID REFERENCES jobs (id),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (sweep, key)
);

CREATE INDEX jobs_claim ON jobs (priority DESC, id) WHERE state = 'queued';
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_sweep_stage ON jobs (sweep, stage, state);

CREATE TABLE metrics (
    job_id      UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    step        BIGINT NOT NULL,
    name        TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX metrics_job ON metrics (job_id, name, step);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    device       TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at   TIMESTAMPTZ
);

CREATE TABLE promotions (
    sweep      TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    selection  TEXT NOT NULL,
    -- The group's parameters as canonical JSON.
    group_key  TEXT NOT NULL,
    decision   JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sweep, selection, group_key)
);
