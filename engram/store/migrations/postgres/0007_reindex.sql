-- `engram reindex` (engram/pipeline/vector_space.py): every memory embedded again with another
-- embedder into `reindex_vectors`, beside the vectors search reads, then switched in one
-- transaction. `reindex` is the pass under way: for which embedder, and the last memory id
-- done (a pass that stops resumes after it).
CREATE TABLE reindex (
    only_row    integer PRIMARY KEY CHECK (only_row = 1),
    embedder    text NOT NULL,
    after_id    text COLLATE "C" NOT NULL,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE reindex_vectors (
    id   text COLLATE "C" PRIMARY KEY,         -- memories.id
    vec  vector NOT NULL
);
