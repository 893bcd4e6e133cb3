"""The stored vectors know their embedder (engram/pipeline/vector_space.py): a new database
records it, one from before the record is inferred, and another embedder's vectors are made
again — by the embedded server at start, by `engram migrate` — or refused.

The rules run on a real SQLite store with a small real embedder of their own (a hashed bag of
words: deterministic, and different from the local model, which is what "another embedder"
needs); the end-to-end tests run `engram serve` and `engram migrate` with the real local model.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from engram.domain.records import utcnow
from engram.embed.local import NAME as LOCAL_NAME
from engram.pipeline import vector_space
from engram.store.sqlite import SQLiteStore
from tests.conftest import ServerProcess
from tests.test_store_conformance import ORG, memory, run_job, unit


class BagOfWords:
    """Each word hashed to one of `dim` axes; rows unit length."""

    def __init__(self, name: str = "test:bag", dim: int = 384, fail_after: int | None = None) -> None:
        self.name, self.dim, self.calls, self.fail_after = name, dim, 0, fail_after

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("the embedder went away")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
    s.migrate()
    s.ensure_org(ORG)
    yield s
    s.close()


def _with_memories(store: Any, n: int) -> list[Any]:
    facts = [memory(ORG, "u1", f"the user likes topic{i} a lot") for i in range(n)]
    run_job(store, ORG, "u1", "c1", [(m, unit(i)) for i, m in enumerate(facts)])
    return facts


def test_a_new_database_records_the_configured_embedder(store: Any) -> None:
    vector_space.check(store, "test:bag")
    assert store.vector_space() == "test:bag"
    assert vector_space.align(store, "test:bag", lambda: pytest.fail("nothing to embed")) == 0


def test_a_database_from_before_the_record_is_taken_as_the_old_local_model(store: Any) -> None:
    _with_memories(store, 2)
    assert store.vector_space() is None
    assert vector_space.recorded(store, LOCAL_NAME) == vector_space.LEGACY_LOCAL
    # openai's names carry their model: vectors made before the record were its own
    assert vector_space.recorded(store, "openai:text-embedding-3-small") == "openai:text-embedding-3-small"
    vector_space.check(store, vector_space.LEGACY_LOCAL)  # the same embedder: recorded, no work
    assert store.vector_space() == vector_space.LEGACY_LOCAL


def test_another_embedders_vectors_are_refused_until_made_again(store: Any) -> None:
    facts = _with_memories(store, vector_space.PAGE + 3)  # more than one page
    store.record_vector_space("local:an-older-model", utcnow())
    with pytest.raises(vector_space.VectorSpaceMismatch, match="engram migrate"):
        vector_space.check(store, "test:bag")
    assert store.vector_space() == "local:an-older-model"

    embedder = BagOfWords()
    seen: list[int] = []
    done = vector_space.align(store, "test:bag", lambda: embedder, progress=lambda n, total, _s: seen.append(n))
    assert done == len(facts) and seen[-1] == len(facts) and len(seen) == 2
    assert store.vector_space() == "test:bag"
    vector_space.check(store, "test:bag")  # now it starts
    # Every vector is the new embedder's: a fact's own text finds it first.
    target = facts[7]
    query = embedder.embed([target.text])[0]
    best = store.dense_candidates(ORG, _user("u1"), query, 1)
    assert best[0][0] == target.id and best[0][1] == pytest.approx(1.0, abs=1e-5)


def test_a_failure_midway_leaves_the_old_record_and_the_next_start_finishes(store: Any) -> None:
    _with_memories(store, vector_space.PAGE + 1)
    store.record_vector_space("local:an-older-model", utcnow())
    with pytest.raises(RuntimeError, match="went away"):
        vector_space.align(store, "test:bag", lambda: BagOfWords(fail_after=1))
    assert store.vector_space() == "local:an-older-model"  # half-made vectors are never taken as done
    assert vector_space.align(store, "test:bag", lambda: BagOfWords()) == vector_space.PAGE + 1
    assert store.vector_space() == "test:bag"


def test_an_embedder_that_names_another_space_is_refused(store: Any) -> None:
    _with_memories(store, 1)
    store.record_vector_space("local:an-older-model", utcnow())
    with pytest.raises(vector_space.ConfigError, match="calls itself"):
        vector_space.align(store, "test:bag", lambda: BagOfWords(name="test:other"))


def _user(user_id: str) -> Any:
    from engram.domain.filters import Cmp

    return Cmp("user_id", "eq", user_id)


# ---------------------------------------------------------------------- the real server
def _ingest_and_wait(client: Any, user: str, text: str) -> None:
    job = client.post("/v1/memories", json={"messages": [{"role": "user", "content": text}], "user_id": user,
                                                "conv_id": "c1"})
    assert job.status_code in (200, 202), job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/memories/jobs/{job_id}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_embedded_server_makes_another_embedders_vectors_again_at_start(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_LOG_LEVEL": "INFO"})
    srv.start()
    try:
        with srv.client() as client:
            _ingest_and_wait(client, "ann", "I keep bees on the roof of my building.")
            _ingest_and_wait(client, "ann", "My sister lives in Lisbon.")
        # The server recorded its embedder on a new database.
        db = tmp_path / "data" / "engram.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT embedder FROM vector_space").fetchone()[0] == LOCAL_NAME
        # Another process (a migration) may not re-embed under a running server.
        refused = srv.cli("migrate")
        assert refused.returncode != 0 and "another engram server" in refused.stdout + refused.stderr
    finally:
        srv.stop()

    # As if the vectors had been made by an older model: scramble them and record that model.
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT rid FROM memory_vectors").fetchall()
        for (rid,) in rows:
            conn.execute("UPDATE memory_vectors SET vec = ? WHERE rid = ?", (unit(rid).tobytes(), rid))
        conn.execute("UPDATE vector_space SET embedder = 'local:an-older-model'")
    srv.start()
    try:
        assert f"embedding {len(rows)} memories again" in srv.log()
        with srv.client() as client:
            hits = client.post("/v1/memories/search", json={"query": "beekeeping", "filters": {"user_id": "ann"},
                                                            "limit": 1}).json()["data"]
            assert "bees" in hits[0]["text"]
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT embedder FROM vector_space").fetchone()[0] == LOCAL_NAME
    finally:
        srv.stop()


def test_engram_migrate_makes_them_again_when_no_server_runs(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        with srv.client() as client:
            _ingest_and_wait(client, "bo", "I play the cello in a community orchestra.")
    finally:
        srv.stop()
    db = tmp_path / "data" / "engram.db"
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT vec FROM memory_vectors ORDER BY rid").fetchall()
        conn.execute("UPDATE memory_vectors SET vec = ?", (unit(5).tobytes(),))
        conn.execute("UPDATE vector_space SET embedder = 'local:an-older-model'")
    done = srv.cli("migrate")
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} memories embedded again" in done.stdout
    with sqlite3.connect(db) as conn:
        after = conn.execute("SELECT vec FROM memory_vectors ORDER BY rid").fetchall()
        assert conn.execute("SELECT embedder FROM vector_space").fetchone()[0] == LOCAL_NAME
    # The same model makes the same vectors again (up to the batch's float rounding).
    for (old,), (new,) in zip(before, after):
        assert float(np.frombuffer(old, np.float32) @ np.frombuffer(new, np.float32)) > 0.999


def test_on_postgres_servers_and_workers_refuse_another_embedders_vectors_until_migrate(
        postgres: Any, tmp_path: Path) -> None:
    import psycopg

    from engram.store.postgres import PostgresStore
    from tests.conftest import EngramProcess

    url = postgres.create_database("engram_vector_space")
    try:
        store = PostgresStore(url, pool_size=2)
        store.migrate()
        store.ensure_org(ORG)
        _with_memories(store, 2)
        store.record_vector_space("local:an-older-model", utcnow())
        store.close()
        env = {"ENGRAM_DATABASE_URL": url, "ENGRAM_WORKERS": "0"}
        srv = ServerProcess(tmp_path / "data", env=env)
        with pytest.raises(RuntimeError, match="engram migrate"):
            srv.start()
        worker = EngramProcess(["worker"], {**os.environ, **env}, tmp_path / "worker.log")
        assert worker.proc.wait(60) != 0 and "engram migrate" in (tmp_path / "worker.log").read_text()

        migrated = srv.cli("migrate")
        assert migrated.returncode == 0 and "2 memories embedded again" in migrated.stdout, migrated.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT embedder FROM vector_space").fetchone()[0] == LOCAL_NAME
        srv.start()  # now it serves
        srv.stop()
    finally:
        postgres.drop_database(url)
