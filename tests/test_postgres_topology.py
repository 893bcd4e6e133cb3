"""The scale-out topology, proven: 2 API processes (`engram serve --no-workers`) and 3 worker
processes (`engram worker`) on one PostgreSQL; 2,000 ingest jobs through both API families;
one worker SIGKILLed while it holds a lease. Then: every job ended exactly once, no memory
exists twice, `wait=true` is answered by an API process for a job a worker process ran, and
status and search agree.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import EngramProcess, free_port

pytestmark = pytest.mark.slow

USERS = 20
CONVS_PER_USER = 2
JOBS = 2000  # half family X (one job per call), half family M (one job per call: one session)
LEASE_TIMEOUT_S = 6


def content(n: int) -> str:
    # Distinct facts (the numbers differ), so each message becomes exactly one memory and none merge.
    animals = ["otters", "herons", "foxes", "badgers", "owls", "hares"]
    return f"I counted {n * 7 + 3} {animals[n % len(animals)]} at lake number {n + 1000}."


@pytest.fixture
def topology(postgres_url: str, tmp_path: Path) -> Iterator[dict]:
    env = {**os.environ, "ENGRAM_DATABASE_URL": postgres_url, "ENGRAM_LOG_LEVEL": "WARNING",
           "ENGRAM_LEASE_TIMEOUT_S": str(LEASE_TIMEOUT_S), "ENGRAM_DB_POOL_SIZE": "6",
           "ENGRAM_EPISODE_EVERY_TURNS": "100000", "ENGRAM_EPISODE_IDLE_S": "100000",
           "ENGRAM_RETRY_BASE_S": "0.2"}
    procs: list[EngramProcess] = []
    apis, workers = [], []
    try:
        for i in range(2):
            port = free_port()
            procs.append(EngramProcess(["serve", "--no-workers", "--no-warm", "--port", str(port), "--data",
                               str(tmp_path / f"api{i}")], env, tmp_path / f"api{i}.log"))
            apis.append(f"http://127.0.0.1:{port}")
        for i in range(3):
            w = EngramProcess(["worker", "--data", str(tmp_path / f"w{i}")], env, tmp_path / f"worker{i}.log")
            procs.append(w)
            workers.append(w)
        deadline = time.monotonic() + 90
        for api in apis:
            while True:
                assert time.monotonic() < deadline, [p.log.read_text() for p in procs]
                try:
                    if httpx.get(f"{api}/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        yield {"apis": apis, "workers": workers, "db": postgres_url, "procs": procs}
    finally:
        for p in procs:
            p.stop()


def _kill_a_worker_holding_a_lease(db: str, workers: list[EngramProcess]) -> str:
    """Freeze a worker, check it holds a lease (its state cannot move while frozen), kill it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for w in workers:
            os.kill(w.proc.pid, signal.SIGSTOP)
            with psycopg.connect(db) as conn:
                row = conn.execute("SELECT id FROM jobs WHERE status='running' AND lease_owner LIKE %s",
                                   (f"%:{w.proc.pid}",)).fetchone()
            if row:
                os.kill(w.proc.pid, signal.SIGKILL)
                w.proc.wait(10)
                return row[0]
            os.kill(w.proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no worker was ever caught holding a lease")


def test_two_apis_three_workers_one_killed_every_job_once(topology: dict) -> None:
    apis, workers, db = topology["apis"], topology["workers"], topology["db"]
    clients = [httpx.Client(base_url=api, timeout=60) for api in apis]
    x_jobs: dict[str, tuple[str, str, int]] = {}  # job id -> (user, conv, n)
    m_events: dict[str, tuple[str, str, int]] = {}  # event id -> (user, conv, n)
    lock = threading.Lock()

    def send(n: int) -> None:
        user = f"user-{n % USERS}"
        conv = f"conv-{(n // USERS) % CONVS_PER_USER}"
        client = clients[n % 2]
        if n % 4 < 2:  # both families write into the same conversations
            r = client.post("/v1/memories", json={"messages": [{"role": "user", "content": content(n)}],
                                                  "user_id": user, "conv_id": conv})
            assert r.status_code == 202, r.text
            with lock:
                x_jobs[r.json()["id"]] = (user, conv, n)
        else:
            r = client.post("/v1/ingest", json={"events": [{"actor_id": user, "session_id": conv,
                                                            "kind": "user_message", "content": content(n)}]})
            assert r.status_code == 200, r.text
            with lock:
                m_events[r.json()["event_ids"][0]] = (user, conv, n)

    started = time.monotonic()
    killed_job: str | None = None
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, n) for n in range(JOBS)]
        killed_job = _kill_a_worker_holding_a_lease(db, workers)  # mid-run: ingest is still going on
        for f in futures:
            f.result()
    accepted_s = time.monotonic() - started
    assert len(x_jobs) + len(m_events) == JOBS

    # wait=true through each API process, for jobs that worker processes run (sent behind the backlog).
    def wait_for(i: int, k: int) -> httpx.Response:
        return clients[i].post("/v1/memories?wait=true", json={
            "messages": [{"role": "user", "content": content(JOBS + 10 * i + k)}],
            "user_id": "waiter", "conv_id": f"w{i}{k}"})

    with ThreadPoolExecutor(6) as pool:
        waiting = [pool.submit(wait_for, i, k) for i in range(2) for k in range(3)]
        drain_deadline = time.monotonic() + 600
        with psycopg.connect(db) as conn:
            while True:
                left = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('pending','running')").fetchone()[0]
                if left == 0:
                    break
                assert time.monotonic() < drain_deadline, f"{left} jobs still unfinished"
                time.sleep(0.5)
        waited = [f.result() for f in waiting]
    drained_s = time.monotonic() - started
    for r in waited:
        if r.status_code == 202:  # the 30 s budget ran out behind the backlog: the job still ends
            assert clients[0].get(f"/v1/memories/jobs/{r.json()['id']}").json()["status"] == "succeeded"
        else:
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    answered_fast = []
    for i, client in enumerate(clients):  # now the queue is empty: wait=true ends when the worker commits
        r = client.post("/v1/memories?wait=true", json={"messages": [{"role": "user", "content": content(9000 + i)}],
                                                      "user_id": "waiter", "conv_id": f"after{i}"})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        assert len(r.json()["result"]["memories_created"]) == 1
        answered_fast.append(r.elapsed.total_seconds())

    with psycopg.connect(db) as conn:
        jobs = conn.execute("SELECT id, status, attempts, lease_token, result FROM jobs WHERE user_id <> 'waiter'"
                            ).fetchall()
        facts = conn.execute("SELECT id, user_id, text, source_event_ids FROM memories WHERE type='fact'"
                             " AND user_id <> 'waiter'").fetchall()
        events = conn.execute("SELECT status, count(*) FROM events WHERE user_id <> 'waiter' GROUP BY status"
                              ).fetchall()
        killed = conn.execute("SELECT status, attempts FROM jobs WHERE id=%s", (killed_job,)).fetchone()

    # Every job ended, succeeded, exactly once.
    assert len(jobs) == JOBS and Counter(j[1] for j in jobs) == {"succeeded": JOBS}
    assert all(j[3] is None for j in jobs), "no lease left behind"
    assert killed == ("succeeded", 2), "the killed worker's job was taken back after its lease expired and run again"
    created = Counter(ref["id"] for j in jobs for ref in j[4]["memories_created"])
    assert len(created) == JOBS and set(created.values()) == {1}, "each job reports its one memory; none twice"
    # No memory duplicated; every event cited by exactly one memory.
    assert len(facts) == JOBS and set(created) == {f[0] for f in facts}
    assert set(Counter((f[1], f[2]) for f in facts).values()) == {1}, "no fact is stored twice"
    cited = Counter(e for f in facts for e in f[3])
    assert len(cited) == JOBS and set(cited.values()) == {1}
    assert dict(events) == {"completed": JOBS}

    # Status and search agree, through both API processes.
    by_event = {e: f for f in facts for e in f[3]}
    sample_m = list(m_events)[:: len(m_events) // 25]
    status = clients[1].post("/v1/status", json={"event_ids": list(m_events)[:500]}).json()
    assert status["pendingIds"] == [] and status["failedIds"] == [] and len(status["completedIds"]) == 500
    for event_id in sample_m:
        user, conv, n = m_events[event_id]
        hits = clients[0].post("/v1/search", json={"query": content(n), "actor_id": user, "session_id": conv,
                                                  "limit": 5}).json()["results"]
        assert hits and hits[0]["id"] == by_event[event_id][0] and event_id in hits[0]["metadata"]["source_event_ids"]
    for job_id in list(x_jobs)[:: len(x_jobs) // 25]:
        user, conv, n = x_jobs[job_id]
        job = clients[1].get(f"/v1/memories/jobs/{job_id}").json()
        assert job["status"] == "succeeded"
        memory_id = job["result"]["memories_created"][0]["id"]
        found = clients[0].post("/v1/memories/search", json={"query": content(n), "limit": 3,
                                                             "filters": {"user_id": user, "conv_id": conv}}).json()
        assert found["data"][0]["id"] == memory_id
    for c in clients:
        c.close()
    print(f"\naccepted {JOBS} jobs in {accepted_s:.1f}s, drained in {drained_s:.1f}s; "
          f"wait=true after the drain answered in {', '.join(f'{s * 1000:.0f} ms' for s in answered_fast)}")
