-- Webhooks (engram/webhooks.py): one config per org, and an outbox of deliveries written in the
-- committing transaction of the job they tell of, sent by the API processes, retried with backoff.
CREATE TABLE webhooks (
    org_id      text COLLATE "C" PRIMARY KEY,
    url         text NOT NULL,
    events      json NOT NULL,
    enabled     boolean NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz
);
CREATE TABLE webhook_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text COLLATE "C" NOT NULL UNIQUE,
    org_id       text COLLATE "C" NOT NULL,
    user_id      text COLLATE "C" NOT NULL,
    event        text NOT NULL,
    payload      text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL,
    lease_until  timestamptz,
    status       text NOT NULL,
    last_error   text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_user ON webhook_outbox (org_id, user_id);
