"""Where this machine's engram processes keep their metrics (prometheus-client's multiprocess
mode, engram/metrics.py). Separate from the metrics themselves: prometheus-client picks its
mode when it is first imported, so this must run before it is."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_directory(shared: Path | None, *, private: bool) -> Path | None:
    """Set up multiprocess mode for this process (and the children it starts): `shared` when
    given (never emptied: other processes write there), else with `private` a new directory of
    this process's own. Must run before prometheus-client is imported."""
    if os.environ.get(ENV):  # a supervising server chose it
        return Path(os.environ[ENV])
    if shared is not None:
        shared.mkdir(parents=True, exist_ok=True)
        os.environ[ENV] = str(shared)
        return shared
    if private:
        path = Path(tempfile.mkdtemp(prefix="engram-metrics-"))
        os.environ[ENV] = str(path)
        return path
    return None


def remove_private(path: Path | None, shared: Path | None) -> None:
    if path is not None and path != shared:
        shutil.rmtree(path, ignore_errors=True)
