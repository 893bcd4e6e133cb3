-- Random secrets created once per database and shared by every process of a deployment
-- (Store.server_secret): the API signs pagination cursors with one (engram/domain/cursors.py),
-- so a cursor one API process wrote is valid on every other, and across restarts.
CREATE TABLE server_secrets (
    name        text COLLATE "C" PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
