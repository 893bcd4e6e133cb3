"""What a SQL dialect gives the store's rules (`store/relational.py`): the physical part.

The rules are written once; a dialect supplies only what differs between SQLite and
PostgreSQL — how to run a statement and bind its values, how concurrent writers are kept
apart (SQLite: one writer at a time, so its locks are no-ops; PostgreSQL: advisory locks and
`FOR UPDATE` in its statements), how processes are told about work (PostgreSQL's
`NOTIFY`; nothing on SQLite), how a memory's vector and lexical entry are written, and the
search index itself.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from engram.domain.filters import Node
from engram.store.base import NewMemory, SearchScope
from engram.store.sql import Params, Queries


class Statements:
    """A transaction's statements, run on anything with DB-API's `execute`/`executemany` (a
    sqlite3 connection, a psycopg cursor): named statements of the dialect's rules, named
    parameters."""

    __slots__ = ("target", "_q")

    def __init__(self, target: Any, queries: Queries) -> None:
        self.target = target
        self._q = queries

    def one(self, name: str, params: Mapping[str, Any]) -> Any | None:
        return self.target.execute(self._q.get(name), params).fetchone()

    def all(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        return self.target.execute(self._q.get(name), params).fetchall()

    def run(self, name: str, params: Mapping[str, Any]) -> int:
        return self.target.execute(self._q.get(name), params).rowcount

    def many(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            self.target.executemany(self._q.get(name), rows)

    def sql(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        return self.target.execute(sql, params).fetchall()


class Tx(Protocol):
    """One transaction: named statements of the dialect's rule file, named parameters."""

    def one(self, name: str, params: Mapping[str, Any]) -> Any | None: ...
    def all(self, name: str, params: Mapping[str, Any]) -> list[Any]: ...
    def run(self, name: str, params: Mapping[str, Any]) -> int:
        """Execute; the number of rows it changed."""
        ...
    def many(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None: ...
    def sql(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        """A statement built from a named query's slots (a compiled filter)."""
        ...


class SearchIndex(Protocol):
    """Dense and lexical candidates over the memories a filter admits (store/base.py's
    search methods, and its optional DocumentFrequencies)."""

    def scope(self, org_id: str, where: Node) -> SearchScope: ...
    def dense_candidates(self, org_id: str, where: Node, query: np.ndarray, k: int) -> list[tuple[str, float]]: ...
    def lexical_candidates(self, org_id: str, where: Node, query: str, k: int) -> list[tuple[str, float]]: ...
    def document_frequencies(self, org_id: str, where: Node, terms: Sequence[str]) -> tuple[int, dict[str, int]]: ...


class Dialect(Protocol):
    name: str  # "sqlite" | "postgres": which queries/<name>.sql the rules read
    queries: Queries

    # ------------------------------------------------------------ running statements
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction (on SQLite: `BEGIN IMMEDIATE`, the one writer)."""
        ...

    def reader(self) -> AbstractContextManager[Tx]:
        """Reads outside a write transaction (autocommit)."""
        ...

    def erasing(self) -> AbstractContextManager[Tx]:
        """A write transaction that erases: what it deletes must not stay readable in the
        files (SQLite: `secure_delete`, which overwrites deleted content with zeros)."""
        ...

    def params(self, **named: Any) -> Params: ...
    def compile_filter(self, where: Node, params: Params) -> str: ...

    # ------------------------------------------------------------ binding values
    def time(self, value: datetime | None) -> Any: ...
    def day(self, value: datetime) -> Any: ...
    def json(self, value: Any) -> Any: ...
    def array(self, values: Sequence[Any]) -> Any: ...
    def blob(self, value: bytes) -> Any: ...

    # ------------------------------------------------------------ concurrency
    def lock(self, tx: Tx, *names: str) -> None:
        """Hold these named locks until `tx` ends (taken in a fixed order)."""
        ...

    def try_lock(self, tx: Tx, name: str) -> bool: ...

    def walking_the_queue(self, tx: Tx) -> AbstractContextManager[None]:
        """Around `next_ready_job`: its plan must walk `jobs_ready` in `seq` order and stop
        at the first ready job, whatever the planner's statistics say (store/postgres.py)."""
        ...

    def run_accept(self, accept: Callable[[Tx], Any]) -> Any:
        """Run an accepting transaction, retried where the dialect needs it; its result."""
        ...

    # ------------------------------------------------------------ notifications
    notifies: bool

    def notify(self, tx: Tx, kind: str, payload: str) -> None: ...
    def subscribe(self, callback: Callable[[str, str], None]) -> bool: ...

    # ------------------------------------------------------------ the dedup window
    def recent_duplicates(self, tx: Tx, org_id: str, hashes: set[str], since: datetime) -> dict[str, str]:
        """Stored events of the org with these dedup hashes received since `since`: {hash: id}."""
        ...

    def accepted(self, org_id: str, jobs: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        """Told what an accept wrote (after its statements ran, before it commits)."""
        ...

    # ------------------------------------------------------------ memory rows and the index
    def encode_memories(self, created: Sequence[NewMemory]) -> Any:
        """What `insert_memories` writes, encoded ahead of the transaction."""
        ...

    def insert_memories(self, tx: Tx, encoded: Any) -> None:
        """Memory rows with their vectors and lexical entries (not their sources)."""
        ...

    def vector(self, value: np.ndarray) -> Any:
        """A vector as the dialect stores it (the `{{vector:p}}` fragment reads it)."""
        ...

    def switch_vectors(self, tx: Tx) -> None:
        """Every memory's vector replaced by its new one in `reindex_vectors` (store/reindex.py)."""
        ...

    def delete_memories(self, tx: Tx, org_id: str, ids: Sequence[str]) -> None:
        """Memory rows with their vectors (a reindex's new ones too) and lexical entries (not
        their sources)."""
        ...

    def vectors_of(self, tx: Tx, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these memories (float32), by id."""
        ...

    index: SearchIndex

    def forget(self) -> None:
        """Drop every cache of what was read (an erasure happened somewhere)."""
        ...

    def compact(self) -> dict[str, Any]:
        """Purge what deletes leave behind in the files; what was done."""
        ...

    # ------------------------------------------------------------ lifecycle
    def migrate(self) -> list[str]: ...
    def close(self) -> None: ...
