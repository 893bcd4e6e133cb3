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

import sqlite3
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Iterable

from engram.domain.records import iso
from engram.ids import ulid_floor


class RecentEvents:
    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, int], tuple[str, float]] | None = None  # None: not loaded

    def reset(self) -> None:
        """Forget everything; the next lookup reloads from the table (after a failed commit)."""
        self._entries = None

    def find(self, conn: sqlite3.Connection, org_id: str, hashes: Iterable[str], since: datetime) -> dict[str, str]:
        """The earliest stored event, received at or after `since`, of each hash that has one."""
        entries = self._load(conn, since)
        horizon = since.timestamp()
        while entries:
            key, (_, at) = next(iter(entries.items()))
            if at >= horizon:
                break
            entries.popitem(last=False)
        candidates: dict[str, str] = {}
        for digest in hashes:
            hit = entries.get((org_id, _key(digest)))
            if hit is not None and hit[1] >= horizon:
                candidates[hit[0]] = digest
        if not candidates:
            return {}
        found: dict[str, str] = {}
        marks = ",".join("?" * len(candidates))
        for event_id, digest in conn.execute(f"SELECT id, dedup_hash FROM events WHERE id IN ({marks})",
                                             list(candidates)).fetchall():
            if candidates.get(event_id) == digest:
                found[digest] = event_id
        return found

    def add(self, org_id: str, rows: Iterable[tuple[str, str, datetime]]) -> None:
        """Record newly stored events: (dedup hash, event id, received at)."""
        if self._entries is None:
            return  # loaded from the table on next use, these rows included
        for digest, event_id, received_at in rows:
            key = (org_id, _key(digest))
            if key not in self._entries:  # an earlier event of the window keeps the key
                self._entries[key] = (event_id, received_at.timestamp())

    def _load(self, conn: sqlite3.Connection, since: datetime) -> OrderedDict[tuple[str, int], tuple[str, float]]:
        if self._entries is not None:
            return self._entries
        entries: OrderedDict[tuple[str, int], tuple[str, float]] = OrderedDict()
        # Event ids are ULIDs taken at accept time: everything received since `since` has an
        # id at or above the floor of the millisecond before it.
        floor = ulid_floor(since - timedelta(milliseconds=1))
        rows = conn.execute("SELECT org_id, dedup_hash, id, received_at FROM events"
                            " WHERE id >= ? AND dedup_hash IS NOT NULL AND received_at >= ? ORDER BY id",
                            (floor, iso(since))).fetchall()
        for org_id, digest, event_id, received_at in rows:
            key = (org_id, _key(digest))
            if key not in entries:
                entries[key] = (event_id, _epoch(received_at))
        self._entries = entries
        return entries


def _key(digest: str) -> int:
    return hash(digest)  # 64 bits, stable within the process, which is all the window lives in


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
