"""Search latency and footprint of the embedded store (SQLite) at 10k, 100k and 1M memories.

One org, `--users` users (default 1,000: 10, 100 and 1,000 memories per user), four kinds of
search, each `--queries` requests sent one at a time (so latency is service time, not
queueing), `POST /v1/memories/search` with `limit` 10:

- `user`:         `filters: {user_id}`                  (a random user per query: mostly the user's
                                                         first search since the server started)
- `user-hot`:     the same, over `--hot-users` users (default 100) searched once each before
                  (the per-process vector and term caches hold them: an active working set)
- `user+filter`:  `filters: {user_id, topic}`            (a metadata filter: ~10% of the user)
- `org`:          no filter                              (every memory of the org)
- `org+filter`:   `filters: {topic}`                     (~10% of the org)

Queries are LoCoMo questions of the conversation the chosen user's memories come from, with
that user's speaker names. For each kind: p50 / p99 of the server's own time
(`extras.stage_timings.total`: query embeddings, term statistics, dense and lexical scoring,
fusion, hydration; not HTTP or JSON) and of the client's round trip over HTTP (loopback,
keep-alive), and the mean of every stage. Beside them: the data directory's bytes on disk (per
table, and per million memories), the RSS of the API process and of its worker, CPU use of
each, and the machine's steal time while each kind ran.

**The data** is built straight into the SQLite file by bench/_dataset.py (its docstring says
exactly what it writes and which corners it cuts): the rows the worker would have committed
for users who sent LoCoMo turns one call at a time, with real texts (the rules extractor's
facts and episode summaries) and real vectors (engram's local embedder, computed once for a
pool of ~23,000 texts and cached), the per-user speaker names written into the texts while
the vector of the pool's copy is kept. Before building, a small fixture is built both ways —
bulk, and through the store protocol with the real `Pipeline` (extractor and embedder replaced
by the pool's outputs) — and every table is compared row by row (`--no-check` skips it).
Scales are built incrementally (10k, then extended to 100k, then to 1M) and each is kept
under the cache directory, so a re-run measures at once; `--rebuild` builds them again.
The bulk writer uses `PRAGMA synchronous=OFF` (a fixture is rebuilt, not recovered); the
server under test runs with its defaults (`synchronous=FULL`, one worker process,
`engram serve --data DIR --workers 1`).

    .venv/bin/python bench/search_scale.py                      # 10k, 100k, 1M; 1,000 users; 300 queries each
    .venv/bin/python bench/search_scale.py --quick              # 2k and 10k, 100 users, 50 queries: a smoke run
    .venv/bin/python bench/search_scale.py --scales 100000 --queries 500 --json out.json
    .venv/bin/python bench/search_scale.py --scales 1000000 --modes user-hot,user+filter --queries 2000 \
        --max-mode-seconds 30 --busy 100 --search-rate 10   # 10 searches/s while 5,000 events/s are ingested
    .venv/bin/python bench/search_scale.py --scales 1000000 --modes user --queries 400 --busy 100 \
        --burst 20 --search-rate 0.5   # 20 first searches at once every 2 s: what the accepts meanwhile pay
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dataset as ds  # noqa: E402
from _procstat import CpuWindow, command_of, process_tree, rss_bytes  # noqa: E402
from _server import SERVER_PIDS, engram_server  # noqa: E402
from _stats import percentile  # noqa: E402

MODES = ("user", "user-hot", "user+filter", "org", "org+filter")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the data
def scale_dir(cache: Path, pool: ds.Pool, users: int, seed: int, memories: int) -> Path:
    return cache / f"scale-{pool.digest}-u{users}-s{seed}" / f"m{memories}"


def ensure_built(pool: ds.Pool, cache: Path, users: int, seed: int, scales: list[int], rebuild: bool,
                 log: Any) -> dict[int, dict[str, Any]]:
    """A data directory per scale, each extended from the next smaller one; returns build stats."""
    out: dict[int, dict[str, Any]] = {}
    previous: Path | None = None
    for memories in sorted(scales):
        if memories < users:
            raise SystemExit(f"--scales: {memories} memories cannot be spread over {users} users")
        home = scale_dir(cache, pool, users, seed, memories)
        marker = home / "built.json"
        if marker.exists() and not rebuild:
            out[memories] = {**json.loads(marker.read_text()), "reused": True}
            log(f"{memories:,} memories: reusing {home / 'data'}")
            previous = home
            continue
        if previous is None and not rebuild:  # the largest smaller scale already built, if any
            for other in sorted((int(p.name[1:]) for p in home.parent.glob("m*") if (p / "built.json").exists()
                                 and int(p.name[1:]) < memories), reverse=True):
                previous = home.parent / f"m{other}"
                break
        shutil.rmtree(home, ignore_errors=True)
        (home / "data").mkdir(parents=True)
        db = home / "data" / "engram.db"
        copy_s = 0.0
        if previous is not None:
            t0 = time.perf_counter()
            shutil.copy2(previous / "data" / "engram.db", db)
            copy_s = time.perf_counter() - t0
            log(f"{memories:,} memories: extending {previous.name} ({copy_s:.0f} s to copy it)")
        else:
            log(f"{memories:,} memories: building from nothing")
        stats = ds.build(pool, db, users, memories, seed, log=log)
        stats.update(copied_from=previous.name if previous else None, copy_seconds=round(copy_s, 1))
        stats["cumulative_seconds"] = round(stats["seconds"] + (json.loads((previous / "built.json").read_text())
                                                                .get("cumulative_seconds", 0) if previous else 0), 1)
        marker.write_text(json.dumps(stats, indent=1))
        log(f"  built: {stats['memories_written']:,} memories in {stats['seconds']:.0f} s "
            f"({stats['memories_per_second']:,}/s; cumulative {stats['cumulative_seconds']:.0f} s)")
        out[memories] = stats
        previous = home
    return out


def footprint(data_dir: Path) -> dict[str, Any]:
    """Bytes on disk of the data directory, and of each table with its indexes (dbstat)."""
    files = {p.name: p.stat().st_size for p in data_dir.iterdir() if p.is_file()}
    conn = sqlite3.connect(f"file:{data_dir / 'engram.db'}?mode=ro", uri=True)
    owner = {name: tbl for name, tbl in conn.execute("SELECT name, tbl_name FROM sqlite_master")}
    tables: dict[str, int] = defaultdict(int)
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
        table = owner.get(name, name)
        tables["memory_fts" if table.startswith("memory_fts") else table] += size
    counts = dict(conn.execute("SELECT type || ':' || status, count(*) FROM memories GROUP BY type, status").fetchall())
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    conn.close()
    return {"bytes": sum(files.values()), "files": files,
            "tables": dict(sorted(tables.items(), key=lambda kv: -kv[1])), "memories": counts,
            "events": events, "jobs": jobs}


# ---------------------------------------------------------------------- the server
def rss(pid: int) -> dict[str, float]:
    """RSS in MB of the API process and of each worker it started."""
    out = {}
    for p in process_tree(pid):
        name = "api" if p == pid else ("worker" if "worker" in command_of(p) else f"child:{p}")
        out[name] = round(rss_bytes(p) / 2**20, 1)
    return out


# ---------------------------------------------------------------------- the queries
def requests_for(mode: str, pool: ds.Pool, plans: list[ds.UserPlan], questions: dict[str, list[str]],
                 count: int, seed: int, limit: int, hot: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:{mode}")
    out = []
    for _ in range(count):
        plan = rng.choice(plans[:hot] if mode == "user-hot" else plans)
        if plan.user_id not in questions:
            questions[plan.user_id] = ds.user_questions(pool, plan)
        body: dict[str, Any] = {"query": rng.choice(questions[plan.user_id]), "limit": limit}
        filters: dict[str, Any] = {}
        if mode.startswith("user"):  # user, user-hot, user+filter
            filters["user_id"] = plan.user_id
        if mode.endswith("filter"):
            filters["topic"] = rng.choice(ds.TOPICS)
        if filters:
            body["filters"] = filters
        out.append(body)
    return out


def run_mode(client: httpx.Client, pid: int, bodies: list[dict[str, Any]], max_seconds: float,
             rate: float = 0, burst: int = 1) -> dict[str, Any]:
    """One query at a time; with `rate`, the n-th is not sent before n/rate s (else back to back).
    With `burst` > 1, queries go `burst` at once (each on its own connection), a burst at a time:
    with `rate`, the n-th burst is not sent before n/rate s."""
    server_ms: list[float] = []
    client_ms: list[float] = []
    stages: dict[str, float] = defaultdict(float)
    hits: list[int] = []
    wrong = 0
    window = CpuWindow(pid).start()
    started = time.perf_counter()
    clients = [client] + [httpx.Client(base_url=client.base_url, timeout=client.timeout) for _ in range(burst - 1)]
    pool = ThreadPoolExecutor(burst) if burst > 1 else None

    def send(i: int, body: dict[str, Any]) -> tuple[float, httpx.Response]:
        t0 = time.perf_counter()
        response = clients[i].post("/v1/memories/search", json=body)
        return 1000 * (time.perf_counter() - t0), response

    def answered() -> Iterator[tuple[dict[str, Any], float, httpx.Response]]:
        for n, start in enumerate(range(0, len(bodies), burst)):
            group = bodies[start:start + burst]
            if rate:
                time.sleep(max(0.0, started + n / rate - time.perf_counter()))
            answers = pool.map(send, range(len(group)), group) if pool else [send(0, group[0])]
            for body, (elapsed, response) in zip(group, answers):
                yield body, elapsed, response

    for body, elapsed, response in answered():
        response.raise_for_status()
        page = response.json()
        timings = page["extras"]["stage_timings"]
        server_ms.append(1000 * timings["total"])
        client_ms.append(elapsed)
        for stage, seconds in timings.items():
            stages[stage] += 1000 * seconds
        hits.append(len(page["data"]))
        want = body.get("filters", {})
        for m in page["data"]:  # the server must honour the scope
            if ("user_id" in want and m["user_id"] != want["user_id"]) or \
                    ("topic" in want and m["metadata"].get("topic") != want["topic"]):
                wrong += 1
        if time.perf_counter() - started > max_seconds:
            break
    seconds = time.perf_counter() - started
    cpu = window.stop(seconds)
    if pool is not None:
        pool.shutdown()
        for extra in clients[1:]:
            extra.close()
    n = len(server_ms)
    mean_stages = {k: round(v / n, 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if k != "total"}
    mean_stages["other"] = round(stages["total"] / n - sum(mean_stages.values()), 2)  # hydration, fusion, ...
    return {"queries": n, "seconds": round(seconds, 1),
            "server_p50_ms": round(percentile(server_ms, 0.5), 1), "server_p99_ms": round(percentile(server_ms, 0.99), 1),
            "server_mean_ms": round(statistics.mean(server_ms), 1), "server_max_ms": round(max(server_ms), 1),
            "http_p50_ms": round(percentile(client_ms, 0.5), 1), "http_p99_ms": round(percentile(client_ms, 0.99), 1),
            "stage_mean_ms": mean_stages, "results_mean": round(statistics.mean(hits), 2),
            "empty_results": sum(1 for h in hits if h == 0), "out_of_scope_results": wrong,
            "machine_steal_percent": cpu["machine_steal_percent"], "machine_busy_percent": cpu["machine_busy_percent"],
            "processes": cpu["processes"]}


def probe(client: httpx.Client, db: Path, users: int) -> dict[str, Any]:
    """The server reads the fixture right: a stored fact, searched by its exact text in its
    user's scope, comes back first or nearly so."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rng = random.Random(11)
    found = 0
    tried = 0
    for _ in range(10):
        user = f"user-{rng.randrange(users):05d}"
        row = conn.execute("SELECT id, text FROM memories WHERE user_id=? AND type='fact' AND status='active'"
                           " ORDER BY random() LIMIT 1", (user,)).fetchone()
        if row is None:
            continue
        tried += 1
        page = client.post("/v1/memories/search", json={"query": row[1], "filters": {"user_id": user},
                                                         "limit": 3}).json()
        found += any(m["id"] == row[0] for m in page["data"])
    conn.close()
    return {"exact_text_in_top3": found, "tried": tried}


