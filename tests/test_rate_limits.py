"""Rate limits over HTTP (engram/ratelimit.py, docs/operations.md): per key and per org, for
requests and for ingested events; the headers on every response; 429 with Retry-After that
the published memsy client and engram's own client raise as their rate-limit errors; and the
bound with two API processes on one PostgreSQL."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import EngramProcess, ServerProcess, create_key, free_port, wait_healthy

LIMITS = {"ENGRAM_RATE_LIMIT_REQUESTS_PER_MIN": "30", "ENGRAM_RATE_LIMIT_EVENTS_PER_MIN": "12",
          "ENGRAM_RATE_LIMIT_ORG_REQUESTS_PER_MIN": "50"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("ratelimit") / "data", env=LIMITS)
    yield server.start()
    server.stop()


def _burst(client: httpx.Client, n: int, path: str = "/v1/memories", **kw: Any) -> list[httpx.Response]:
    return [client.get(path, **kw) for _ in range(n)]


def test_a_keys_requests_are_limited_with_headers_and_retry_after(srv: ServerProcess) -> None:
    key, other = create_key(srv, "rl-a", "read,write"), create_key(srv, "rl-b", "read,write")
    with srv.client(key) as c:
        first = c.get("/v1/memories")
        assert first.status_code == 200
        assert first.headers["RateLimit-Limit"] == "30" and int(first.headers["RateLimit-Remaining"]) == 29
        assert int(first.headers["RateLimit-Reset"]) >= 1 and int(first.headers["X-RateLimit-Reset"]) > time.time()
        answers = _burst(c, 40)
        codes = [r.status_code for r in answers]
        assert codes.count(200) <= 30 and 429 in codes, codes  # 30 a minute, refilled at 0.5 a second
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["detail"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["Retry-After"]) <= 2 and refused.headers["RateLimit-Remaining"] == "0"
        time.sleep(int(refused.headers["Retry-After"]))
        assert c.get("/v1/memories").status_code == 200, "the bucket refills"
    with srv.client(other) as c:  # another key (of another org) has a bucket of its own
        assert c.get("/v1/memories").status_code == 200


def test_ingested_events_have_their_own_limit_and_nothing_refused_is_written(srv: ServerProcess) -> None:
    key = create_key(srv, "rl-events", "read,write")
    with srv.client(key) as c:
        def ingest(n: int, conv: str) -> httpx.Response:
            return c.post("/v1/memories", json={"user_id": "u", "conv_id": conv,
                                                "messages": [{"role": "user", "content": f"I own {i + 2} cats."}
                                                             for i in range(n)]})

        assert ingest(8, "a").status_code == 202
        refused = ingest(5, "b")
        assert refused.status_code == 429 and refused.json()["detail"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        r = c.post("/v1/ingest", json={"events": [{"actor_id": "u", "session_id": "m", "kind": "user_message",
                                                   "content": f"I ski {i}."} for i in range(5)]})
        assert r.status_code == 429, "family M counts its events against the same bucket"
        too_many = ingest(13, "c")
        assert too_many.status_code == 429 and "fewer at a time" in too_many.json()["detail"]["message"]
        time.sleep(1.2)  # usage counters reach the store within a second
        assert c.get("/v1/usage").json()["operations"]["messages_ingested"] == 8


def test_an_orgs_keys_share_its_ceiling(srv: ServerProcess) -> None:
    keys = [create_key(srv, "rl-org", "read") for _ in range(3)]
    admitted = 0
    for key in keys:
        with srv.client(key) as c:
            admitted += sum(r.status_code == 200 for r in _burst(c, 25))
    assert 50 <= admitted <= 52, admitted  # the org's 50 a minute (plus what refilled meanwhile)


def test_the_published_clients_raise_their_rate_limit_errors(srv: ServerProcess) -> None:
    """memsy 0.3.5 as published: its data client waits out `Retry-After` and, out of retries,
    raises MemsyAPIError with status 429 (it never classifies a 429 further); its control
    client raises RateLimitExceeded with `retry_after`. engram's client raises RateLimitError."""
    from memsy import MemsyClient, MemsyControlClient
    from memsy.exceptions import MemsyAPIError, RateLimitExceeded

    from engram.client import Client, RateLimitError

    key = create_key(srv, "rl-clients", "read,write,admin")

    def exhaust() -> None:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as c:
            while c.get("/v1/memories").status_code != 429:
                pass

    exhaust()
    with MemsyClient(base_url=f"{srv.url}/v1", api_key=key, max_retries=0) as memsy:
        with pytest.raises(MemsyAPIError) as caught:
            memsy.search("anything", actor_id="u")
        assert caught.value.status_code == 429
    with MemsyClient(base_url=f"{srv.url}/v1", api_key=key, max_retries=3) as patient:
        assert patient.search("anything", actor_id="u") is not None  # it waited Retry-After, then was let in
    exhaust()
    with MemsyControlClient(f"{srv.url}/v1", key, max_retries=0) as control, pytest.raises(RateLimitExceeded) as ctl:
        control.keys.list()
    assert ctl.value.retry_after is not None and ctl.value.retry_after >= 1
    exhaust()
    with Client(srv.url, key, max_retries=0) as engram, pytest.raises(RateLimitError) as raised:
        list(engram.memories.list())  # a lazy pager: the first page is read here
    assert raised.value.retry_after is not None and raised.value.retry_after >= 1 and raised.value.code == "rate_limit_exceeded"


