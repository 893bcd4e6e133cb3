"""The embedded store: one SQLite file in WAL mode, usable from several processes.

The store's rules are `store/relational.py`; this is the SQLite dialect under them. What is
SQLite's own:

- **One writer at a time.** A write transaction is `BEGIN IMMEDIATE`: it takes the file's
  single write lock, so nothing else writes until it ends, and the rules' locks are no-ops.
  Reads never block writers (WAL).
- **Group commit.** The accept path's writes go to one thread that runs the requests queued
  behind each other in one transaction, a savepoint each, and commits them together
  (sqlite_writer.py): one fsync per group, not per request.
- **The dedup window in memory** (sqlite_dedup.py): family M's 60-second duplicate check,
  kept by that one accepting thread instead of in an index on every event.
- **Memory rows** are three rows: `memories`, its vector in `memory_vectors` and its FTS5
  entry in `memory_fts`, joined by the row id `rid`.
- **The search index** (sqlite_index.py): exact scoring from per-process caches.
- No notifications between processes: the embedded server wakes its workers through their
  stdin, and waiters poll.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from engram.domain.filters import Node
from engram.domain.records import Event, Job, iso, utcnow
from engram.domain.text import text_hash
from engram.store import migrations
from engram.store.base import AcceptResult, Idempotency, NewJob, NewMemory
from engram.store.dialect import Statements
from engram.store.relational import RelationalStore
from engram.store.sql import Params, load, rules
from engram.store.sqlite_dedup import RecentEvents
from engram.store.sqlite_filters import compile_filter
from engram.store.sqlite_index import SQLiteIndex, _VectorCache
from engram.store.sqlite_writer import GroupCommitWriter

_ONLY = load("sqlite_only.sql")


def _vector_bytes(vector: np.ndarray) -> bytes:
    """A vector as memory_vectors holds it (and the vector cache reads it): float32 bytes."""
    return np.asarray(vector, dtype=np.float32).tobytes()


class SQLiteDialect:
    name = "sqlite"
    notifies = False

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.queries = rules("sqlite")
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.index = SQLiteIndex(self.connection)
        self.recent = RecentEvents()  # the dedup window; used only by the group-commit thread
        self.writer = GroupCommitWriter(self.connect, on_failure=self.recent.reset)

    # ------------------------------------------------------------ connections
    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    def connect(self) -> sqlite3.Connection:
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
    def transaction(self) -> Iterator[Statements]:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield Statements(conn, self.queries)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    @contextmanager
    def reader(self) -> Iterator[Statements]:
        yield Statements(self.connection(), self.queries)

    @contextmanager
    def erasing(self) -> Iterator[Statements]:
        """A write transaction whose deletes overwrite the deleted content with zeros in the
        file's pages (`secure_delete`; the lexical index's old segments, free pages and the
        write-ahead log are purged by `compact`)."""
        conn = self.connection()
        conn.execute("PRAGMA secure_delete=ON")
        try:
            with self.transaction() as tx:
                yield tx
        finally:
            conn.execute("PRAGMA secure_delete=OFF")

    def params(self, **named: Any) -> Params:
        return Params("sqlite", **named)

    def compile_filter(self, where: Node, params: Params) -> str:
        return compile_filter(where, params)

    # ------------------------------------------------------------ binding: text, JSON text, blobs
    def time(self, value: datetime | None) -> Any:
        return iso(value)  # fixed-width UTC text: text order is time order

    def day(self, value: datetime) -> Any:
        return (iso(value) or "")[:10]

    def json(self, value: Any) -> Any:
        return json.dumps(value)

    def array(self, values: Sequence[Any]) -> Any:
        return json.dumps(list(values))  # read with json_each

    def blob(self, value: bytes) -> Any:
        return value

    # ------------------------------------------------------------ concurrency: one writer
    def lock(self, tx: Statements, *names: str) -> None:
        """Nothing to take: `BEGIN IMMEDIATE` already excludes every other writer."""

    def try_lock(self, tx: Statements, name: str) -> bool:
        return True

    @contextmanager
    def walking_the_queue(self, tx: Statements) -> Iterator[None]:
        """SQLite's planner takes `jobs_ready` in order by itself (tests/test_store_sql.py)."""
        yield

    def run_accept(self, accept: Callable[[Statements], Any]) -> Any:
        return self.submit_accept(accept).result()

    def submit_accept(self, accept: Callable[[Statements], Any]) -> Future[Any]:
        """The accept on the group-commit thread; the future resolves after its COMMIT."""
        return self.writer.submit(lambda conn: accept(Statements(conn, self.queries)))

    def notify(self, tx: Statements, kind: str, payload: str) -> None:
        """No notifications between processes."""

    def subscribe(self, callback: Callable[[str, str], None]) -> bool:
        return False

    # ------------------------------------------------------------ the dedup window
    def recent_duplicates(self, tx: Statements, org_id: str, hashes: set[str], since: datetime) -> dict[str, str]:
        return self.recent.find(tx.target, org_id, hashes, since)

    def accepted(self, org_id: str, jobs: Sequence[tuple[Job, Sequence[Event]]]) -> None:
        self.recent.add(org_id, ((e.dedup_hash, e.id, e.received_at) for _, events in jobs for e in events
                                 if e.dedup_hash is not None))

    # ------------------------------------------------------------ memory rows
    def encode_memories(self, created: Sequence[NewMemory]) -> list[tuple[dict[str, Any], bytes]]:
        # JSON, timestamps, hashes and vector bytes were 40 % of a commit's time inside the lock.
        return [({"id": m.id, "org_id": m.org_id, "type": m.type, "status": m.status, "text": m.text,
                  "text_hash": text_hash(m.text), "key": m.key, "user_id": m.user_id, "agent_id": m.agent_id,
                  "conv_id": m.conv_id, "app_id": m.app_id, "metadata": json.dumps(m.metadata),
                  "categories": json.dumps(m.categories), "details": json.dumps(m.details),
                  "source_event_ids": json.dumps(m.source_event_ids), "valid_at": iso(m.valid_at),
                  "job_id": m.job_id, "created_at": iso(m.created_at), "updated_at": iso(m.updated_at)},
                 _vector_bytes(new.vector))
                for new in created for m in [new.memory]]

    def insert_memories(self, tx: Statements, encoded: list[tuple[dict[str, Any], bytes]]) -> None:
        conn = tx.target
        for row, vector in encoded:
            rid = conn.execute(_ONLY.get("insert_memory"), row).lastrowid
            conn.execute(_ONLY.get("insert_vector"), {"rid": rid, "vec": vector})
            conn.execute(_ONLY.get("insert_lexical_entry"), {"rid": rid, "text": row["text"]})

    def vector(self, value: np.ndarray) -> bytes:
        return _vector_bytes(value)

    def switch_vectors(self, tx: Statements) -> None:
        tx.target.execute(_ONLY.get("switch_vectors"))

    def delete_memories(self, tx: Statements, org_id: str, ids: Sequence[str]) -> None:
        conn = tx.target
        for row in conn.execute(_ONLY.get("rows_of_memories"), {"org_id": org_id, "ids": json.dumps(list(ids))}).fetchall():
            for name in ("delete_vector", "delete_lexical_entry", "delete_memory_row"):
                conn.execute(_ONLY.get(name), {"rid": row["rid"]})
        tx.run("delete_reindex_vectors", {"ids": json.dumps(list(ids))})

    def vectors_of(self, tx: Statements, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        rows = tx.target.execute(_ONLY.get("vectors_of_memories"), {"ids": json.dumps(list(ids))}).fetchall()
        return {r["id"]: np.frombuffer(r["vec"], dtype=np.float32).copy() for r in rows}

    def forget(self) -> None:
        self.index.forget()
        self.recent.forget()

    def compact(self) -> dict[str, Any]:
        """Rewrite the lexical index without the entries of deleted rows, rebuild the file
        without free pages (VACUUM), and empty the write-ahead log. Holds the write lock
        throughout: accepts wait."""
        conn = self.connection()
        before = self._bytes_on_disk()
        with self.erasing() as tx:
            tx.target.execute(_ONLY.get("optimize_lexical_index"))
        conn.execute("VACUUM")  # the file rebuilt from live rows: no free page keeps old bytes
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return {"bytes_before": before, "bytes_after": self._bytes_on_disk(), "log_truncated": not busy}

    def _bytes_on_disk(self) -> int:
        """The database file and its write-ahead log."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    # ------------------------------------------------------------ lifecycle
    def migrate(self) -> list[str]:
        """Apply the migrations this file lacks, in one transaction with their records: the
        write lock makes one process the migrator; any other finds them recorded."""
        conn = self.connection()
        applied: list[str] = []
        with self.transaction() as tx:
            tx.target.execute(f"CREATE TABLE IF NOT EXISTS {migrations.RECORD_TABLE} (version INTEGER PRIMARY KEY,"
                            " name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            done = {r["version"] for r in tx.target.execute(f"SELECT version FROM {migrations.RECORD_TABLE}")}
            for migration in migrations.pending(self.name, done):
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {migrations.RECORD_TABLE}(version, name, applied_at) VALUES (?, ?, ?)",
                             (migration.version, migration.name, iso(utcnow())))
                applied.append(migration.label)
        return applied

    def close(self) -> None:
        self.writer.close()
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._all.clear()
        self._local = threading.local()


def _statements(script: str) -> Iterator[str]:
    """The statements of a SQL script, each complete as SQLite reads it (a trigger's body
    holds semicolons of its own)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending
            pending = ""
    if pending.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in pending.splitlines()):
        raise ValueError(f"an incomplete statement ends the migration: {pending[:200]!r}")


class SQLiteStore(RelationalStore):
    """The embedded default store. Thread-safe: one connection per thread."""

    dialect: SQLiteDialect

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__(SQLiteDialect(path, synchronous=synchronous))
        self.path = self.dialect.path

    @classmethod
    def from_url(cls, url: str) -> "SQLiteStore":
        return cls(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url)

    def submit_accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
                      idempotency: Idempotency | None = None) -> Future[AcceptResult]:
        """What `accept` does, as a future for callers on an event loop (base.SubmitsAccepts)."""
        return self.dialect.submit_accept(lambda tx: self._accept_in(tx, org_id, jobs, dedup_since, idempotency))

    # What tests and benchmarks reach for: this thread's connection, a new one, the caches.
    def _conn(self) -> sqlite3.Connection:
        return self.dialect.connection()

    def _connect(self) -> sqlite3.Connection:
        return self.dialect.connect()

    @property
    def _vectors(self) -> _VectorCache:
        return self.dialect.index.vectors

    @property
    def scoped_lexical_limit(self) -> int:
        return self.dialect.index.scoped_lexical_limit

    @scoped_lexical_limit.setter
    def scoped_lexical_limit(self, value: int) -> None:
        self.dialect.index.scoped_lexical_limit = value
