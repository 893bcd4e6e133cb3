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
def engram_server(url: str | None, env: dict[str, str] | None = None, *, data_dir: Path | None = None,
                  start_timeout_s: float = 60) -> Iterator[str]:
    """The base URL of `url`, or of a new `engram serve` on `data_dir` (default: a throwaway
    directory) that is stopped on exit; its pid is in SERVER_PIDS."""
    if url:
        yield url.rstrip("/")
        return
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="engram-bench-"))) / "data"
        yield stack.enter_context(_serve(data_dir, env or {}, start_timeout_s))


@contextlib.contextmanager
def _serve(data_dir: Path, env: dict[str, str], start_timeout_s: float) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engram", "serve", "--port", str(port), "--data", str(data_dir)],
        env={**os.environ, "ENGRAM_LOG_LEVEL": "WARNING", **env}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    SERVER_PIDS[base] = proc.pid
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"engram serve exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"engram did not start within {start_timeout_s:.0f} s")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
