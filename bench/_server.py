"""Start a throwaway `engram serve` for a benchmark, or use the one at --url."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared"
SERVER_PIDS: dict[str, int] = {}  # base URL -> pid of the `engram serve` this module started


@contextlib.contextmanager
def engram_server(url: str | None, env: dict[str, str] | None = None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engram", "serve", "--port", str(port), "--data", str(Path(tmp) / "data")],
            env={**os.environ, "ENGRAM_LOG_LEVEL": "WARNING", **(env or {})}, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        SERVER_PIDS[base] = proc.pid
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                        break
                time.sleep(0.05)
            else:
                raise RuntimeError("engram did not start")
            yield base
        finally:
            proc.terminate()
            proc.wait(30)
