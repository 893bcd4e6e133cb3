"""The scale-out store: PostgreSQL with pgvector, shared by many API and worker processes.

Same protocol and same behaviour as the embedded store (the conformance suite runs one set
of tests on both); what differs is how the rules are made safe when many processes on many
machines share one database:

- The queue: a lease is `SELECT … FOR UPDATE SKIP LOCKED` on the oldest ready job whose
  conversation has no earlier unfinished job, then an UPDATE in the same transaction. The
  accept transaction takes a per-conversation advisory lock before it draws the job's `seq`,
  so within a conversation `seq` order is commit order and a later job can never be leased
  while an earlier one is still invisible to the leasing worker.
- Wake-ups: accepting work NOTIFYs `engram_work` (idle workers wake at once) and ending a job
  NOTIFYs `engram_job_done` with its id (a `wait=true` request in any API process returns
  the moment the worker commits). `subscribe` delivers both to a callback.
- Commit together: memories (with their vector and full-text entry, which live in the same
  row), sources, event states and the job result land in one transaction that first locks
  the job row and checks the lease token, then locks the user's `user_versions` row and
  checks the version the job reconciled against (base.CommitResult), so commits, deletes and
  text PATCHes of one user serialize there — always in that order (job row, version row,
  memory rows by id), so they cannot deadlock one another.
- Search: user-scoped dense queries are scored exactly over the filtered set (a materialised
  CTE, so the planner cannot answer them from the HNSW index with post-filtering); org-wide
  ones use the HNSW index with pgvector's iterative scan. The lexical side is PostgreSQL
  full-text search (english stemming) scored with BM25 in SQL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from engram.domain.filters import And, Cmp, Node, equality_value
from engram.domain.records import ApiKey, Event, Job, JobError, Memory, Org, parse_iso, utcnow
from engram.domain.text import query_words, text_hash
from engram.store.base import (
    JOB_ENDED, WORK_READY, AcceptResult, CommitResult, JobOutcome, Lease, NewJob, NewMemory, Page,
    WITHHELD_CONTENT, Idempotency, changes_active_memories, job_error_dict, replayed_job, resolve_batch,
)
from engram.store.postgres_filters import compile_filter

log = logging.getLogger("engram.store.postgres")

# Every column a Memory needs; never the vector, the tsvector or metadata's binary copy.
_MEMORY = ("m.id, m.org_id, m.type, m.status, m.text, m.key, m.user_id, m.agent_id, m.conv_id, m.app_id, m.metadata,"
           " m.categories, m.details, m.source_event_ids, m.valid_at, m.job_id, m.created_at, m.updated_at")

WORK_CHANNEL = "engram_work"
JOB_DONE_CHANNEL = "engram_job_done"
HNSW_DIM = 384  # the dimension the migration's HNSW index covers (the default embedder)
HNSW_MAX_K = 200  # deeper org-wide queries are scored exactly (the index's ef_search would not reach)
BM25_K1, BM25_B = 1.2, 0.75  # the constants SQLite's FTS5 uses

_MIGRATION_LOCK = 0x656E6772616D  # "engram": one migrator at a time
_SWEEP_LOCK = 0x656E6772616E  # one idle-conversation sweep at a time


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered SQL files of engram/store/migrations/postgres, in order."""
    found = []
    for entry in resources.files("engram.store.migrations").joinpath("postgres").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


class SchemaOutOfDate(Exception):
    """The database lacks migrations this engram needs; `engram migrate` applies them."""


class _ClientIdConflict(Exception):
    """Another transaction stored the same client event id first; the accept is retried."""


class _Stale(Exception):
    """Raised inside a committing transaction to roll it back: a decision no longer holds."""


class _Unchanged(Exception):
    """Raised inside a transaction to roll back what it wrote: there was nothing to change."""