def test_limits_off_mean_no_headers(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_RATE_LIMIT_REQUESTS_PER_MIN": "0"}).start()
    try:
        r = httpx.get(f"{srv.url}/v1/memories")
        assert r.status_code == 200 and "RateLimit-Limit" not in r.headers
    finally:
        srv.stop()


def test_two_api_processes_on_postgres_admit_at_most_the_limit_together(postgres: Any, tmp_path: Path) -> None:
    from engram.store.postgres import PostgresStore

    url = postgres.create_database("engram_rate_limits")
    procs: list[EngramProcess] = []
    try:
        store = PostgresStore(url, pool_size=2)
        store.migrate()
        store.close()
        env = {**os.environ, "ENGRAM_DATABASE_URL": url, "ENGRAM_LOG_LEVEL": "WARNING",
               "ENGRAM_RATE_LIMIT_REQUESTS_PER_MIN": "40", "ENGRAM_RATE_LIMIT_PROCESSES": "2"}
        ports = [free_port(), free_port()]
        procs = [EngramProcess(["serve", "--no-workers", "--no-warm", "--port", str(p), "--data", str(tmp_path / f"a{p}")],
                               env, tmp_path / f"api{p}.log") for p in ports]
        procs += [EngramProcess(["worker", "--data", str(tmp_path / f"w{i}")], env, tmp_path / f"w{i}.log")
                  for i in range(2)]
        for p in ports:
            wait_healthy(f"http://127.0.0.1:{p}", procs=procs)
        key = ServerProcess(tmp_path / "cli", env={"ENGRAM_DATABASE_URL": url}).cli(
            "keys", "create", "--org", "rl-pg", "--scopes", "read,write").stdout.strip().splitlines()[-1]
        # The workers go on with the jobs the limited key got in: nothing accepted is lost.
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", headers={"Authorization": f"Bearer {key}"}) as c:
            job = c.post("/v1/memories", json={"user_id": "u", "conv_id": "c", "messages": [
                {"role": "user", "content": "I keep bees."}]}).json()
        started = time.monotonic()

        def hammer(port: int) -> int:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as c:
                return sum(c.get("/v1/memories").status_code == 200 for _ in range(60))

        with ThreadPoolExecutor(2) as pool:
            admitted = sum(pool.map(hammer, ports))
        elapsed = time.monotonic() - started
        refill = 40 / 60 * elapsed
        assert 39 <= admitted <= 39 + refill + 1, (admitted, elapsed)  # 40, less the ingest's token
        deadline = time.monotonic() + 60
        while True:  # polling is a request too: wait for the bucket, then read the job
            r = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/memories/jobs/{job['id']}",
                          headers={"Authorization": f"Bearer {key}"})
            if r.status_code == 200 and r.json()["status"] == "succeeded":
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(float(r.headers.get("Retry-After", "0.5")))
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/v1/memories",
                         headers={"Authorization": f"Bearer {key}"}).headers["RateLimit-Limit"] == "20"
    finally:
        for p in procs:
            p.stop()
        postgres.drop_database(url)
