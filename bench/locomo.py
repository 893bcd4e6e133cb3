"""LoCoMo turn-budget recall of engram, over the public HTTP API.

Implements the procedure and metric of ../shared/data/locomo/README.md:

* every conversation is ingested as one `user_id` (its `sample_id`), every session as one
  `conv_id` (`session_<n>`), every turn as a family-X message with role `user`, its speaker
  as `name`, its `dia_id`, its text (plus ` [shares: <blip_caption>]` when it has one) as
  `content`, and the session's date as `date`; then every job is waited for;
* every question is searched with its text, filtered to that `user_id`, with the results'
  source events;
* turn-budget recall@k: walk the ranked memories in order and list the distinct `dia_id`s
  they cite until k turns are listed; recall = |gold ∩ listed| / |gold|, averaged over
  questions, overall and per category, for k = 5, 10, 25.

The data is read from ../shared at run time and never copied. Without --url a throwaway
server is started on a temporary data directory (see _server.py).

    .venv/bin/python bench/locomo.py [--url http://127.0.0.1:8420] [--conversations conv-26,conv-41]
                                     [--no-ingest] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import httpx

from _server import SHARED, engram_server
from _stats import percentile

DATA = SHARED / "data/locomo/locomo_dev.json"
KS = (5, 10, 25)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_DIA_ID = re.compile(r"^D\d+:\d+$")
PAGE = 100  # results per search request (the API's maximum); further pages follow the cursor


# ---------------------------------------------------------------------- data
def sessions(conv: dict[str, Any]) -> list[int]:
    return sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))


def session_date(conv: dict[str, Any], n: int) -> str:
    return datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y").isoformat() + "Z"


def session_messages(conv: dict[str, Any], n: int) -> list[dict[str, Any]]:
    when = session_date(conv, n)
    out = []
    for turn in conv[f"session_{n}"]:
        text = turn["text"] + (f" [shares: {turn['blip_caption']}]" if turn.get("blip_caption") else "")
        out.append({"role": "user", "name": turn["speaker"], "content": text, "dia_id": turn["dia_id"], "date": when})
    return out


def gold_turns(evidence: Iterable[str], known: set[str]) -> set[str]:
    """Evidence ids, tolerating malformed strings such as "D8:6; D9:17"."""
    out: set[str] = set()
    for item in evidence:
        for part in re.split(r"[;,\s]+", str(item)):
            if _DIA_ID.match(part) and part in known:
                out.add(part)
    return out


def questions(sample: dict[str, Any]) -> list[dict[str, Any]]:
    conv = sample["conversation"]
    known = {t["dia_id"] for n in sessions(conv) for t in conv[f"session_{n}"]}
    out = []
    for qa in sample["qa"]:
        gold = gold_turns(qa.get("evidence", []), known)
        if gold:
            out.append({"question": qa["question"], "category": int(qa["category"]), "gold": gold})
    return out


# ---------------------------------------------------------------------- metric
def listed_turns(ranked_dia_ids: Iterable[list[str]], k: int) -> list[str]:
    """Walk ranked memories (each: the dia_ids it cites, in order) and list distinct turns up to k."""
    listed: list[str] = []
    seen: set[str] = set()
    for cited in ranked_dia_ids:
        for dia_id in cited:
            if dia_id in seen:
                continue
            seen.add(dia_id)
            listed.append(dia_id)
            if len(listed) == k:
                return listed
    return listed


def recall_at(ranked_dia_ids: list[list[str]], gold: set[str], k: int) -> float:
    return len(gold & set(listed_turns(ranked_dia_ids, k))) / len(gold)


# ---------------------------------------------------------------------- over HTTP
def ingest(client: httpx.Client, sample: dict[str, Any], user_id: str) -> tuple[list[str], list[float], int]:
    conv = sample["conversation"]
    jobs, accept_ms, turns = [], [], 0
    for n in sessions(conv):
        messages = session_messages(conv, n)
        turns += len(messages)
        t0 = time.perf_counter()
        response = client.post("/v1/memories", json={"messages": messages, "user_id": user_id, "conv_id": f"session_{n}"})
        accept_ms.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        jobs.append(response.json()["id"])
    return jobs, accept_ms, turns


def wait_jobs(client: httpx.Client, job_ids: list[str]) -> list[dict[str, Any]]:
    done = []
    for job_id in job_ids:
        while (job := client.get(f"/v1/memories/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            time.sleep(0.1)
        done.append(job)
    return done


def search(client: httpx.Client, user_id: str, question: str, budget: int) -> tuple[list[list[str]], float, float]:
    """The ranked memories' cited dia_ids, enough of them to list `budget` turns (or all there are);
    with the client-side and the server-side time of the first request."""
    ranked: list[list[str]] = []
    cursor = None
    client_ms = server_ms = 0.0
    while True:
        body: dict[str, Any] = {"query": question, "filters": {"user_id": user_id}, "limit": PAGE,
                                "include": ["source_events"]}
        if cursor:
            body["cursor"] = cursor
        t0 = time.perf_counter()
        response = client.post("/v1/memories/search", json=body)
        elapsed = (time.perf_counter() - t0) * 1000
        response.raise_for_status()
        page = response.json()
        if cursor is None:
            client_ms = elapsed
            stages = page.get("extras", {}).get("stage_timings", {})
            server_ms = 1000 * stages.get("total", sum(stages.values()))
        for memory in page["data"]:
            events = memory["details"].get("source_events") or []
            ranked.append([e["dia_id"] for e in events if e.get("dia_id")])
        cursor = page.get("next_cursor")
        if not cursor or len(listed_turns(ranked, budget)) >= budget:
            return ranked, client_ms, server_ms


def print_supersessions(client: httpx.Client, jobs: list[dict[str, Any]]) -> None:
    """Every `old -> new` pair the jobs superseded, with both texts: on conversation, where
    nearly every change of a fact is said in passing, each one is worth reading."""
    pairs = [(old, new) for j in jobs for old, new in j["result"].get("memories_superseded_by", {}).items()]
    for old, new in pairs:
        texts = [client.get(f"/v1/memories/{i}").json()["text"] for i in (old, new)]
        print(f"superseded: {texts[0]!r} -> {texts[1]!r}")
    print(f"{len(pairs)} facts superseded")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running engram; default: start a throwaway one")
    parser.add_argument("--conversations", help="comma-separated sample_ids (default: all of the dev split)")
    parser.add_argument("--user-prefix", default="", help="prefix of the user_ids (to run twice against one server)")
    parser.add_argument("--no-ingest", action="store_true", help="search only: the conversations are already in --url")
    parser.add_argument("--json", type=Path, help="write per-question results here")
    parser.add_argument("--supersessions", action="store_true",
                        help="list every fact the ingest superseded, old and new text (precision of the change rules)")
    args = parser.parse_args()

    data = json.loads(DATA.read_text())
    if args.conversations:
        wanted = args.conversations.split(",")
        data = [s for s in data if s["sample_id"] in wanted]
    if args.no_ingest and not args.url:
        parser.error("--no-ingest needs --url")

    per_question: list[dict[str, Any]] = []
    accept_ms: list[float] = []
    client_ms: list[float] = []
    server_ms: list[float] = []
    ingest_wall = 0.0
    turns = 0
    memories = defaultdict(int)
    with engram_server(args.url) as base, httpx.Client(base_url=base, timeout=120) as client:
        if not args.no_ingest:
            started = time.perf_counter()
            job_ids: list[str] = []
            for sample in data:
                ids, ms, n = ingest(client, sample, args.user_prefix + sample["sample_id"])
                job_ids += ids
                accept_ms += ms
                turns += n
            jobs = wait_jobs(client, job_ids)
            ingest_wall = time.perf_counter() - started
            failed = [j for j in jobs if j["status"] != "succeeded"]
            if failed:
                print(f"{len(failed)} jobs failed, e.g. {failed[0]['error']}", file=sys.stderr)
                return 1
            for job in jobs:
                for ref in job["result"]["memories_created"]:
                    memories[ref["type"]] += 1
            if args.supersessions:
                print_supersessions(client, jobs)
        for sample in data:
            user_id = args.user_prefix + sample["sample_id"]
            for q in questions(sample):
                ranked, c_ms, s_ms = search(client, user_id, q["question"], max(KS))
                client_ms.append(c_ms)
                server_ms.append(s_ms)
                row = {"sample_id": sample["sample_id"], "question": q["question"], "category": q["category"],
                       "gold": sorted(q["gold"]), "listed": listed_turns(ranked, max(KS))}
                row.update({f"r@{k}": recall_at(ranked, q["gold"], k) for k in KS})
                per_question.append(row)

    print(f"LoCoMo dev split: {len(data)} conversations, {len(per_question)} questions")
    if not args.no_ingest:
        print(f"ingest: {turns} turns, {len(accept_ms)} jobs, accept median {statistics.median(accept_ms):.1f} ms, "
              f"all jobs done in {ingest_wall:.1f} s ({turns / ingest_wall:.0f} turns/s); "
              f"memories created {dict(memories)}")
    print(f"search (first page of {PAGE}, source events): client p50 {percentile(client_ms, 0.5):.1f} ms "
          f"p99 {percentile(client_ms, 0.99):.1f} ms; server p50 {percentile(server_ms, 0.5):.1f} ms p99 {percentile(server_ms, 0.99):.1f} ms")
    print()
    print(f"{'category':<16} {'n':>5} " + " ".join(f"{'R@' + str(k):>6}" for k in KS))
    groups: list[tuple[str, list[dict[str, Any]]]] = [("overall", per_question)]
    groups += [(f"{c} {name}", [r for r in per_question if r["category"] == c]) for c, name in CATEGORIES.items()]
    for label, rows in groups:
        if rows:
            print(f"{label:<16} {len(rows):>5} " + " ".join(
                f"{100 * statistics.mean(r[f'r@{k}'] for r in rows):>6.1f}" for k in KS))
    by_conv = defaultdict(list)
    for r in per_question:
        by_conv[r["sample_id"]].append(r)
    print()
    print("R@10 per conversation: " + ", ".join(
        f"{sid} {100 * statistics.mean(r['r@10'] for r in rows):.1f}" for sid, rows in by_conv.items()))
    if args.json:
        args.json.write_text(json.dumps(per_question, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
