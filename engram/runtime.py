"""Assemble engram's parts from settings: the store, the pipeline, the worker processes."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Callable

from engram.config import ConfigError, Settings, redact_url, storage_setting
from engram.embed import Embedder, make_embedder
from engram.pipeline.content_filter import ContentFilter
from engram.pipeline.process import Extractor, Pipeline
from engram.store.base import Store

log = logging.getLogger("engram")


def open_store(settings: Settings, *, migrate: bool | None = None) -> Store:
    """The store named by ENGRAM_DATABASE_URL. The embedded store always brings its schema
    up to date; PostgreSQL does when `migrate` (default: ENGRAM_MIGRATE_ON_START) says so,
    and otherwise refuses to start on a schema that lacks a migration."""
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        return _open_sqlite(settings, url)
    return _open_postgres(settings, url, settings.migrate_on_start if migrate is None else migrate)


# SQLite's words for a file it cannot use (as opposed to a fault in engram's own SQL).
_SQLITE_FILE_PROBLEMS = ("unable to open", "readonly", "not a database", "disk i/o", "malformed")


def _open_sqlite(settings: Settings, url: str) -> Store:
    """load_settings checked the place already; this says the same (naming the setting) if it
    changed since, or if the file system refuses what its permissions promised."""
    import sqlite3

    from engram.store.sqlite import SQLiteStore

    path = url[len("sqlite:///"):]
    store = None
    try:
        store = SQLiteStore.from_url(url)
        store.migrate()
        return store
    except (OSError, sqlite3.DatabaseError) as exc:
        if store is not None:
            store.close()
        if isinstance(exc, sqlite3.DatabaseError) and not any(p in str(exc).lower() for p in _SQLITE_FILE_PROBLEMS):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{storage_setting(settings)}: cannot open {path}: {reason}") from exc


def _open_postgres(settings: Settings, url: str, migrate: bool) -> Store:
    try:
        from psycopg import Error as DatabaseError
        from psycopg_pool import PoolTimeout

        from engram.store.postgres import PostgresStore, SchemaOutOfDate
    except ImportError as exc:
        raise ConfigError("ENGRAM_DATABASE_URL: PostgreSQL needs psycopg and psycopg-pool"
                          " (pip install 'engram[postgres]')") from exc
    try:
        store = PostgresStore(url, pool_size=settings.db_pool_size)
    except (PoolTimeout, DatabaseError) as exc:
        raise ConfigError(f"ENGRAM_DATABASE_URL: cannot connect to {redact_url(url)}: {exc}") from exc
    try:
        if migrate:
            store.migrate()
        else:
            store.check_schema()
    except SchemaOutOfDate as exc:
        store.close()
        raise ConfigError(f"ENGRAM_DATABASE_URL: {exc}") from exc
    return store


def build_embedder(settings: Settings, *, for_queries: bool = False) -> Embedder:
    if settings.embedder == "local":
        threads = settings.embed_threads
        if for_queries:
            threads = settings.query_embed_threads or min(os.cpu_count() or 1, 4)
        return make_embedder("local", threads=threads, cache_dir=settings.model_cache)
    if settings.embedder == "static":
        return make_embedder("static", cache_dir=settings.model_cache)
    if settings.embedder == "openai":
        return make_embedder(
            "openai", base_url=settings.embedding_base_url, model=settings.embedding_model,
            api_key=settings.embedding_api_key or settings.llm_api_key, dimensions=settings.embedding_dimensions,
            batch_size=settings.embedding_batch_size, timeout_s=settings.llm_timeout_s, retry=_retry_policy(settings))
    return make_embedder(settings.embedder)


def embedder_name(settings: Settings) -> str:
    """The name of the embedder `build_embedder` would build, without loading a model."""
    if settings.embedder == "local":
        from engram.embed.local import NAME

        return NAME
    return build_embedder(settings).name


def _retry_policy(settings: Settings) -> Any:
    from engram.llm.provider import RetryPolicy

    return RetryPolicy(max_retries=settings.llm_max_retries, base_s=settings.llm_retry_base_s,
                       max_wait_s=settings.llm_retry_max_wait_s)


def lazy_embedder(settings: Settings) -> Callable[[], Embedder]:
    """The query embedder, loaded on first use: the accept path must never wait for it."""

    @lru_cache(maxsize=1)
    def get() -> Embedder:
        return build_embedder(settings, for_queries=True)

    return get


def build_llm_provider(settings: Settings) -> Any:
    """The chat model's provider (ENGRAM_LLM_BASE_URL), with the configured timeout and retries."""
    from engram.llm.provider import Provider

    return Provider(settings.llm_base_url or "", settings.llm_api_key, timeout_s=settings.llm_timeout_s,
                    retry=_retry_policy(settings))


