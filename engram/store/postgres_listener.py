"""The PostgreSQL dialect's notifications: one LISTEN connection per process.

Accepting work NOTIFYs `engram_work` (idle workers wake at once) and ending a job NOTIFYs
`engram_job_done` with its id (a `wait=true` request in any API process returns the moment
the worker commits); both are delivered at commit. `Listener` turns them into callbacks.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import psycopg

from engram.store.base import JOB_ENDED, WORK_READY

log = logging.getLogger("engram.store.postgres")

WORK_CHANNEL = "engram_work"
JOB_DONE_CHANNEL = "engram_job_done"
CHANNELS = {WORK_READY: WORK_CHANNEL, JOB_ENDED: JOB_DONE_CHANNEL}


class Listener(threading.Thread):
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
