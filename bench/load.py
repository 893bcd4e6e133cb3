"""Open-loop load on the accept path, from a separate process over real HTTP.

Requests are sent on a fixed schedule whatever the server does, and each latency is
counted from the request's *scheduled* time, so a server that falls behind is charged
for the queueing it causes (no coordinated omission).

    .venv/bin/python bench/load.py --family m --batch 50 --rate 100 --duration 60 [--url …]
    .venv/bin/python bench/load.py --family m --batch 50 --conversations-per-batch 50 --rate 100 --duration 20

Without --url it starts a throwaway embedded server (its worker processes run the
pipeline on what is accepted, so the pipeline is busy while we measure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import httpx

from _http import LoadClient
from _procstat import CpuWindow
from _server import SERVER_PIDS, engram_server
from _stats import percentile

WORDS = ("garden river kayak violin recipe project deadline sister Lisbon marathon concert novel "
         "puppy bakery physics guitar mountain museum coffee ferry").split()


def sentence(i: int) -> str:
    return (f"I went to the {WORDS[i % len(WORDS)]} with my {WORDS[(i * 7) % len(WORDS)]} "
            f"on day {i} and it was about the {WORDS[(i * 13) % len(WORDS)]}.")


CONVERSATION_POOL = 1000  # distinct (actor, session) pairs a many-conversation run cycles through


def request_for(family: str, batch: int, n: int, run: str, conversations: int = 1) -> tuple[str, dict]:
    actor = f"load-{run}-{n % 100}"
    if family == "m":
        if conversations <= 1:  # one conversation per request: a client sending one thread's turns
            pairs = [(actor, f"s-{n % 7}")] * batch
        else:  # a backend batching many users' events: event i belongs to conversation i % c
            pairs = []
            for i in range(batch):
                k = (n * conversations + i % conversations) % CONVERSATION_POOL
                pairs.append((f"load-{run}-u{k // 2}", f"s-{k % 2}"))
        events = [{"actor_id": a, "session_id": s, "kind": "user_message",
                   "content": sentence(n * batch + i)} for i, (a, s) in enumerate(pairs)]
        return "/v1/ingest", {"events": events}
    messages = [{"role": "user", "content": sentence(n * batch + i)} for i in range(batch)]
    return "/v1/memories", {"messages": messages, "user_id": actor, "conv_id": f"c-{n % 7}"}


async def run_load(base: str, family: str, batch: int, rate: float, duration: float,
                   verify: bool = True, conversations: int = 1) -> dict:
    run = uuid.uuid4().hex[:6]
    total = int(rate * duration)
    client = LoadClient(base)
    requests = [client.encode("POST", *request_for(family, batch, n, run, conversations)) for n in range(total)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    accepted: list[str] = []  # family M event ids / family X job ids, to check durability after
    tasks: list[asyncio.Task] = []
    slow: list[tuple[float, float]] = []  # (latency, seconds into the run): where the tail sits

    async def one(n: int, scheduled: float) -> None:
        try:
            status, payload = await client.send(requests[n])
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.perf_counter() - scheduled)
        slow.append((latencies[-1], scheduled - start))
        if status not in (200, 202):
            errors[str(status)] = errors.get(str(status), 0) + 1
            return
        body = json.loads(payload)
        accepted.extend(body["event_ids"] if family == "m" else [body["id"]])

    pid = SERVER_PIDS.get(base)
    window = CpuWindow(pid).start() if pid else None
    start = time.perf_counter() + 0.2
    for n in range(total):  # open loop: send on schedule whatever the server does
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    usage = window.stop(elapsed) if window else None
    await client.close()
    ms = [x * 1000 for x in latencies]
    result = {"family": family, "batch": batch, "conversations_per_batch": conversations, "rate_rps": rate,
              "duration_s": duration, "requests": total,
              "events_per_s": round(len(ms) * batch / elapsed, 1), "errors": errors,
              "p50_ms": round(percentile(ms, 0.50), 2), "p99_ms": round(percentile(ms, 0.99), 2),
              "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2)}
    result["slowest"] = [[round(lat * 1000, 1), round(at, 2)] for lat, at in sorted(slow, reverse=True)[:10]]
    if usage:
        result["cpu"] = usage
    if verify:
        since_start = time.perf_counter() - start
        result["durable"], processed = await count_durable(base, family, accepted)
        result["acknowledged"] = len(accepted)
        if family == "m":  # what the pipeline turned into memories meanwhile (the check itself takes a few s)
            result["processed"] = processed
            result["processed_per_s"] = round(processed / since_start, 1)
    return result


async def count_durable(base: str, family: str, accepted: list[str]) -> tuple[int, int]:
    """How many acknowledged events (family M) or jobs (family X) the server still knows, and
    (family M) how many of those events their jobs have finished (completed or failed)."""
    known = processed = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        if family == "m":
            for i in range(0, len(accepted), 500):
                chunk = accepted[i:i + 500]
                report = (await http.post("/v1/status", json={"event_ids": chunk})).json()
                known += sum(1 for e in chunk if report["reasons"].get(e) != "not_found")
                processed += sum(1 for e in chunk if report["statuses"].get(e) in ("completed", "failed"))
        else:
            for job_id in accepted:
                known += (await http.get(f"/v1/memories/jobs/{job_id}")).status_code == 200
    return known, processed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("m", "x"), default="m")
    parser.add_argument("--batch", type=int, default=50, help="events (m) or messages (x) per request")
    parser.add_argument("--rate", type=float, default=100, help="requests per second")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--conversations-per-batch", type=int, default=1,
                        help="family m: spread each batch over this many (actor, session) pairs")
    parser.add_argument("--url")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run this many times, each on a fresh server (unless --url), and print the spread: "
                             "one run's p99 moves several ms between runs of one build")
    args = parser.parse_args()
    if args.family == "x" and args.conversations_per_batch != 1:
        parser.error("--conversations-per-batch is for family m (a family-X request is one conversation)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    runs = []
    for _ in range(args.repeat):
        with engram_server(args.url) as base:
            runs.append(asyncio.run(run_load(base, args.family, args.batch, args.rate, args.duration,
                                             conversations=args.conversations_per_batch)))
        print(json.dumps(runs[-1]), flush=True)
    if len(runs) > 1:
        print(json.dumps({"runs": len(runs), **{k: [min(r[k] for r in runs), statistics.median(r[k] for r in runs),
                                                    max(r[k] for r in runs)] for k in ("p50_ms", "p99_ms", "max_ms", "processed_per_s")
                                                 if all(k in r for r in runs)},
                          "spread": "min, median, max over the runs",
                          "durable_all": all(r.get("durable") == r.get("acknowledged") for r in runs),
                          "errors": sum(sum(r["errors"].values()) for r in runs)}))


if __name__ == "__main__":
    main()
