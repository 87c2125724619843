-- Successive halving: a stage's jobs pause at each rung (an epoch count) until their
-- group's decision, which stops the worse ones there and sends the others on.
--
-- Two states join the five: `paused` (at a rung, its checkpoint stored, waiting for
-- its group) and `stopped` (ended at a rung by the stage's rule; `resume` sends it on
-- to the full epoch count). SQLite cannot alter a CHECK constraint: the table's stored
-- definition is rewritten, which SQLite documents for constraint changes that every
-- stored row already satisfies.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''queued'', ''running'', ''succeeded'', ''failed'', ''cancelled''))',
    'CHECK (state IN (''queued'', ''running'', ''succeeded'', ''failed'', ''cancelled'', ''paused'', ''stopped''))')
WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = RESET;

-- The epoch the next attempt stops at for its group's rung decision; NULL: the end.
ALTER TABLE jobs ADD COLUMN halt_at INTEGER;
-- The job's last rung as JSON {"epoch", "metric", "value"}: where it is paused or was
-- stopped, with the value it was compared on.
ALTER TABLE jobs ADD COLUMN halted TEXT;

-- Every rung decision of every group: its candidates with their values, the cut and
-- who went on. Written once, in the transaction that completes the rung.
CREATE TABLE rung_decisions (
    sweep      TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    stage      TEXT NOT NULL,
    group_key  TEXT NOT NULL,
    rung       INTEGER NOT NULL,
    decision   TEXT NOT NULL,
    decided_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (sweep, stage, group_key, rung)
);
