-- PostgreSQL's words for the fragments of queries/common.sql. Many processes write at once:
-- rows a rule will change are locked as it reads them.

-- fragment: org
org_id

-- fragment: in
= ANY(%({})s)

-- fragment: for_update
FOR UPDATE

-- fragment: skip_locked
FOR UPDATE OF j SKIP LOCKED

-- fragment: json_text
details ->> '{}'

-- fragment: vector
%({})s::vector

-- fragment: for_share
FOR SHARE

-- fragment: skip_locked_of
FOR UPDATE OF {} SKIP LOCKED

-- fragment: unindexed
{}

-- fragment: true
true

-- ================================================================== memsy console reads
-- fragment: metadata_text
(metadata_b ->> '{}')

-- fragment: ascii_lower
-- ASCII letters in lower case, every other character as it is (SQLite's lower() everywhere).
lower({} COLLATE "C")
