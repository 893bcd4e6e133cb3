"""Open-loop load on the accept path, from a separate process over real HTTP.

Requests are sent on a fixed schedule whatever the server does, and each latency is
counted from the request's *scheduled* time, so a server that falls behind is charged
for the queueing it causes (no coordinated omission).

    .venv/bin/python bench/load.py --family m --batch 50 --rate 100 --duration 60 [--url …]

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

from _server import engram_server

WORDS = ("garden river kayak violin recipe project deadline sister Lisbon marathon concert novel "
         "puppy bakery physics guitar mountain museum coffee ferry").split()


def sentence(i: int) -> str:
    return (f"I went to the {WORDS[i % len(WORDS)]} with my {WORDS[(i * 7) % len(WORDS)]} "
            f"on day {i} and it was about the {WORDS[(i * 13) % len(WORDS)]}.")


def request_for(family: str, batch: int, n: int, run: str) -> tuple[str, dict]:
    actor = f"load-{run}-{n % 100}"
    if family == "m":
        events = [{"actor_id": actor, "session_id": f"s-{n % 7}", "kind": "user_message",
                   "content": sentence(n * batch + i)} for i in range(batch)]
        return "/v1/ingest", {"events": events}
    messages = [{"role": "user", "content": sentence(n * batch + i)} for i in range(batch)]
    return "/v1/memories", {"messages": messages, "user_id": actor, "conv_id": f"c-{n % 7}"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_load(base: str, family: str, batch: int, rate: float, duration: float) -> dict:
    run = uuid.uuid4().hex[:6]
    total = int(rate * duration)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        start = time.perf_counter() + 0.2

        async def one(n: int) -> None:
            scheduled = start + n / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            path, body = request_for(family, batch, n, run)
            try:
                response = await client.post(path, json=body)
                ok = response.status_code in (200, 202)
                if not ok:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(n) for n in range(total)))
        elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"family": family, "batch": batch, "rate_rps": rate, "duration_s": duration, "requests": total,
            "events_per_s": round(len(ms) * batch / elapsed, 1), "errors": errors,
            "p50_ms": round(percentile(ms, 0.50), 2), "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("m", "x"), default="m")
    parser.add_argument("--batch", type=int, default=50, help="events (m) or messages (x) per request")
    parser.add_argument("--rate", type=float, default=100, help="requests per second")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--url")
    args = parser.parse_args()
    with engram_server(args.url) as base:
        print(json.dumps(asyncio.run(run_load(base, args.family, args.batch, args.rate, args.duration))))


if __name__ == "__main__":
    main()
