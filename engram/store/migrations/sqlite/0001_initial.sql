-- engram on SQLite: the first schema (every statement IF NOT EXISTS, so a database created
-- before numbered migrations existed takes it unchanged). Applied by `engram migrate`, and by
-- every process that opens the embedded store.
CREATE TABLE IF NOT EXISTS orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- arrival order, also per conversation
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conv_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at TEXT,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(status, available_at) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS jobs_conv ON jobs(org_id, user_id, conv_id, status);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conv_id TEXT NOT NULL,
    agent_id TEXT,
    app_id TEXT,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    content TEXT NOT NULL,
    dia_id TEXT,
    metadata TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    job_id TEXT,
    client_event_id TEXT,
    dedup_hash TEXT,
    status TEXT NOT NULL,
    fail_reason TEXT,
    episode_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_client_id ON events(org_id, client_event_id) WHERE client_event_id IS NOT NULL;
-- The family-M dedup window is held in memory (sqlite_dedup.py), not in an index.
DROP INDEX IF EXISTS events_dedup;
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE INDEX IF NOT EXISTS events_unepisoded ON events(org_id, user_id, conv_id, received_at)
    WHERE episode_id IS NULL AND status = 'completed';
CREATE TABLE IF NOT EXISTS idempotency_keys (
    org_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE TABLE IF NOT EXISTS memories (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,      -- joins the vector and lexical tables
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    key TEXT,
    user_id TEXT,
    agent_id TEXT,
    conv_id TEXT,
    app_id TEXT,
    metadata TEXT NOT NULL,
    categories TEXT NOT NULL,
    details TEXT NOT NULL,
    source_event_ids TEXT NOT NULL,
    valid_at TEXT,
    job_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_user ON memories(org_id, user_id, status);
CREATE INDEX IF NOT EXISTS memories_created ON memories(org_id, created_at, id);
CREATE INDEX IF NOT EXISTS memories_reconcile ON memories(org_id, user_id, text_hash) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS memories_key ON memories(org_id, user_id, key) WHERE key IS NOT NULL AND status = 'active';
CREATE TABLE IF NOT EXISTS memory_sources (
    memory_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (memory_id, event_id)
);
CREATE INDEX IF NOT EXISTS memory_sources_event ON memory_sources(event_id);
CREATE TABLE IF NOT EXISTS memory_vectors (
    rid INTEGER PRIMARY KEY,                    -- memories.rid
    vec BLOB NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(text, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- revisions: a memory's successor is the one whose details.supersedes names it
CREATE INDEX IF NOT EXISTS memories_supersedes ON memories(org_id, json_extract(details, '$.supersedes'))
    WHERE json_extract(details, '$.supersedes') IS NOT NULL;
-- Optimistic concurrency of a user's memory (store/base.py CommitResult): moved by every write
-- that changes which of the user's facts and artifacts are active.
CREATE TABLE IF NOT EXISTS user_versions (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE TABLE IF NOT EXISTS usage_counters (
    org_id TEXT NOT NULL,
    day TEXT NOT NULL,                          -- UTC, YYYY-MM-DD
    name TEXT NOT NULL,                         -- llm_requests, prompt_tokens, completion_tokens, ...
    value INTEGER NOT NULL,
    PRIMARY KEY (org_id, day, name)
);
