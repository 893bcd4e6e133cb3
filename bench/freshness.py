"""From accept to searchable: how long the offline pipeline takes, and what rate it sustains.

LoCoMo dev turns (read from ../shared at run time) are sent as family-M events, `--batch`
per request, open loop at `--rate` events/s for `--duration` s (one actor per conversation
and pass, one session per LoCoMo session). A second task polls `POST /v1/status` for every
acknowledged event every `--poll` s; an event is *searchable* once its status is
`completed` (its job committed the memories, vectors and lexical entries in one
transaction, so a search sees them from then on). Reported: the time from each event's
acknowledgement to the poll that saw it completed (p50/p95/max, resolution `--poll`), the
rate events were completed at while the load ran, and the backlog left when it stopped.
Polling continues after the load for up to `--drain` s so the figures cover the events
that waited.

    .venv/bin/python bench/freshness.py --rate 500 --duration 30      # the issue's 500 events/s
    .venv/bin/python bench/freshness.py --rate 100 --duration 60      # a rate the pipeline keeps up with
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import httpx

from _http import LoadClient
from _procstat import CpuWindow
from _server import SERVER_PIDS, engram_server
from _stats import percentile
from locomo import DATA, session_messages, sessions


def turn_stream(run: str) -> list[tuple[str, str, str]]:
    """(actor, session, text) of every dev turn, conversation by conversation."""
    out = []
    for sample in json.loads(DATA.read_text()):
        conv = sample["conversation"]
        for n in sessions(conv):
            for m in session_messages(conv, n):
                out.append((f"{run}-{sample['sample_id']}", f"{sample['sample_id']}-s{n}", m["content"]))
    return out


async def run(base: str, rate: float, duration: float, batch: int, poll: float, drain: float) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    turns = turn_stream(run_id)
    requests_total = int(rate * duration / batch)
    client = LoadClient(base)
    bodies = []
    for n in range(requests_total):
        events = []
        for i in range(batch):
            k = n * batch + i
            actor, session, text = turns[k % len(turns)]
            lap = k // len(turns)  # past the last turn: the same turns again, as other actors
            events.append({"actor_id": f"{actor}-{lap}", "session_id": session, "kind": "user_message",
                           "content": text})
        bodies.append(client.encode("POST", "/v1/ingest", {"events": events}))
    acked: dict[str, float] = {}  # event id -> time of its acknowledgement
    done: dict[str, float] = {}  # event id -> time a poll saw it completed
    failed: dict[str, str] = {}
    errors = 0
    sending = True

    async def send(n: int) -> None:
        nonlocal errors
        status, payload = await client.send(bodies[n])
        if status not in (200, 202):
            errors += 1
            return
        now = time.perf_counter()
        for event_id in json.loads(payload)["event_ids"]:
            acked[event_id] = now

    async def watch() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            deadline = None
            while True:
                waiting = [e for e in acked if e not in done and e not in failed]
                if not sending:
                    deadline = deadline or time.perf_counter() + drain
                    if not waiting or time.perf_counter() > deadline:
                        return
                for i in range(0, len(waiting), 500):
                    report = (await http.post("/v1/status", json={"event_ids": waiting[i:i + 500]})).json()
                    seen = time.perf_counter()
                    for event_id, status in report["statuses"].items():
                        if status == "completed":
                            done[event_id] = seen
                        elif status == "failed":
                            failed[event_id] = report["reasons"].get(event_id, "failed")
                await asyncio.sleep(poll)

    pid = SERVER_PIDS.get(base)
    window = CpuWindow(pid).start() if pid else None
    watcher = asyncio.create_task(watch())
    start = time.perf_counter() + 0.2
    tasks = []
    for n in range(requests_total):
        delay = start + n * batch / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    await asyncio.gather(*tasks)
    load_end = time.perf_counter()
    completed_during_load = sum(1 for t in done.values() if t <= load_end)
    sending = False
    await watcher
    usage = window.stop(time.perf_counter() - start) if window else None
    await client.close()
    lag = [done[e] - acked[e] for e in done]
    end = max(done.values(), default=load_end)
    out = {"rate_events_per_s": rate, "duration_s": duration, "batch": batch, "poll_s": poll,
           "acknowledged": len(acked), "request_errors": errors, "completed": len(done), "failed": len(failed),
           "failed_reasons": sorted(set(failed.values())),
           "completed_per_s_during_load": round(completed_during_load / (load_end - start), 1),
           "completed_per_s_overall": round(len(done) / (end - start), 1),
           "backlog_at_load_end": len(acked) - completed_during_load - sum(1 for e in failed),
           "accept_to_searchable_s": {"p50": round(percentile(lag, 0.5), 2), "p95": round(percentile(lag, 0.95), 2),
                                      "max": round(max(lag, default=float("nan")), 2)}}
    if usage:
        out["cpu"] = usage
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500, help="events per second")
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--batch", type=int, default=10, help="events per request")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between status polls")
    parser.add_argument("--drain", type=float, default=120, help="keep polling this long after the load")
    parser.add_argument("--url", help="a running engram; default: a throwaway one (one worker, as by default)")
    args = parser.parse_args()
    with engram_server(args.url) as base:
        result = asyncio.run(run(base, args.rate, args.duration, args.batch, args.poll, args.drain))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
