"""Memory currency: does engram keep a user's facts current when they change, and leave them
alone when they are only added to? Over the public HTTP API, offline default pipeline.

The procedure and metric are those of ../shared/data/currency/README.md (read at run time):
for each item a fresh user; the first turn (role `user`) in conversation `c1` dated
2026-01-10T10:00:00Z, waited for; the second in `c2` dated 2026-06-10T10:00:00Z, waited for.

- current@1 (changes): the top result of a search with the question (filters {user_id},
  limit 5) contains the new marker;
- stale (changes): some active fact of the user contains the old marker but not the new one;
- kept (controls): both markers are found in the user's active facts.

    .venv/bin/python bench/currency.py                       # the dev set in ../shared
    .venv/bin/python bench/currency.py --data bench/data/currency_holdout.json
    .venv/bin/python bench/currency.py --show-misses         # what the misses looked like
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from _server import SHARED, engram_server

DEV = SHARED / "data/currency/currency_dev.json"
FIRST_AT, SECOND_AT = "2026-01-10T10:00:00Z", "2026-06-10T10:00:00Z"


def say(client: httpx.Client, user_id: str, conv_id: str, text: str, at: str) -> None:
    response = client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": text, "date": at}], "user_id": user_id, "conv_id": conv_id})
    response.raise_for_status()
    job_id = response.json()["id"]
    while (job := client.get(f"/v1/memories/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        time.sleep(0.02)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} failed: {job['error']}")


def active_facts(client: httpx.Client, user_id: str) -> list[str]:
    texts, cursor = [], None
    while True:
        params: dict[str, Any] = {"user_id": user_id, "type": "fact", "limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/memories", params=params).json()
        texts += [m["text"] for m in page["data"] if m["details"]["status"] == "active"]
        cursor = page.get("next_cursor")
        if not cursor:
            return texts


def top_result(client: httpx.Client, user_id: str, question: str) -> str:
    response = client.post("/v1/memories/search", json={"query": question, "filters": {"user_id": user_id}, "limit": 5})
    response.raise_for_status()
    data = response.json()["data"]
    return data[0]["text"] if data else ""


def has(text: str, marker: str) -> bool:
    return marker.lower() in text.lower()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEV)
    parser.add_argument("--url", help="a running engram; default: start a throwaway one")
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    data = json.loads(args.data.read_text())
    run = f"cur{int(time.time())}"
    current = stale = kept = 0
    misses: list[str] = []
    with engram_server(args.url) as base, httpx.Client(base_url=base, timeout=60) as client:
        for i, item in enumerate(data["changes"]):
            user = f"{run}-change-{i}"
            say(client, user, "c1", item["old"], FIRST_AT)
            say(client, user, "c2", item["new"], SECOND_AT)
            top = top_result(client, user, item["question"])
            facts = active_facts(client, user)
            is_current = has(top, item["new_marker"])
            is_stale = any(has(f, item["old_marker"]) and not has(f, item["new_marker"]) for f in facts)
            current += is_current
            stale += is_stale
            if not is_current or is_stale:
                misses.append(f"change {i}{'' if is_current else ' NOT-CURRENT'}{' STALE' if is_stale else ''}: "
                              f"{item['old']!r} -> {item['new']!r}\n    top: {top!r}\n    active: {facts}")
        for i, item in enumerate(data["controls"]):
            user = f"{run}-control-{i}"
            say(client, user, "c1", item["first"], FIRST_AT)
            say(client, user, "c2", item["second"], SECOND_AT)
            facts = active_facts(client, user)
            both = any(has(f, item["first_marker"]) for f in facts) and any(has(f, item["second_marker"]) for f in facts)
            kept += both
            if not both:
                misses.append(f"control {i} LOST: {item['first']!r} + {item['second']!r}\n    active: {facts}")
    n, m = len(data["changes"]), len(data["controls"])
    print(f"{args.data.name}: {n} changes, {m} controls")
    print(f"current@1 {100 * current / n:.1f}  stale {100 * stale / n:.1f}  kept {100 * kept / m:.1f}")
    if args.show_misses:
        print("\n".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
