"""The web console's page times at 100,000 memories (issue 19).

An `engram serve` on the embedded store is seeded through `POST /v1/import` with a generated
export: `--users` users (default 1,000) of `--memories` memories in all (default 100,000),
ten conversations each, one source turn per memory, every tenth fact superseded by the next
(so revision chains exist), vectors made here (random unit vectors in the server's own
embedder space, named by the header as an export of this server would be; page times do not
depend on what the vectors mean, and seeding does not wait for 100k embeddings). Then
`--jobs` real ingest jobs are sent and extracted, so the jobs page has rows.

From this process, over HTTP with a logged-in session (an admin key), each main page is
loaded `--loads` times after two warm-up loads; p50 and p95 of the wall time to the last byte
are reported. Pages: the users list (first page, and a page deep in the keyset), one user
(conversations and memories), the org's memories (newest first; superseded ones), one memory
(its revisions and source turns), the search playground (org-wide and one user), the jobs
list and one job, health, usage, keys.

    flock /tmp/engram-bench.lock .venv/bin/python bench/console.py [--memories 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import engram_server  # noqa: E402
from bench._stats import percentile  # noqa: E402

ENV = {"ENGRAM_EPISODE_IDLE_S": "100000"}  # no episode jobs in the middle of the timings
FORM = {"content-type": "application/x-www-form-urlencoded"}
PLACES = ["Lisbon", "Kyoto", "Denver", "Oslo", "Quito", "Hanoi", "Perth", "Cusco", "Tunis", "Bergen"]
THINGS = ["a kayak", "a violin", "two cats", "a vegetable garden", "a vintage camera", "a sailboat"]


def fact(i: int) -> str:
    return (f"The user visited {PLACES[i % len(PLACES)]} in {2000 + i % 25} and bought "
            f"{THINGS[i % len(THINGS)]} there, number {i}.")


def export_lines(users: int, memories: int, embedder: str, dim: int, seed: int = 7) -> Iterator[bytes]:
    """An engram export of `memories` memories over `users` users (docs/lifecycle.md's format)."""
    rng = np.random.default_rng(seed)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    per_user = memories // users

    def dumps(record: dict) -> bytes:
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"

    yield dumps({"record": "header", "format": "engram-export", "version": 1, "exported_at": start.isoformat(),
                 "org_id": "bench", "scope": {"user_id": None, "conv_id": None}, "embedder": embedder, "dim": dim})
    # Events first, then memories (the format's order), a user at a time.
    for u in range(users):
        for k in range(per_user):
            n = u * per_user + k
            at = (start + timedelta(seconds=n)).isoformat()
            yield dumps({"record": "event", "id": f"ev-{n:07d}", "user_id": f"user-{u:04d}", "conv_id": f"conv-{k % 10}",
                         "role": "user", "kind": "user_message", "content": f"I went there, story {n}.", "metadata": {},
                         "occurred_at": at, "received_at": at, "status": "completed"})
    for u in range(users):
        vectors = rng.standard_normal((per_user, dim)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for k in range(per_user):
            n = u * per_user + k
            at = (start + timedelta(seconds=n)).isoformat()
            superseded = k % 10 == 0 and k + 1 < per_user  # replaced by the next memory
            supersedes = f"mem-{n - 1:07d}" if k % 10 == 1 else None
            yield dumps({"record": "memory", "id": f"mem-{n:07d}", "type": "fact",
                         "status": "superseded" if superseded else "active", "text": fact(n),
                         "user_id": f"user-{u:04d}", "conv_id": f"conv-{k % 10}", "metadata": {"n": n},
                         "categories": [], "details": {"fact_type": "biographical", "supersedes": supersedes,
                                                       "source_role": "user"},
                         "source_event_ids": [f"ev-{n:07d}"], "valid_at": None, "created_at": at, "updated_at": at,
                         "vector": base64.b64encode(vectors[k].tobytes()).decode()})
    yield dumps({"record": "end", "events": users * per_user, "memories": users * per_user})


def server_space(base: str, key: str) -> tuple[str, int]:
    """The embedder name and dimension this server's exports carry (one real turn, exported)."""
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=120) as c:
        job = c.post("/v1/memories", json={"user_id": "probe", "conv_id": "p", "messages": [
            {"role": "user", "content": "I live in Oslo."}]}).json()
        _wait(c, job["id"])
        header = json.loads(c.get("/v1/users/probe/export").text.split("\n", 1)[0])
    return header["embedder"], int(header["dim"])


def _wait(c: httpx.Client, job_id: str) -> None:
    while c.get(f"/v1/memories/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
        time.sleep(0.05)


def seed(base: str, key: str, users: int, memories: int, jobs: int) -> dict:
    embedder, dim = server_space(base, key)
    started = time.perf_counter()
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=3600) as c:
        report = c.post("/v1/import", content=export_lines(users, memories, embedder, dim),
                        headers={"content-type": "application/x-ndjson"}).json()
        imported_s = time.perf_counter() - started
        assert report["memories_created"] == memories and report["memories_embedded"] == 0, report
        ids = [c.post("/v1/memories", json={"user_id": f"user-{i % users:04d}", "conv_id": "live", "messages": [
            {"role": "user", "content": f"I have {i + 2} bicycles in my garage."}]}).json()["id"] for i in range(jobs)]
        for job_id in ids:
            _wait(c, job_id)
    return {"memories": memories, "users": users, "jobs": jobs, "import_s": round(imported_s, 1),
            "embedder": embedder}


def log_in(base: str, key: str) -> httpx.Client:
    b = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    r = b.post("/console/login", content=f"key={key}&next=/console/users", headers=FORM)
    assert r.status_code == 303, r.text
    return b


def deep_users_url(b: httpx.Client, pages: int) -> str:
    url = "/console/users"
    for _ in range(pages):
        found = re.search(r'rel="next" href="([^"]+)"', b.get(url).text)
        assert found, "fewer user pages than asked for"
        url = found.group(1).replace("&amp;", "&")
    return url


def time_page(b: httpx.Client, url: str, loads: int) -> dict:
    for _ in range(2):
        assert b.get(url).status_code == 200, url
    times = []
    for _ in range(loads):
        started = time.perf_counter()
        r = b.get(url)
        times.append(time.perf_counter() - started)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return {"p50_ms": round(percentile(times, 0.5) * 1000, 1), "p95_ms": round(percentile(times, 0.95) * 1000, 1),
            "bytes": len(r.content)}


def time_call(call, loads: int) -> dict:
    for _ in range(2):
        call().raise_for_status()
    times = []
    for _ in range(loads):
        started = time.perf_counter()
        call().raise_for_status()
        times.append(time.perf_counter() - started)
    return {"p50_ms": round(percentile(times, 0.5) * 1000, 1), "p95_ms": round(percentile(times, 0.95) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--loads", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="engram-bench-console-") as tmp:
        data = Path(tmp) / "data"
        with engram_server(None, ENV, data_dir=data) as base:
            made = subprocess.run([sys.executable, "-m", "engram", "keys", "create", "--org", "bench", "--scopes",
                                   "read,write,admin", "--data", str(data)], capture_output=True, text=True, check=True,
                                  env={**os.environ, "ENGRAM_LOG_LEVEL": "WARNING"})
            key = made.stdout.strip().splitlines()[-1]
            results["seed"] = seed(base, key, args.users, args.memories, args.jobs)
            print("seeded", results["seed"], flush=True)
            b = log_in(base, key)
            memory = "mem-0000500"  # its user's 1st conversation; superseded by mem-0000501
            job = re.search(r'href="/console/jobs/(job_[0-9a-f]+)"', b.get("/console/jobs").text).group(1)
            pages = {
                "users (first page)": "/console/users",
                "users (page 15)": deep_users_url(b, min(15, args.users // 50)),
                "one user (conversations + memories)": "/console/user?user_id=user-0005",
                "one user, one conversation": "/console/user?user_id=user-0005&conv_id=conv-3",
                "memories (org, newest first)": "/console/memories",
                "memories (org, superseded)": "/console/memories?status=superseded",
                "one memory (revisions, turns)": f"/console/memories/{memory}",
                "search (org-wide, 10 results)": "/console/search?q=bought+a+kayak+in+Kyoto&limit=10",
                "search (one user, 10 results)": "/console/search?q=bought+a+kayak+in+Kyoto&user_id=user-0005&limit=10",
                "jobs (first page)": "/console/jobs",
                "one job": f"/console/jobs/{job}",
                "health": "/console/health",
                "usage": "/console/usage",
                "keys": "/console/keys",
            }
            results["pages"] = {}
            for name, url in pages.items():
                results["pages"][name] = time_page(b, url, args.loads)
                print(f"{name:40s} {results['pages'][name]}", flush=True)
            # The same searches through the API, for comparison: the playground's cost is the search's.
            api = httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=60)
            results["api"] = {}
            for name, body in (("POST /v1/memories/search (org-wide, 10)", {"query": "bought a kayak in Kyoto", "limit": 10}),
                               ("POST /v1/memories/search (one user, 10)", {"query": "bought a kayak in Kyoto",
                                                                            "user_id": "user-0005", "limit": 10})):
                results["api"][name] = time_call(lambda: api.post("/v1/memories/search", json=body), args.loads)
                print(f"{name:40s} {results['api'][name]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
