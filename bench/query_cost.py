"""What the longest search query costs the server, and what four of them at once do to
`/v1/health` — the figures behind the query limit (`ENGRAM_MAX_QUERY_CHARS`, docs/design.md).

Starts a throwaway `engram serve` (or uses --url), ingests a few hundred facts for one user,
then for each query length in --lengths: sends it alone --repeat times and reports the
server's search time (`extras.stage_timings.total`) and the API process's CPU time per
request; then runs four clients sending that query back to back while a fifth process's
thread probes `/v1/health` every 50 ms, and reports the probes' p50 / p99 / max. A length over
the limit is answered 422 at once; the answer's status is printed with the figures.

    .venv/bin/python bench/query_cost.py [--lengths 200,4000,4900000] [--repeat 5] [--seconds 5]

With --url, set ENGRAM_BENCH_PID to that server's pid for the CPU column.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

import httpx

from _procstat import cpu_seconds
from _server import SERVER_PIDS, engram_server
from _stats import percentile

USER = "bench-query-cost"
WORDS = ("bike lake garden sister harbour tomato violin marathon museum recipe knitting vinyl "
         "pottery kayak telescope chess bakery journal mountain ferry").split()


def query_of(length: int) -> str:
    words: list[str] = []
    size = 0
    i = 0
    while size < length:
        word = f"{WORDS[i % len(WORDS)]}{i // len(WORDS)}"
        words.append(word)
        size += len(word) + 1
        i += 1
    return " ".join(words)[:length]


def seed(client: httpx.Client) -> None:
    lines = [f"I went to the {WORDS[i % len(WORDS)]} number {i} with my {WORDS[(i * 7) % len(WORDS)]} friends."
             for i in range(300)]
    for start in range(0, len(lines), 50):
        response = client.post("/v1/memories?wait=true", json={
            "messages": [{"role": "user", "content": line} for line in lines[start:start + 50]],
            "user_id": USER, "conv_id": f"c{start}"}, timeout=120)
        response.raise_for_status()


def measure(base: str, pid: int, length: int, repeat: int, seconds: float) -> dict[str, Any]:
    query = query_of(length)
    body = {"query": query, "filters": {"user_id": USER}, "limit": 10}
    with httpx.Client(base_url=base, timeout=120) as client:
        server_s, cpu_s, status = [], [], None
        for _ in range(repeat):
            before = cpu_seconds(pid)
            response = client.post("/v1/memories/search", json=body)
            cpu_s.append(cpu_seconds(pid) - before)
            status = response.status_code
            if status == 200:
                server_s.append(response.json()["extras"]["stage_timings"]["total"])

    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            while not stop.is_set():
                c.post("/v1/memories/search", json=body)

    probes: list[float] = []
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=base, timeout=60) as c:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            c.get("/v1/health")
            probes.append(time.perf_counter() - started)
            time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    return {"length": length, "status": status,
            "server_ms": statistics.mean(server_s) * 1000 if server_s else float("nan"),
            "cpu_ms": statistics.mean(cpu_s) * 1000,
            "health_p50_ms": percentile(probes, 0.5) * 1000, "health_p99_ms": percentile(probes, 0.99) * 1000,
            "health_max_ms": max(probes) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--lengths", default="200,4000,4900000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with engram_server(args.url) as base:
        pid = SERVER_PIDS.get(base) or int(os.environ.get("ENGRAM_BENCH_PID", "0"))
        with httpx.Client(base_url=base, timeout=120) as client:
            seed(client)
        print(f"{'chars':>9} {'status':>6} {'server ms':>10} {'API CPU ms':>11} "
              f"{'health p50':>11} {'p99':>8} {'max':>8}   (4 such queries in flight)")
        for length in (int(x) for x in args.lengths.split(",")):
            r = measure(base, pid, length, args.repeat, args.seconds)
            print(f"{r['length']:>9} {r['status']:>6} {r['server_ms']:>10.1f} {r['cpu_ms']:>11.1f} "
                  f"{r['health_p50_ms']:>9.1f}ms {r['health_p99_ms']:>6.1f}ms {r['health_max_ms']:>6.1f}ms")


if __name__ == "__main__":
    main()
