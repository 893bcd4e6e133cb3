"""Group commit for SQLite: one thread owns the accept path's writes.

SQLite has one write lock per database. When every request thread opens its own write
transaction, they queue on that lock through SQLite's busy handler, which sleeps 1, 2,
5, 10, 15 … ms between tries: under load the waits, not the writes, are the latency,
and throughput collapses. Here requests hand their write to one thread instead. It
takes everything queued, runs each request in a savepoint of one transaction (so one
failing request rolls back alone), commits once — one fsync for the group — and only
then answers each caller. Nothing is acknowledged before its COMMIT returns.

When another process (a worker) holds the lock, this thread waits for it in steps of a
fraction of a millisecond rather than the busy handler's coarse sleeps.

Checkpoints come in two parts. A thread of their own copies the WAL into the database file
once a second, beside the commits (tens of milliseconds that must not sit in front of a
request). But SQLite starts the WAL over only when a writer begins with every frame copied,
and while commits arrive faster than a pass copies, none ever does: under 50-event batches
spread over 50 conversations (~130 pages a commit) the WAL grew by ~50 MB a second, 750 MB in
a minute, and the accept p99 went from ~20 ms to 600 ms. So after each pass this thread, between
two of its own transactions, copies what was committed since (a few hundred pages at most) and
waits up to RESTART_WAIT_S for readers of the old frames, so that its next transaction starts
the WAL over.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_MAX_GROUP = 128  # requests per transaction
_CHECKPOINT_EVERY_S = 1.0
RESTART_AFTER_FRAMES = 1000  # a pass that found at least this many frames (~4 MB) is finished by the writer
RESTART_WAIT_S = 0.005  # how long the writer waits for readers of the old frames before trying next time


class GroupCommitWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection], *, busy_timeout_s: float = 30.0,
                 on_failure: Callable[[], None] = lambda: None) -> None:
        self._connect = connect
        self._on_failure = on_failure  # a group rolled back: state kept beside the table is stale
        self._busy_timeout_s = busy_timeout_s
        self._queue: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._stopped = threading.Event()
        self._restart_wal = threading.Event()  # set by a checkpoint pass: the writer finishes it

    def run(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """Run `write(conn)` inside a group transaction; returns once it is committed."""
        return self.submit(write).result()

    def submit(self, write: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue `write(conn)` for the next group; the future resolves after its COMMIT."""
        future: Future[T] = Future()
        self._ensure_started()
        self._queue.put((write, future))
        return future

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    # ------------------------------------------------------------------ the writer thread
    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sqlite-group-commit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        conn = self._connect()
        # Checkpoints copy the WAL into the database file and fsync it: tens of milliseconds
        # that must not sit in front of a request. They run on a thread of their own.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA busy_timeout=0")  # waits for the lock are ours (below), not SQLite's
        checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True)
        checkpointer.start()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                group, stop = [item], False
                while len(group) < _MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                self._commit_group(conn, group)
                if self._restart_wal.is_set():
                    self._restart_wal.clear()
                    self._finish_checkpoint(conn)
                if stop:
                    return
        finally:
            self._stopped.set()
            checkpointer.join(timeout=5)
            conn.close()

    def _checkpoint_loop(self) -> None:
        conn = self._connect()
        try:
            while not self._stopped.wait(_CHECKPOINT_EVERY_S):
                try:
                    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                except sqlite3.OperationalError:
                    continue  # busy: another connection is checkpointing; the next pass will do it
                if frames >= RESTART_AFTER_FRAMES:
                    self._restart_wal.set()
        finally:
            conn.close()

    def _finish_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Between two of this thread's transactions (no accept commits meanwhile): copy the
        rest of the WAL and have the next writer start it over (module docstring)."""
        conn.execute(f"PRAGMA busy_timeout={int(RESTART_WAIT_S * 1000)}")
        try:
            conn.execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.OperationalError:
            pass  # busy: another connection is checkpointing; the next pass tries again
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def _commit_group(self, conn: sqlite3.Connection, group: list[tuple[Callable[[sqlite3.Connection], Any], Future]]) -> None:
        outcomes: list[tuple[Future, Any, BaseException | None]] = []
        try:
            self._begin(conn)
            try:
                for write, future in group:
                    conn.execute("SAVEPOINT request")
                    try:
                        result = write(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO request")
                        conn.execute("RELEASE request")
                        self._on_failure()
                        outcomes.append((future, None, exc))
                    else:
                        conn.execute("RELEASE request")
                        outcomes.append((future, result, None))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # the transaction itself failed: nobody's write is durable
            self._on_failure()
            for _, future in group:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _begin(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self._busy_timeout_s
        pause = 0.0002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 1.5, 0.002)
