-- SQLite's words for the fragments of queries/common.sql. A write transaction here is
-- BEGIN IMMEDIATE, the file's one writer: nothing needs locking row by row.

-- fragment: org
+org_id

-- fragment: in
IN (SELECT value FROM json_each(:{}))

-- fragment: for_update

-- fragment: skip_locked

-- fragment: json_text
json_extract(details, '$.{}')

-- fragment: vector
:{}

-- fragment: for_share

-- fragment: skip_locked_of

-- fragment: unindexed
+{}

-- fragment: true
1

-- ================================================================== memsy console reads
-- fragment: metadata_text
json_extract(metadata, '$.{}')

-- fragment: ascii_lower
-- ASCII letters in lower case, every other character as it is (SQLite's lower() everywhere).
lower({})
