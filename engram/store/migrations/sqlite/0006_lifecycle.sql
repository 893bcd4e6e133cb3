-- The data lifecycle (docs/lifecycle.md): erasing a user, retracting a conversation.
-- `erasures` counts the erasures and retractions the store has seen. Processes that keep
-- what they read in memory (the search index's vector and term caches, the query-vector
-- cache, the dedup window) read it and drop their caches when it moved, so nothing erased
-- survives in another process's memory either.
CREATE TABLE IF NOT EXISTS erasures (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO erasures(only_row, epoch) VALUES (1, 0) ON CONFLICT DO NOTHING;
-- An idempotency record is erased with its job's user.
CREATE INDEX IF NOT EXISTS idempotency_job ON idempotency_keys(job_id);
