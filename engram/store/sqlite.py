"""The embedded store: one SQLite file in WAL mode, usable from several processes.

The API process and the worker processes open the same file. Writes take the single
writer lock briefly (`BEGIN IMMEDIATE`); reads never block writers. The job table is the
queue: a lease is an UPDATE inside a write transaction, so two workers can never hold the
same job, and the lease token is checked again when the job commits.

Lookups by id say `+org_id=?`: the unary plus keeps the planner off the indexes that lead
with org_id. Without table statistics it would otherwise walk one of those — every row of
the org — rather than probe the id's unique index (320 ms instead of 0.4 ms for ten
memories at a million).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from engram.domain.filters import Cmp, Node
from engram.domain.text import query_words, text_hash
from engram.domain.records import (
    ApiKey, Event, Job, JobError, Memory, Org, iso, parse_iso, utcnow,
)
from engram.store.base import (
    AcceptResult, CommitResult, JobOutcome, Lease, NewJob, NewMemory, Page, changes_active_memories, job_error_dict,
    WITHHELD_CONTENT, Idempotency, replayed_job, resolve_batch,
)
from engram.store.sqlite_filters import compile_filter
from engram.store.sqlite_lexicon import ANALYZER, RowCache, ScopeStatistics
from engram.store.sqlite_dedup import RecentEvents
from engram.store.sqlite_writer import GroupCommitWriter

SCHEMA_VERSION = 1
# Up to this many memories in a search's scope, lexical scoring reads the scope's own terms
# (sqlite_lexicon.py); past it, the FTS5 index, whose cost grows with the whole file.
SCOPED_LEXICAL_LIMIT = 20_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- arrival order, also per conversation
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conv_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at TEXT,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(status, available_at) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS jobs_conv ON jobs(org_id, user_id, conv_id, status);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conv_id TEXT NOT NULL,
    agent_id TEXT,
    app_id TEXT,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    content TEXT NOT NULL,
    dia_id TEXT,
    metadata TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    job_id TEXT,
    client_event_id TEXT,
    dedup_hash TEXT,
    status TEXT NOT NULL,
    fail_reason TEXT,
    episode_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_client_id ON events(org_id, client_event_id) WHERE client_event_id IS NOT NULL;
-- The family-M dedup window is held in memory (sqlite_dedup.py), not in an index.
DROP INDEX IF EXISTS events_dedup;
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE INDEX IF NOT EXISTS events_unepisoded ON events(org_id, user_id, conv_id, received_at)
    WHERE episode_id IS NULL AND status = 'completed';
CREATE TABLE IF NOT EXISTS idempotency_keys (
    org_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE TABLE IF NOT EXISTS memories (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,      -- joins the vector and lexical tables
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    key TEXT,
    user_id TEXT,
    agent_id TEXT,
    conv_id TEXT,
    app_id TEXT,
    metadata TEXT NOT NULL,
    categories TEXT NOT NULL,
    details TEXT NOT NULL,
    source_event_ids TEXT NOT NULL,
    valid_at TEXT,
    job_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_user ON memories(org_id, user_id, status);
CREATE INDEX IF NOT EXISTS memories_created ON memories(org_id, created_at, id);
CREATE INDEX IF NOT EXISTS memories_reconcile ON memories(org_id, user_id, text_hash) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS memories_key ON memories(org_id, user_id, key) WHERE key IS NOT NULL AND status = 'active';
CREATE TABLE IF NOT EXISTS memory_sources (
    memory_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (memory_id, event_id)
);
CREATE INDEX IF NOT EXISTS memory_sources_event ON memory_sources(event_id);
CREATE TABLE IF NOT EXISTS memory_vectors (
    rid INTEGER PRIMARY KEY,                    -- memories.rid
    vec BLOB NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(text, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- revisions: a memory's successor is the one whose details.supersedes names it
CREATE INDEX IF NOT EXISTS memories_supersedes ON memories(org_id, json_extract(details, '$.supersedes'))
    WHERE json_extract(details, '$.supersedes') IS NOT NULL;
-- Optimistic concurrency of a user's memory (store/base.py CommitResult): moved by every write
-- that changes which of the user's facts and artifacts are active.
CREATE TABLE IF NOT EXISTS user_versions (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE TABLE IF NOT EXISTS usage_counters (
    org_id TEXT NOT NULL,
    day TEXT NOT NULL,                          -- UTC, YYYY-MM-DD
    name TEXT NOT NULL,                         -- llm_requests, prompt_tokens, completion_tokens, ...
    value INTEGER NOT NULL,
    PRIMARY KEY (org_id, day, name)
);
"""

