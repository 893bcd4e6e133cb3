"""The stored vectors know their embedder (engram/pipeline/vector_space.py): a new database
records it, one from before the record is inferred, and another embedder's vectors are
refused — search answers 503 saying what to run, workers wait, an old-space commit is
refused — until `engram reindex` has made them again (resumable, beside the vectors in use,
then switched at once).

The rules run on a real SQLite store with a small real embedder of their own (a hashed bag of
words: deterministic, and different from the local model, which is what "another embedder"
needs); the end-to-end tests run `engram serve` and `engram reindex` with the real local model.
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

from engram.domain.records import JobError, utcnow
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
    done = vector_space.reindex(store, "test:bag", lambda: pytest.fail("nothing to embed"))
    assert not done.switched and done.embedded == 0


def test_a_database_from_before_the_record_is_taken_as_the_old_local_model(store: Any) -> None:
    _with_memories(store, 2)
    assert store.vector_space() is None
    assert vector_space.recorded(store, LOCAL_NAME) == vector_space.LEGACY_LOCAL
    # openai's names carry their model: vectors made before the record were its own
    assert vector_space.recorded(store, "openai:text-embedding-3-small") == "openai:text-embedding-3-small"
    vector_space.check(store, vector_space.LEGACY_LOCAL)  # the same embedder: recorded, no work
    assert store.vector_space() == vector_space.LEGACY_LOCAL


def test_another_embedders_vectors_are_refused_until_engram_reindex(store: Any) -> None:
    facts = _with_memories(store, vector_space.PAGE + 3)  # more than one page
    store.record_vector_space("local:an-older-model", utcnow())
    with pytest.raises(vector_space.VectorSpaceMismatch, match="engram reindex"):
        vector_space.check(store, "test:bag")
    gate = vector_space.SpaceGate(store, lambda: "test:bag")
    assert "engram reindex" in gate.problem(now=0.0)
    assert store.vector_space() == "local:an-older-model"

    embedder = BagOfWords()
    seen: list[int] = []
    done = vector_space.reindex(store, "test:bag", lambda: embedder, progress=lambda n, total: seen.append(n))
    assert done.switched and done.embedded == len(facts) and done.resumed_after is None
    assert seen == [vector_space.PAGE, len(facts)]
    assert store.vector_space() == "test:bag" and store.reindex_state() is None
    assert gate.problem(now=0.5) is not None, "the gate looks again at most once a second"
    assert gate.problem(now=1.0) is None
    vector_space.check(store, "test:bag")
    # Every vector is the new embedder's: a fact's own text finds it at cosine 1.
    for target in (facts[0], facts[7], facts[-1]):
        scored = dict(store.dense_candidates(ORG, _user("u1"), embedder.embed([target.text])[0], 20))
        assert scored[target.id] == pytest.approx(1.0, abs=1e-5)


def test_a_reindex_that_stops_resumes_where_it_was_and_search_keeps_the_old_vectors(store: Any) -> None:
    facts = _with_memories(store, vector_space.PAGE + 1)
    store.record_vector_space("local:an-older-model", utcnow())
    old_query = unit(3)  # facts[3]'s old vector
    with pytest.raises(RuntimeError, match="went away"):
        vector_space.reindex(store, "test:bag", lambda: BagOfWords(fail_after=1))
    state = store.reindex_state()
    assert state.embedder == "test:bag" and state.after_id == sorted(f.id for f in facts)[vector_space.PAGE - 1]
    assert store.vector_space() == "local:an-older-model"  # half-made vectors are never taken as done
    best = store.dense_candidates(ORG, _user("u1"), old_query, 1)
    assert best[0][0] == facts[3].id and best[0][1] == pytest.approx(1.0, abs=1e-5), "search reads the old vectors"
    embedder = BagOfWords()
    done = vector_space.reindex(store, "test:bag", lambda: embedder)
    assert done.switched and done.resumed_after == state.after_id and done.embedded == 1, "only the rest"
    assert store.vector_space() == "test:bag"
    target = facts[-1]  # (texts that differ in one word may share the bag's axis: the cosine is what is checked)
    scored = dict(store.dense_candidates(ORG, _user("u1"), embedder.embed([target.text])[0], 20))
    assert scored[target.id] == pytest.approx(1.0, abs=1e-5)


def test_an_embedder_that_names_another_space_is_refused(store: Any) -> None:
    _with_memories(store, 1)
    store.record_vector_space("local:an-older-model", utcnow())
    with pytest.raises(vector_space.ConfigError, match="calls itself"):
        vector_space.reindex(store, "test:bag", lambda: BagOfWords(name="test:other"))


def test_after_the_switch_the_old_embedders_commits_are_refused_and_its_workers_wait(store: Any) -> None:
    from engram.config import load_settings
    from engram.pipeline.content_filter import ContentFilter
    from engram.pipeline.process import Pipeline
    from engram.pipeline.worker import Worker
    from engram.store.base import CommitResult
    from tests.test_store_conformance import _ScriptedExtractor, accept

    old = BagOfWords(name="test:old")
    store.record_vector_space("test:old", utcnow())
    pipeline = Pipeline(store, load_settings(env={}), _ScriptedExtractor(), old, ContentFilter())
    accept(store, user="u1", conv="c1", texts=["Ann keeps bees"])
    lease = store.lease("w", utcnow(), 60, 5)
    outcome = pipeline.process(lease)  # embedded with test:old ...
    assert vector_space.reindex(store, "test:new", lambda: BagOfWords(name="test:new")).switched  # ... switched
    assert store.complete(lease, outcome) is CommitResult.STALE, "old-space vectors never land in the new space"
    assert store.list_memories(ORG, _user("u1"), ascending=True, after=None, limit=10).items == []
    store.retry_later(lease, JobError("ingest_failed", "stale"), utcnow())
    assert Worker(store, pipeline, load_settings(env={})).run_once() is False, "it leaves the queue alone"
    assert store.queue_depth()["pending"] == 1


def _user(user_id: str) -> Any:
    from engram.domain.filters import Cmp

    return Cmp("user_id", "eq", user_id)


# ---------------------------------------------------------------------- the real server
def _ingest(client: Any, user: str, text: str) -> str:
    job = client.post("/v1/memories", json={"messages": [{"role": "user", "content": text}], "user_id": user,
                                                "conv_id": "c1"})
    assert job.status_code in (200, 202), job.text
    return job.json()["id"]


def _until(condition: Any, timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _ingest_and_wait(client: Any, user: str, text: str) -> None:
    job_id = _ingest(client, user, text)
    _until(lambda: client.get(f"/v1/memories/jobs/{job_id}").json()["status"] == "succeeded", what=job_id)


def _search(client: Any, user: str, query: str) -> Any:
    return client.post("/v1/memories/search", json={"query": query, "filters": {"user_id": user}, "limit": 1})


def _as_if_an_older_model(conn: Any, scramble: Any) -> int:
    """Vectors as another model would have made them: scrambled, and that model recorded."""
    n = scramble(conn)
    conn.execute("UPDATE vector_space SET embedder = 'local:an-older-model'")
    return n


def test_a_server_on_another_embedders_vectors_refuses_search_until_engram_reindex_runs_beside_it(
        tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_LOG_LEVEL": "INFO"})
    srv.start()
    try:
        with srv.client() as client:
            _ingest_and_wait(client, "ann", "I keep bees on the roof of my building.")
            _ingest_and_wait(client, "ann", "My sister lives in Lisbon.")
        db = tmp_path / "data" / "engram.db"
        with sqlite3.connect(db) as conn:  # the server recorded its embedder on a new database
            assert conn.execute("SELECT embedder FROM vector_space").fetchone()[0] == LOCAL_NAME
    finally:
        srv.stop()

    def scramble(conn: Any) -> int:
        rows = conn.execute("SELECT rid FROM memory_vectors").fetchall()
        for (rid,) in rows:
            conn.execute("UPDATE memory_vectors SET vec = ? WHERE rid = ?", (unit(rid).tobytes(), rid))
        return len(rows)

    with sqlite3.connect(db) as conn:
        count = _as_if_an_older_model(conn, scramble)
    srv.start()
    try:
        assert "engram reindex" in srv.log()
        with srv.client() as client:
            refused = _search(client, "ann", "beekeeping")
            assert refused.status_code == 503 and refused.json()["detail"]["code"] == "unavailable"
            assert "engram reindex" in refused.json()["detail"]["message"]
            waiting = _ingest(client, "ann", "I play the cello on Sundays.")  # accepted; its worker waits
            time.sleep(1.5)
            assert client.get(f"/v1/memories/jobs/{waiting}").json()["status"] == "pending"

            done = srv.cli("reindex")  # beside the running server
            assert done.returncode == 0, done.stderr
            assert f"reindexed: {count} memories embedded with {LOCAL_NAME!r}" in done.stdout
            _until(lambda: _search(client, "ann", "beekeeping").status_code == 200, 10, "search back")
            assert "bees" in _search(client, "ann", "beekeeping").json()["data"][0]["text"]
            _until(lambda: client.get(f"/v1/memories/jobs/{waiting}").json()["status"] == "succeeded", 30, waiting)
            again = srv.cli("reindex")
            assert again.returncode == 0 and "nothing to do" in again.stdout
        migrated = srv.cli("migrate")
        assert migrated.returncode == 0 and "note" not in migrated.stdout
    finally:
        srv.stop()


def test_on_postgres_servers_and_workers_wait_for_engram_reindex(postgres: Any, tmp_path: Path) -> None:
    import psycopg

    from engram.store.postgres import PostgresStore
    from tests.conftest import EngramProcess

    url = postgres.create_database("engram_vector_space")
    procs: list[Any] = []
    try:
        store = PostgresStore(url, pool_size=2)
        store.migrate()
        store.ensure_org("default")
        facts = _with_memories(store, 2)  # org-a's
        store.record_vector_space("local:an-older-model", utcnow())
        store.close()
        env = {"ENGRAM_DATABASE_URL": url, "ENGRAM_WORKERS": "0", "ENGRAM_LOG_LEVEL": "INFO"}
        srv = ServerProcess(tmp_path / "data", env=env).start()  # it starts: search waits, not the service
        procs.append(srv)
        worker = EngramProcess(["worker"], {**os.environ, **env}, tmp_path / "worker.log")
        procs.append(worker)
        with srv.client() as client:
            assert _search(client, "u1", "topic1").status_code == 503
            waiting = _ingest(client, "bo", "I play the cello in a community orchestra.")
            _until(lambda: "not processing jobs" in (tmp_path / "worker.log").read_text(), 30, "worker waits")
            assert client.get(f"/v1/memories/jobs/{waiting}").json()["status"] == "pending"
            migrated = srv.cli("migrate")
            assert migrated.returncode == 0 and "engram reindex" in migrated.stdout
            done = srv.cli("reindex")
            assert done.returncode == 0 and f"reindexed: {len(facts)} memories" in done.stdout, done.stderr
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT embedder FROM vector_space").fetchone()[0] == LOCAL_NAME
            _until(lambda: _search(client, "u1", "topic1").status_code == 200, 10, "search back")
            _until(lambda: client.get(f"/v1/memories/jobs/{waiting}").json()["status"] == "succeeded", 60, waiting)
    finally:
        for p in procs:
            p.stop()
        postgres.drop_database(url)
