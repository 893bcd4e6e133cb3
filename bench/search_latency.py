"""User-scoped search latency for one user with 10,000+ memories, over the public HTTP API.

Builds the user through family-X ingest (the real pipeline: rules extractor, local embedder):
the LoCoMo dev conversations (read from ../shared at run time), replayed with a different pair
of speaker names on each pass until the user has `--memories` memories (other names make other
facts, so nothing is merged away). Then searches that user with LoCoMo questions (names swapped
the same way), one request at a time, and prints the server-side time of each search
(`extras.stage_timings.total`: ranking, hydration and source events; not HTTP or JSON) and the
client-side round trip, p50 / p90 / p99, with the mean per stage.

    .venv/bin/python bench/search_latency.py [--memories 10000] [--queries 400] [--limit 10]
                                             [--url http://127.0.0.1:8420 [--no-ingest]]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Iterator

import httpx

from _server import engram_server
from _stats import percentile
from locomo import DATA, sessions, session_messages

USER = "bench-10k"
NAMES = ["Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kendall", "Logan",
         "Morgan", "Parker", "Quinn", "Reese", "Rowan", "Sawyer", "Skyler", "Taylor"]


def renamed(text: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
        text = re.sub(rf"\b{re.escape(old[:3])}\b", new[:3], text)  # nicknames ("Mel")
    return text


def passes(data: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any], dict[str, str]]]:
    """(pass number, conversation, speaker renames), forever: pass 0 keeps the names."""
    n = 0
    while True:
        for k, sample in enumerate(data):
            conv = sample["conversation"]
            speakers = [conv["speaker_a"], conv["speaker_b"]]
            if n == 0:
                names = {s: s for s in speakers}
            else:
                names = {s: NAMES[(2 * k + i + 3 * n) % len(NAMES)] + f"{n}" for i, s in enumerate(speakers)}
            yield n, sample, names
        n += 1


def count_memories(client: httpx.Client) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"user_id": USER, "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/memories", params=params).json()
        total += len(page["data"])
        if not page["has_more"]:
            return total
        cursor = page["next_cursor"]


def build(client: httpx.Client, data: list[dict[str, Any]], target: int) -> tuple[int, float]:
    """Ingest passes of the conversations until the user has `target` memories."""
    started = time.perf_counter()
    have = count_memories(client)
    for n, sample, names in passes(data):
        if have >= target:
            break
        conv = sample["conversation"]
        jobs = []
        for s in sessions(conv):
            messages = session_messages(conv, s)
            for m in messages:
                m["content"], m["name"] = renamed(m["content"], names), names[m["name"]]
            response = client.post("/v1/memories", json={"messages": messages, "user_id": USER,
                                                         "conv_id": f"p{n}-{sample['sample_id']}-s{s}"})
            response.raise_for_status()
            jobs.append(response.json()["id"])
        for job_id in jobs:
            while (job := client.get(f"/v1/memories/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
                time.sleep(0.2)
            have += len(job["result"]["memories_created"]) if job["status"] == "succeeded" else 0
        print(f"  pass {n} {sample['sample_id']}: ~{have} memories, {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    return count_memories(client), time.perf_counter() - started


def queries(data: list[dict[str, Any]], count: int) -> list[str]:
    out = []
    for n, sample, names in passes(data):
        for qa in sample["qa"]:
            out.append(renamed(qa["question"], names))
            if len(out) >= count:
                return out
        if n > 3:
            return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running engram; default: start a throwaway one")
    parser.add_argument("--no-ingest", action="store_true", help="the user is already in --url")
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    data = json.loads(DATA.read_text())

    with engram_server(args.url) as base, httpx.Client(base_url=base, timeout=120) as client:
        if args.no_ingest:
            have = count_memories(client)
        else:
            have, seconds = build(client, data, args.memories)
            print(f"built user {USER}: {have} memories in {seconds:.0f} s")
        asked = queries(data, args.queries + args.warmup)
        server_ms, client_ms, stages = [], [], defaultdict(list)
        for i, text in enumerate(asked):
            t0 = time.perf_counter()
            response = client.post("/v1/memories/search", json={"query": text, "filters": {"user_id": USER},
                                                                 "limit": args.limit})
            elapsed = 1000 * (time.perf_counter() - t0)
            response.raise_for_status()
            if i < args.warmup:
                continue
            timings = response.json()["extras"]["stage_timings"]
            server_ms.append(1000 * timings["total"])
            client_ms.append(elapsed)
            for stage, seconds in timings.items():
                if stage != "total":
                    stages[stage].append(1000 * seconds)

    print(f"user-scoped search, {have} memories, limit {args.limit}, {len(server_ms)} queries (sequential)")
    for label, values in (("server", server_ms), ("client", client_ms)):
        print(f"  {label:<7} p50 {percentile(values, 0.5):6.1f} ms   p90 {percentile(values, 0.9):6.1f} ms   "
              f"p99 {percentile(values, 0.99):6.1f} ms   mean {statistics.mean(values):6.1f} ms")
    print("  mean per stage (ms): " + ", ".join(
        f"{stage} {sum(v) / len(server_ms):.1f}" for stage, v in sorted(stages.items(), key=lambda kv: -sum(kv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
