-- Groups (the family-X v1.0 sharing axis, engram/groups.py): an org's registered groups, and the
-- tags that put a memory in a group. A memory's own scope (user, agent, app) never changes; its
-- tags can (PATCH add/remove), and a search by group reads every user's tagged memories.
CREATE TABLE IF NOT EXISTS groups (
    org_id TEXT NOT NULL,
    id TEXT NOT NULL,                           -- grp_<32 hex>, made by the server
    name TEXT NOT NULL,
    prompt TEXT,                                -- NULL: a catch-all group (every shareable memory)
    status TEXT NOT NULL,                       -- active | archived
    created_at TEXT NOT NULL,
    updated_at TEXT,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE IF NOT EXISTS memory_groups (
    org_id TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (org_id, memory_id, group_id)
);
CREATE INDEX IF NOT EXISTS memory_groups_group ON memory_groups(group_id, memory_id);  -- ids are random: unique across orgs
