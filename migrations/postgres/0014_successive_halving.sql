-- Successive halving: a stage's jobs pause at each rung (an epoch count) until their
-- group's decision, which stops the worse ones there and sends the others on.
--
-- Two states join the five: `paused` (at a rung, its checkpoint stored, waiting for
-- its group) and `stopped` (ended at a rung by the stage's rule; `resume` sends it on
-- to the full epoch count).
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'paused', 'stopped'));

-- The epoch the next attempt stops at for its group's rung decision; NULL: the end.
ALTER TABLE jobs ADD COLUMN halt_at BIGINT;
-- The job's last rung as JSON {"epoch", "metric", "value"}: where it is paused or was
-- stopped, with the value it was compared on.
ALTER TABLE jobs ADD COLUMN halted JSONB;

-- Every rung decision of every group: its candidates with their values, the cut and
-- who went on. Written once, in the transaction that completes the rung.
CREATE TABLE rung_decisions (
    sweep      TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    stage      TEXT NOT NULL,
    group_key  TEXT NOT NULL,
    rung       BIGINT NOT NULL,
    decision   JSONB NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sweep, stage, group_key, rung)
);
