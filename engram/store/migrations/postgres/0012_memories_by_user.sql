-- A user's memories newest first (GET /v1/memories?user_id=…, the web console's user page): an
-- ordered index walk instead of a sort of the user's memories.
CREATE INDEX memories_user_created ON memories (org_id, user_id, created_at, id);
