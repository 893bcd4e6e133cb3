-- The statements of the store's rules (engram/store/relational.py), written once for both
-- dialects. Parameters are `:name`. A {{fragment}} is what the dialects say two ways; each
-- dialect's file (queries/sqlite.sql, queries/postgres.sql) defines it:
--   {{org}}         the org column of a lookup by id (SQLite: `+org_id`, keeping its planner
--                   off the org's index, which it would otherwise walk whole)
--   {{in:ids}}      membership in the list parameter `ids`
--   {{for_update}}  lock the rows read until the transaction ends (PostgreSQL; SQLite's one
--                   writer needs nothing), always in one order: the job row, the user's
--                   version row, memory rows by id — so rules never deadlock
--   {{skip_locked}} the same for the lease, skipping rows another worker is leasing
--   {{json_text:k}} the text of `details.k`
--   {{vector:p}}    the parameter `p` as a stored vector (SQLite: float32 bytes; PostgreSQL: `vector`)
--   {{for_share}}   lock the rows read against changes until the transaction ends (PostgreSQL)
--   {{skip_locked_of:a}} lock the rows of alias `a` read, skipping those another process holds
--   {{true}}        the boolean true (SQLite keeps 1)
--   {{unindexed:c}} column `c` in an ORDER BY that no index should serve (SQLite: `+c`; it
--                   would otherwise walk the org's memories_created to skip sorting a row or two)

-- fragment: memory_columns
-- Every column a Memory needs; never PostgreSQL's vector, tsvector or metadata's binary copy.
-- Unqualified: SQLite's RETURNING cannot name a table alias.
id, org_id, type, status, text, key, user_id, agent_id, conv_id, app_id, metadata, categories, details,
source_event_ids, valid_at, job_id, created_at, updated_at

-- ================================================================== lifecycle
-- name: recover_abandoned_leases
UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       available_at = :now, updated_at = :now
WHERE status = 'running'

-- ================================================================== orgs, keys, secrets
-- name: org_by_name
SELECT * FROM orgs WHERE name = :name

-- name: org_by_id
SELECT * FROM orgs WHERE id = :id

-- name: list_orgs
SELECT * FROM orgs ORDER BY created_at, id

-- name: insert_org
INSERT INTO orgs(id, name, created_at) VALUES (:id, :name, :created_at) ON CONFLICT DO NOTHING

-- name: insert_key
INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, created_at, expires_at)
VALUES (:id, :org_id, :name, :prefix, :key_hash, :scopes, :created_at, :expires_at)

-- name: key_by_hash
-- An expired key is found too: the caller tells "expired" from "unknown" (authenticate).
SELECT * FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL

-- name: list_keys
SELECT * FROM api_keys ORDER BY created_at, id

-- name: list_keys_of_org
SELECT * FROM api_keys WHERE org_id = :org_id ORDER BY created_at, id

-- name: revoke_key
UPDATE api_keys SET revoked_at = :at WHERE id = :id AND revoked_at IS NULL

-- name: revoke_key_of_org
UPDATE api_keys SET revoked_at = :at WHERE id = :id AND org_id = :org_id AND revoked_at IS NULL

-- name: count_keys_of_org
SELECT count(*) AS n FROM api_keys WHERE org_id = :org_id AND revoked_at IS NULL

-- name: count_active_keys
SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL

-- name: insert_secret
INSERT INTO server_secrets(name, value, created_at) VALUES (:name, :value, :now) ON CONFLICT DO NOTHING

-- name: secret
SELECT value FROM server_secrets WHERE name = :name

-- ================================================================== the vector space
-- name: vector_space
SELECT embedder FROM vector_space WHERE only_row = 1

-- name: record_vector_space
INSERT INTO vector_space(only_row, embedder, recorded_at) VALUES (1, :embedder, :at)
ON CONFLICT (only_row) DO UPDATE SET embedder = excluded.embedder, recorded_at = excluded.recorded_at

-- name: count_all_memories
SELECT count(*) AS n FROM memories

-- ================================================================== reindex (store/reindex.py)
-- name: reindex_state
SELECT embedder, after_id, started_at FROM reindex WHERE only_row = 1

-- name: reindex_state_for_switch
SELECT embedder FROM reindex WHERE only_row = 1 AND embedder = :embedder {{for_update}}

-- name: begin_reindex
INSERT INTO reindex(only_row, embedder, after_id, started_at, updated_at) VALUES (1, :embedder, '', :at, :at)
ON CONFLICT (only_row) DO UPDATE SET embedder = excluded.embedder, after_id = '', started_at = excluded.started_at,
                                     updated_at = excluded.updated_at

-- name: advance_reindex
UPDATE reindex SET after_id = COALESCE(:after, after_id), updated_at = :at WHERE only_row = 1 AND embedder = :embedder

-- name: end_reindex
DELETE FROM reindex

-- name: clear_reindex_vectors
DELETE FROM reindex_vectors

-- name: write_reindex_vector
INSERT INTO reindex_vectors(id, vec) VALUES (:id, {{vector:vec}})
ON CONFLICT (id) DO UPDATE SET vec = excluded.vec

-- name: memories_to_embed
-- Every memory of every org, by id: a page starts after the last one done.
SELECT id, type, text, {{json_text:rationale}} AS rationale FROM memories WHERE id > :after ORDER BY id LIMIT :limit

-- name: memories_missing_reindex
SELECT m.id, m.type, m.text, {{json_text:rationale}} AS rationale FROM memories m
WHERE NOT EXISTS (SELECT 1 FROM reindex_vectors r WHERE r.id = m.id)
ORDER BY m.id LIMIT :limit

-- name: delete_reindex_vectors
DELETE FROM reindex_vectors WHERE id {{in:ids}}

-- ================================================================== accept
-- name: idempotency_seen
SELECT job_id, body_hash FROM idempotency_keys WHERE org_id = :org_id AND key = :key AND created_at >= :since

-- name: remember_idempotency
INSERT INTO idempotency_keys(org_id, key, body_hash, job_id, created_at)
VALUES (:org_id, :key, :body_hash, :job_id, :created_at)
ON CONFLICT (org_id, key) DO UPDATE SET body_hash = excluded.body_hash, job_id = excluded.job_id,
                                        created_at = excluded.created_at

-- name: events_by_client_id
SELECT client_event_id, id FROM events WHERE org_id = :org_id AND client_event_id {{in:client_ids}}

-- name: insert_event
INSERT INTO events(id, org_id, user_id, conv_id, agent_id, app_id, role, kind, name, content, dia_id, metadata,
                   occurred_at, received_at, job_id, client_event_id, dedup_hash, status)
VALUES (:id, :org_id, :user_id, :conv_id, :agent_id, :app_id, :role, :kind, :name, :content, :dia_id, :metadata,
        :occurred_at, :received_at, :job_id, :client_event_id, :dedup_hash, 'pending')
ON CONFLICT DO NOTHING

-- name: count_events
SELECT count(*) AS n FROM events WHERE id {{in:ids}}

-- name: insert_job
INSERT INTO jobs(id, org_id, user_id, conv_id, kind, status, params, available_at, created_at, updated_at)
VALUES (:id, :org_id, :user_id, :conv_id, :kind, 'pending', :params, :available_at, :created_at, :updated_at)

-- ================================================================== jobs and events
-- name: job_by_id
SELECT * FROM jobs WHERE {{org}} = :org_id AND id = :id

-- name: event_statuses
SELECT id, status, fail_reason FROM events WHERE {{org}} = :org_id AND id {{in:ids}}

-- name: events_by_id
SELECT * FROM events WHERE {{org}} = :org_id AND id {{in:ids}}

-- ================================================================== the queue
-- name: next_ready_job
-- The oldest ready job whose conversation has no earlier unfinished job; `status IN (…)`
-- keeps it on the jobs_ready index (partial, in `seq` order on both stores), so the lease
-- walks the queue in arrival order and stops at the first ready job rather than reading
-- every unfinished one (it runs under the write lock the accept path shares on SQLite).
SELECT j.* FROM jobs j
WHERE j.status IN ('pending', 'running')
  AND ((j.status = 'pending' AND j.available_at <= :now)
       OR (j.status = 'running' AND j.lease_expires_at < :now))
  AND NOT EXISTS (
      SELECT 1 FROM jobs e
      WHERE e.org_id = j.org_id AND e.user_id = j.user_id AND e.conv_id = j.conv_id
        AND e.status IN ('pending', 'running') AND e.seq < j.seq)
ORDER BY j.seq
LIMIT 1
{{skip_locked}}

-- name: lease_job
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = :owner, lease_token = :token,
       lease_expires_at = :expires_at, updated_at = :now
WHERE seq = :seq
RETURNING *

-- name: job_events
SELECT * FROM events WHERE job_id = :job_id ORDER BY id

-- name: replayed_events
-- What a replay job extracts again: the conversation's turns that were remembered, in arrival order.
SELECT * FROM events
WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id AND status = 'completed'
ORDER BY id

-- name: lease_of_job
SELECT lease_token, status FROM jobs WHERE id = :id {{for_update}}

-- name: renew_lease
UPDATE jobs SET lease_expires_at = :until WHERE id = :id AND lease_token = :token AND status = 'running'

-- name: retry_job
UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       available_at = :at, error = :error, updated_at = :now
WHERE id = :id

-- name: fail_job
UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       error = :error, updated_at = :now
WHERE id = :id

-- name: fail_pending_events
UPDATE events SET status = 'failed', fail_reason = :reason WHERE job_id = :job_id AND status = 'pending'

-- name: finish_job
UPDATE jobs SET status = :status, result = :result, error = :error, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL, updated_at = :now
WHERE id = :id

-- name: next_job_waits
-- Whether the conversation of a job that just ended has a job waiting behind it.
SELECT 1 AS waiting FROM jobs j
WHERE j.id = :job_id AND EXISTS (
    SELECT 1 FROM jobs n WHERE n.org_id = j.org_id AND n.user_id = j.user_id AND n.conv_id = j.conv_id
                           AND n.seq > j.seq AND n.status = 'pending')

-- name: queue_depth
SELECT status, count(*) AS n FROM jobs WHERE status IN ('pending', 'running') GROUP BY status

-- name: oldest_pending
SELECT min(created_at) AS oldest FROM jobs WHERE status IN ('pending', 'running') AND status = 'pending'

-- ================================================================== committing a job
-- name: user_version
SELECT version FROM user_versions WHERE org_id = :org_id AND user_id = :user_id

-- name: vector_space_for_commit
-- A commit writing vectors reads the space they must be of; an `engram reindex` switching
-- meanwhile holds this row, and the commit waits for it (PostgreSQL).
SELECT embedder FROM vector_space WHERE only_row = 1 {{for_share}}

-- name: move_user_version
-- Creates the row at `step`, or adds `step`; the version after. On PostgreSQL this locks the
-- row until the transaction ends: one user's commits, deletes and text PATCHes take turns.
INSERT INTO user_versions(org_id, user_id, version) VALUES (:org_id, :user_id, :step)
ON CONFLICT (org_id, user_id) DO UPDATE SET version = user_versions.version + :step
RETURNING version

-- name: insert_memory_source
INSERT INTO memory_sources(memory_id, event_id) VALUES (:memory_id, :event_id) ON CONFLICT DO NOTHING

-- name: active_memory_sources
SELECT source_event_ids FROM memories WHERE {{org}} = :org_id AND id = :id AND status = 'active' {{for_update}}

-- name: set_memory_sources
UPDATE memories SET source_event_ids = :sources, updated_at = :now WHERE id = :id

-- name: supersede_active
UPDATE memories SET status = 'superseded', updated_at = :now
WHERE id = :id AND {{org}} = :org_id AND status = 'active'

-- name: retract_active
UPDATE memories SET status = 'retracted', updated_at = :now
WHERE id = :id AND {{org}} = :org_id AND status = 'active'

-- name: mark_events_episode
UPDATE events SET episode_id = :episode_id WHERE id {{in:ids}}

-- name: facts_citing_events
SELECT id, details FROM memories
WHERE {{org}} = :org_id AND type = 'fact' AND id IN (SELECT memory_id FROM memory_sources WHERE event_id {{in:ids}})
ORDER BY id
{{for_update}}

-- name: set_memory_details
UPDATE memories SET details = :details WHERE id = :id

-- name: fail_event
UPDATE events SET status = 'failed', fail_reason = :reason WHERE id = :id AND job_id = :job_id

-- name: withhold_event
UPDATE events SET content = :content, name = NULL, metadata = '{}' WHERE id = :id AND job_id = :job_id

-- name: complete_pending_events
UPDATE events SET status = 'completed' WHERE job_id = :job_id AND status = 'pending'

-- name: add_usage
INSERT INTO usage_counters(org_id, day, name, value) VALUES (:org_id, :day, :name, :value)
ON CONFLICT (org_id, day, name) DO UPDATE SET value = usage_counters.value + excluded.value

-- ================================================================== idle conversations
-- name: idle_conversations
SELECT org_id, user_id, conv_id, max(received_at) AS last_turn FROM events
WHERE episode_id IS NULL AND status = 'completed'
GROUP BY org_id, user_id, conv_id
HAVING max(received_at) < :idle_before

-- name: conversation_busy
-- An unfinished job, or an episode job that failed since the last turn (an outage must not
-- re-queue it every sweep).
SELECT 1 AS busy FROM jobs
WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id
  AND (status IN ('pending', 'running') OR (kind = 'episode' AND status = 'failed' AND created_at >= :since))
LIMIT 1

-- ================================================================== pipeline reads
-- name: unepisoded_events
SELECT * FROM events
WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id AND episode_id IS NULL AND status = 'completed'
ORDER BY id

-- name: reconcile_candidates
SELECT {{memory_columns}} FROM memories m
WHERE org_id = :org_id AND user_id = :user_id AND status = 'active' AND type = 'fact'
  AND (key {{in:keys}} OR text_hash {{in:text_hashes}})
ORDER BY created_at, id

-- name: memories_citing
SELECT {{memory_columns}} FROM memories m
WHERE {{org}} = :org_id AND (status = 'active' OR :any_status)
  AND id IN (SELECT memory_id FROM memory_sources WHERE event_id {{in:event_ids}})
ORDER BY created_at, id

-- ================================================================== search
-- name: turn_context
-- For each memory of `ids`: its type, the role of the turn it came from, its fact type, user,
-- text and when it was said (valid_at, else created_at); and, unless it is an episode, one row
-- per turn it cites with that turn's predecessor (NULL columns for a memory citing none). A
-- turn's predecessor is the event before it among the events of its org, user and conversation
-- in (occurred_at, received_at, id) order, whatever their status: the conversation as it was
-- sent. One seek on events_turn_order per source turn. Which of the memories cite a
-- predecessor is read off these same rows (Store.turn_context): only neighbours among `ids`
-- are asked for. An episode cites a whole stretch of turns and neither gives nor takes turn
-- context, so its turns are not read (they were 60 % of the rows for a search's best 100).
-- Each memory's sources are read by its own seek on memory_sources: a derived table of the
-- sources joined back here was planned as a temporary index built for every search.
SELECT m.id, m.type, m.source_role, m.fact_type, m.user_id, m.text, m.said_at, e.id AS event_id,
       (SELECT p.id FROM events p
        WHERE p.org_id = e.org_id AND p.user_id = e.user_id AND p.conv_id = e.conv_id
          AND (p.occurred_at, p.received_at, p.id) < (e.occurred_at, e.received_at, e.id)
        ORDER BY p.occurred_at DESC, p.received_at DESC, p.id DESC LIMIT 1) AS previous_id
FROM (SELECT id, type, {{json_text:source_role}} AS source_role, {{json_text:fact_type}} AS fact_type, user_id, text,
             COALESCE(valid_at, created_at) AS said_at
      FROM memories WHERE {{org}} = :org_id AND id {{in:ids}}) m
LEFT JOIN memory_sources s ON s.memory_id = m.id AND m.type <> 'episode'
LEFT JOIN events e ON e.id = s.event_id AND {{unindexed:e.org_id}} = :org_id

-- ================================================================== memories
-- name: memory_by_id
SELECT {{memory_columns}} FROM memories m WHERE {{org}} = :org_id AND id = :id

-- name: memories_by_id
SELECT {{memory_columns}} FROM memories m WHERE {{org}} = :org_id AND id {{in:ids}}

-- name: memory_owner
SELECT user_id FROM memories WHERE {{org}} = :org_id AND id = :id

-- name: memory_to_delete
SELECT type, status, {{json_text:root_id}} AS root_id FROM memories WHERE {{org}} = :org_id AND id = :id
{{for_update}}

-- name: retract_fact
UPDATE memories SET status = 'retracted', updated_at = :at WHERE id = :id AND {{org}} = :org_id

-- name: other_versions
SELECT id FROM memories
WHERE org_id = :org_id AND type = 'artifact' AND id <> :id AND {{json_text:root_id}} = :root_id

-- name: delete_memory_sources
DELETE FROM memory_sources WHERE memory_id {{in:ids}}

-- name: active_fact
SELECT id FROM memories WHERE {{org}} = :org_id AND id = :id AND type = 'fact' AND status = 'active' {{for_update}}

-- name: live_memory_metadata
SELECT metadata FROM memories WHERE {{org}} = :org_id AND id = :id AND status <> 'retracted' {{for_update}}

-- name: set_memory_metadata
UPDATE memories AS m SET metadata = :metadata, updated_at = :at WHERE id = :id RETURNING {{memory_columns}}

-- name: successor_of
SELECT {{memory_columns}} FROM memories m WHERE org_id = :org_id AND {{json_text:supersedes}} = :id
ORDER BY {{unindexed:created_at}}, id LIMIT 1

-- name: list_memories
SELECT {{memory_columns}} FROM memories m WHERE m.org_id = :org_id AND {{where}} {{after}}
ORDER BY m.created_at {{direction}}, m.id {{direction}} LIMIT :limit

-- name: list_after
AND (m.created_at, m.id) {{cmp}} (:after_created_at, :after_id)

-- ================================================================== usage
-- name: usage_totals
SELECT name, sum(value) AS total FROM usage_counters WHERE org_id = :org_id AND day >= :since GROUP BY name

-- name: usage_days
SELECT day, name, value FROM usage_counters WHERE org_id = :org_id AND day >= :since AND day <= :until
ORDER BY day, name

-- name: memory_counts
-- The org's memories by type and status, now (usage's storage snapshot).
SELECT type, status, count(*) AS n FROM memories WHERE org_id = :org_id GROUP BY type, status

-- ================================================================== groups (store/groups.py)
-- name: groups_of_org
SELECT * FROM groups WHERE org_id = :org_id AND (status = 'active' OR :archived_too = 1)
ORDER BY created_at, id

-- name: group_of_org
SELECT * FROM groups WHERE org_id = :org_id AND id = :id

-- name: groups_by_id
SELECT * FROM groups WHERE org_id = :org_id AND id {{in:ids}}

-- name: active_group_count
SELECT count(*) AS n FROM groups WHERE org_id = :org_id AND status = 'active'

-- name: insert_group
INSERT INTO groups(org_id, id, name, prompt, status, created_at, updated_at)
VALUES (:org_id, :id, :name, :prompt, 'active', :now, NULL)

-- name: update_group
UPDATE groups SET name = :name, prompt = :prompt, status = :status, updated_at = :now
WHERE org_id = :org_id AND id = :id

-- name: tag_memory
INSERT INTO memory_groups(org_id, memory_id, group_id) VALUES (:org_id, :memory_id, :group_id)
ON CONFLICT DO NOTHING

-- name: untag_memory
DELETE FROM memory_groups WHERE org_id = :org_id AND memory_id = :memory_id AND group_id {{in:ids}}

-- name: tags_of_memories
SELECT memory_id, group_id FROM memory_groups WHERE org_id = :org_id AND memory_id {{in:ids}}
ORDER BY memory_id, group_id

-- name: delete_memory_tags
DELETE FROM memory_groups WHERE org_id = :org_id AND memory_id {{in:ids}}

-- name: copy_memory_tags
-- A text PATCH's new revision stays in the groups its predecessor was in.
INSERT INTO memory_groups(org_id, memory_id, group_id)
SELECT org_id, :new_id, group_id FROM memory_groups WHERE org_id = :org_id AND memory_id = :old_id
ON CONFLICT DO NOTHING

-- ================================================================== the data lifecycle (store/lifecycle.py)
-- name: erasure_epoch
SELECT epoch FROM erasures WHERE only_row = 1

-- name: next_erasure
INSERT INTO erasures(only_row, epoch) VALUES (1, 1)
ON CONFLICT (only_row) DO UPDATE SET epoch = erasures.epoch + 1

-- name: user_jobs
-- Every job of the user, in arrival order: the job rows are the first a rule locks.
SELECT id, status FROM jobs WHERE org_id = :org_id AND user_id = :user_id ORDER BY seq {{for_update}}

-- name: user_memories
SELECT id, type, status FROM memories WHERE org_id = :org_id AND user_id = :user_id ORDER BY id {{for_update}}

-- name: delete_idempotency_of_jobs
DELETE FROM idempotency_keys WHERE org_id = :org_id AND job_id {{in:ids}}

-- name: end_deleted_jobs
-- Unfinished jobs of erased or retracted turns: failed, their leases cleared (a worker holding
-- one cannot commit); an erasure clears what they carried as well.
UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       error = :error, updated_at = :now,
       params = CASE WHEN :clear THEN :empty ELSE params END,
       result = CASE WHEN :clear THEN NULL ELSE result END
WHERE id {{in:ids}}

-- name: delete_jobs
DELETE FROM jobs WHERE id {{in:ids}}

-- name: delete_user_events
-- The turns of the user's jobs, and imported turns (which have no job).
DELETE FROM events
WHERE org_id = :org_id AND user_id = :user_id AND (job_id IS NULL OR job_id {{in:job_ids}})

-- name: delete_user_version
DELETE FROM user_versions WHERE org_id = :org_id AND user_id = :user_id

-- name: conversation_unfinished_jobs
SELECT id FROM jobs
WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id AND status IN ('pending', 'running')
ORDER BY seq {{for_update}}

-- name: conversation_event_ids
SELECT id FROM events WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id

-- name: conversation_memories
-- The user's memories citing a turn of the conversation, or naming it, by id (the lock order).
SELECT id, type, status, conv_id, source_event_ids FROM memories
WHERE org_id = :org_id AND user_id = :user_id
  AND (conv_id = :conv_id OR id IN (
      SELECT s.memory_id FROM memory_sources s JOIN events e ON e.id = s.event_id
      WHERE e.org_id = :org_id AND e.user_id = :user_id AND e.conv_id = :conv_id))
ORDER BY id {{for_update}}

-- name: conversation_of_event
SELECT conv_id FROM events WHERE id = :id

-- name: set_memory_sources_and_conversation
UPDATE memories SET source_event_ids = :sources, conv_id = :conv_id, updated_at = :now WHERE id = :id

-- name: drop_memory_sources
DELETE FROM memory_sources WHERE memory_id = :memory_id AND event_id {{in:event_ids}}

-- name: mark_conversation_deleted
UPDATE events SET status = 'deleted', fail_reason = 'resource_deleted'
WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id AND status <> 'deleted'

-- name: export_events_of_user
SELECT * FROM events WHERE org_id = :org_id AND user_id = :user_id AND id > :after ORDER BY id LIMIT :limit

-- name: export_events_of_conversation
SELECT * FROM events
WHERE org_id = :org_id AND user_id = :user_id AND conv_id = :conv_id AND id > :after ORDER BY id LIMIT :limit

-- name: export_memories_of_user
SELECT {{memory_columns}} FROM memories m
WHERE org_id = :org_id AND user_id = :user_id AND id > :after ORDER BY id LIMIT :limit

-- name: export_memories_of_conversation
SELECT {{memory_columns}} FROM memories m
WHERE org_id = :org_id AND user_id = :user_id AND id > :after
  AND (conv_id = :conv_id OR id IN (
      SELECT s.memory_id FROM memory_sources s JOIN events e ON e.id = s.event_id
      WHERE e.org_id = :org_id AND e.user_id = :user_id AND e.conv_id = :conv_id))
ORDER BY id LIMIT :limit

-- name: events_held
SELECT id, org_id FROM events WHERE id {{in:ids}}

-- name: memories_held
SELECT id, org_id FROM memories WHERE id {{in:ids}}

-- name: import_event
INSERT INTO events(id, org_id, user_id, conv_id, agent_id, app_id, role, kind, name, content, dia_id, metadata,
                   occurred_at, received_at, job_id, client_event_id, dedup_hash, status, fail_reason, episode_id)
VALUES (:id, :org_id, :user_id, :conv_id, :agent_id, :app_id, :role, :kind, :name, :content, :dia_id, :metadata,
        :occurred_at, :received_at, :job_id, :client_event_id, :dedup_hash, :status, :fail_reason, :episode_id)
ON CONFLICT DO NOTHING

-- ================================================================== the web console (store/console.py)
-- name: console_users
-- One page of the org's users (those with memories), by user id after :after; the counts are
-- read from the memories_user index alone (org, user, status), so a page costs its users' rows.
SELECT user_id, count(*) AS memories, sum(CASE WHEN status = 'active' THEN 1 ELSE 0 END) AS active
FROM memories WHERE org_id = :org_id AND user_id IS NOT NULL AND user_id > :after
GROUP BY user_id ORDER BY user_id LIMIT :limit

-- name: console_conversations
-- One page of a user's conversations (those with memories), by conversation id after :after.
SELECT conv_id, count(*) AS memories, sum(CASE WHEN status = 'active' THEN 1 ELSE 0 END) AS active,
       max(created_at) AS last_at
FROM memories WHERE org_id = :org_id AND user_id = :user_id AND conv_id IS NOT NULL AND conv_id > :after
GROUP BY conv_id ORDER BY conv_id LIMIT :limit

-- name: console_jobs
-- The org's jobs, newest first, before arrival number :before (the primary key: no sort).
SELECT * FROM jobs WHERE {{org}} = :org_id AND seq < :before ORDER BY seq DESC LIMIT :limit

-- name: console_jobs_of_status
SELECT * FROM jobs WHERE {{org}} = :org_id AND status = :status AND seq < :before ORDER BY seq DESC LIMIT :limit

-- name: console_jobs_by_status
-- How many of the org's jobs are in each status (the jobs page's header).
SELECT status, count(*) AS n FROM jobs WHERE org_id = :org_id GROUP BY status

