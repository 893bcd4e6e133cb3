"""`GET /metrics` over HTTP (engram/metrics.py, docs/operations.md "Metrics"): the exposition
comes from prometheus-client, aggregated over the API process and its worker processes (a job's
outcome, counted in the worker, appears on the API's /metrics); every series the Grafana
dashboard in docs/ queries exists; JSON access logs; and on PostgreSQL two API processes and
two workers sharing ENGRAM_METRICS_DIR."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EngramProcess, ServerProcess, create_key, free_port, wait_healthy, wait_job

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(f"{url}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text[:200]
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _ingest(c: httpx.Client, texts: list[str], conv: str = "c1") -> dict[str, Any]:
    r = c.post("/v1/memories", json={"user_id": "ann", "conv_id": conv,
                                     "messages": [{"role": "user", "content": t} for t in texts]})
    assert r.status_code == 202, r.text
    return r.json()


def test_metrics_count_what_the_api_and_its_workers_do_and_the_dashboard_reads_them(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_LOG_FORMAT": "json", "ENGRAM_LOG_LEVEL": "INFO",
                                                "ENGRAM_RATE_LIMIT_REQUESTS_PER_MIN": "40"}).start()
    try:
        with srv.client() as c:
            job = _ingest(c, ["I keep bees.", "I live in Porto."])
            r = c.post("/v1/ingest", json={"events": [{"actor_id": "ann", "session_id": "m", "kind": "user_message",
                                                       "content": f"I own {i + 2} cats."} for i in range(3)]})
            assert r.status_code == 200
            wait_job(c, job["id"])
            assert c.post("/v1/memories/search", json={"query": "bees", "user_id": "ann"}).status_code == 200
            while c.get("/v1/memories").status_code != 429:  # until the key's bucket is empty
                pass
        deadline = time.monotonic() + 30
        while True:  # the family-M job too (its worker counts it)
            samples = _samples(srv.url)
            if _value(samples, "engram_jobs_finished_total", outcome="succeeded") >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert _value(samples, "engram_http_request_duration_seconds_count", route="/v1/memories", method="POST",
                      status="202") == 1
        assert _value(samples, "engram_http_request_duration_seconds_count", route="/v1/memories", method="GET",
                      status="429") >= 1
        assert _value(samples, "engram_events_accepted_total", family="x") == 2
        assert _value(samples, "engram_events_accepted_total", family="m") == 3
        assert _value(samples, "engram_jobs_finished_total", kind="ingest", outcome="succeeded") == 2, \
            "counted in the worker process, seen on the API's /metrics"
        assert _value(samples, "engram_job_stage_duration_seconds_count", stage="embed") == 2
        assert _value(samples, "engram_embedded_texts_total") >= 5 and _value(samples, "engram_embed_seconds_total") > 0
        assert _value(samples, "engram_rate_limited_total", limit="key_requests") >= 1
        assert ("engram_queue_jobs", frozenset({("status", "pending")})) in samples
        assert ("engram_queue_oldest_pending_age_seconds", frozenset()) in samples

        # Every series the dashboard queries is on /metrics.
        exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
        queried = {m for e in exprs for m in re.findall(r"engram_[a-z_]+", e)}
        present = {name for name, _ in samples}
        assert len(queried) >= 10 and queried <= present, sorted(queried - present)

        # One JSON line per request, with its request id, org, route, status and latency.
        lines = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
        access = [x for x in lines if x.get("logger") == "engram.access"]
        post = next(x for x in access if x["route"] == "/v1/memories" and x["method"] == "POST")
        assert post["status"] == 202 and post["org"] == "default" and post["latency_ms"] > 0 and post["request_id"]
        assert any(x.get("logger") == "engram.worker" for x in lines), "every process logs JSON lines"
    finally:
        srv.stop()


def test_on_postgres_two_apis_and_two_workers_share_one_metrics_directory(postgres: Any, tmp_path: Path) -> None:
    from engram.store.postgres import PostgresStore

    url = postgres.create_database("engram_metrics")
    metrics_dir = tmp_path / "metrics"
    procs: list[EngramProcess] = []
    try:
        store = PostgresStore(url, pool_size=2)
        store.migrate()
        store.close()
        env = {**os.environ, "ENGRAM_DATABASE_URL": url, "ENGRAM_LOG_LEVEL": "WARNING",
               "ENGRAM_METRICS_DIR": str(metrics_dir)}
        ports = [free_port(), free_port()]
        procs = [EngramProcess(["serve", "--no-workers", "--no-warm", "--port", str(p), "--data", str(tmp_path / f"a{p}")],
                               env, tmp_path / f"api{p}.log") for p in ports]
        procs += [EngramProcess(["worker", "--data", str(tmp_path / f"w{i}")], env, tmp_path / f"w{i}.log")
                  for i in range(2)]
        for p in ports:
            wait_healthy(f"http://127.0.0.1:{p}", procs=procs)
        key = create_key(ServerProcess(tmp_path / "cli", env={"ENGRAM_DATABASE_URL": url}), "metrics-pg", "read,write")
        jobs = []
        for i, p in enumerate(ports * 3):
            with httpx.Client(base_url=f"http://127.0.0.1:{p}", headers={"Authorization": f"Bearer {key}"}) as c:
                jobs.append((p, _ingest(c, [f"I visited town number {i}."], conv=f"c{i}")["id"]))
        for p, job_id in jobs:
            with httpx.Client(base_url=f"http://127.0.0.1:{p}", headers={"Authorization": f"Bearer {key}"}) as c:
                wait_job(c, job_id)
        deadline = time.monotonic() + 30
        while True:
            samples = _samples(f"http://127.0.0.1:{ports[0]}")
            done = _value(samples, "engram_jobs_finished_total", outcome="succeeded")
            if done >= len(jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert done == len(jobs), "both workers' jobs, on one API's /metrics"
        assert _value(samples, "engram_http_request_duration_seconds_count", route="/v1/memories", method="POST") == 6, \
            "both API processes' requests"
        assert _value(samples, "engram_events_accepted_total") == 6
        assert len(list(metrics_dir.glob("*.db"))) >= 4, "each process writes its own files"
    finally:
        for p in procs:
            p.stop()
        postgres.drop_database(url)


def test_model_requests_tokens_and_errors_are_counted(tmp_path: Path) -> None:
    """With the llm extractor and the openai embedder against a real OpenAI-protocol server
    (tests/openai_server.py): a job's model requests and tokens, and a job that fails on the
    provider, appear on /metrics."""
    from tests.openai_server import ScriptedOpenAI, echo_extractor, error
    from tests.test_llm_e2e import llm_env

    with ScriptedOpenAI() as llm:
        llm.reset(default_chat=echo_extractor)
        srv = ServerProcess(tmp_path / "data", env=llm_env(llm)).start()
        try:
            with srv.client() as c:
                job = _ingest(c, ["I keep bees on my roof."])
                assert wait_job(c, job["id"])["status"] == "succeeded"
                llm.script(*[error(500)] * 20)  # the provider is down: every retry fails
                bad = _ingest(c, ["I live in Porto."], conv="c2")
                assert wait_job(c, bad["id"])["status"] == "failed"
            deadline = time.monotonic() + 20
            while True:
                samples = _samples(srv.url)
                if _value(samples, "engram_llm_errors_total") >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert _value(samples, "engram_llm_requests_total", kind="llm") >= 1
            assert _value(samples, "engram_llm_requests_total", kind="embeddings") >= 1
            assert _value(samples, "engram_llm_tokens_total", kind="prompt") > 0
            assert _value(samples, "engram_llm_tokens_total", kind="completion") > 0
            assert _value(samples, "engram_llm_errors_total", code="ingest_failed") == 1
            assert _value(samples, "engram_jobs_finished_total", outcome="failed", code="ingest_failed") == 1
        finally:
            srv.stop()
