-- Where a running job is: its last finished epoch (metric, speed, ETA) as JSON, and
-- when the worker stored it, so `status` counts its ETA down. Cleared at each claim.

ALTER TABLE jobs ADD COLUMN progress JSONB;
ALTER TABLE jobs ADD COLUMN progress_at TIMESTAMPTZ;
