-- Groups (the family-X v1.0 sharing axis, engram/groups.py): an org's registered groups, and the
-- tags that put a memory in a group. A memory's own scope (user, agent, app) never changes; its
-- tags can (PATCH add/remove), and a search by group reads every user's tagged memories.
CREATE TABLE groups (
    org_id      text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    name        text NOT NULL,
    prompt      text,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE memory_groups (
    org_id     text COLLATE "C" NOT NULL,
    memory_id  text COLLATE "C" NOT NULL,
    group_id   text COLLATE "C" NOT NULL,
    PRIMARY KEY (org_id, memory_id, group_id)
);
CREATE INDEX memory_groups_group ON memory_groups (group_id, memory_id);  -- ids are random: unique across orgs
