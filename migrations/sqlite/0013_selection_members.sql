-- Which jobs a selection group ranks, kept as jobs are stored, so that deciding a group
-- reads that group alone instead of its whole stage and grid.
--
-- One row per job key of a ranked stage: every grid cell of the sweep's current
-- version (`in_grid`, stored as a job or not yet: an import may store part of a grid
-- that `submit` completes later), and every stored job of that stage with a key of
-- its own (a promoted job, an import). Random-init baselines are never candidates and
-- have no row. The job itself is found by (sweep, key).

CREATE TABLE selection_members (
    sweep     TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    selection TEXT NOT NULL,
    key       TEXT NOT NULL,
    -- The group's parameters as canonical JSON, as `promotions.group_key`.
    group_key TEXT NOT NULL,
    in_grid   INTEGER NOT NULL,
    PRIMARY KEY (sweep, selection, key)
);
CREATE INDEX selection_members_group ON selection_members (sweep, selection, group_key, key);

-- A winner's downstream jobs, read when a decision is re-made.
CREATE INDEX jobs_parent ON jobs (parent_job_id);

-- Stores written before this table: their members are built the first time one of
-- their groups is decided.
ALTER TABLE sweeps ADD COLUMN members_indexed INTEGER NOT NULL DEFAULT 0;
