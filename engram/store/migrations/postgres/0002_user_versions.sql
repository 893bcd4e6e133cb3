-- Optimistic concurrency of a user's memory (engram/store/base.py, CommitResult).
--
-- Every write that changes which of a user's facts and artifacts are active (a job that
-- creates or supersedes, a DELETE, a text PATCH) moves the user's version inside its own
-- transaction; a job's commit locks the row and compares it with the version its reconcile
-- read, so commits of one user serialize on this row and a stale one is refused.
CREATE TABLE user_versions (
    org_id   text COLLATE "C" NOT NULL,
    user_id  text COLLATE "C" NOT NULL,   -- '' for memories without a user
    version  bigint NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