-- ================================================================== webhooks (store/webhooks.py)
-- name: webhook_of_org
SELECT * FROM webhooks WHERE org_id = :org_id

-- name: put_webhook
INSERT INTO webhooks(org_id, url, events, enabled, secret, created_at, updated_at)
VALUES (:org_id, :url, :events, :enabled, :secret, :created_at, :updated_at)
ON CONFLICT (org_id) DO UPDATE SET url = excluded.url, events = excluded.events, enabled = excluded.enabled,
                                   secret = excluded.secret, updated_at = excluded.updated_at

-- name: delete_webhook
DELETE FROM webhooks WHERE org_id = :org_id

-- name: drop_pending_deliveries
DELETE FROM webhook_outbox WHERE org_id = :org_id AND status = 'pending'

-- name: delete_deliveries_of_user
DELETE FROM webhook_outbox WHERE org_id = :org_id AND user_id = :user_id

-- name: enqueue_delivery
INSERT INTO webhook_outbox(id, org_id, user_id, event, payload, attempts, next_at, status, created_at, updated_at)
VALUES (:id, :org_id, :user_id, :event, :payload, 0, :now, 'pending', :now, :now)

-- name: due_deliveries
SELECT o.seq, o.id, o.org_id, o.event, o.payload, o.attempts, w.url, w.secret
FROM webhook_outbox o JOIN webhooks w ON w.org_id = o.org_id
WHERE o.status = 'pending' AND o.next_at <= :now AND (o.lease_until IS NULL OR o.lease_until < :now)
  AND w.enabled = {{true}}
