-- `engram reindex` (engram/pipeline/vector_space.py): every memory embedded again with another
-- embedder into `reindex_vectors`, beside the vectors search reads, then switched in one
-- transaction. `reindex` is the pass under way: for which embedder, and the last memory id
-- done (a pass that stops resumes after it).
CREATE TABLE IF NOT EXISTS reindex (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    embedder TEXT NOT NULL,
    after_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reindex_vectors (
    id TEXT PRIMARY KEY,                        -- memories.id
    vec BLOB NOT NULL
);
