-- Statements only the PostgreSQL dialect has: its locks and notifications, its memory rows
-- (the vector and the full-text entry live in the row: `embedding`, and `tsv` generated from
-- the text), its dedup lookup and its search index (pgvector HNSW, full-text BM25).

-- ================================================================== locks and notifications
-- name: advisory_lock
SELECT pg_advisory_xact_lock(%(key)s)

-- name: try_advisory_lock
SELECT pg_try_advisory_xact_lock(%(key)s) AS ok

-- name: walk_in_index_order
-- Around the lease's `next_ready_job` (PostgresDialect.walking_the_queue).
SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off

-- name: plan_as_usual
SET LOCAL enable_sort = DEFAULT; SET LOCAL enable_bitmapscan = DEFAULT

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s)

-- ================================================================== memory rows
-- name: insert_memory
INSERT INTO memories(id, org_id, type, status, text, text_hash, key, user_id, agent_id, conv_id, app_id, metadata,
                     categories, details, source_event_ids, valid_at, job_id, created_at, updated_at, embedding)
VALUES (%(id)s, %(org_id)s, %(type)s, %(status)s, %(text)s, %(text_hash)s, %(key)s, %(user_id)s, %(agent_id)s,
        %(conv_id)s, %(app_id)s, %(metadata)s, %(categories)s, %(details)s, %(source_event_ids)s, %(valid_at)s,
        %(job_id)s, %(created_at)s, %(updated_at)s, %(embedding)s::vector)

-- name: switch_vectors
-- `engram reindex`'s switch: each memory's new vector (store/reindex.py).
UPDATE memories m SET embedding = r.vec FROM reindex_vectors r WHERE r.id = m.id

-- name: delete_memories
DELETE FROM memories WHERE id = ANY(%(ids)s) AND org_id = %(org_id)s

-- name: vectors_of_memories
SELECT id, embedding::real[] AS vec FROM memories WHERE id = ANY(%(ids)s)

-- ================================================================== the dedup window
-- name: recent_duplicates
SELECT DISTINCT ON (dedup_hash) dedup_hash, id FROM events
WHERE org_id = %(org_id)s AND dedup_hash = ANY(%(hashes)s) AND received_at >= %(since)s
ORDER BY dedup_hash, received_at, id

-- ================================================================== search
-- name: vector_extension_version
SELECT extversion FROM pg_extension WHERE extname = 'vector'

-- name: dense_exact
-- MATERIALIZED: filter first, then score every admitted row; no index can reorder this.
WITH scored AS MATERIALIZED (
    SELECT m.id, m.embedding <=> %(query)s::vector AS d FROM memories m
    WHERE m.org_id = %(org_id)s AND vector_dims(m.embedding) = %(dim)s AND {{where}})
SELECT id, 1 - d AS score FROM scored ORDER BY d, id LIMIT %(k)s

-- name: dense_hnsw
WITH near AS MATERIALIZED (
    SELECT m.id, (m.embedding::vector({{dim}})) <=> %(query)s::vector({{dim}}) AS d
    FROM memories m WHERE m.org_id = %(org_id)s AND vector_dims(m.embedding) = %(dim)s AND {{where}}
    ORDER BY (m.embedding::vector({{dim}})) <=> %(query)s::vector({{dim}}) LIMIT %(k)s)
SELECT id, 1 - d AS score FROM near ORDER BY d, id

-- name: hnsw_settings
SELECT set_config('hnsw.ef_search', %(ef_search)s, true)

-- name: hnsw_iterative_scan
SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)

-- name: lexical_bm25
-- One pass over the matches: term frequency, document length and (as a window over the
-- matches) document frequency per query term; no join whose size the planner misjudges.
WITH q AS (SELECT to_tsquery('english', %(tsquery)s) AS tq,
                  tsvector_to_array(to_tsvector('english', %(words)s)) AS terms),
hits AS MATERIALIZED (
    SELECT m.id, m.tsv, GREATEST((SELECT sum(COALESCE(array_length(u.positions, 1), 1))
                                  FROM unnest(m.tsv) u), 1) AS dl
    FROM memories m, q
    WHERE m.tsv @@ q.tq AND m.org_id = %(org_id)s AND {{where}}),
tf AS (
    SELECT h.id, h.dl, COALESCE(array_length(u.positions, 1), 1) AS tf,
           count(*) OVER (PARTITION BY u.lexeme) AS df
    FROM hits h, q, unnest(h.tsv) u WHERE u.lexeme = ANY(q.terms)),
stats AS (SELECT GREATEST({{n}}, (SELECT count(*) FROM hits)) AS n,
                 (SELECT avg(dl) FROM hits) AS avgdl)
SELECT tf.id, sum(
    GREATEST(ln((stats.n - tf.df + 0.5) / (tf.df + 0.5)), 1e-6)
    * tf.tf * (%(k1)s + 1) / (tf.tf + %(k1)s * (1 - %(b)s + %(b)s * tf.dl / stats.avgdl))
) AS score
FROM tf, stats
GROUP BY tf.id ORDER BY score DESC, tf.id LIMIT %(k)s

-- name: admitted
SELECT m.id FROM memories m WHERE m.org_id = %(org_id)s AND m.id = ANY(%(ids)s) AND {{where}}

-- name: scope_count
(SELECT count(*) FROM memories m WHERE m.org_id = %(org_id)s AND {{where}})

-- name: table_rows_estimate
(SELECT GREATEST(reltuples, 0) FROM pg_class WHERE oid = 'memories'::regclass)

-- name: term_counts
SELECT {{columns}} FROM memories m WHERE m.org_id = %(org_id)s AND {{where}}