ORDER BY o.next_at, o.seq LIMIT :limit
{{skip_locked_of:o}}

-- name: any_due_delivery
SELECT 1 AS due FROM webhook_outbox o
WHERE o.status = 'pending' AND o.next_at <= :now AND (o.lease_until IS NULL OR o.lease_until < :now)
LIMIT 1

-- name: lease_delivery
UPDATE webhook_outbox SET lease_until = :until, updated_at = :now WHERE seq = :seq

-- name: delivered
UPDATE webhook_outbox SET status = 'delivered', attempts = attempts + 1, lease_until = NULL, last_error = NULL,
       updated_at = :now
WHERE seq = :seq

-- name: retry_delivery
UPDATE webhook_outbox SET status = :status, attempts = attempts + 1, next_at = :next, lease_until = NULL,
       last_error = :error, updated_at = :now
WHERE seq = :seq

-- name: deliveries_of_org
SELECT id, event, status, attempts, last_error, created_at, updated_at FROM webhook_outbox
WHERE org_id = :org_id ORDER BY seq DESC LIMIT :limit

-- ================================================================== memsy onboarding (store/onboarding.py)
-- An org's customization is on its row; its roles and teams are `org_units` rows of a `kind`.
-- name: update_org_profile
UPDATE orgs SET name = :name, focus = :focus, promotion_prompt = :promotion_prompt, prompt_meta = :prompt_meta,
       updated_at = :updated_at
