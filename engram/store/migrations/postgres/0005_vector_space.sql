-- Which embedder made the stored vectors (engram/pipeline/vector_space.py). Vectors of two
-- embedders are never comparable, so `engram migrate` re-embeds every memory when the
-- configured embedder differs from the one recorded here, and servers and workers refuse
-- to start until it has. No row: nothing recorded yet (a new database, or one written
-- before engram recorded it).
CREATE TABLE vector_space (
    only_row     integer PRIMARY KEY CHECK (only_row = 1),
    embedder     text NOT NULL,
    recorded_at  timestamptz NOT NULL
);