# ---------------------------------------------------------------------- main
def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "commit": commit,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def measure(pool: ds.Pool, args: argparse.Namespace, memories: int, build: dict[str, Any], log: Any) -> dict[str, Any]:
    home = scale_dir(args.cache, pool, args.users, args.seed, memories)
    data_dir = home / "data"
    disk = footprint(data_dir)
    plans = [ds.user_plan(pool, i, args.seed) for i in range(args.users)]
    questions: dict[str, list[str]] = {}
    doc: dict[str, Any] = {"memories": memories, "users": args.users, "memories_per_user": memories / args.users,
                           "build": build, "disk": {**disk, "bytes_per_million_memories": round(disk["bytes"] * 1e6 / memories)},
                           "machine": machine(), "limit": args.limit, "modes": {}, "rss_mb": {}}
    log(f"{memories:,} memories: {disk['bytes'] / 2**20:,.0f} MB on disk "
        f"({disk['bytes'] * 1e6 / memories / 2**30:.2f} GB per million memories)")
    if args.busy:  # the load writes events (and the worker memories): serve a copy of the fixture
        scratch = Path(tempfile.mkdtemp(prefix="engram-busy-"))
        shutil.copytree(data_dir, scratch / "data")
        data_dir = scratch / "data"
        # The copy's gigabytes of dirty pages would otherwise be written back while the server
        # runs, and its first fsyncs (synchronous=FULL) would wait behind them.
        os.sync()
    started = time.monotonic()
    # one worker process, as by default; a million-memory store takes a while to open
    with engram_server(None, {"ENGRAM_WORKERS": "1"}, data_dir=data_dir, start_timeout_s=300) as base, \
            httpx.Client(base_url=base, timeout=600) as client:
        pid = SERVER_PIDS[base]
        log(f"  server pid {pid} ready in {time.monotonic() - started:.1f} s")
        doc["rss_mb"]["started"] = rss(pid)
        t0 = time.perf_counter()
        warm = requests_for("user", pool, plans, questions, args.warmup, args.seed + 1, args.limit)
        for body in warm:
            client.post("/v1/memories/search", json=body).raise_for_status()
        doc["warmup_seconds"] = round(time.perf_counter() - t0, 1)
        doc["rss_mb"]["after_warmup"] = rss(pid)
        doc["probe"] = probe(client, data_dir / "engram.db", args.users)
        load = None
        if args.busy:
            # 50-event family-M batches at --busy requests/s from another process, open loop,
            # for the whole of the measured searches: the worker extracts and embeds meanwhile.
            load = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"), "--url", base, "--family", "m",
                                     "--batch", "50", "--rate", str(args.busy), "--duration",
                                     str(args.max_mode_seconds * len(args.modes) + 10)],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(3)
        for mode in args.modes:
            count = args.org_queries if mode.startswith("org") else args.queries
            bodies = requests_for(mode, pool, plans, questions, count, args.seed, args.limit, args.hot_users)
            if mode == "user-hot":  # each hot user searched once, unmeasured
                for plan in plans[:args.hot_users]:
                    client.post("/v1/memories/search", json={"query": ds.user_questions(pool, plan)[0],
                                                             "filters": {"user_id": plan.user_id}}).raise_for_status()
            result = run_mode(client, pid, bodies, args.max_mode_seconds, args.search_rate, args.burst)
            doc["modes"][mode] = result
            doc["rss_mb"][f"after_{mode}"] = rss(pid)
            if load is not None and load.poll() is not None:
                raise RuntimeError("the background load ended before the searches did")
            log(f"  {mode:<12} n={result['queries']:<4} server p50 {result['server_p50_ms']:7.1f} p99 "
                f"{result['server_p99_ms']:7.1f} ms | http p50 {result['http_p50_ms']:7.1f} p99 "
                f"{result['http_p99_ms']:7.1f} ms | steal {result['machine_steal_percent']}% | "
                + ", ".join(f"{k} {v}" for k, v in result["stage_mean_ms"].items()))
        if load is not None:
            doc["busy_load"] = json.loads(load.communicate()[0].strip().splitlines()[-1])
            log(f"  background load: { {k: v for k, v in doc['busy_load'].items() if k != 'slowest'} }")
    if args.busy:
        shutil.rmtree(scratch, ignore_errors=True)
    return doc


