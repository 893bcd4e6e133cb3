-- Which embedder made the stored vectors (engram/pipeline/vector_space.py). Vectors of two
-- embedders are never comparable, so a server whose embedder differs from the one recorded
-- here re-embeds every memory before it serves (or, on PostgreSQL, `engram migrate` does).
-- No row: nothing recorded yet (a new database, or one written before engram recorded it).
CREATE TABLE IF NOT EXISTS vector_space (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    embedder TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
