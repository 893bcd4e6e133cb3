"""The family-M dedup window of the SQLite store, held in memory.

An index on the events' content hashes would put every accepted event on a random page
of a large B-tree: at 50 events per request that is some fifty pages rewritten to the
WAL and fsynced per commit, which measured as most of the accept path's time. The
window is short (ENGRAM_DEDUP_WINDOW_S, a minute by default) and, with SQLite, exactly
one thread of one process accepts events (the data directory is locked to one server,
and its group-commit thread does every accept), so the window can live in that thread's
memory instead: exact, rebuilt from the events table (by time-ordered id) on first use
and after any failed commit.

Keys are a 64-bit hash of the hash; a hit is confirmed against the stored row's full
hash, so a collision can never merge two different events.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from datetime import datetime, timedelta
from typing import Iterable

from engram.domain.records import iso
from engram.ids import ulid_floor
from engram.store.sql import load

_QUERIES = load("sqlite_only.sql")


class RecentEvents:
    """Recently accepted events by content hash.

    Stored as plain ints and strings (a dict of key -> event id, and one list of keys per
    second of arrival) so that the window, however many events it holds, adds almost no
    objects for Python's cyclic garbage collector to walk: a collector pass over a large
    window measured as a 100 ms pause of the whole API process.
    """

    def __init__(self) -> None:
        self._ids: dict[int, str] | None = None  # None: not loaded
        self._forgotten = False
        self._seconds: deque[tuple[int, list[int]]] = deque()  # (epoch second, keys first seen then)

    def forget(self) -> None:
        """From any thread: the accepting thread starts over at its next lookup (an erasure)."""
        self._forgotten = True

    def reset(self) -> None:
        """Forget everything; the next lookup reloads from the table (after a failed commit)."""
        self._ids = None
        self._seconds.clear()

    def find(self, conn: sqlite3.Connection, org_id: str, hashes: Iterable[str], since: datetime) -> dict[str, str]:
        """The earliest stored event, received at or after `since`, of each hash that has one."""
        if self._forgotten:
            self._forgotten = False
            self.reset()
        ids = self._load(conn, since)
        horizon = int(since.timestamp())
        while self._seconds and self._seconds[0][0] < horizon:
            for key in self._seconds.popleft()[1]:
                ids.pop(key, None)
        candidates: dict[str, str] = {}
        for digest in hashes:
            event_id = ids.get(_key(org_id, digest))
            if event_id is not None:
                candidates[event_id] = digest
        if not candidates:
            return {}
        # Confirm against the rows: the key is a 64-bit hash, and a second's bucket may reach
        # a little before `since`.
        found: dict[str, str] = {}
        for event_id, digest in conn.execute(_QUERIES.get("window_confirm"), {
                "ids": json.dumps(list(candidates)), "org_id": org_id, "since": iso(since)}).fetchall():
            if candidates.get(event_id) == digest:
                found[digest] = event_id
        return found

    def add(self, org_id: str, rows: Iterable[tuple[str, str, datetime]]) -> None:
        """Record newly stored events: (dedup hash, event id, received at)."""
        if self._ids is None:
            return  # loaded from the table on next use, these rows included
        for digest, event_id, received_at in rows:
            self._remember(_key(org_id, digest), event_id, int(received_at.timestamp()))

    def _remember(self, key: int, event_id: str, second: int) -> None:
        assert self._ids is not None
        if key in self._ids:
            return  # an earlier event of the window keeps the key
        self._ids[key] = event_id
        if self._seconds and self._seconds[-1][0] >= second:
            self._seconds[-1][1].append(key)
        else:
            self._seconds.append((second, [key]))

    def _load(self, conn: sqlite3.Connection, since: datetime) -> dict[int, str]:
        if self._ids is not None:
            return self._ids
        self._ids = {}
        # Event ids are ULIDs taken at accept time: everything received since `since` has an
        # id at or above the floor of the millisecond before it.
        floor = ulid_floor(since - timedelta(milliseconds=1))
        for org_id, digest, event_id, received_at in conn.execute(_QUERIES.get("window_events"),
                                                                  {"floor": floor, "since": iso(since)}):
            self._remember(_key(org_id, digest), event_id, int(_epoch(received_at)))
        return self._ids


def _key(org_id: str, digest: str) -> int:
    return hash((org_id, digest))  # 64 bits, stable within the process, which is all the window lives in


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
