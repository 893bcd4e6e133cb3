-- Random secrets created once per database and shared by every process (Store.server_secret):
-- the API signs pagination cursors with one (engram/domain/cursors.py).
CREATE TABLE IF NOT EXISTS server_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    created_at TEXT NOT NULL
);
