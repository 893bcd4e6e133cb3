-- The ready queue in arrival order. `next_ready_job` takes the first job by `seq` that is
-- ready; over the old index (status, available_at) SQLite read every unfinished job and
-- sorted them, inside the worker's lease transaction — which holds the one write lock, so
-- with a backlog of many small jobs (batches spread over many conversations: 100,000
-- pending after 20 s) each lease stalled the accept path for 60-220 ms. Over (seq) the lease
-- walks the queue in order and stops at the first ready job, as on PostgreSQL; `status` in
-- the index keeps `queue_depth` a covering scan.
DROP INDEX IF EXISTS jobs_ready;
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(seq, status) WHERE status IN ('pending', 'running');
