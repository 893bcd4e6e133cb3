-- Webhooks (engram/webhooks.py): one config per org, and an outbox of deliveries written in the
-- committing transaction of the job they tell of, sent by the API process, retried with backoff.
CREATE TABLE IF NOT EXISTS webhooks (
    org_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,                       -- JSON list of event names
    enabled INTEGER NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,                    -- the delivery's id (X-Webhook-Id): the same on every retry
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,                      -- erased with the user
    event TEXT NOT NULL,
    payload TEXT NOT NULL,                      -- the exact bytes signed and sent
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TEXT NOT NULL,
    lease_until TEXT,
    status TEXT NOT NULL,                       -- pending | delivered | failed
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox(next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_outbox_user ON webhook_outbox(org_id, user_id);