WHERE id = :id

-- name: org_units_page
SELECT * FROM org_units WHERE org_id = :org_id AND kind = :kind ORDER BY created_at, id LIMIT :limit OFFSET :offset

-- name: org_unit
SELECT * FROM org_units WHERE org_id = :org_id AND kind = :kind AND id = :id

-- name: org_units_named
SELECT * FROM org_units WHERE org_id = :org_id AND kind = :kind AND id {{in:ids}} ORDER BY created_at, id

-- name: put_org_unit
INSERT INTO org_units(org_id, kind, id, name, focus, promotion_prompt, prompt_meta, created_at, updated_at)
VALUES (:org_id, :kind, :id, :name, :focus, :promotion_prompt, :prompt_meta, :created_at, :updated_at)
ON CONFLICT (org_id, kind, id) DO UPDATE SET name = excluded.name, focus = excluded.focus,
       promotion_prompt = excluded.promotion_prompt, prompt_meta = excluded.prompt_meta,
       updated_at = excluded.updated_at

-- name: delete_org_unit
DELETE FROM org_units WHERE org_id = :org_id AND kind = :kind AND id = :id

-- ================================================================== memsy console reads (store/memsy_console.py)
-- fragment: console_memory_filter
-- The console's memory filters; an unset one (NULL) admits every row (cast: PostgreSQL must
-- know a parameter's type to test it for NULL). `pattern` is a LIKE
-- pattern in ASCII lower case whose own `%`, `_` and `\` the caller escaped with `\`
-- (store/memsy_console.py `contains`): ASCII letters match in any case, others as written, on both.
m.org_id = :org_id AND m.status = :status AND (CAST(:user_id AS TEXT) IS NULL OR m.user_id = :user_id)
  AND (CAST(:type AS TEXT) IS NULL OR m.type = :type)
  AND (CAST(:pattern AS TEXT) IS NULL OR {{ascii_lower:text}} LIKE :pattern ESCAPE '\')

-- name: console_memories
SELECT {{memory_columns}} FROM memories m WHERE {{console_memory_filter}}
ORDER BY m.created_at {{direction}}, m.id {{direction}} LIMIT :limit OFFSET :offset

-- name: count_console_memories
SELECT count(*) AS n FROM memories m WHERE {{console_memory_filter}}

-- name: console_memory_stats
-- The org's memories by type and status, with the first and last time one was written.
SELECT type, status, count(*) AS n, min(created_at) AS first_at, max(created_at) AS last_at
FROM memories WHERE org_id = :org_id GROUP BY type, status

-- fragment: actor_rows
-- Actors are derived, never stored: the org's memories folded on their user.
SELECT user_id, min(created_at) AS first_at, max(created_at) AS last_at, count(*) AS n,
       sum(CASE WHEN status = 'active' THEN 1 ELSE 0 END) AS active
FROM memories
WHERE org_id = :org_id AND user_id IS NOT NULL
  AND (CAST(:pattern AS TEXT) IS NULL OR {{ascii_lower:user_id}} LIKE :pattern ESCAPE '\')
  AND (CAST(:user_id AS TEXT) IS NULL OR user_id = :user_id)
GROUP BY user_id

-- name: actors_first_memory_desc
{{actor_rows}} ORDER BY first_at DESC, user_id DESC LIMIT :limit OFFSET :offset

-- name: actors_first_memory_asc
{{actor_rows}} ORDER BY first_at ASC, user_id ASC LIMIT :limit OFFSET :offset

-- name: actors_last_memory_desc
{{actor_rows}} ORDER BY last_at DESC, user_id DESC LIMIT :limit OFFSET :offset

-- name: actors_actor_id_asc
{{actor_rows}} ORDER BY user_id ASC LIMIT :limit OFFSET :offset

-- name: count_actors
SELECT count(*) AS n FROM ({{actor_rows}}) a

-- name: actor_scopes
-- The roles and teams that the listed actors' memories came with (kept in their metadata).
SELECT DISTINCT user_id, {{metadata_text:role_id}} AS role_id, {{metadata_text:team_id}} AS team_id
FROM memories WHERE org_id = :org_id AND user_id {{in:user_ids}}

-- fragment: console_event_filter
org_id = :org_id AND (CAST(:user_id AS TEXT) IS NULL OR user_id = :user_id) AND (CAST(:conv_id AS TEXT) IS NULL OR conv_id = :conv_id)
  AND (CAST(:kind AS TEXT) IS NULL OR kind = :kind)

-- name: console_events
SELECT * FROM events WHERE {{console_event_filter}}
ORDER BY occurred_at {{direction}}, id {{direction}} LIMIT :limit OFFSET :offset

-- name: count_console_events
SELECT count(*) AS n FROM events WHERE {{console_event_filter}}

-- ================================================================== several jobs in one commit
-- name: savepoint_job
-- One job's writes inside a transaction that commits several (complete_many): a stale or
-- lost job rolls back to here alone.
SAVEPOINT job

-- name: rollback_to_job
ROLLBACK TO SAVEPOINT job

-- name: release_job
RELEASE SAVEPOINT job
