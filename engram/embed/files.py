"""Files an embedder derives once per machine and checks before use (the local model's graph,
the static model's table): where they live, their hash, one deriver at a time, whole files only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def default_cache_dir() -> Path:
    """ENGRAM_MODEL_CACHE's default: $XDG_CACHE_HOME/engram, else ~/.cache/engram."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "engram"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Held by one process at a time (a lock file beside `path`): the API process and its
    workers start together, and only one of them should derive the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


@contextlib.contextmanager
def replaced_whole(path: Path) -> Iterator[str]:
    """A temporary path in `path`'s directory to write; on success it is synced, made readable
    by other users of a shared cache (mkstemp's mode is 0600) and renamed onto `path`, so no
    reader ever sees half a file; on failure it is removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
