"""The data lifecycle at a user's scale (issue 16): export and import throughput, erasure time.

One user's memory is built the way users build it — turns sent over HTTP to an `engram serve`
on the embedded store, extracted by its worker — until it holds `--memories` memories. Then,
from this process over HTTP:

1. export the user (`GET /v1/users/{id}/export`, streamed) — memories/s and MB/s;
2. import it into a fresh `engram serve` on PostgreSQL (the session's real one, started as the
   tests start it) and into a fresh embedded one (`POST /v1/import`) — memories/s;
3. erase the user on each store (`DELETE /v1/users/{id}`) — seconds; then compaction on SQLite
   (`?compact=true` on a copy of the import) — seconds.

    .venv/bin/python bench/lifecycle.py --memories 10000 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import engram_server  # noqa: E402

ENV = {"ENGRAM_EPISODE_IDLE_S": "100000"}
USER = "bench-user"
PLACES = ["Lisbon", "Kyoto", "Denver", "Oslo", "Quito", "Hanoi", "Perth", "Cusco", "Tunis", "Bergen"]
THINGS = ["a kayak", "a violin", "two cats", "a vegetable garden", "a vintage camera", "a sailboat"]


def turn(i: int) -> str:
    """A first-person statement, distinct per turn (numbers and places differ)."""
    return (f"I visited {PLACES[i % len(PLACES)]} for the {i}th time in {2000 + i % 25} "
            f"and bought {THINGS[i % len(THINGS)]} there, number {i}.")


def build_user(base: str, memories: int) -> dict:
    """Send turns until the user has `memories` memories; the time it took."""
    started = time.monotonic()
    sent = 0
    with httpx.Client(base_url=base, timeout=120) as c:
        while True:
            count = _count(c)
            if count >= memories:
                break
            batch = min(500, max(50, memories - count))
            messages = [{"role": "user", "content": turn(sent + i)} for i in range(batch)]
            sent += batch
            job = c.post("/v1/memories", json={"user_id": USER, "conv_id": f"conv-{sent // 2000}",
                                               "messages": messages}).json()
            while c.get(f"/v1/memories/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed"):
                time.sleep(0.2)
        return {"memories": _count(c), "turns": sent, "seconds": round(time.monotonic() - started, 1)}


def _count(c: httpx.Client) -> int:
    """The user's memories of every type and status, as the export counts them."""
    with c.stream("GET", f"/v1/users/{USER}/export") as r:
        last = b""
        for line in r.iter_lines():
            last = line.encode() if isinstance(line, str) else line
    return json.loads(last)["memories"]


def export(base: str) -> tuple[bytes, dict]:
    with httpx.Client(base_url=base, timeout=600) as c:
        started = time.perf_counter()
        with c.stream("GET", f"/v1/users/{USER}/export") as r:
            body = b"".join(r.iter_bytes())
        seconds = time.perf_counter() - started
    end = json.loads(body.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    return body, {"seconds": round(seconds, 3), "memories": end["memories"], "events": end["events"],
                  "bytes": len(body), "memories_per_s": round(end["memories"] / seconds),
                  "mb_per_s": round(len(body) / seconds / 1e6, 1)}


def import_into(base: str, body: bytes) -> dict:
    with httpx.Client(base_url=base, timeout=600) as c:
        started = time.perf_counter()
        r = c.post("/v1/import", content=body, headers={"content-type": "application/x-ndjson"})
        seconds = time.perf_counter() - started
    r.raise_for_status()
    report = r.json()
    return {"seconds": round(seconds, 3), "memories": report["memories_created"], "events": report["events_created"],
            "memories_per_s": round(report["memories_created"] / seconds), "embedded_again": report["memories_embedded"]}


def erase(base: str, *, compact: bool = False) -> dict:
    with httpx.Client(base_url=base, timeout=600) as c:
        started = time.perf_counter()
        r = c.delete(f"/v1/users/{USER}", params={"compact": "true"} if compact else {})
        seconds = time.perf_counter() - started
    r.raise_for_status()
    done = r.json()
    out = {"seconds": round(seconds, 3), "memories": sum(done["memories_deleted"].values()),
           "events": done["events_deleted"]}
    if compact:
        out["compacted"] = done["compacted"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from tests.postgres_server import start

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="engram-bench-lifecycle-") as tmp:
        with engram_server(None, ENV, data_dir=Path(tmp) / "source") as source:
            results["build"] = build_user(source, args.memories)
            print("built", results["build"], flush=True)
            body, results["export"] = export(source)
            print("export", results["export"], flush=True)
            results["erase_sqlite"] = erase(source)
            print("erase (SQLite)", results["erase_sqlite"], flush=True)
        with engram_server(None, {**ENV, "ENGRAM_WORKERS": "0"}, data_dir=Path(tmp) / "copy") as copy:
            results["import_sqlite"] = import_into(copy, body)
            print("import (SQLite)", results["import_sqlite"], flush=True)
            results["erase_sqlite_compacted"] = erase(copy, compact=True)
            print("erase + compact (SQLite)", results["erase_sqlite_compacted"], flush=True)
        pg = start(None)
        try:
            url = pg.create_database("engram_bench_lifecycle")
            from engram.store.postgres import PostgresStore

            store = PostgresStore(url, pool_size=2)
            store.migrate()
            store.close()
            with engram_server(None, {**ENV, "ENGRAM_DATABASE_URL": url, "ENGRAM_WORKERS": "0"},
                               data_dir=Path(tmp) / "pg") as target:
                results["import_postgres"] = import_into(target, body)
                print("import (PostgreSQL)", results["import_postgres"], flush=True)
                results["erase_postgres"] = erase(target)
                print("erase (PostgreSQL)", results["erase_postgres"], flush=True)
            pg.drop_database(url)
        finally:
            pg.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
