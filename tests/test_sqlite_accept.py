"""The SQLite accept path: group commit and the in-memory dedup window.

These are SQLite-only mechanisms (tests/test_store_conformance.py holds the rules both
stores share); here they are driven from many threads and across a reopen of the file.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from engram.domain.records import Event, Job, utcnow
from engram.ids import new_event_id, new_job_id
from engram.store.base import NewJob
from engram.store.sqlite import SQLiteStore
from engram.store.sqlite_writer import GroupCommitWriter

ORG = "org-a"
WINDOW = timedelta(seconds=60)


def batch(user: str, hashes: list[str]) -> NewJob:
    now = utcnow()
    job = Job(id=new_job_id(), org_id=ORG, user_id=user, conv_id="c", status="pending", created_at=now,
              updated_at=now, params={})
    events = [Event(id=new_event_id(), org_id=ORG, user_id=user, conv_id="c", role="user", kind="user_message",
                    content=h, occurred_at=now, received_at=now, dedup_hash=h) for h in hashes]
    return NewJob(job, events)


def open_store(path: Path) -> SQLiteStore:
    store = SQLiteStore(path / "engram.db")
    store.migrate()
    return store


def test_the_dedup_window_survives_a_reopen(tmp_path: Path) -> None:
    first = open_store(tmp_path)
    original = first.accept(ORG, [batch("u", ["h-1", "h-2"])], dedup_since=utcnow() - WINDOW).event_ids
    first.close()

    second = open_store(tmp_path)  # a restarted server: the window is rebuilt from the table
    again = second.accept(ORG, [batch("u", ["h-2", "h-3"])], dedup_since=utcnow() - WINDOW)
    assert again.event_ids[0] == original[1]
    assert again.event_ids[1] not in original
    # Outside the window (as if a minute had passed) the same content is a new event.
    later = second.accept(ORG, [batch("u", ["h-1"])], dedup_since=utcnow() + timedelta(seconds=1))
    assert later.event_ids[0] != original[0] and later.job_ids
    second.close()


def test_concurrent_accepts_store_each_distinct_event_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    results: list[tuple[list[str], list[str]]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for round_ in range(15):
            # Every hash is sent by three threads, in batches that also carry fresh ones.
            hashes = [f"shared-{round_}-{n % 4}-{i}" for i in range(5)] + [f"own-{n}-{round_}"]
            ids = store.accept(ORG, [batch(f"user-{n % 4}", hashes)], dedup_since=utcnow() - WINDOW).event_ids
            with lock:
                results.append((hashes, ids))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    id_of: dict[str, set[str]] = {}
    for hashes, ids in results:
        for h, event_id in zip(hashes, ids):
            id_of.setdefault(h, set()).add(event_id)
    assert all(len(ids) == 1 for ids in id_of.values()), "a hash resolved to two different events"
    conn = sqlite3.connect(tmp_path / "engram.db")
    stored = dict(conn.execute("SELECT id, dedup_hash FROM events").fetchall())
    assert len(stored) == len(id_of), "each distinct event is stored exactly once"
    assert {h: next(iter(ids)) for h, ids in id_of.items()} == {h: i for i, h in stored.items()}
    store.close()


def test_a_failing_request_rolls_back_alone_inside_its_group(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.migrate()
    writer = GroupCommitWriter(store._connect)
    gate, holding = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def insert(name: str, fail: bool):
        def write(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, 'x')", (name,))
            if fail:
                raise ValueError(f"{name} is refused")
            return name
        return write

    def submit(name: str, fail: bool) -> None:
        try:
            outcomes[name] = writer.run(insert(name, fail))
        except ValueError as exc:
            outcomes[name] = exc

    # Hold the writer thread so that the next three requests queue up and commit as one group.
    blocker = threading.Thread(target=lambda: writer.run(lambda conn: holding.set() or gate.wait(10)))
    blocker.start()
    assert holding.wait(10)
    threads = [threading.Thread(target=submit, args=args) for args in (("good-1", False), ("bad", True), ("good-2", False))]
    for t in threads:
        t.start()
    for _ in range(1000):
        if writer._queue.qsize() == 3:
            break
        threading.Event().wait(0.01)
    gate.set()
    for t in (blocker, *threads):
        t.join()
    writer.close()

    assert outcomes["good-1"] == "good-1" and outcomes["good-2"] == "good-2"
    assert isinstance(outcomes["bad"], ValueError)
    keys = {k for (k,) in sqlite3.connect(tmp_path / "engram.db").execute("SELECT key FROM meta")}
    assert {"good-1", "good-2"} <= keys and "bad" not in keys
    store.close()


def test_a_closed_writer_refuses_work(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    with pytest.raises(RuntimeError):
        store.accept(ORG, [batch("u", ["h"])], dedup_since=None)


def test_the_wal_starts_over_while_commits_never_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits back to back, each of ~50 pages (as a batch over 50 conversations writes): the
    checkpoint thread's passes never end between two commits, so SQLite never started the WAL
    over on its own and it grew without bound (750 MB in a minute under load). The writer
    finishes each pass between two of its transactions, and the WAL stays a few passes long."""
    from engram.store import sqlite_writer

    monkeypatch.setattr(sqlite_writer, "_CHECKPOINT_EVERY_S", 0.05)
    monkeypatch.setattr(sqlite_writer, "RESTART_AFTER_FRAMES", 100)
    db = tmp_path / "wal.db"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    connect().execute("CREATE TABLE t(x BLOB)")
    writer = GroupCommitWriter(connect)
    written = 0
    try:
        while written < 1000:  # ~200 MB through the WAL
            writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (randomblob(200000))"))
            written += 1
    finally:
        writer.close()
    wal = db.with_name("wal.db-wal")
    size = wal.stat().st_size if wal.exists() else 0
    assert size < 50 * 2**20, f"the WAL grew to {size / 2**20:.0f} MB for {written} commits of 0.2 MB"