def build_extractor(settings: Settings) -> Extractor:
    if settings.extractor == "rules":
        from engram.pipeline.extract.rules import RulesExtractor

        return RulesExtractor()
    if settings.extractor == "llm":
        from engram.pipeline.extract.llm import LLMExtractor

        assert settings.llm_base_url and settings.llm_model  # checked when the settings were loaded
        return LLMExtractor(
            build_llm_provider(settings), settings.llm_model, mode=settings.llm_structured_output,
            max_prompt_tokens=settings.llm_max_prompt_tokens, max_output_tokens=settings.llm_max_output_tokens,
            temperature=settings.llm_temperature, concurrency=settings.llm_concurrency,
            recall_limit=settings.llm_recall_limit)
    raise ConfigError(f"ENGRAM_EXTRACTOR: unknown extractor {settings.extractor!r}")


def build_content_filter(settings: Settings) -> ContentFilter:
    try:
        return ContentFilter(extra_patterns=settings.content_filter_patterns)
    except ValueError as exc:
        raise ConfigError(f"ENGRAM_CONTENT_FILTER_PATTERNS: {exc}") from exc


def build_pipeline(settings: Settings, store: Store) -> Pipeline:
    return Pipeline(store, settings, build_extractor(settings), build_embedder(settings), build_content_filter(settings))


class DataDirLock:
    """One embedded server per data directory. Holding the lock proves that no worker of
    an earlier server is still committing, so its leases can be handed back at once."""

    def __init__(self, data_dir: Path, setting: str = "ENGRAM_DATA_DIR (--data)") -> None:
        self.setting = setting  # named in the message when the directory cannot be used
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot use {data_dir}: {exc.strerror or exc}") from exc
        self.path = data_dir / "engram.lock"
        self._file: IO[str] | None = None

    @classmethod
    def of(cls, settings: Settings) -> "DataDirLock | None":
        """The lock of the embedded store's directory; None on PostgreSQL (no such directory)."""
        url = settings.resolved_database_url
        if not url.startswith("sqlite:///"):
            return None
        return cls(Path(url[len("sqlite:///"):]).parent, storage_setting(settings))

    def acquire(self, timeout_s: float = 10.0) -> None:
        try:
            handle = open(self.path, "a+")
        except OSError as exc:
            raise ConfigError(f"{self.setting}: cannot write {self.path}: {exc.strerror or exc}") from exc
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise ConfigError(f"another engram server is using {self.path.parent}") from None
                time.sleep(0.1)
            except OSError as exc:  # a file system without locks (some network mounts)
                handle.close()
                raise ConfigError(f"{self.setting}: cannot lock {self.path}: {exc.strerror or exc}") from exc
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class WorkerSupervisor:
    """Runs `engram worker --supervised` processes beside the API and restarts any that die.

    Each child reads its stdin: a byte wakes it (new work was accepted), end-of-file stops
    it. So a child never outlives its server, even when the server is killed outright.
    """

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.count = count
        self.env = env
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restarts = 0
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "engram", "worker", "--supervised"], stdin=subprocess.PIPE,
                                env=self.env)

    def start(self) -> None:
        with self._lock:
            self._procs = [self._spawn() for _ in range(self.count)]
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, proc in enumerate(self._procs):
                    if proc.poll() is not None and not self._stopping.is_set():
                        log.error("worker pid %d exited with %s; restarting it", proc.pid, proc.returncode)
                        self._restarts += 1
                        self._procs[i] = self._spawn()

    def notify(self) -> None:
        """Wake the workers: work was accepted. Never blocks the accept path."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            try:
                assert proc.stdin is not None
                os.set_blocking(proc.stdin.fileno(), False)
                proc.stdin.write(b".")
                proc.stdin.flush()
            except (BlockingIOError, BrokenPipeError, ValueError, OSError):
                pass  # a full pipe already means "wake up"; a dead child is restarted by _watch

    def health(self) -> dict[str, Any]:
        with self._lock:
            alive = sum(1 for p in self._procs if p.poll() is None)
        status = "ok" if alive == self.count else ("degraded" if alive else "error")
        if self.count == 0:
            status = "ok"
        return {"status": status, "processes": self.count, "alive": alive, "restarts": self._restarts}

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            try:
                assert proc.stdin is not None
                os.set_blocking(proc.stdin.fileno(), True)
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