class PostgresStore:
    """Thread-safe: a connection pool shared by the threads of one process."""

    def __init__(self, url: str, *, pool_size: int = 10, name: str = "engram", connect_timeout_s: float = 15.0) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max(2, pool_size), name=name, open=True, timeout=30.0,
            kwargs={"autocommit": True, "row_factory": dict_row}, configure=_configure,
        )
        try:
            self._pool.wait(timeout=connect_timeout_s)  # an unreachable database fails start-up, not the first request
        except BaseException:
            self._pool.close()
            raise
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._iterative_scan: bool | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "PostgresStore":
        return cls(url, **kwargs)

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def migrate(self) -> list[str]:
        """Apply every numbered migration not yet applied, each in its own transaction.
        Safe to run from several processes at once: one migrates, the others wait."""
        applied: list[str] = []
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS engram_migrations (version integer PRIMARY KEY,"
                    " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {r["version"] for r in conn.execute("SELECT version FROM engram_migrations")}
                for migration in migrations():
                    if migration.version in done:
                        continue
                    with conn.transaction():
                        conn.execute(migration.sql)  # type: ignore[arg-type]  # no parameters: many statements
                        conn.execute("INSERT INTO engram_migrations(version, name) VALUES (%s, %s)",
                                     (migration.version, migration.name))
                    applied.append(f"{migration.version:04d}_{migration.name}")
                    log.info("applied migration %04d_%s", migration.version, migration.name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        return applied

    def pending_migrations(self) -> list[str]:
        rows = self._read("SELECT to_regclass('engram_migrations') IS NOT NULL AS present")
        done: set[int] = set()
        if rows[0]["present"]:
            done = {r["version"] for r in self._read("SELECT version FROM engram_migrations")}
        return [f"{m.version:04d}_{m.name}" for m in migrations() if m.version not in done]

    def check_schema(self) -> None:
        pending = self.pending_migrations()
        if pending:
            raise SchemaOutOfDate(f"the database needs migration(s) {', '.join(pending)}: run `engram migrate`"
                                  " (or start with ENGRAM_MIGRATE_ON_START=true)")

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
        self._pool.close()

    def recover_abandoned_leases(self) -> int:
        """Hand back every running job. Only safe when no worker is alive anywhere; with
        PostgreSQL, expired leases are taken back by `lease` instead."""
        now = utcnow()
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET status='pending', lease_owner=NULL, lease_token=NULL, lease_expires_at=NULL,"
                        " available_at=%s, updated_at=%s WHERE status='running'", (now, now))
            return cur.rowcount

    # ---------------------------------------------------------------- notifications
    def subscribe(self, callback: Callable[[str, str], None]) -> bool:
        """Call `callback(kind, payload)` from a background thread: (WORK_READY, "") when
        work was accepted or unblocked in any process, (JOB_ENDED, job_id) when a job ended."""
        with self._listener_lock:
            if self._listener is None:
                self._listener = _Listener(self.url)
                self._listener.start()
            listener = self._listener
        listener.add(callback)
        listener.ready.wait(10.0)
        return True

    # ---------------------------------------------------------------- orgs and keys
    def ensure_org(self, name: str, org_id: str | None = None) -> Org:
        rows = self._read("SELECT * FROM orgs WHERE name=%s", (name,))
        if rows:
            return _org(rows[0])
        with self._tx() as cur:
            cur.execute("INSERT INTO orgs(id, name, created_at) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                        (org_id or name, name, utcnow()))
            row = cur.execute("SELECT * FROM orgs WHERE name=%s", (name,)).fetchone()
        if row is None:  # the id was taken by an org of another name
            raise ValueError(f"org id {org_id or name!r} is in use")
        return _org(row)

    def get_org(self, org_id: str) -> Org | None:
        rows = self._read("SELECT * FROM orgs WHERE id=%s", (org_id,))
        return _org(rows[0]) if rows else None

    def list_orgs(self) -> list[Org]:
        return [_org(r) for r in self._read("SELECT * FROM orgs ORDER BY created_at, id")]

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, created_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (key.id, key.org_id, key.name, key.prefix, key_hash, Json(list(key.scopes)), key.created_at))

    def find_key(self, key_hash: str) -> ApiKey | None:
        rows = self._read("SELECT * FROM api_keys WHERE key_hash=%s AND revoked_at IS NULL", (key_hash,))
        return _key(rows[0]) if rows else None

    def list_keys(self, org_id: str | None = None) -> list[ApiKey]:
        if org_id is None:
            rows = self._read("SELECT * FROM api_keys ORDER BY created_at, id")
        else:
            rows = self._read("SELECT * FROM api_keys WHERE org_id=%s ORDER BY created_at, id", (org_id,))
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        with self._tx() as cur:
            cur.execute("UPDATE api_keys SET revoked_at=%s WHERE id=%s AND revoked_at IS NULL", (at, key_id))
            return cur.rowcount == 1

    def count_active_keys(self) -> int:
        return self._read("SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL")[0]["n"]

    def server_secret(self) -> bytes:
        """This database's random secret, created by whichever process asks first."""
        with self._pool.connection() as conn:
            conn.execute("INSERT INTO server_secrets(name, value) VALUES ('server_secret', %s)"
                         " ON CONFLICT (name) DO NOTHING", (secrets.token_bytes(32),))
            row = conn.execute("SELECT value FROM server_secrets WHERE name='server_secret'").fetchone()
        return bytes(row["value"])

    # ---------------------------------------------------------------- accept path
    def accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
               idempotency: Idempotency | None = None) -> AcceptResult:
        """See Store.accept."""
        for attempt in range(5):
            try:
                return self._accept(org_id, jobs, dedup_since, idempotency)
            except _ClientIdConflict:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _accept(self, org_id: str, jobs: Sequence[NewJob], since: datetime | None,
                idempotency: Idempotency | None) -> AcceptResult:
        job_ids: list[str] = []
        event_rows: list[tuple[Any, ...]] = []
        job_rows: list[tuple[Any, ...]] = []
        with self._tx() as cur:
            if idempotency is not None:
                # One key's requests serialise here, so two of them never both create a job.
                cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))",
                            (f"idempotency\x1f{org_id}\x1f{idempotency.key}",))
                seen = cur.execute("SELECT job_id, body_hash FROM idempotency_keys WHERE org_id=%s AND key=%s"
                                   " AND created_at>=%s", (org_id, idempotency.key, idempotency.since)).fetchone()
                replay = replayed_job((seen["job_id"], seen["body_hash"]) if seen else None, idempotency)
                if replay is not None:
                    return AcceptResult(event_ids=[], job_ids=[], replay_of=replay)
            # Conversation locks, in one global order (no deadlock between two batches):
            # they make dedup race-free across API processes and seq order = commit order.
            keys = sorted({_conv_lock(org_id, j.job.user_id, j.job.conv_id) for j in jobs})
            cur.executemany("SELECT pg_advisory_xact_lock(%s)", [(k,) for k in keys])
            by_client, by_hash = self._known_events(cur, org_id, jobs, since)
            event_ids, fresh_jobs = resolve_batch(jobs, by_client, by_hash, since is not None)
            for job, fresh in fresh_jobs:
                event_rows.extend(
                    (event.id, org_id, event.user_id, event.conv_id, event.agent_id, event.app_id, event.role,
                     event.kind, event.name, event.content, event.dia_id, Json(event.metadata),
                     event.occurred_at, event.received_at, job.id, event.client_event_id, event.dedup_hash)
                    for event in fresh)
                job_rows.append((job.id, org_id, job.user_id, job.conv_id, job.kind, Json(job.params),
                                 job.created_at, job.created_at, job.updated_at))
                job_ids.append(job.id)
            if event_rows:
                cur.executemany(
                    "INSERT INTO events(id, org_id, user_id, conv_id, agent_id, app_id, role, kind, name, content,"
                    " dia_id, metadata, occurred_at, received_at, job_id, client_event_id, dedup_hash, status)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'pending')"
                    " ON CONFLICT DO NOTHING", event_rows)
                with_client_id = [r[0] for r in event_rows if r[15] is not None]
                if with_client_id:
                    stored = cur.execute("SELECT count(*) AS n FROM events WHERE id = ANY(%s)",
                                         (with_client_id,)).fetchone()
                    if stored is None or stored["n"] != len(with_client_id):
                        raise _ClientIdConflict()
            if job_rows:
                cur.executemany(
                    "INSERT INTO jobs(id, org_id, user_id, conv_id, kind, status, params, available_at, created_at,"
                    " updated_at) VALUES (%s,%s,%s,%s,%s,'pending',%s,%s,%s,%s)", job_rows)
                cur.execute("SELECT pg_notify(%s, '')", (WORK_CHANNEL,))
            if idempotency is not None and job_ids:
                cur.execute(
                    "INSERT INTO idempotency_keys(org_id, key, body_hash, job_id, created_at) VALUES (%s,%s,%s,%s,%s)"
                    " ON CONFLICT (org_id, key) DO UPDATE SET body_hash=excluded.body_hash, job_id=excluded.job_id,"
                    " created_at=excluded.created_at",
                    (org_id, idempotency.key, idempotency.body_hash, job_ids[0], idempotency.at))
        return AcceptResult(event_ids=event_ids, job_ids=job_ids)

    @staticmethod
    def _known_events(cur: psycopg.Cursor[dict[str, Any]], org_id: str, jobs: Sequence[NewJob],
                      since: datetime | None) -> tuple[dict[str, str], dict[str, str]]:
        client_ids = list({e.client_event_id for j in jobs for e in j.events if e.client_event_id})
        hashes = list({e.dedup_hash for j in jobs for e in j.events if e.dedup_hash}) if since is not None else []
        by_client: dict[str, str] = {}
        by_hash: dict[str, str] = {}
        if client_ids:
            for row in cur.execute("SELECT client_event_id, id FROM events WHERE org_id=%s AND client_event_id = ANY(%s)",
                                   (org_id, client_ids)):
                by_client[row["client_event_id"]] = row["id"]
        if hashes:
            for row in cur.execute(
                    "SELECT DISTINCT ON (dedup_hash) dedup_hash, id FROM events WHERE org_id=%s AND dedup_hash = ANY(%s)"
                    " AND received_at >= %s ORDER BY dedup_hash, received_at, id", (org_id, hashes, since)):
                by_hash[row["dedup_hash"]] = row["id"]
        return by_client, by_hash

    # ---------------------------------------------------------------- jobs and events
    def get_job(self, org_id: str, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE org_id=%s AND id=%s", (org_id, job_id))
        return _job(rows[0]) if rows else None

    def event_statuses(self, org_id: str, event_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        rows = self._read("SELECT id, status, fail_reason FROM events WHERE org_id=%s AND id = ANY(%s)",
                          (org_id, list(dict.fromkeys(event_ids))))
        return {r["id"]: (r["status"], r["fail_reason"]) for r in rows}

    def get_events(self, org_id: str, event_ids: Sequence[str]) -> list[Event]:
        rows = self._read("SELECT * FROM events WHERE org_id=%s AND id = ANY(%s)",
                          (org_id, list(dict.fromkeys(event_ids))))
        found = {r["id"]: _event(r) for r in rows}
        return [found[i] for i in event_ids if i in found]

    # ---------------------------------------------------------------- the queue
    _LEASE_SQL = """
        SELECT j.* FROM jobs j
        WHERE j.status IN ('pending', 'running')
          AND ((j.status = 'pending' AND j.available_at <= %(now)s)
               OR (j.status = 'running' AND j.lease_expires_at < %(now)s))
          AND NOT EXISTS (
              SELECT 1 FROM jobs e
              WHERE e.org_id = j.org_id AND e.user_id = j.user_id AND e.conv_id = j.conv_id
                AND e.status IN ('pending', 'running') AND e.seq < j.seq)
        ORDER BY j.seq
        LIMIT 1
        FOR UPDATE OF j SKIP LOCKED
    """

    def lease(self, owner: str, now: datetime, lease_for_s: float, max_attempts: int) -> Lease | None:
        """Lease the oldest ready job whose conversation has no earlier unfinished job.

        Rows another worker is leasing right now are skipped, never waited for. A running
        job whose lease expired is ready again; one that used up its attempts that way fails.
        """
        with self._tx() as cur:
            while True:
                row = cur.execute(self._LEASE_SQL, {"now": now}).fetchone()
                if row is None:
                    return None
                if row["attempts"] >= max_attempts:
                    error = JobError("ingest_failed", "the job was abandoned by its worker too many times")
                    self._finish_failed(cur, row["id"], error, now)
                    continue
                token = secrets.token_hex(16)
                leased = cur.execute(
                    "UPDATE jobs SET status='running', attempts=attempts+1, lease_owner=%s, lease_token=%s,"
                    " lease_expires_at=%s, updated_at=%s WHERE seq=%s RETURNING *",
                    (owner, token, now + timedelta(seconds=lease_for_s), now, row["seq"])).fetchone()
                assert leased is not None
                job = _job(leased)
                events = [_event(r) for r in cur.execute(
                    "SELECT * FROM events WHERE job_id=%s ORDER BY id", (job.id,)).fetchall()]
                return Lease(job=job, events=events, token=token)

    @staticmethod
    def _holds(cur: psycopg.Cursor[dict[str, Any]], lease: Lease) -> bool:
        row = cur.execute("SELECT lease_token, status FROM jobs WHERE id=%s FOR UPDATE", (lease.job.id,)).fetchone()
        return row is not None and row["status"] == "running" and row["lease_token"] == lease.token

    def renew(self, lease: Lease, until: datetime) -> bool:
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET lease_expires_at=%s WHERE id=%s AND lease_token=%s AND status='running'",
                        (until, lease.job.id, lease.token))
            return cur.rowcount == 1

    def retry_later(self, lease: Lease, error: JobError, at: datetime) -> bool:
        with self._tx() as cur:
            if not self._holds(cur, lease):
                return False
            cur.execute(
                "UPDATE jobs SET status='pending', lease_owner=NULL, lease_token=NULL, lease_expires_at=NULL,"
                " available_at=%s, error=%s, updated_at=%s WHERE id=%s",
                (at, Json(job_error_dict(error)), utcnow(), lease.job.id))
            return True

    def fail(self, lease: Lease, error: JobError) -> bool:
        with self._tx() as cur:
            if not self._holds(cur, lease):
                return False
            self._finish_failed(cur, lease.job.id, error, utcnow())
            return True

    @staticmethod
    def _finish_failed(cur: psycopg.Cursor[dict[str, Any]], job_id: str, error: JobError, now: datetime) -> None:
        cur.execute(
            "UPDATE jobs SET status='failed', lease_owner=NULL, lease_token=NULL, lease_expires_at=NULL,"
            " error=%s, updated_at=%s WHERE id=%s", (Json(job_error_dict(error)), now, job_id))
        cur.execute("UPDATE events SET status='failed', fail_reason=%s WHERE job_id=%s AND status='pending'",
                    (error.code, job_id))
        PostgresStore._announce_end(cur, job_id)

    @staticmethod
    def _announce_end(cur: psycopg.Cursor[dict[str, Any]], job_id: str) -> None:
        """Delivered at commit: waiters learn the job ended; idle workers learn that the
        conversation's next job (if any) is unblocked."""
        cur.execute("SELECT pg_notify(%s, %s)", (JOB_DONE_CHANNEL, job_id))
        cur.execute(
            "SELECT pg_notify(%s, '') FROM jobs j WHERE j.id=%s AND EXISTS (SELECT 1 FROM jobs n"
            " WHERE n.org_id=j.org_id AND n.user_id=j.user_id AND n.conv_id=j.conv_id AND n.seq > j.seq"
            " AND n.status='pending')", (WORK_CHANNEL, job_id))

    def complete(self, lease: Lease, outcome: JobOutcome) -> CommitResult:
        """Commit memories (vector and full-text entry in the same rows), sources, event
        states and the job result together, after checking the lease token under a row lock
        and, under the user's version row lock, the version the outcome was reconciled
        against. STALE (nothing written) when it moved or when a memory the outcome
        supersedes or cites is no longer active."""
        try:
            return self._commit(lease, outcome)
        except _Stale:  # raised inside the committing transaction, which rolled back: nothing written
            return CommitResult.STALE

    def _commit(self, lease: Lease, outcome: JobOutcome) -> CommitResult:
        now = utcnow()
        started = time.perf_counter()
        org_id, job_id = lease.job.org_id, lease.job.id
        with self._tx() as cur:
            if not self._holds(cur, lease):
                return CommitResult.LOST
            bump = changes_active_memories(outcome)
            if outcome.basis is not None or bump:
                before = self._lock_version(cur, org_id, lease.job.user_id, bump)
                if outcome.basis is not None and before != outcome.basis:
                    raise _Stale()  # rolls back the bump; nothing else was written
            if outcome.created:
                self._insert_memories(cur, outcome.created)
            # Rows other jobs may touch too are updated in id order: no deadlock between jobs.
            for memory_id in sorted(outcome.added_sources):
                self._add_sources(cur, org_id, memory_id, outcome.added_sources[memory_id], now)
            for old_id in sorted(outcome.superseded):
                cur.execute("UPDATE memories SET status='superseded', updated_at=%s WHERE id=%s AND org_id=%s"
                            " AND status='active'", (now, old_id, org_id))
                if cur.rowcount != 1:
                    raise _Stale()  # retracted or superseded meanwhile
            if outcome.episode_id and outcome.episode_event_ids:
                self._mark_episode(cur, org_id, outcome.episode_id, outcome.episode_event_ids)
            if outcome.usage:
                self._add_usage(cur, org_id, now, outcome.usage)
            if outcome.event_failures:
                cur.executemany("UPDATE events SET status='failed', fail_reason=%s WHERE id=%s AND job_id=%s",
                                [(reason, event_id, job_id) for event_id, reason in outcome.event_failures.items()])
                cur.executemany("UPDATE events SET content=%s, name=NULL, metadata='{}' WHERE id=%s AND job_id=%s",
                                [(WITHHELD_CONTENT, event_id, job_id)
                                 for event_id, reason in outcome.event_failures.items() if reason == "content_rejected"])
            cur.execute("UPDATE events SET status='completed' WHERE job_id=%s AND status='pending'", (job_id,))
            status = "failed" if outcome.error else "succeeded"
            if "stage_timings" in outcome.result:  # the writes above; the COMMIT itself is not in it
                outcome.result["stage_timings"]["commit"] = round(time.perf_counter() - started, 6)
            cur.execute(
                "UPDATE jobs SET status=%s, result=%s, error=%s, lease_owner=NULL, lease_token=NULL,"
                " lease_expires_at=NULL, updated_at=%s WHERE id=%s",
                (status, None if outcome.error else Json(outcome.result),
                 Json(job_error_dict(outcome.error)) if outcome.error else None, now, job_id))
            self._announce_end(cur, job_id)
            return CommitResult.COMMITTED

    def user_version(self, org_id: str, user_id: str) -> int:
        rows = self._read("SELECT version FROM user_versions WHERE org_id=%s AND user_id=%s", (org_id, user_id or ""))
        return int(rows[0]["version"]) if rows else 0

    @staticmethod
    def _lock_version(cur: psycopg.Cursor[dict[str, Any]], org_id: str, user_id: str | None, bump: bool) -> int:
        """Lock the user's version row (creating it at 0), move it when `bump`; the version
        before. Concurrent callers for one user wait here for each other's commit."""
        step = 1 if bump else 0
        row = cur.execute(
            "INSERT INTO user_versions(org_id, user_id, version) VALUES (%s, %s, %s)"
            " ON CONFLICT (org_id, user_id) DO UPDATE SET version = user_versions.version + %s RETURNING version",
            (org_id, user_id or "", step, step)).fetchone()
        assert row is not None
        return int(row["version"]) - step

    @staticmethod
    def _insert_memories(cur: psycopg.Cursor[dict[str, Any]], created: Sequence[NewMemory]) -> None:
        cur.executemany(
            "INSERT INTO memories(id, org_id, type, status, text, text_hash, key, user_id, agent_id, conv_id,"
            " app_id, metadata, categories, details, source_event_ids, valid_at, job_id, created_at,"
            " updated_at, embedding) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"
            "%s::vector)",
            [(m.id, m.org_id, m.type, m.status, m.text, text_hash(m.text), m.key, m.user_id, m.agent_id,
              m.conv_id, m.app_id, Json(m.metadata), Json(m.categories), Json(m.details),
              Json(m.source_event_ids), m.valid_at, m.job_id, m.created_at, m.updated_at, _vector(n.vector))
             for n in created for m in [n.memory]])
        sources = [(n.memory.id, e) for n in created for e in n.memory.source_event_ids]
        if sources:
            cur.executemany("INSERT INTO memory_sources(memory_id, event_id) VALUES (%s,%s)"
                            " ON CONFLICT DO NOTHING", sources)

    @staticmethod
    def _add_sources(cur: psycopg.Cursor[dict[str, Any]], org_id: str, memory_id: str, event_ids: list[str],
                     now: datetime) -> None:
        row = cur.execute("SELECT source_event_ids, details FROM memories WHERE id=%s AND org_id=%s"
                          " AND status='active' FOR UPDATE", (memory_id, org_id)).fetchone()
        if row is None:
            raise _Stale()  # deleted, retracted or superseded meanwhile: the job must decide again
        sources = list(dict.fromkeys([*row["source_event_ids"], *event_ids]))
        details = row["details"]
        if "source_event_ids" in details:
            details["source_event_ids"] = sources
        cur.execute("UPDATE memories SET source_event_ids=%s, details=%s, updated_at=%s WHERE id=%s",
                    (Json(sources), Json(details), now, memory_id))
        cur.executemany("INSERT INTO memory_sources(memory_id, event_id) VALUES (%s,%s) ON CONFLICT DO NOTHING",
                        [(memory_id, e) for e in event_ids])

    @staticmethod
    def _mark_episode(cur: psycopg.Cursor[dict[str, Any]], org_id: str, episode_id: str, event_ids: list[str]) -> None:
        cur.execute("UPDATE events SET episode_id=%s WHERE id = ANY(%s)", (episode_id, event_ids))
        # Edited in Python rather than with jsonb_set, so `details` keeps its key order.
        facts = cur.execute(
            "SELECT id, details FROM memories WHERE org_id=%s AND type='fact' AND id IN"
            " (SELECT memory_id FROM memory_sources WHERE event_id = ANY(%s)) ORDER BY id FOR UPDATE",
            (org_id, event_ids)).fetchall()
        updates = []
        for fact in facts:
            details = fact["details"]
            details["episode_id"] = episode_id
            updates.append((Json(details), fact["id"]))
        if updates:
            cur.executemany("UPDATE memories SET details=%s WHERE id=%s", updates)

    def enqueue_idle_episodes(self, idle_before: datetime, now: datetime) -> int:
        """Create an episode job for every conversation whose newest un-summarised turn is
        older than `idle_before` and which has no unfinished job. One sweeper at a time:
        workers that find the sweep lock taken skip their turn."""
        created = 0
        with self._tx() as cur:
            if not cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (_SWEEP_LOCK,)).fetchone()["ok"]:
                return 0
            rows = cur.execute(
                "SELECT org_id, user_id, conv_id, max(received_at) AS last_turn FROM events"
                " WHERE episode_id IS NULL AND status = 'completed'"
                " GROUP BY org_id, user_id, conv_id HAVING max(received_at) < %s", (idle_before,)).fetchall()
            rows.sort(key=lambda r: _conv_lock(r["org_id"], r["user_id"], r["conv_id"]))
            for row in rows:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_conv_lock(row["org_id"], row["user_id"], row["conv_id"]),))
                # Nor after an episode job failed since that turn: an outage must not re-queue it every sweep.
                busy = cur.execute(
                    "SELECT 1 FROM jobs WHERE org_id=%s AND user_id=%s AND conv_id=%s AND (status IN ('pending','running')"
                    " OR (kind='episode' AND status='failed' AND created_at>=%s)) LIMIT 1",
                    (row["org_id"], row["user_id"], row["conv_id"], row["last_turn"])).fetchone()
                if busy:
                    continue
                cur.execute(
                    "INSERT INTO jobs(id, org_id, user_id, conv_id, kind, status, params, available_at, created_at,"
                    " updated_at) VALUES (%s,%s,%s,%s,'episode','pending','{}',%s,%s,%s)",
                    ("job_" + secrets.token_hex(16), row["org_id"], row["user_id"], row["conv_id"], now, now, now))
                created += 1
            if created:
                cur.execute("SELECT pg_notify(%s, '')", (WORK_CHANNEL,))
        return created

    def queue_depth(self) -> dict[str, int]:
        rows = self._read("SELECT status, count(*) AS n FROM jobs WHERE status IN ('pending','running') GROUP BY status")
        depth = {"pending": 0, "running": 0}
        depth.update({r["status"]: r["n"] for r in rows})
        return depth

    # ---------------------------------------------------------------- pipeline reads
    def unepisoded_events(self, org_id: str, user_id: str, conv_id: str) -> list[Event]:
        rows = self._read(
            "SELECT * FROM events WHERE org_id=%s AND user_id=%s AND conv_id=%s AND episode_id IS NULL"
            " AND status='completed' ORDER BY id", (org_id, user_id, conv_id))
        return [_event(r) for r in rows]

    def reconcile_candidates(self, org_id: str, user_id: str, keys: Sequence[str],
                             text_hashes: Sequence[str]) -> list[Memory]:
        rows = self._read(
            f"SELECT {_MEMORY} FROM memories m WHERE org_id=%s AND user_id=%s AND status='active' AND type='fact'"
            " AND (key = ANY(%s) OR text_hash = ANY(%s)) ORDER BY created_at, id",
            (org_id, user_id, list(keys), list(text_hashes)))
        return [_memory(r) for r in rows]

    def memories_citing(self, org_id: str, event_ids: Sequence[str]) -> list[Memory]:
        rows = self._read(
            f"SELECT {_MEMORY} FROM memories m WHERE org_id=%s AND status='active' AND id IN"
            " (SELECT memory_id FROM memory_sources WHERE event_id = ANY(%s)) ORDER BY created_at, id",
            (org_id, list(event_ids)))
        return [_memory(r) for r in rows]

    # ---------------------------------------------------------------- memories
    def get_memory(self, org_id: str, memory_id: str) -> Memory | None:
        rows = self._read(f"SELECT {_MEMORY} FROM memories m WHERE org_id=%s AND id=%s", (org_id, memory_id))
        return _memory(rows[0]) if rows else None

    def get_memories(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        rows = self._read(f"SELECT {_MEMORY} FROM memories m WHERE org_id=%s AND id = ANY(%s)", (org_id, list(memory_ids)))
        return {r["id"]: _memory(r) for r in rows}

    def delete_memory(self, org_id: str, memory_id: str, at: datetime) -> bool:
        """Facts are retracted (kept for their history); episodes are removed; an artifact is
        removed with all its versions (every row of its `root_id`). A removed memory's vector
        and full-text entry go with it (they live in the row)."""
        owner = self._read("SELECT user_id FROM memories WHERE org_id=%s AND id=%s", (org_id, memory_id))
        if not owner:
            return False
        try:
            with self._tx() as cur:
                self._lock_version(cur, org_id, owner[0]["user_id"], bump=True)  # before the memory row: lock order
                row = cur.execute("SELECT type, status, details ->> 'root_id' AS root_id FROM memories"
                                  " WHERE org_id=%s AND id=%s FOR UPDATE", (org_id, memory_id)).fetchone()
                if row is None or row["status"] == "retracted":
                    raise _Unchanged()  # roll the bump back
                if row["type"] == "fact":
                    cur.execute("UPDATE memories SET status='retracted', updated_at=%s WHERE id=%s", (at, memory_id))
                    return True
                ids = [memory_id]
                if row["type"] == "artifact" and row["root_id"]:
                    ids += [r["id"] for r in cur.execute(
                        "SELECT id FROM memories WHERE org_id=%s AND type='artifact' AND id<>%s"
                        " AND details ->> 'root_id' = %s", (org_id, memory_id, row["root_id"]))]
                cur.execute("DELETE FROM memory_sources WHERE memory_id = ANY(%s)", (ids,))
                cur.execute("DELETE FROM memories WHERE id = ANY(%s) AND org_id=%s", (ids, org_id))
                return True
        except _Unchanged:
            return False

    def supersede_memory(self, org_id: str, old_id: str, new: NewMemory, at: datetime) -> bool:
        owner = self._read("SELECT user_id FROM memories WHERE org_id=%s AND id=%s", (org_id, old_id))
        if not owner:
            return False
        try:
            with self._tx() as cur:
                self._lock_version(cur, org_id, owner[0]["user_id"], bump=True)  # before the memory row: lock order
                row = cur.execute("SELECT id FROM memories WHERE org_id=%s AND id=%s AND type='fact'"
                                  " AND status='active' FOR UPDATE", (org_id, old_id)).fetchone()
                if row is None:
                    raise _Unchanged()  # roll the bump back
                self._insert_memories(cur, [new])
                cur.execute("UPDATE memories SET status='superseded', updated_at=%s WHERE id=%s AND status='active'",
                            (at, old_id))
                return True
        except _Unchanged:
            return False

    def merge_memory_metadata(self, org_id: str, memory_id: str, metadata: Mapping[str, Any],
                              at: datetime) -> Memory | None:
        with self._tx() as cur:
            row = cur.execute("SELECT metadata FROM memories WHERE org_id=%s AND id=%s AND status<>'retracted'"
                              " FOR UPDATE", (org_id, memory_id)).fetchone()
            if row is None:
                return None
            merged = {**row["metadata"], **metadata}  # merged in Python: key order kept
            updated = cur.execute(f"UPDATE memories m SET metadata=%s, updated_at=%s WHERE id=%s RETURNING {_MEMORY}",
                                  (Json(merged), at, memory_id)).fetchone()
            return _memory(updated) if updated else None

    def memory_revisions(self, org_id: str, memory_id: str) -> list[Memory]:
        first = self.get_memory(org_id, memory_id)
        if first is None:
            return []
        chain, seen = [first], {memory_id}
        while (back := chain[0].details.get("supersedes")) and back not in seen:  # older revisions
            older = self.get_memory(org_id, back)
            if older is None:
                break
            seen.add(back)
            chain.insert(0, older)
        while True:  # newer revisions
            rows = self._read(f"SELECT {_MEMORY} FROM memories m WHERE org_id=%s AND details ->> 'supersedes' = %s"
                              " ORDER BY created_at, id LIMIT 1", (org_id, chain[-1].id))
            if not rows or rows[0]["id"] in seen:
                break
            seen.add(rows[0]["id"])
            chain.append(_memory(rows[0]))
        return chain

    # ---------------------------------------------------------------- usage counters
    def record_usage(self, org_id: str, at: datetime, counts: Mapping[str, int]) -> None:
        if not any(counts.values()):
            return
        with self._tx() as cur:
            self._add_usage(cur, org_id, at, counts)

    @staticmethod
    def _add_usage(cur: psycopg.Cursor[dict[str, Any]], org_id: str, at: datetime, counts: Mapping[str, int]) -> None:
        day = at.astimezone(timezone.utc).date()
        cur.executemany(
            "INSERT INTO usage_counters(org_id, day, name, value) VALUES (%s,%s,%s,%s)"
            " ON CONFLICT (org_id, day, name) DO UPDATE SET value = usage_counters.value + excluded.value",
            [(org_id, day, name, int(value)) for name, value in sorted(counts.items()) if value])

    def usage_totals(self, org_id: str, since: datetime | None = None) -> dict[str, int]:
        day = since.astimezone(timezone.utc).date() if since else datetime(1, 1, 1).date()
        rows = self._read("SELECT name, sum(value) AS total FROM usage_counters WHERE org_id=%s AND day>=%s"
                          " GROUP BY name", (org_id, day))
        return {r["name"]: int(r["total"]) for r in rows}

    def list_memories(self, org_id: str, where: Node, *, ascending: bool,
                      after: tuple[str, str] | None, limit: int) -> Page:
        params: list[Any] = [org_id]
        sql = f"SELECT {_MEMORY} FROM memories m WHERE m.org_id=%s AND {compile_filter(where, params)}"
        if after is not None:
            sql += " AND (m.created_at, m.id) " + (">" if ascending else "<") + " (%s, %s)"
            params.extend((parse_iso(after[0]), after[1]))
        direction = "ASC" if ascending else "DESC"
        sql += f" ORDER BY m.created_at {direction}, m.id {direction} LIMIT %s"
        params.append(limit + 1)
        rows = self._read(sql, params)
        return Page(items=[_memory(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def dense_candidates(self, org_id: str, where: Node, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Cosine similarity, best first. Scoped to one user (or to listed ids): exact over
        every memory the filter admits. Org-wide: the HNSW index, with iterative scans so
        filters still fill k."""
        q = np.asarray(query, dtype=np.float32)
        dim = int(q.shape[0])
        params: list[Any] = [_vector(q), org_id, dim]
        filter_sql = compile_filter(where, params)
        if _small_scope(where) or k > HNSW_MAX_K or dim != HNSW_DIM:
            # MATERIALIZED: filter first, then score every admitted row; no index can reorder this.
            sql = (f"WITH scored AS MATERIALIZED (SELECT m.id, m.embedding <=> %s::vector AS d FROM memories m"
                   f" WHERE m.org_id=%s AND vector_dims(m.embedding)=%s AND {filter_sql})"
                   f" SELECT id, 1 - d AS score FROM scored ORDER BY d, id LIMIT %s")
            params.append(k)
            return [(r["id"], float(r["score"])) for r in self._read(sql, params)]
        sql = (f"WITH near AS MATERIALIZED (SELECT m.id, (m.embedding::vector({HNSW_DIM})) <=> %s::vector({HNSW_DIM}) AS d"
               f" FROM memories m WHERE m.org_id=%s AND vector_dims(m.embedding)=%s AND {filter_sql}"
               f" ORDER BY (m.embedding::vector({HNSW_DIM})) <=> %s::vector({HNSW_DIM}) LIMIT %s)"
               f" SELECT id, 1 - d AS score FROM near ORDER BY d, id")
        params.extend((params[0], k))
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * k))}")
            if self._has_iterative_scan(conn):
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = conn.execute(sql, params).fetchall()
        return [(r["id"], float(r["score"])) for r in rows]

    def _has_iterative_scan(self, conn: psycopg.Connection[dict[str, Any]]) -> bool:
        if self._iterative_scan is None:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
            parts = tuple(int(p) for p in re.findall(r"\d+", row["extversion"] if row else "0")[:2])
            self._iterative_scan = parts >= (0, 8)
        return self._iterative_scan

    def lexical_candidates(self, org_id: str, where: Node, query: str, k: int) -> list[tuple[str, float]]:
        """Full-text matches (english stemming, any query word) scored with BM25 (FTS5's
        constants): positive, higher is better. Term statistics come from the filter's scope
        when it names one user (exact, small), else from the org's matches with the table's
        row estimate as N."""
        tokens = query_words(query)
        if not tokens:
            return []
        words = " ".join(tokens)
        tsquery = " | ".join(f"'{t}'" for t in tokens)
        params: list[Any] = [tsquery, words, org_id]
        filter_sql = compile_filter(where, params)
        user_scoped = _small_scope(where)
        if user_scoped:
            scope_params: list[Any] = [org_id]
            n_sql = (f"(SELECT count(*) FROM memories m WHERE m.org_id=%s AND "
                     f"{compile_filter(where, scope_params)})")
        else:
            scope_params = []
            n_sql = "(SELECT GREATEST(reltuples, 0) FROM pg_class WHERE oid = 'memories'::regclass)"
        # One pass over the matches: term frequency, document length and (as a window over the
        # matches) document frequency per query term; no join whose size the planner misjudges.
        sql = f"""
            WITH q AS (SELECT to_tsquery('english', %s) AS tq,
                              tsvector_to_array(to_tsvector('english', %s)) AS terms),
            hits AS MATERIALIZED (
                SELECT m.id, m.tsv, GREATEST((SELECT sum(COALESCE(array_length(u.positions, 1), 1))
                                              FROM unnest(m.tsv) u), 1) AS dl
                FROM memories m, q
                WHERE m.tsv @@ q.tq AND m.org_id=%s AND {filter_sql}),
            tf AS (
                SELECT h.id, h.dl, COALESCE(array_length(u.positions, 1), 1) AS tf,
                       count(*) OVER (PARTITION BY u.lexeme) AS df
                FROM hits h, q, unnest(h.tsv) u WHERE u.lexeme = ANY(q.terms)),
            stats AS (SELECT GREATEST({n_sql}, (SELECT count(*) FROM hits)) AS n,
                             (SELECT avg(dl) FROM hits) AS avgdl)
            SELECT tf.id, sum(
                GREATEST(ln((stats.n - tf.df + 0.5) / (tf.df + 0.5)), 1e-6)
                * tf.tf * {BM25_K1 + 1} / (tf.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * tf.dl / stats.avgdl))
            ) AS score
            FROM tf, stats
            GROUP BY tf.id ORDER BY score DESC, tf.id LIMIT %s
        """
        rows = self._read(sql, [*params, *scope_params, k])
        return [(r["id"], float(r["score"])) for r in rows]


    def document_frequencies(self, org_id: str, where: Node, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """How many memories the filter admits, and in how many of them each term occurs
        (matched as `lexical_candidates` matches a word: english stemming; a stop word never
        matches, so it counts 0)."""
        wanted = list(dict.fromkeys(terms))
        queries = [" | ".join(f"'{t}'" for t in query_words(term)) for term in wanted]
        params: list[Any] = []
        columns = ["count(*) AS total"]
        for i, tsquery in enumerate(queries):
            if tsquery:
                columns.append(f"count(*) FILTER (WHERE m.tsv @@ to_tsquery('english', %s)) AS t{i}")
                params.append(tsquery)
        params.append(org_id)
        row = self._read(f"SELECT {', '.join(columns)} FROM memories m WHERE m.org_id=%s AND "
                         f"{compile_filter(where, params)}", params)[0]
        return int(row["total"]), {term: int(row.get(f"t{i}", 0)) for i, term in enumerate(wanted)}


# -------------------------------------------------------------------- the listener
class _Listener(threading.Thread):
    """One LISTEN connection per process, reconnecting with backoff; fans notifications out."""

    def __init__(self, url: str) -> None:
        super().__init__(name="pg-listener", daemon=True)
        self.url = url
        self.ready = threading.Event()
        self._halt = threading.Event()
        self._callbacks: list[Callable[[str, str], None]] = []
        self._lock = threading.Lock()

    def add(self, callback: Callable[[str, str], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def stop(self) -> None:
        self._halt.set()
        self.join(5.0)

    def _dispatch(self, kind: str, payload: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(kind, payload)
            except Exception:  # a subscriber's bug must not stop the listener
                log.exception("notification callback failed")

    def run(self) -> None:
        backoff = 0.2
        while not self._halt.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {WORK_CHANNEL}")
                    conn.execute(f"LISTEN {JOB_DONE_CHANNEL}")
                    self.ready.set()
                    # Anything may have happened while we were not listening: say so.
                    self._dispatch(WORK_READY, "")
                    backoff = 0.2
                    while not self._halt.is_set():
                        for note in conn.notifies(timeout=0.5):
                            kind = JOB_ENDED if note.channel == JOB_DONE_CHANNEL else WORK_READY
                            self._dispatch(kind, note.payload)
            except psycopg.Error as exc:
                if self._halt.is_set():
                    return
                log.warning("notification listener lost its connection (%s); reconnecting", exc)
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 5.0)


# -------------------------------------------------------------------- helpers
def _configure(conn: psycopg.Connection[Any]) -> None:
    # Zone-less timestamps (and metadata dates) are UTC, as in the embedded store.
    conn.execute("SET TIME ZONE 'UTC'")


def _conv_lock(org_id: str, user_id: str, conv_id: str) -> int:
    digest = hashlib.sha256("\x1f".join((org_id, user_id, conv_id)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _small_scope(where: Node) -> bool:
    """Whether the filter pins one user or a list of memory ids: a scope small enough to
    score exactly (and where an approximate index with post-filtering would miss rows)."""
    if equality_value(where, "user_id") is not None:
        return True
    clauses = where.clauses if isinstance(where, And) else (where,)
    return any(isinstance(c, Cmp) and c.field == "id" and c.op in ("eq", "in") for c in clauses)


def _vector(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def _utc(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.astimezone(timezone.utc)


def _org(row: dict[str, Any]) -> Org:
    return Org(id=row["id"], name=row["name"], created_at=_utc(row["created_at"]))  # type: ignore[arg-type]


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(id=row["id"], org_id=row["org_id"], name=row["name"], prefix=row["prefix"],
                  scopes=tuple(row["scopes"]), created_at=_utc(row["created_at"]),  # type: ignore[arg-type]
                  revoked_at=_utc(row["revoked_at"]))


def _job(row: dict[str, Any]) -> Job:
    error = row["error"]
    return Job(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], conv_id=row["conv_id"], kind=row["kind"],
        status=row["status"], created_at=_utc(row["created_at"]), updated_at=_utc(row["updated_at"]),  # type: ignore[arg-type]
        params=row["params"], attempts=row["attempts"], result=row["result"],
        error=JobError(code=error["code"], message=error["message"], type=error.get("type", "ingest_error"))
        if error else None,
    )


def _event(row: dict[str, Any]) -> Event:
    return Event(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], conv_id=row["conv_id"], role=row["role"],
        kind=row["kind"], content=row["content"], occurred_at=_utc(row["occurred_at"]),  # type: ignore[arg-type]
        received_at=_utc(row["received_at"]), job_id=row["job_id"], agent_id=row["agent_id"],  # type: ignore[arg-type]
        app_id=row["app_id"], name=row["name"], dia_id=row["dia_id"], metadata=row["metadata"],
        client_event_id=row["client_event_id"], dedup_hash=row["dedup_hash"], status=row["status"],
        fail_reason=row["fail_reason"],
    )


def _memory(row: dict[str, Any]) -> Memory:
    return Memory(
        id=row["id"], org_id=row["org_id"], type=row["type"], text=row["text"], user_id=row["user_id"],
        conv_id=row["conv_id"], agent_id=row["agent_id"], app_id=row["app_id"], status=row["status"],
        metadata=row["metadata"], categories=row["categories"], details=row["details"], key=row["key"],
        valid_at=_utc(row["valid_at"]), source_event_ids=row["source_event_ids"], job_id=row["job_id"],
        created_at=_utc(row["created_at"]), updated_at=_utc(row["updated_at"]),  # type: ignore[arg-type]
    )
