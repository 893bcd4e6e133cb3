"""`engram serve` stopped with SIGTERM (docker stop, systemd) shuts down as a normal exit: its
clean-up runs. uvicorn raises the signal again once it has drained its connections; left to
the default action, that killed the process before any of it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import ServerProcess


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


def test_sigterm_waits_for_the_workers_closes_the_store_and_removes_the_metrics_directory(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # where the server makes its private metrics directory
    scratch.mkdir()
    srv = ServerProcess(tmp_path / "data", env={"TMPDIR": str(scratch)}).start()
    try:
        with srv.client() as client:
            client.post("/v1/ingest", json={"events": [{"actor_id": "u", "session_id": "s", "kind": "user_message",
                                                        "content": "I keep bees on the roof."}]}).raise_for_status()
            assert client.get("/metrics").status_code == 200
        assert srv.proc is not None
        workers = _children(srv.proc.pid)
        assert workers, "the server runs a worker process"
        metrics = [p for p in scratch.iterdir() if p.name.startswith("engram-metrics-")]
        assert len(metrics) == 1 and any(metrics[0].iterdir())
        assert (srv.data_dir / "engram.db-wal").exists()

        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.log()
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "the server waited for its workers"
        assert not metrics[0].exists(), "its private metrics directory is removed"
        # SQLite folds the write-ahead log back into the file when its last connection closes
        assert not (srv.data_dir / "engram.db-wal").exists(), "every connection to the store was closed"
    finally:
        srv.kill()
    # and the data is there for the next server
    again = ServerProcess(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=again.url, timeout=30) as client:
            assert client.get("/v1/health").json()["status"] == "ok"
    finally:
        again.stop()