def table(docs: list[dict[str, Any]]) -> str:
    lines = ["| memories | disk MB (GB per 1M) | RSS api / worker MB | kind | server p50 / p99 ms | HTTP p50 / p99 ms "
             "| mean per stage (ms) | steal % |", "|---|---|---|---|---|---|---|---|"]
    for d in docs:
        last = list(d["rss_mb"].values())[-1]
        first = True
        for mode, r in d["modes"].items():
            head = (f"| {d['memories']:,} | {d['disk']['bytes'] / 2**20:,.0f} "
                    f"({d['disk']['bytes_per_million_memories'] / 2**30:.2f}) | {last.get('api', 0):,.0f} / "
                    f"{last.get('worker', 0):,.0f} ") if first else "| | | "
            first = False
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_mean_ms"].items())
            lines.append(f"{head}| {mode} | {r['server_p50_ms']:.1f} / {r['server_p99_ms']:.1f} | "
                         f"{r['http_p50_ms']:.1f} / {r['http_p99_ms']:.1f} | {stages} | {r['machine_steal_percent']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="10000,100000,1000000", help="memories in the org, comma-separated")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300, help="per kind of search")
    parser.add_argument("--org-queries", type=int, help="for the two org-wide kinds (default: --queries)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--hot-users", type=int, default=100, help="the working set of the user-hot kind")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--max-mode-seconds", type=float, default=1800, help="stop a kind of search after this long")
    parser.add_argument("--busy", type=float, default=0,
                        help="while searching, ingest 50-event family-M batches at this many requests/s "
                             "(on a copy of the fixture); use with --max-mode-seconds")
    parser.add_argument("--search-rate", type=float, default=0,
                        help="searches per second (default: one after another, as fast as they return)")
    parser.add_argument("--burst", type=int, default=1,
                        help="searches sent at once, a burst at a time (with --search-rate: bursts per second)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=ds.CACHE, help="pool vectors and built data directories")
    parser.add_argument("--rebuild", action="store_true", help="build every scale again")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--no-check", action="store_true", help="skip the bulk-writer fidelity check")
    parser.add_argument("--quick", action="store_true", help="--scales 2000,10000 --users 100 --queries 50 --warmup 5")
    parser.add_argument("--json", type=Path, help="write the documents here (default: under --cache)")
    args = parser.parse_args()
    if args.quick:
        args.scales, args.users, args.queries, args.warmup = "2000,10000", 100, 50, 5
    args.org_queries = args.org_queries or args.queries
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown --modes {unknown}; use {','.join(MODES)}")
    scales = sorted(int(s) for s in args.scales.split(","))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    pool = ds.load_pool(ds.load_data(), cache=args.cache, log=log)
    if not args.no_check:
        check_dir = args.cache / "fidelity-check"
        shutil.rmtree(check_dir, ignore_errors=True)
        ds.check_fidelity(pool, check_dir, log=log)
        shutil.rmtree(check_dir, ignore_errors=True)
    builds = ensure_built(pool, args.cache, args.users, args.seed, scales, args.rebuild, log)
    if args.build_only:
        print(json.dumps(builds, indent=1))
        return 0
    docs = []
    out = args.json or args.cache / f"search-scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    for memories in scales:
        docs.append(measure(pool, args, memories, builds[memories], log))
        out.write_text(json.dumps(docs, indent=1))
    print(json.dumps(docs, indent=1))
    print(table(docs))
    log(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
