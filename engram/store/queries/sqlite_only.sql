-- Statements only the SQLite dialect has: its memory rows (a vector table and an FTS5 table
-- beside `memories`, joined by the row id `rid`), its search index and its dedup window.

-- ================================================================== memory rows
-- name: insert_memory
INSERT INTO memories(id, org_id, type, status, text, text_hash, key, user_id, agent_id, conv_id, app_id,
                     metadata, categories, details, source_event_ids, valid_at, job_id, created_at, updated_at)
VALUES (:id, :org_id, :type, :status, :text, :text_hash, :key, :user_id, :agent_id, :conv_id, :app_id,
        :metadata, :categories, :details, :source_event_ids, :valid_at, :job_id, :created_at, :updated_at)

-- name: insert_vector
INSERT INTO memory_vectors(rid, vec) VALUES (:rid, :vec)

-- name: switch_vectors
-- `engram reindex`'s switch: each memory's new vector (store/reindex.py).
UPDATE memory_vectors SET vec = (SELECT r.vec FROM reindex_vectors r JOIN memories m ON m.id = r.id
                                 WHERE m.rid = memory_vectors.rid)
WHERE rid IN (SELECT m.rid FROM memories m JOIN reindex_vectors r ON r.id = m.id)

-- name: insert_lexical_entry
INSERT INTO memory_fts(rowid, text) VALUES (:rid, :text)

-- name: rows_of_memories
SELECT rid FROM memories WHERE +org_id = :org_id AND id IN (SELECT value FROM json_each(:ids))

-- name: delete_vector
DELETE FROM memory_vectors WHERE rid = :rid

-- name: delete_lexical_entry
DELETE FROM memory_fts WHERE rowid = :rid

-- name: delete_memory_row
DELETE FROM memories WHERE rid = :rid

-- name: vectors_of_memories
SELECT m.id, v.vec FROM memories m JOIN memory_vectors v ON v.rid = m.rid
WHERE m.id IN (SELECT value FROM json_each(:ids))

-- name: optimize_lexical_index
-- Merges the FTS5 index's segments into one: the terms of deleted rows are dropped with them.
INSERT INTO memory_fts(memory_fts) VALUES ('optimize')

-- ================================================================== search
-- name: scope_rows
-- likely(): an org holds most rows, so the planner should prefer any other index (an id
-- list, a user); group_concat: one string, not a Python row per memory.
SELECT group_concat(m.rid) AS rids FROM memories m WHERE likely(m.org_id = :org_id) AND {{where}}

-- name: scope_size
SELECT count(*) AS n FROM memories m WHERE m.org_id = :org_id AND {{where}}

-- name: vectors_of_rows
-- With the memory's event time, which never changes either: a search narrows its scope to the
-- dates a query names without a query of its own.
SELECT v.rid, v.vec, m.valid_at FROM memory_vectors v JOIN memories m ON m.rid = v.rid
WHERE v.rid IN (SELECT value FROM json_each(:rids))

-- name: terms_of_rows
SELECT rid, org_id, id, text FROM memories WHERE rid IN (SELECT value FROM json_each(:rids))

-- name: fts_candidates
-- CROSS JOIN keeps the FTS index's match list as the outer loop.
SELECT m.id, -bm25(memory_fts) AS s FROM memory_fts CROSS JOIN memories m ON m.rid = memory_fts.rowid
WHERE memory_fts MATCH :match AND m.org_id = :org_id AND {{where}}
ORDER BY bm25(memory_fts) LIMIT :k

-- name: fts_scope_count
SELECT count(*) AS n FROM memory_fts CROSS JOIN memories m ON m.rid = memory_fts.rowid
WHERE memory_fts MATCH :match AND m.org_id = :org_id AND {{where}}

-- ================================================================== the dedup window
-- name: window_events
-- Event ids are ULIDs taken at accept time: everything received since `since` has an id at
-- or above `floor`.
SELECT org_id, dedup_hash, id, received_at FROM events
WHERE id >= :floor AND dedup_hash IS NOT NULL AND received_at >= :since ORDER BY id

-- name: window_confirm
SELECT id, dedup_hash FROM events
WHERE id IN (SELECT value FROM json_each(:ids)) AND org_id = :org_id AND received_at >= :since
