-- engram on PostgreSQL: the first schema. Applied once by `engram migrate`, in one transaction.
--
-- Every identifier and text column that is compared or ordered uses the "C" collation, so
-- ordering (cursors, `$gt` on ids, ULID order of events) is bytewise, exactly as in SQLite,
-- whatever the database's default collation is.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE orgs (
    id          text COLLATE "C" PRIMARY KEY,
    name        text COLLATE "C" NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL
);

CREATE TABLE api_keys (
    id          text COLLATE "C" PRIMARY KEY,
    org_id      text COLLATE "C" NOT NULL REFERENCES orgs(id),
    name        text NOT NULL,
    prefix      text NOT NULL,
    key_hash    text COLLATE "C" NOT NULL UNIQUE,
    scopes      json NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- The queue. `seq` is arrival order; the accept transaction takes a per-conversation advisory
-- lock before it draws a seq, so within one conversation seq order is also commit order.
CREATE TABLE jobs (
    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                text COLLATE "C" NOT NULL UNIQUE,
    org_id            text COLLATE "C" NOT NULL,
    user_id           text COLLATE "C" NOT NULL,
    conv_id           text COLLATE "C" NOT NULL,
    kind              text NOT NULL,
    status            text NOT NULL,
    params            json NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    available_at      timestamptz NOT NULL,
    lease_owner       text,
    lease_token       text,
    lease_expires_at  timestamptz,
    result            json,
    error             json,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX jobs_ready ON jobs (seq) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_conv ON jobs (org_id, user_id, conv_id, seq) WHERE status IN ('pending', 'running');

CREATE TABLE events (
    id               text COLLATE "C" PRIMARY KEY,   -- ULID: sorts in arrival order
    org_id           text COLLATE "C" NOT NULL,
    user_id          text COLLATE "C" NOT NULL,
    conv_id          text COLLATE "C" NOT NULL,
    agent_id         text COLLATE "C",
    app_id           text COLLATE "C",
    role             text NOT NULL,
    kind             text NOT NULL,
    name             text,
    content          text NOT NULL,
    dia_id           text,
    metadata         json NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    job_id           text COLLATE "C",
    client_event_id  text COLLATE "C",
    dedup_hash       text COLLATE "C",
    status           text NOT NULL,
    fail_reason      text,
    episode_id       text COLLATE "C"
);
CREATE UNIQUE INDEX events_client_id ON events (org_id, client_event_id) WHERE client_event_id IS NOT NULL;
CREATE INDEX events_dedup ON events (org_id, dedup_hash, received_at) WHERE dedup_hash IS NOT NULL;
CREATE INDEX events_job ON events (job_id);
CREATE INDEX events_conv ON events (org_id, user_id, conv_id);
CREATE INDEX events_unepisoded ON events (org_id, user_id, conv_id, received_at)
    WHERE episode_id IS NULL AND status = 'completed';

CREATE TABLE idempotency_keys (
    org_id      text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    body_hash   text NOT NULL,
    job_id      text COLLATE "C" NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, key)
);

-- Memories carry their vector and their lexical entry in the same row, so one INSERT in the
-- committing transaction makes a memory, its vector and its full-text entry exist together.
-- `metadata` keeps the object as it was given (key order included); `metadata_b` is its
-- binary form that filters read and the GIN index serves.
CREATE TABLE memories (
    id                text COLLATE "C" PRIMARY KEY,
    org_id            text COLLATE "C" NOT NULL,
    type              text COLLATE "C" NOT NULL,
    status            text COLLATE "C" NOT NULL,
    text              text NOT NULL,
    text_hash         text COLLATE "C" NOT NULL,
    key               text COLLATE "C",
    user_id           text COLLATE "C",
    agent_id          text COLLATE "C",
    conv_id           text COLLATE "C",
    app_id            text COLLATE "C",
    metadata          json NOT NULL,
    metadata_b        jsonb GENERATED ALWAYS AS (metadata::jsonb) STORED,
    categories        json NOT NULL,
    details           json NOT NULL,
    source_event_ids  json NOT NULL,
    valid_at          timestamptz,
    job_id            text COLLATE "C",
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    embedding         vector NOT NULL,              -- unit length; any dimension
    tsv               tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
CREATE INDEX memories_user ON memories (org_id, user_id, status);
CREATE INDEX memories_created ON memories (org_id, created_at, id);
CREATE INDEX memories_reconcile ON memories (org_id, user_id, text_hash) WHERE status = 'active';
CREATE INDEX memories_key ON memories (org_id, user_id, key) WHERE key IS NOT NULL AND status = 'active';
CREATE INDEX memories_tsv ON memories USING gin (tsv);
CREATE INDEX memories_metadata ON memories USING gin (metadata_b jsonb_path_ops);
-- Approximate nearest neighbours for org-wide queries with the default embedder (384
-- dimensions). User-scoped queries never use it: they are scored exactly.
CREATE INDEX memories_hnsw_384 ON memories USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE vector_dims(embedding) = 384;

-- Revisions: a memory's successor is the one whose details.supersedes names it.
CREATE INDEX memories_supersedes ON memories (org_id, (details ->> 'supersedes'))
    WHERE details ->> 'supersedes' IS NOT NULL;
CREATE INDEX memories_root ON memories (org_id, (details ->> 'root_id')) WHERE type = 'artifact';

CREATE TABLE memory_sources (
    memory_id  text COLLATE "C" NOT NULL,
    event_id   text COLLATE "C" NOT NULL,
    PRIMARY KEY (memory_id, event_id)
);
CREATE INDEX memory_sources_event ON memory_sources (event_id);

CREATE TABLE usage_counters (
    org_id  text COLLATE "C" NOT NULL,
    day     date NOT NULL,                 -- UTC
    name    text COLLATE "C" NOT NULL,     -- llm_requests, prompt_tokens, completion_tokens, ...
    value   bigint NOT NULL,
    PRIMARY KEY (org_id, day, name)
);

-- An ISO-8601 date or date-time string as an instant; NULL for anything else (never an error),
-- so metadata strings compare as instants when a filter compares them with a date.
-- Zone-less strings are read as UTC (engram sets TimeZone to UTC on every connection).
CREATE FUNCTION engram_instant(value text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value ~ '^\d{4}-\d{2}-\d{2}' AND pg_input_is_valid(value, 'timestamptz')
                THEN value::timestamptz END
$$;
