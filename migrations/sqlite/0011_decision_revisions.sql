-- Selection decisions that stay true.
--
-- A group's decision is re-made when candidates succeed after it (a grid extended, a
-- failed candidate retried) and none of the downstream jobs it would drop has
-- started; `promotions` keeps the decision in force and its revision, and every
-- decision it replaced moves to `superseded_promotions`. A decision that cannot be
-- re-made (its downstream jobs started) stays, with `stale` saying why and what the
-- rule picks now.

ALTER TABLE promotions ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
-- When this revision was decided (`created_at`: when the group first was). SQLite
-- adds no column with a non-constant default, so new rows set it and old ones copy
-- `created_at`.
ALTER TABLE promotions ADD COLUMN decided_at TEXT;
UPDATE promotions SET decided_at = created_at;
-- JSON: {"reason": …, "outcome": the rule's pick and ranking now}; NULL when current.
ALTER TABLE promotions ADD COLUMN stale TEXT;

CREATE TABLE superseded_promotions (
    sweep         TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    selection     TEXT NOT NULL,
    group_key     TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    decision      TEXT NOT NULL,
    decided_at    TEXT NOT NULL,
    superseded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Why the next revision was made.
    reason        TEXT NOT NULL,
    -- The queued, never claimed downstream jobs the next revision deleted, as a JSON
    -- list of {id, stage, key, params, parent_job_id}.
    removed_jobs  TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (sweep, selection, group_key, revision)
);
