"""At most `search_concurrency` searches run at once in an API process (Service.run_search);
the rest wait on the event loop. What that does for accepts during a burst of searches is
measured in bench/search_scale.py (`--burst`), not asserted here."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio

from engram.config import Settings
from engram.service import Service
from engram.store.sqlite import SQLiteStore


class _CountingService(Service):
    """Its search only records how many run at once (the bound is what is tested here)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running = self.most = 0
        self._lock = threading.Lock()

    def search(self, org_id: str, query: Any) -> Any:  # type: ignore[override]
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with self._lock:
            self.running -= 1
        return query


def test_searches_beyond_the_bound_wait_their_turn(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
    store.migrate()
    service = _CountingService(store, Settings(search_concurrency=2), lambda: None)  # type: ignore[arg-type]
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(service.run_search, "org", i)

    anyio.run(main)
    store.close()
    assert service.most == 2  # twelve asked at once; two ran at a time
