"""The SQLite store's lookups probe an index, whatever else the table holds.

SQLite's planner has no table statistics here, and it once preferred the org's index for
`org_id=? AND id IN (...)`, reading every memory of the org to return ten (320 ms at a
million memories). This runs each lookup, captures the statements it executed, and asks
SQLite how it plans them.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Callable

import pytest

from engram.domain.records import utcnow
from engram.store.sqlite import SQLiteStore

ORG = "org-a"


@pytest.fixture
def store(tmp_path: Any) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
    s.migrate()
    s.ensure_org(ORG)
    yield s
    s.close()


# Ten ids or more: without statistics SQLite guesses ~10 rows for an equality on an indexed
# column, so the org's index looks cheaper than ten probes of the id index.
MEMORIES = [f"mem_{i}" for i in range(20)]
EVENTS = [f"evt_{i}" for i in range(20)]
LOOKUPS: dict[str, Callable[[SQLiteStore], Any]] = {
    "get_memory": lambda s: s.get_memory(ORG, "mem_x"),
    "get_memories": lambda s: s.get_memories(ORG, MEMORIES),
    "memory_revisions": lambda s: s.memory_revisions(ORG, "mem_x"),
    "memories_citing": lambda s: s.memories_citing(ORG, EVENTS),
    # The worker's lease runs inside the write lock: a scan of every job ever run (0.3 s at
    # half a million jobs) held up every accept behind it.
    "lease": lambda s: s.lease("w", utcnow(), 30, 5),
    "queue_depth": lambda s: s.queue_depth(),
    "get_job": lambda s: s.get_job(ORG, "job_x"),
    "get_events": lambda s: s.get_events(ORG, EVENTS),
    "event_statuses": lambda s: s.event_statuses(ORG, EVENTS),
}


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_lookups_by_id_use_the_id_index(store: SQLiteStore, lookup: str) -> None:
    conn: sqlite3.Connection = store._conn()
    executed: list[str] = []
    conn.set_trace_callback(executed.append)
    try:
        LOOKUPS[lookup](store)
    finally:
        conn.set_trace_callback(None)
    selects = [sql for sql in executed if sql.lstrip().upper().startswith("SELECT")]
    assert selects, "the lookup ran no query"
    for sql in selects:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        # A list of ids is a JSON array read with json_each: scanning the parameter is no table
        # scan. Nor is walking jobs_ready, a partial index of the unfinished jobs only, in `seq`
        # order (the lease stops at the first ready one; queue_depth counts them).
        assert "(org_id=?)" not in plan and not re.search(
            r"SCAN (?!json_each|\w+ USING (COVERING )?INDEX jobs_ready\b)", plan), (sql, plan)
