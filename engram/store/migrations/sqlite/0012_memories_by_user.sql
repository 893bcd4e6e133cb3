-- A user's memories newest first (GET /v1/memories?user_id=…, the web console's user page): one
-- index walk from the newest, instead of the org's memories_created walked until enough of the
-- user's turn up (at 100k memories in an org, ~60 ms for a user whose memories are old).
CREATE INDEX IF NOT EXISTS memories_user_created ON memories(org_id, user_id, created_at, id);