_JSON = json.dumps


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SQLiteStore:
    """The embedded default store. Thread-safe: one connection per thread."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._vectors = _VectorCache()
        self._rows = RowCache()
        self.scoped_lexical_limit = SCOPED_LEXICAL_LIMIT
        self._recent = RecentEvents()  # the dedup window; used only by the group-commit thread
        self._accepts = GroupCommitWriter(self._connect, on_failure=self._recent.reset)

    # ---------------------------------------------------------------- plumbing
    @classmethod
    def from_url(cls, url: str) -> "SQLiteStore":
        return cls(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we answer, even across a power cut.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def migrate(self) -> None:
        conn = self._conn()
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._accepts.close()
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._all.clear()
        self._local = threading.local()

    def subscribe(self, callback: Any) -> bool:
        """No cross-process notifications: the embedded server wakes its workers through
        their stdin, and waiters poll."""
        return False

    def recover_abandoned_leases(self) -> int:
        """Hand back every running job. Only safe when no worker of this store is alive
        (the embedded server holds the data directory's lock when it calls this)."""
        now = iso(utcnow())
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status='pending', lease_owner=NULL, lease_token=NULL, "
                "lease_expires_at=NULL, available_at=?, updated_at=? WHERE status='running'",
                (now, now),
            )
            return cur.rowcount

    # ---------------------------------------------------------------- orgs and keys
    def ensure_org(self, name: str, org_id: str | None = None) -> Org:
        rows = self._read("SELECT * FROM orgs WHERE name=?", (name,))
        if rows:
            return _org(rows[0])
        with self._write() as conn:
            rows = conn.execute("SELECT * FROM orgs WHERE name=?", (name,)).fetchall()
            if rows:
                return _org(rows[0])
            org = Org(id=org_id or name, name=name, created_at=utcnow())
            conn.execute("INSERT INTO orgs(id, name, created_at) VALUES (?,?,?)", (org.id, org.name, iso(org.created_at)))
            return org

    def get_org(self, org_id: str) -> Org | None:
        rows = self._read("SELECT * FROM orgs WHERE id=?", (org_id,))
        return _org(rows[0]) if rows else None

    def list_orgs(self) -> list[Org]:
        return [_org(r) for r in self._read("SELECT * FROM orgs ORDER BY created_at")]

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, created_at) VALUES (?,?,?,?,?,?,?)",
                (key.id, key.org_id, key.name, key.prefix, key_hash, _JSON(list(key.scopes)), iso(key.created_at)),
            )

    def find_key(self, key_hash: str) -> ApiKey | None:
        rows = self._read("SELECT * FROM api_keys WHERE key_hash=? AND revoked_at IS NULL", (key_hash,))
        return _key(rows[0]) if rows else None

    def list_keys(self, org_id: str | None = None) -> list[ApiKey]:
        if org_id is None:
            rows = self._read("SELECT * FROM api_keys ORDER BY created_at")
        else:
            rows = self._read("SELECT * FROM api_keys WHERE org_id=? ORDER BY created_at", (org_id,))
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        with self._write() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (iso(at), key_id))
            return cur.rowcount == 1

    def count_active_keys(self) -> int:
        return self._read("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")[0][0]

    def server_secret(self) -> bytes:
        """This database's random secret, created by whichever process asks first."""
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('server_secret', ?)",
                         (secrets.token_hex(32),))
            return bytes.fromhex(conn.execute("SELECT value FROM meta WHERE key='server_secret'").fetchone()[0])

    # ---------------------------------------------------------------- accept path
    def accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
               idempotency: Idempotency | None = None) -> AcceptResult:
        """See Store.accept."""
        return self.submit_accept(org_id, jobs, dedup_since=dedup_since, idempotency=idempotency).result()

    def submit_accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
                      idempotency: Idempotency | None = None) -> Future[AcceptResult]:
        return self._accepts.submit(lambda conn: self._accept_in(conn, org_id, jobs, dedup_since, idempotency))

    def _accept_in(self, conn: sqlite3.Connection, org_id: str, jobs: Sequence[NewJob], dedup_since: datetime | None,
                   idempotency: Idempotency | None) -> AcceptResult:
        if idempotency is not None:  # the writer thread runs one accept at a time: no race
            seen = conn.execute("SELECT job_id, body_hash FROM idempotency_keys WHERE org_id=? AND key=?"
                                " AND created_at>=?", (org_id, idempotency.key, iso(idempotency.since))).fetchone()
            replay = replayed_job(tuple(seen) if seen else None, idempotency)
            if replay is not None:
                return AcceptResult(event_ids=[], job_ids=[], replay_of=replay)
        job_ids: list[str] = []
        event_rows: list[tuple[Any, ...]] = []
        job_rows: list[tuple[Any, ...]] = []
        by_client, by_hash = self._known_events(conn, org_id, jobs, dedup_since)
        event_ids, fresh_jobs = resolve_batch(jobs, by_client, by_hash, dedup_since is not None)
        stamps: dict[datetime, str | None] = {}  # a batch's events mostly share one or two times

        def stamp(ts: datetime) -> str | None:
            text = stamps.get(ts)
            if text is None:
                text = stamps[ts] = iso(ts)
            return text

        for job, fresh in fresh_jobs:
            event_rows.extend(
                (event.id, org_id, event.user_id, event.conv_id, event.agent_id, event.app_id, event.role,
                 event.kind, event.name, event.content, event.dia_id,
                 _JSON(event.metadata) if event.metadata else "{}",
                 stamp(event.occurred_at), stamp(event.received_at), job.id, event.client_event_id,
                 event.dedup_hash) for event in fresh)
            created = iso(job.created_at)
            job_rows.append((job.id, org_id, job.user_id, job.conv_id, job.kind, _JSON(job.params),
                             created, created, iso(job.updated_at)))
            job_ids.append(job.id)
        conn.executemany(
            "INSERT INTO events(id, org_id, user_id, conv_id, agent_id, app_id, role, kind, name, content,"
            " dia_id, metadata, occurred_at, received_at, job_id, client_event_id, dedup_hash, status)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'pending')", event_rows)
        conn.executemany(
            "INSERT INTO jobs(id, org_id, user_id, conv_id, kind, status, params, available_at, created_at,"
            " updated_at) VALUES (?,?,?,?,?,'pending',?,?,?,?)", job_rows)
        self._recent.add(org_id, ((row[16], row[0], event.received_at)
                                  for row, event in zip(event_rows, (e for _, f in fresh_jobs for e in f))
                                  if row[16] is not None))
        if idempotency is not None and job_ids:
            conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys(org_id, key, body_hash, job_id, created_at) VALUES (?,?,?,?,?)",
                (org_id, idempotency.key, idempotency.body_hash, job_ids[0], iso(idempotency.at)),
            )
        return AcceptResult(event_ids=event_ids, job_ids=job_ids)

    def _known_events(self, conn: sqlite3.Connection, org_id: str, jobs: Sequence[NewJob],
                      since: datetime | None) -> tuple[dict[str, str], dict[str, str]]:
        """Stored events matching the batch's client ids, and (within the window) its dedup hashes."""
        client_ids = list({e.client_event_id for j in jobs for e in j.events if e.client_event_id})
        by_client: dict[str, str] = {}
        for chunk in _chunks(client_ids, 500):
            marks = ",".join("?" * len(chunk))
            by_client.update(conn.execute(
                f"SELECT client_event_id, id FROM events WHERE org_id=? AND client_event_id IN ({marks})",
                (org_id, *chunk)).fetchall())
        if since is None:
            return by_client, {}
        hashes = {e.dedup_hash for j in jobs for e in j.events if e.dedup_hash}
        return by_client, self._recent.find(conn, org_id, hashes, since)

    # ---------------------------------------------------------------- jobs and events
    def get_job(self, org_id: str, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE +org_id=? AND id=?", (org_id, job_id))
        return _job(rows[0]) if rows else None

    def event_statuses(self, org_id: str, event_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(list(dict.fromkeys(event_ids)), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT id, status, fail_reason FROM events WHERE +org_id=? AND id IN ({marks})",
                                  (org_id, *chunk)):
                out[row["id"]] = (row["status"], row["fail_reason"])
        return out

    def get_events(self, org_id: str, event_ids: Sequence[str]) -> list[Event]:
        found: dict[str, Event] = {}
        for chunk in _chunks(list(dict.fromkeys(event_ids)), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT * FROM events WHERE +org_id=? AND id IN ({marks})", (org_id, *chunk)):
                found[row["id"]] = _event(row)
        return [found[i] for i in event_ids if i in found]

    # ---------------------------------------------------------------- the queue
    def lease(self, owner: str, now: datetime, lease_for_s: float, max_attempts: int) -> Lease | None:
        """Lease the oldest ready job whose conversation has no earlier unfinished job.

        A running job whose lease expired counts as ready again (its worker died); a job
        that has used up its attempts that way fails instead of running forever.
        """
        now_s = iso(now)
        with self._write() as conn:
            while True:
                row = conn.execute(
                    """
                    SELECT j.* FROM jobs j
                    WHERE j.status IN ('pending', 'running')  -- the jobs_ready index: not every job ever run
                      AND ((j.status = 'pending' AND j.available_at <= :now)
                           OR (j.status = 'running' AND j.lease_expires_at < :now))
                      AND NOT EXISTS (
                          SELECT 1 FROM jobs e
                          WHERE e.org_id = j.org_id AND e.user_id = j.user_id AND e.conv_id = j.conv_id
                            AND e.status IN ('pending', 'running') AND e.seq < j.seq)
                    ORDER BY j.seq LIMIT 1
                    """,
                    {"now": now_s},
                ).fetchone()
                if row is None:
                    return None
                if row["attempts"] >= max_attempts:
                    error = JobError("ingest_failed", "the job was abandoned by its worker too many times")
                    self._finish_failed(conn, row["id"], error, now_s)
                    continue
                token = secrets.token_hex(16)
                conn.execute(
                    "UPDATE jobs SET status='running', attempts=attempts+1, lease_owner=?, lease_token=?,"
                    " lease_expires_at=?, updated_at=? WHERE id=?",
                    (owner, token, iso(now + timedelta(seconds=lease_for_s)), now_s, row["id"]),
                )
                job = _job(row)
                job.status, job.attempts = "running", job.attempts + 1
                events = [_event(r) for r in conn.execute(
                    "SELECT * FROM events WHERE job_id=? ORDER BY id", (job.id,)).fetchall()]
                return Lease(job=job, events=events, token=token)

    def _holds(self, conn: sqlite3.Connection, lease: Lease) -> bool:
        row = conn.execute("SELECT lease_token, status FROM jobs WHERE id=?", (lease.job.id,)).fetchone()
        return row is not None and row["status"] == "running" and row["lease_token"] == lease.token

    def renew(self, lease: Lease, until: datetime) -> bool:
        with self._write() as conn:
            cur = conn.execute("UPDATE jobs SET lease_expires_at=? WHERE id=? AND lease_token=? AND status='running'",
                               (iso(until), lease.job.id, lease.token))
            return cur.rowcount == 1

    def retry_later(self, lease: Lease, error: JobError, at: datetime) -> bool:
        with self._write() as conn:
            if not self._holds(conn, lease):
                return False
            conn.execute(
                "UPDATE jobs SET status='pending', lease_owner=NULL, lease_token=NULL, lease_expires_at=NULL,"
                " available_at=?, error=?, updated_at=? WHERE id=?",
                (iso(at), _JSON(job_error_dict(error)), iso(utcnow()), lease.job.id),
            )
            return True

    def fail(self, lease: Lease, error: JobError) -> bool:
        with self._write() as conn:
            if not self._holds(conn, lease):
                return False
            self._finish_failed(conn, lease.job.id, error, iso(utcnow()))
            return True

    @staticmethod
    def _finish_failed(conn: sqlite3.Connection, job_id: str, error: JobError, now_s: str | None) -> None:
        conn.execute(
            "UPDATE jobs SET status='failed', lease_owner=NULL, lease_token=NULL, lease_expires_at=NULL,"
            " error=?, updated_at=? WHERE id=?",
            (_JSON(job_error_dict(error)), now_s, job_id),
        )
        conn.execute("UPDATE events SET status='failed', fail_reason=? WHERE job_id=? AND status='pending'",
                     (error.code, job_id))

    def complete(self, lease: Lease, outcome: JobOutcome) -> CommitResult:
        """Commit memories, vectors, lexical entries, event states and the job result together.

        Refused (STALE, nothing written) when the user's version moved since `outcome.basis`,
        or when a memory the outcome supersedes or cites is no longer active. The writer lock
        (`BEGIN IMMEDIATE`) already serializes commits, so the check needs no lock of its own.
        """
        try:
            return self._commit(lease, outcome)
        except _Stale:  # raised inside the committing transaction, which rolled back: nothing written
            return CommitResult.STALE

    def _commit(self, lease: Lease, outcome: JobOutcome) -> CommitResult:
        now_s = iso(utcnow())
        # Encode every row before taking the write lock: accepts wait while this holds it, and
        # the encoding (JSON, timestamps, hashes, vector bytes) was 40 % of the time inside.
        rows = [self._memory_row(new.memory, new.vector) for new in outcome.created]
        org_id, user_id = lease.job.org_id, lease.job.user_id
        started = time.perf_counter()
        with self._write() as conn:
            if not self._holds(conn, lease):
                return CommitResult.LOST
            if outcome.basis is not None and self._version(conn, org_id, user_id) != outcome.basis:
                return CommitResult.STALE  # nothing written yet
            for row in rows:
                self._insert_memory_row(conn, *row)
            for memory_id, event_ids in outcome.added_sources.items():
                self._add_sources(conn, org_id, memory_id, event_ids, now_s)
            for old_id in outcome.superseded:
                cur = conn.execute("UPDATE memories SET status='superseded', updated_at=? WHERE id=? AND +org_id=?"
                                   " AND status='active'", (now_s, old_id, org_id))
                if cur.rowcount != 1:
                    raise _Stale(old_id)  # retracted or superseded meanwhile
            if changes_active_memories(outcome):
                self._bump(conn, org_id, user_id)
            if outcome.episode_id and outcome.episode_event_ids:
                for chunk in _chunks(outcome.episode_event_ids, 500):
                    marks = ",".join("?" * len(chunk))
                    conn.execute(f"UPDATE events SET episode_id=? WHERE id IN ({marks})", (outcome.episode_id, *chunk))
                    conn.execute(
                        f"UPDATE memories SET details=json_set(details, '$.episode_id', ?) WHERE type='fact' AND id IN"
                        f" (SELECT memory_id FROM memory_sources WHERE event_id IN ({marks}))",
                        (outcome.episode_id, *chunk),
                    )
            if outcome.usage:
                self._add_usage(conn, org_id, now_s, outcome.usage)
            for event_id, reason in outcome.event_failures.items():
                conn.execute("UPDATE events SET status='failed', fail_reason=? WHERE id=? AND job_id=?",
                             (reason, event_id, lease.job.id))
                if reason == "content_rejected":
                    conn.execute("UPDATE events SET content=?, name=NULL, metadata='{}' WHERE id=? AND job_id=?",
                                 (WITHHELD_CONTENT, event_id, lease.job.id))
            conn.execute("UPDATE events SET status='completed' WHERE job_id=? AND status='pending'", (lease.job.id,))
            status = "failed" if outcome.error else "succeeded"
            if "stage_timings" in outcome.result:  # the writes above; the fsync of COMMIT is not in it
                outcome.result["stage_timings"]["commit"] = round(time.perf_counter() - started, 6)
            conn.execute(
                "UPDATE jobs SET status=?, result=?, error=?, lease_owner=NULL, lease_token=NULL,"
                " lease_expires_at=NULL, updated_at=? WHERE id=?",
                (status, None if outcome.error else _JSON(outcome.result),
                 _JSON(job_error_dict(outcome.error)) if outcome.error else None, now_s, lease.job.id),
            )
            return CommitResult.COMMITTED

    def user_version(self, org_id: str, user_id: str) -> int:
        rows = self._read("SELECT version FROM user_versions WHERE org_id=? AND user_id=?", (org_id, user_id or ""))
        return int(rows[0][0]) if rows else 0

    @staticmethod
    def _version(conn: sqlite3.Connection, org_id: str, user_id: str | None) -> int:
        row = conn.execute("SELECT version FROM user_versions WHERE org_id=? AND user_id=?",
                           (org_id, user_id or "")).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump(conn: sqlite3.Connection, org_id: str, user_id: str | None) -> None:
        conn.execute("INSERT INTO user_versions(org_id, user_id, version) VALUES (?, ?, 1)"
                     " ON CONFLICT(org_id, user_id) DO UPDATE SET version = version + 1", (org_id, user_id or ""))

    def _insert_memory(self, conn: sqlite3.Connection, m: Memory, vector: np.ndarray) -> None:
        self._insert_memory_row(conn, *self._memory_row(m, vector))

    @staticmethod
    def _memory_row(m: Memory, vector: np.ndarray) -> tuple[tuple[Any, ...], bytes, list[tuple[str, str]]]:
        """(the memories row, the vector blob, the memory_sources rows) of a memory, encoded."""
        row = (m.id, m.org_id, m.type, m.status, m.text, text_hash(m.text), m.key, m.user_id, m.agent_id, m.conv_id,
               m.app_id, _JSON(m.metadata), _JSON(m.categories), _JSON(m.details), _JSON(m.source_event_ids),
               iso(m.valid_at), m.job_id, iso(m.created_at), iso(m.updated_at))
        return row, np.asarray(vector, dtype=np.float32).tobytes(), [(m.id, e) for e in m.source_event_ids]

    @staticmethod
    def _insert_memory_row(conn: sqlite3.Connection, row: tuple[Any, ...], vector: bytes,
                           sources: list[tuple[str, str]]) -> None:
        rid = conn.execute(
            "INSERT INTO memories(id, org_id, type, status, text, text_hash, key, user_id, agent_id, conv_id, app_id,"
            " metadata, categories, details, source_event_ids, valid_at, job_id, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row).lastrowid
        conn.execute("INSERT INTO memory_vectors(rid, vec) VALUES (?, ?)", (rid, vector))
        conn.execute("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", (rid, row[4]))
        conn.executemany("INSERT OR IGNORE INTO memory_sources(memory_id, event_id) VALUES (?,?)", sources)

    def _add_sources(self, conn: sqlite3.Connection, org_id: str, memory_id: str, event_ids: list[str],
                     now_s: str | None) -> None:
        row = conn.execute("SELECT source_event_ids, details, status FROM memories WHERE +org_id=? AND id=?",
                           (org_id, memory_id)).fetchone()
        if row is None or row["status"] != "active":
            raise _Stale(memory_id)  # deleted, retracted or superseded meanwhile: the job must decide again
        sources = list(dict.fromkeys([*json.loads(row["source_event_ids"]), *event_ids]))
        details = json.loads(row["details"])
        if "source_event_ids" in details:
            details["source_event_ids"] = sources
        conn.execute("UPDATE memories SET source_event_ids=?, details=?, updated_at=? WHERE id=?",
                     (_JSON(sources), _JSON(details), now_s, memory_id))
        conn.executemany("INSERT OR IGNORE INTO memory_sources(memory_id, event_id) VALUES (?,?)",
                         [(memory_id, e) for e in event_ids])

    def enqueue_idle_episodes(self, idle_before: datetime, now: datetime) -> int:
        """Create an episode job for every conversation whose newest un-summarised turn is
        older than `idle_before` and which has no unfinished job, nor an episode job that
        failed since that turn (a provider outage must not re-queue it every sweep)."""
        now_s = iso(now)
        created = 0
        with self._write() as conn:
            rows = conn.execute(
                """
                SELECT org_id, user_id, conv_id, max(received_at) AS last_turn FROM events
                WHERE episode_id IS NULL AND status = 'completed'
                GROUP BY org_id, user_id, conv_id
                HAVING max(received_at) < ?
                """,
                (iso(idle_before),),
            ).fetchall()
            for row in rows:
                busy = conn.execute(
                    "SELECT 1 FROM jobs WHERE org_id=? AND user_id=? AND conv_id=? AND (status IN ('pending','running')"
                    " OR (kind='episode' AND status='failed' AND created_at>=?))",
                    (row["org_id"], row["user_id"], row["conv_id"], row["last_turn"]),
                ).fetchone()
                if busy:
                    continue
                conn.execute(
                    "INSERT INTO jobs(id, org_id, user_id, conv_id, kind, status, params, available_at, created_at, updated_at)"
                    " VALUES (?,?,?,?,'episode','pending','{}',?,?,?)",
                    ("job_" + secrets.token_hex(16), row["org_id"], row["user_id"], row["conv_id"], now_s, now_s, now_s),
                )
                created += 1
        return created

    def queue_depth(self) -> dict[str, int]:
        rows = self._read("SELECT status, count(*) AS n FROM jobs WHERE status IN ('pending','running') GROUP BY status")
        depth = {"pending": 0, "running": 0}
        depth.update({r["status"]: r["n"] for r in rows})
        return depth

    # ---------------------------------------------------------------- pipeline reads
    def unepisoded_events(self, org_id: str, user_id: str, conv_id: str) -> list[Event]:
        rows = self._read(
            "SELECT * FROM events WHERE org_id=? AND user_id=? AND conv_id=? AND episode_id IS NULL AND status='completed'"
            " ORDER BY id",
            (org_id, user_id, conv_id),
        )
        return [_event(r) for r in rows]

    def reconcile_candidates(self, org_id: str, user_id: str, keys: Sequence[str],
                             text_hashes: Sequence[str]) -> list[Memory]:
        found: dict[str, Memory] = {}
        for column, values in (("key", list(keys)), ("text_hash", list(text_hashes))):
            for chunk in _chunks(values, 500):
                marks = ",".join("?" * len(chunk))
                for row in self._read(
                    f"SELECT * FROM memories WHERE org_id=? AND user_id=? AND status='active' AND type='fact'"
                    f" AND {column} IN ({marks})", (org_id, user_id, *chunk)):
                    found[row["id"]] = _memory(row)
        return sorted(found.values(), key=lambda m: (m.created_at, m.id))  # as every store orders them

    def memories_citing(self, org_id: str, event_ids: Sequence[str]) -> list[Memory]:
        found: dict[int, Memory] = {}
        for chunk in _chunks(list(event_ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._read(
                f"SELECT * FROM memories WHERE +org_id=? AND status='active' AND id IN"
                f" (SELECT memory_id FROM memory_sources WHERE event_id IN ({marks}))", (org_id, *chunk)):
                found[row["rid"]] = _memory(row)
        return [found[rid] for rid in sorted(found)]  # oldest first, whatever plan SQLite chose

    # ---------------------------------------------------------------- memories
    def get_memory(self, org_id: str, memory_id: str) -> Memory | None:
        rows = self._read("SELECT * FROM memories WHERE +org_id=? AND id=?", (org_id, memory_id))
        return _memory(rows[0]) if rows else None

    def get_memories(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        out: dict[str, Memory] = {}
        for chunk in _chunks(list(memory_ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT * FROM memories WHERE +org_id=? AND id IN ({marks})", (org_id, *chunk)):
                out[row["id"]] = _memory(row)
        return out

    def delete_memory(self, org_id: str, memory_id: str, at: datetime) -> bool:
        """Facts are retracted (kept for their history); episodes are removed; an artifact is
        removed with all its versions (every row of its `root_id`)."""
        with self._write() as conn:
            row = conn.execute("SELECT rid, type, status, user_id, json_extract(details, '$.root_id') AS root_id"
                               " FROM memories WHERE +org_id=? AND id=?", (org_id, memory_id)).fetchone()
            if row is None or row["status"] == "retracted":
                return False
            self._bump(conn, org_id, row["user_id"])
            if row["type"] == "fact":
                conn.execute("UPDATE memories SET status='retracted', updated_at=? WHERE rid=?", (iso(at), row["rid"]))
                return True
            rows = [(row["rid"], memory_id)]
            if row["type"] == "artifact" and row["root_id"]:
                rows += [(r["rid"], r["id"]) for r in conn.execute(
                    "SELECT rid, id FROM memories WHERE org_id=? AND type='artifact' AND rid<>?"
                    " AND json_extract(details, '$.root_id')=?", (org_id, row["rid"], row["root_id"]))]
            for rid, mid in rows:
                conn.execute("DELETE FROM memory_vectors WHERE rid=?", (rid,))
                conn.execute("DELETE FROM memory_fts WHERE rowid=?", (rid,))
                conn.execute("DELETE FROM memory_sources WHERE memory_id=?", (mid,))
                conn.execute("DELETE FROM memories WHERE rid=?", (rid,))
            return True

    def supersede_memory(self, org_id: str, old_id: str, new: NewMemory, at: datetime) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT rid, user_id FROM memories WHERE +org_id=? AND id=? AND type='fact'"
                               " AND status='active'", (org_id, old_id)).fetchone()
            if row is None:
                return False
            self._insert_memory(conn, new.memory, new.vector)
            conn.execute("UPDATE memories SET status='superseded', updated_at=? WHERE rid=? AND status='active'",
                         (iso(at), row["rid"]))
            self._bump(conn, org_id, row["user_id"])
            return True

    def merge_memory_metadata(self, org_id: str, memory_id: str, metadata: Mapping[str, Any],
                              at: datetime) -> Memory | None:
        with self._write() as conn:
            row = conn.execute("SELECT * FROM memories WHERE +org_id=? AND id=? AND status<>'retracted'",
                               (org_id, memory_id)).fetchone()
            if row is None:
                return None
            merged = {**json.loads(row["metadata"]), **metadata}
            conn.execute("UPDATE memories SET metadata=?, updated_at=? WHERE rid=?",
                         (_JSON(merged), iso(at), row["rid"]))
            row = conn.execute("SELECT * FROM memories WHERE rid=?", (row["rid"],)).fetchone()
            return _memory(row)

    def memory_revisions(self, org_id: str, memory_id: str) -> list[Memory]:
        conn = self._conn()
        rows = conn.execute("SELECT * FROM memories WHERE +org_id=? AND id=?", (org_id, memory_id)).fetchall()
        if not rows:
            return []
        chain = [_memory(rows[0])]
        seen = {memory_id}
        while (back := chain[0].details.get("supersedes")) and back not in seen:  # older revisions
            row = conn.execute("SELECT * FROM memories WHERE +org_id=? AND id=?", (org_id, back)).fetchone()
            if row is None:
                break
            seen.add(back)
            chain.insert(0, _memory(row))
        while True:  # newer revisions
            row = conn.execute(
                "SELECT * FROM memories WHERE org_id=? AND json_extract(details, '$.supersedes')=?"
                " ORDER BY created_at, id LIMIT 1", (org_id, chain[-1].id)).fetchone()
            if row is None or row["id"] in seen:
                break
            seen.add(row["id"])
            chain.append(_memory(row))
        return chain

    # ---------------------------------------------------------------- usage counters
    def record_usage(self, org_id: str, at: datetime, counts: Mapping[str, int]) -> None:
        if not any(counts.values()):
            return
        with self._write() as conn:
            self._add_usage(conn, org_id, iso(at), counts)

    @staticmethod
    def _add_usage(conn: sqlite3.Connection, org_id: str, at_s: str | None, counts: Mapping[str, int]) -> None:
        day = (at_s or iso(utcnow()) or "")[:10]
        conn.executemany(
            "INSERT INTO usage_counters(org_id, day, name, value) VALUES (?,?,?,?)"
            " ON CONFLICT(org_id, day, name) DO UPDATE SET value = value + excluded.value",
            [(org_id, day, name, int(value)) for name, value in counts.items() if value])

    def usage_totals(self, org_id: str, since: datetime | None = None) -> dict[str, int]:
        rows = self._read("SELECT name, sum(value) AS total FROM usage_counters WHERE org_id=? AND day>=?"
                          " GROUP BY name", (org_id, (iso(since) or "")[:10]))
        return {r["name"]: int(r["total"]) for r in rows}

    def list_memories(self, org_id: str, where: Node, *, ascending: bool,
                      after: tuple[str, str] | None, limit: int) -> Page:
        params: list[Any] = [org_id]
        sql = f"SELECT * FROM memories m WHERE m.org_id=? AND {compile_filter(where, params)}"
        if after is not None:
            sql += " AND (m.created_at, m.id) " + (">" if ascending else "<") + " (?, ?)"
            params.extend(after)
        direction = "ASC" if ascending else "DESC"
        sql += f" ORDER BY m.created_at {direction}, m.id {direction} LIMIT ?"
        params.append(limit + 1)
        rows = self._read(sql, params)
        return Page(items=[_memory(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def dense_candidates(self, org_id: str, where: Node, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Exact cosine over every memory the filter admits (vectors are unit length).

        The filter is answered from the memories table alone (row ids, through its indexes);
        the vectors come from a per-process cache by row id, read from disk once."""
        rids = self._scope(org_id, where)
        if not rids.size:
            return []
        q = np.asarray(query, dtype=np.float32)
        found, scores = self._vectors.cosines(self._conn(), rids, q)
        if not found.size:
            return []
        return self._ranked(found, scores, _best(scores, k))

    def _scope(self, org_id: str, where: Node) -> np.ndarray:
        """The row ids of the memories `where` admits, ascending."""
        if isinstance(where, Cmp) and where.field == "id" and where.op == "in":
            # Search's exact cosine of lexical candidates: ids it has just seen, all cached.
            known = self._rows.rids(org_id, list(where.value))
            if known is not None:
                return np.sort(np.array(known, dtype=np.int64))
        params: list[Any] = [org_id]
        # likely(): an org holds most rows, so the planner should prefer any other index
        # (an id list, a user); group_concat: one string, not a Python row per memory.
        listed = self._read(f"SELECT group_concat(m.rid) FROM memories m WHERE likely(m.org_id=?)"
                            f" AND {compile_filter(where, params)}", params)[0][0]
        # np.fromstring's text mode (not deprecated, unlike its binary mode): 7x faster than split
        return np.fromstring(listed, dtype=np.int64, sep=",") if listed else np.empty(0, dtype=np.int64)

    def _small_scope(self, org_id: str, where: Node, words: list[str]) -> ScopeStatistics | None:
        """Term counts of the scope when it is small enough to score in process, else None."""
        rids = self._scope(org_id, where)
        if rids.size > self.scoped_lexical_limit:
            return None
        terms = ANALYZER.query(words)
        # A search asks for term statistics, then BM25, of the same scope and words: the
        # second call reuses the first's counts when the scope has not changed between them.
        last = getattr(self._local, "scope", None)
        if last is None or not last.same(rids, terms):
            last = self._local.scope = ScopeStatistics(rids, self._rows.documents(self._conn(), rids.tolist()), terms)
        return last

    def lexical_candidates(self, org_id: str, where: Node, query: str, k: int) -> list[tuple[str, float]]:
        """BM25 over the memories the filter admits; scores are positive, higher is better."""
        words = query_words(query)
        if not words:
            return []
        scope = self._small_scope(org_id, where, words)
        if scope is not None:
            scores = scope.bm25()
            matched = np.flatnonzero(scores > 0)
            return self._ranked(scope.rids, scores, matched[_best(scores[matched], k)])
        params: list[Any] = [fts_query(query), org_id]
        rows = self._read(
            f"SELECT m.id, -bm25(memory_fts) AS s FROM memory_fts CROSS JOIN memories m ON m.rid = memory_fts.rowid"
            f" WHERE memory_fts MATCH ? AND m.org_id=? AND {compile_filter(where, params)}"
            f" ORDER BY bm25(memory_fts) LIMIT ?", [*params, k])
        return [(r[0], float(r[1])) for r in rows]

    def document_frequencies(self, org_id: str, where: Node, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """How many memories the filter admits, and in how many of them each term occurs
        (matched as the lexical index matches it: stemmed, case-folded)."""
        words = {term: query_words(term)[:1] for term in terms}  # a term is one word
        scope = self._small_scope(org_id, where, [w for found in words.values() for w in found])
        if scope is not None:
            df = scope.document_frequencies()
            return scope.size, {t: df[ANALYZER.term_id(w[0])] if w else 0 for t, w in words.items()}
        params: list[Any] = [org_id]
        condition = compile_filter(where, params)
        total = self._read(f"SELECT count(*) FROM memories m WHERE m.org_id=? AND {condition}", params)[0][0]
        counts: dict[str, int] = {}
        for term in terms:
            match = fts_query(term)
            if not match or not total:
                counts[term] = 0
                continue
            # CROSS JOIN keeps the index's match list as the outer loop (one FTS query), not
            # one FTS probe per memory of the scope.
            counts[term] = self._read(
                f"SELECT count(*) FROM memory_fts CROSS JOIN memories m ON m.rid = memory_fts.rowid"
                f" WHERE memory_fts MATCH ? AND m.org_id=? AND {condition}", [match, *params])[0][0]
        return total, counts

    def _ranked(self, rids: np.ndarray, scores: np.ndarray, top: np.ndarray) -> list[tuple[str, float]]:
        """(memory id, score) of the rows at positions `top`, in that order."""
        chosen = rids[top].tolist()
        ids = self._rows.ids(self._conn(), chosen)
        return [(ids[rid], float(scores[i])) for rid, i in zip(chosen, top) if rid in ids]


# -------------------------------------------------------------------- helpers
class _Stale(Exception):
    """Raised inside a committing transaction to roll it back: a decision no longer holds."""


class _VectorCache:
    """Memory vectors by row id, for exact scoring without reading every blob on every query.

    Always consistent with the file, across processes: a vector is written once with its
    memory and never changed, and a row id is never reused (AUTOINCREMENT), so a cached row is
    either still right or no longer admitted by any filter. Rows not yet cached are read on
    first use. Past `max_rows` the cache starts over (a user with 10,000 memories takes 15 MB
    at 384 dimensions).
    """

    UNKNOWN, NO_VECTOR = -2, -1

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._clear(0)

    def _clear(self, dim: int) -> None:
        self._dim = dim
        self._slot = np.full(1024, self.UNKNOWN, dtype=np.int64)  # rid -> row of _matrix
        self._matrix = np.zeros((1024, dim), dtype=np.float32)
        self._used = 0

    def cosines(self, conn: sqlite3.Connection, rids: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the rids that have a vector of the query's dimensions, their dot products with it)."""
        found, slots, matrix, used = self._slots(conn, rids, query.shape[0])
        if slots.size * 4 > used:
            # A large share of the cache (an org-wide scope): one pass over all of it is cheaper
            # than copying a gigabyte of rows out first.
            return found, (matrix[:used] @ query)[slots]
        return found, matrix[slots] @ query

    def _slots(self, conn: sqlite3.Connection, rids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        with self._lock:
            if dim != self._dim:
                self._clear(dim)
            self._fit(rids)
            missing = rids[self._slot[rids] == self.UNKNOWN]
            if missing.size and self._used + missing.size > self.max_rows:
                self._clear(dim)
                self._fit(rids)
                missing = rids
            if missing.size:
                self._load(conn, missing.tolist())
            slots = self._slot[rids]
            matrix, used = self._matrix, self._used  # a grown matrix is a new array: this one stays valid
        keep = slots >= 0
        return rids[keep], slots[keep], matrix, used

    def _fit(self, rids: np.ndarray) -> None:
        if rids.size and rids.max() >= self._slot.size:  # grow by doubling
            grown = np.full(max(int(rids.max()) + 1, 2 * self._slot.size), self.UNKNOWN, dtype=np.int64)
            grown[:self._slot.size] = self._slot
            self._slot = grown

    def _load(self, conn: sqlite3.Connection, rids: list[int]) -> None:
        self._slot[rids] = self.NO_VECTOR
        for chunk in _chunks(rids, 500):
            marks = ",".join("?" * len(chunk))
            rows = [(rid, vec) for rid, vec in conn.execute(
                f"SELECT rid, vec FROM memory_vectors WHERE rid IN ({marks})", chunk) if len(vec) == 4 * self._dim]
            if not rows:
                continue
            need = self._used + len(rows)
            if need > self._matrix.shape[0]:  # grow by doubling: rows already handed out stay valid
                grown = np.zeros((max(need, 2 * self._matrix.shape[0]), self._dim), dtype=np.float32)
                grown[:self._used] = self._matrix[:self._used]
                self._matrix = grown
            self._matrix[self._used:need] = np.frombuffer(b"".join(vec for _, vec in rows),
                                                          dtype=np.float32).reshape(len(rows), self._dim)
            self._slot[[rid for rid, _ in rows]] = np.arange(self._used, need)
            self._used = need


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first (ties: lower position first)."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= scores.size:
        return np.argsort(-scores, kind="stable")
    # Linear, where a full sort of 1M scores takes 0.2 s: the k-th best score, then everything
    # above it and the first positions that tie with it.
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    above = np.flatnonzero(scores > kth)
    chosen = np.concatenate([above, np.flatnonzero(scores == kth)[:k - above.size]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def fts_query(text: str) -> str:
    """Turn free text into an FTS5 OR-query of quoted tokens (no FTS syntax reaches SQLite)."""
    return " OR ".join(f'"{t}"' for t in query_words(text))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _org(row: sqlite3.Row) -> Org:
    return Org(id=row["id"], name=row["name"], created_at=parse_iso(row["created_at"]))


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(id=row["id"], org_id=row["org_id"], name=row["name"], prefix=row["prefix"],
                  scopes=tuple(json.loads(row["scopes"])), created_at=parse_iso(row["created_at"]),
                  revoked_at=parse_iso(row["revoked_at"]))


def _job(row: sqlite3.Row) -> Job:
    error = _loads(row["error"])
    return Job(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], conv_id=row["conv_id"], kind=row["kind"],
        status=row["status"], created_at=parse_iso(row["created_at"]), updated_at=parse_iso(row["updated_at"]),
        params=json.loads(row["params"]), attempts=row["attempts"], result=_loads(row["result"]),
        error=JobError(code=error["code"], message=error["message"], type=error.get("type", "ingest_error"))
        if error else None,
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], conv_id=row["conv_id"], role=row["role"],
        kind=row["kind"], content=row["content"], occurred_at=parse_iso(row["occurred_at"]),
        received_at=parse_iso(row["received_at"]), job_id=row["job_id"], agent_id=row["agent_id"],
        app_id=row["app_id"], name=row["name"], dia_id=row["dia_id"], metadata=json.loads(row["metadata"]),
        client_event_id=row["client_event_id"], dedup_hash=row["dedup_hash"], status=row["status"],
        fail_reason=row["fail_reason"],
    )


def _memory(row: sqlite3.Row) -> Memory:
    return Memory(
        id=row["id"], org_id=row["org_id"], type=row["type"], text=row["text"], user_id=row["user_id"],
        conv_id=row["conv_id"], agent_id=row["agent_id"], app_id=row["app_id"], status=row["status"],
        metadata=json.loads(row["metadata"]), categories=json.loads(row["categories"]),
        details=json.loads(row["details"]), key=row["key"], valid_at=parse_iso(row["valid_at"]),
        source_event_ids=json.loads(row["source_event_ids"]), job_id=row["job_id"],
        created_at=parse_iso(row["created_at"]), updated_at=parse_iso(row["updated_at"]),
    )
