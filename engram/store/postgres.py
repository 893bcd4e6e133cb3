"""The scale-out store: PostgreSQL with pgvector, shared by many API and worker processes.

The store's rules are `store/relational.py`, the same as the embedded store's; this is the
PostgreSQL dialect under them. What is PostgreSQL's own is how the rules stay safe when many
processes on many machines write at once:

- **Locks.** The rules' named locks are transaction-scoped advisory locks (the accept takes
  one per conversation before it draws a job's `seq`, so within a conversation `seq` order
  is commit order; one per Idempotency-Key; one for the idle sweep), and its statements read
  the rows they will change `FOR UPDATE` — the lease `SKIP LOCKED`, so workers never wait
  for each other (queries/postgres.sql).
- **Notifications** at commit: new work and ended jobs, to every process (postgres_listener.py).
- **Memory rows** hold their vector (`embedding`) and full-text entry (`tsv`, generated).
- **The search index**: pgvector and full-text BM25 (postgres_index.py).
- **Migrations** are applied by `engram migrate` (or at start with ENGRAM_MIGRATE_ON_START);
  a process refuses to start on an older schema.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from contextlib import contextmanager
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from engram.domain.filters import Node
from engram.domain.records import Event, Job
from engram.domain.text import text_hash
from engram.store import migrations
from engram.store.base import NewMemory
from engram.store.postgres_filters import compile_filter
from engram.store.postgres_index import PostgresIndex, vector_text
from engram.store.postgres_listener import CHANNELS, Listener
from engram.store.dialect import Statements
from engram.store.relational import RelationalStore
from engram.store.sql import Params, load, rules

log = logging.getLogger("engram.store.postgres")

_ONLY = load("postgres_only.sql")
_MIGRATION_LOCK = 0x656E6772616D  # "engram": one migrator at a time
# Tables an erasure or a retraction deletes from or rewrites rows of.
_COMPACTED = ("events", "memories", "memory_sources", "jobs", "idempotency_keys", "user_versions", "reindex_vectors")


class SchemaOutOfDate(Exception):
    """The database lacks migrations this engram needs; `engram migrate` applies them."""


class PostgresDialect:
    name = "postgres"
    notifies = True

    def __init__(self, url: str, *, pool_size: int = 10, name: str = "engram", connect_timeout_s: float = 15.0) -> None:
        self.url = url
        self.queries = rules("postgres")
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max(2, pool_size), name=name, open=True, timeout=30.0,
            kwargs={"autocommit": True, "row_factory": dict_row}, configure=_configure,
        )
        try:
            self._pool.wait(timeout=connect_timeout_s)  # an unreachable database fails start-up, not the first request
        except BaseException:
            self._pool.close()
            raise
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self.index = PostgresIndex(self._pool.connection)

    # ------------------------------------------------------------ running statements
    @contextmanager
    def transaction(self) -> Iterator[Statements]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield Statements(cur, self.queries)

    @contextmanager
    def reader(self) -> Iterator[Statements]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield Statements(cur, self.queries)

    def erasing(self) -> Any:
        """A write transaction: a deleted row is no row (its dead version goes at VACUUM)."""
        return self.transaction()

    def params(self, **named: Any) -> Params:
        return Params("postgres", **named)

    def compile_filter(self, where: Node, params: Params) -> str:
        return compile_filter(where, params)

    # ------------------------------------------------------------ binding: native types
    def time(self, value: datetime | None) -> Any:
        return value

    def day(self, value: datetime) -> date:
        return value.astimezone(timezone.utc).date()

    def json(self, value: Any) -> Any:
        return Json(value)

    def array(self, values: Sequence[Any]) -> Any:
        return list(values)

    def blob(self, value: bytes) -> Any:
        return value

    # ------------------------------------------------------------ concurrency: advisory locks
    def lock(self, tx: Statements, *names: str) -> None:
        """Transaction-scoped advisory locks, taken in one global order (no deadlock between
        two transactions that want several)."""
        keys = sorted({_lock_key(n) for n in names})
        if keys:
            tx.target.executemany(_ONLY.get("advisory_lock"), [{"key": k} for k in keys])

    def try_lock(self, tx: Statements, name: str) -> bool:
        return bool(tx.target.execute(_ONLY.get("try_advisory_lock"), {"key": _lock_key(name)}).fetchone()["ok"])

    @contextmanager
    def walking_the_queue(self, tx: Statements) -> Iterator[None]:
        """The jobs table goes from a few rows to 100,000 unfinished ones between two of
        autovacuum's analyses (a burst of batches over many conversations). Planned on the
        old statistics (~90 rows), the lease read every unfinished job in a bitmap scan and
        sorted them — 50-80 ms per lease at 20,000, the worker doing almost nothing else.
        Without sorts and bitmap scans for `next_ready_job` alone, the one plan left walks
        `jobs_ready` in `seq` order and stops at the first ready job (0.1 ms). Only for it:
        without sorts, reading a job's events in id order would walk the whole primary key."""
        tx.target.execute(_ONLY.get("walk_in_index_order"))
        try:
            yield
        finally:
            tx.target.execute(_ONLY.get("plan_as_usual"))

    def run_accept(self, accept: Callable[[Statements], Any]) -> Any:
        with self.transaction() as tx:
            return accept(tx)

    # ------------------------------------------------------------ notifications
    def notify(self, tx: Statements, kind: str, payload: str) -> None:
        tx.target.execute(_ONLY.get("notify"), {"channel": CHANNELS[kind], "payload": payload})

    def subscribe(self, callback: Callable[[str, str], None]) -> bool:
        """Call `callback(kind, payload)` from a background thread: (WORK_READY, "") when work
        was accepted or unblocked in any process, (JOB_ENDED, job_id) when a job ended."""
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(self.url)
                self._listener.start()
            listener = self._listener
        listener.add(callback)
        listener.ready.wait(10.0)
        return True

    # ------------------------------------------------------------ the dedup window: an index on events
    def recent_duplicates(self, tx: Statements, org_id: str, hashes: set[str], since: datetime) -> dict[str, str]:
        rows = tx.target.execute(_ONLY.get("recent_duplicates"),
                              {"org_id": org_id, "hashes": list(hashes), "since": since}).fetchall()
        return {r["dedup_hash"]: r["id"] for r in rows}

    def accepted(self, org_id: str, jobs: Sequence[tuple[Job, Sequence[Event]]]) -> None:
        """Nothing to remember: the window is read from the table."""

    # ------------------------------------------------------------ memory rows
    def encode_memories(self, created: Sequence[NewMemory]) -> list[dict[str, Any]]:
        return [{"id": m.id, "org_id": m.org_id, "type": m.type, "status": m.status, "text": m.text,
                 "text_hash": text_hash(m.text), "key": m.key, "user_id": m.user_id, "agent_id": m.agent_id,
                 "conv_id": m.conv_id, "app_id": m.app_id, "metadata": Json(m.metadata),
                 "categories": Json(m.categories), "details": Json(m.details),
                 "source_event_ids": Json(m.source_event_ids), "valid_at": m.valid_at, "job_id": m.job_id,
                 "created_at": m.created_at, "updated_at": m.updated_at, "embedding": vector_text(new.vector)}
                for new in created for m in [new.memory]]

    def insert_memories(self, tx: Statements, encoded: list[dict[str, Any]]) -> None:
        if encoded:
            tx.target.executemany(_ONLY.get("insert_memory"), encoded)

    def vector(self, value: np.ndarray) -> str:
        return vector_text(value)

    def switch_vectors(self, tx: Statements) -> None:
        tx.target.execute(_ONLY.get("switch_vectors"))

    def delete_memories(self, tx: Statements, org_id: str, ids: Sequence[str]) -> None:
        tx.target.execute(_ONLY.get("delete_memories"), {"org_id": org_id, "ids": list(ids)})
        tx.run("delete_reindex_vectors", {"ids": list(ids)})

    def vectors_of(self, tx: Statements, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        rows = tx.target.execute(_ONLY.get("vectors_of_memories"), {"ids": list(ids)}).fetchall()
        return {r["id"]: np.asarray(r["vec"], dtype=np.float32) for r in rows}

    def forget(self) -> None:
        """Nothing cached: every read goes to the database."""

    def compact(self) -> dict[str, Any]:
        """VACUUM the tables deletes leave dead row versions in (outside a transaction)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            for table in _COMPACTED:
                conn.execute(f"VACUUM (ANALYZE) {table}")  # type: ignore[arg-type]  # a fixed list of names
        return {"vacuumed": list(_COMPACTED)}

    # ------------------------------------------------------------ lifecycle
    def migrate(self) -> list[str]:
        """Apply every numbered migration not yet applied, each in its own transaction.
        Safe to run from several processes at once: one migrates, the others wait."""
        applied: list[str] = []
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {migrations.RECORD_TABLE} (version integer PRIMARY KEY,"
                             " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {r["version"] for r in conn.execute(f"SELECT version FROM {migrations.RECORD_TABLE}")}
                for migration in migrations.pending(self.name, done):
                    with conn.transaction():
                        conn.execute(migration.sql)  # type: ignore[arg-type]  # no parameters: many statements
                        conn.execute(f"INSERT INTO {migrations.RECORD_TABLE}(version, name) VALUES (%s, %s)",
                                     (migration.version, migration.name))
                    applied.append(migration.label)
                    log.info("applied migration %s", migration.label)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        return applied

    def pending_migrations(self) -> list[str]:
        with self._pool.connection() as conn:
            present = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present",
                                   (migrations.RECORD_TABLE,)).fetchone()["present"]
            done = {r["version"] for r in conn.execute(f"SELECT version FROM {migrations.RECORD_TABLE}")} \
                if present else set()
        return [m.label for m in migrations.pending(self.name, done)]

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
        self._pool.close()


class PostgresStore(RelationalStore):
    """Thread-safe: a connection pool shared by the threads of one process."""

    dialect: PostgresDialect

    def __init__(self, url: str, *, pool_size: int = 10, name: str = "engram", connect_timeout_s: float = 15.0) -> None:
        super().__init__(PostgresDialect(url, pool_size=pool_size, name=name, connect_timeout_s=connect_timeout_s))
        self.url = url

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "PostgresStore":
        return cls(url, **kwargs)

    def pending_migrations(self) -> list[str]:
        return self.dialect.pending_migrations()

    def check_schema(self) -> None:
        pending = self.pending_migrations()
        if pending:
            raise SchemaOutOfDate(f"the database needs migration(s) {', '.join(pending)}: run `engram migrate`"
                                  " (or start with ENGRAM_MIGRATE_ON_START=true)")


def _configure(conn: psycopg.Connection[Any]) -> None:
    # Zone-less timestamps (and metadata dates) are UTC, as in the embedded store.
    conn.execute("SET TIME ZONE 'UTC'")


def _lock_key(name: str) -> int:
    """A lock name as the 64-bit key PostgreSQL's advisory locks take."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)



