"""Per-stage pipeline time on a sample conversation, over the public HTTP API.

Ingests one LoCoMo conversation (read from ../shared at run time) as family-X jobs, one per
session, with speakers as `name` and session dates as `date`; waits for every job; prints
the accept latency, the sum and per-turn mean of each pipeline stage (from the jobs'
`stage_timings`), and the wall time from first accept to last job done.

    .venv/bin/python bench/pipeline_stages.py [--conversation conv-26] [--url http://…]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from datetime import datetime

import httpx

from _server import SHARED, engram_server


def session_messages(conv: dict, n: int) -> list[dict]:
    when = datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y").isoformat() + "Z"
    out = []
    for turn in conv[f"session_{n}"]:
        text = turn["text"] + (f" [shares: {turn['blip_caption']}]" if turn.get("blip_caption") else "")
        out.append({"role": "user", "name": turn["speaker"], "content": text, "dia_id": turn["dia_id"], "date": when})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--url", help="a running engram; default: start a throwaway one")
    args = parser.parse_args()
    data = json.loads((SHARED / "data/locomo/locomo_dev.json").read_text())
    sample = next(c for c in data if c["sample_id"] == args.conversation)["conversation"]
    sessions = sorted(int(k.split("_")[1]) for k in sample if k.startswith("session_") and k.count("_") == 1)

    with engram_server(args.url) as base, httpx.Client(base_url=base, timeout=60) as client:
        accept_ms, jobs, turns = [], [], 0
        started = time.perf_counter()
        for n in sessions:
            messages = session_messages(sample, n)
            turns += len(messages)
            t0 = time.perf_counter()
            response = client.post("/v1/memories", json={"messages": messages, "user_id": args.conversation,
                                                         "conv_id": f"session_{n}"})
            accept_ms.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
            jobs.append(response.json()["id"])
        results = []
        for job_id in jobs:
            while (job := client.get(f"/v1/memories/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
                time.sleep(0.05)
            results.append(job)
        wall = time.perf_counter() - started

    stages: dict[str, float] = defaultdict(float)
    created = defaultdict(int)
    for job in results:
        for stage, seconds in (job["result"] or {}).get("stage_timings", {}).items():
            stages[stage] += seconds
        for ref in (job["result"] or {}).get("memories_created", []):
            created[ref["type"]] += 1
    print(f"conversation {args.conversation}: {len(sessions)} sessions, {turns} turns, "
          f"{sum(j['status'] == 'succeeded' for j in results)}/{len(results)} jobs succeeded")
    print(f"memories created: {dict(created)}")
    print(f"accept latency per job (ms): median {statistics.median(accept_ms):.1f}, max {max(accept_ms):.1f}")
    print(f"first accept to last job done: {wall:.2f} s ({turns / wall:.0f} turns/s)")
    print(f"{'stage':<10} {'total s':>8} {'ms/turn':>8}")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{stage:<10} {seconds:>8.2f} {1000 * seconds / turns:>8.2f}")


if __name__ == "__main__":
    main()
