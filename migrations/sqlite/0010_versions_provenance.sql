-- Sweep versions and per-attempt provenance.
--
-- Every submitted version of a sweep file is kept; `sweeps` holds the latest and
-- its number, each job the version it was added by.

ALTER TABLE sweeps ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

CREATE TABLE sweep_versions (
    sweep      TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    spec_text  TEXT NOT NULL,
    spec_hash  TEXT NOT NULL,
    spec_json  TEXT NOT NULL,
    -- What this version changed against the one before, as a JSON list (empty for an
    -- extension or the first version).
    changes    TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (sweep, version)
);

INSERT INTO sweep_versions (sweep, version, spec_text, spec_hash, spec_json, created_at)
    SELECT name, 1, spec_text, spec_hash, spec_json, created_at FROM sweeps;

ALTER TABLE jobs ADD COLUMN spec_version INTEGER NOT NULL DEFAULT 1;

-- What produced each attempt's numbers: code, libtorch, device, host, data.
CREATE TABLE attempts (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    provenance TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (job_id, attempt)
);
