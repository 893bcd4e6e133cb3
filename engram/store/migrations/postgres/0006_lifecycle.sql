-- The data lifecycle (docs/lifecycle.md): erasing a user, retracting a conversation.
-- `erasures` counts the erasures and retractions the store has seen. Processes that keep
-- what they read in memory (the query-vector cache) read it and drop their caches when it
-- moved, so nothing erased survives in another process's memory either.
CREATE TABLE erasures (
    only_row  integer PRIMARY KEY CHECK (only_row = 1),
    epoch     bigint NOT NULL
);
INSERT INTO erasures(only_row, epoch) VALUES (1, 0);
-- A user's jobs whatever their status (erasure), and an idempotency record by its job.
CREATE INDEX jobs_user ON jobs (org_id, user_id);
CREATE INDEX idempotency_job ON idempotency_keys (job_id);
