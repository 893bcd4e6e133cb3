"""The whole benchmark suite, one command: accept path, saturation, pipeline, search at scale.

Each part is its own script (run one alone to dig in); this runs them in turn, each against
its own throwaway `engram serve` (embedded default: SQLite, one worker process, the local
embedder), from separate processes over HTTP, and writes every result as JSON under
`--out` plus a summary on stdout. docs/benchmarks.md records what it printed.

    .venv/bin/python bench/run.py                  # ~35 min on 2 cores (the 1M-memory fixture is cached after its first build)
    .venv/bin/python bench/run.py --quick          # every part, smaller and shorter (~6 min)
    .venv/bin/python bench/run.py --only accept,pipeline

Parts:
- accept:     bench/load.py, open loop: family M batches of 1, 10 and 50 events (50 also spread
              over 50 conversations) and family X ingests of 10 messages, at fixed rates, the
              pipeline working on what is accepted;
- saturation: bench/load.py with 50-event batches at rising rates, until errors or a p99 over 1 s;
- pipeline:   bench/pipeline_stages.py (time per stage) and bench/freshness.py (accept to
              searchable, at 300 events/s and at a rate the pipeline keeps up with);
- search:     bench/search_scale.py (10k, 100k, 1M memories over 1,000 users; disk, RSS).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PARTS = ("accept", "saturation", "pipeline", "search")


def script(name: str, *args: Any, out: Path, tag: str) -> Any:
    """Run bench/<name> and keep what it printed (JSON on its last line or whole stdout)."""
    command = [sys.executable, str(HERE / name), *map(str, args)]
    print(f"$ {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
    (out / f"{tag}.log").write_text(done.stderr)
    if done.returncode:
        raise SystemExit(f"{name} failed ({done.returncode}); see {out / f'{tag}.log'}\n{done.stderr[-2000:]}")
    (out / f"{tag}.out").write_text(done.stdout)
    print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    text = done.stdout.strip()
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return text


def accept(out: Path, quick: bool) -> list[dict[str, Any]]:
    duration = 15 if quick else 60
    # (family, events a request, requests/s, conversations a request): the last family-M row is
    # the shape of a backend that batches many users' events (issue 15)
    runs = [("m", 1, 300, 1), ("m", 10, 200, 1), ("m", 50, 100, 1), ("m", 50, 100, 50), ("x", 10, 50, 1)]
    results = []
    for family, batch, rate, conversations in runs:
        spread = ["--conversations-per-batch", conversations] if conversations > 1 else []
        r = script("load.py", "--family", family, "--batch", batch, "--rate", rate, "--duration", duration, *spread,
                   out=out, tag=f"accept-{family}-{batch}" + (f"-c{conversations}" if spread else ""))
        results.append(r)
        print(f"accept {family} batch {batch:>2} over {conversations:>2} conversation(s) @ {rate}/s: p50 {r['p50_ms']}"
              f" p99 {r['p99_ms']} max {r['max_ms']} ms, errors {r['errors'] or 0},"
              f" durable {r['durable']}/{r['acknowledged']}, processed {r.get('processed_per_s')}/s", flush=True)
    return results


def saturation(out: Path, quick: bool) -> list[dict[str, Any]]:
    results = []
    for rate in (100, 150, 200, 300, 400):
        r = script("load.py", "--family", "m", "--batch", 50, "--rate", rate, "--duration", 10 if quick else 20,
                   out=out, tag=f"saturation-{rate}")
        results.append(r)
        print(f"saturation 50 x {rate}/s: {r['events_per_s']:,} events/s, p50 {r['p50_ms']} p99 {r['p99_ms']} ms,"
              f" errors {r['errors'] or 0}, durable {r['durable']}/{r['acknowledged']}", flush=True)
        if r["errors"] or r["p99_ms"] > 1000:
            break
    return results


def pipeline(out: Path, quick: bool) -> dict[str, Any]:
    stages = script("pipeline_stages.py", out=out, tag="pipeline-stages")
    print(stages, flush=True)
    fresh = {}
    # 300 events/s is issue 15's goal (p95 <= 2 s); 30/s a rate one worker keeps up with anywhere
    for rate, duration in ((300, 10 if quick else 30), (30, 30 if quick else 60)):
        r = fresh[rate] = script("freshness.py", "--rate", rate, "--duration", duration, "--drain", 60 if quick else 120,
                                 out=out, tag=f"freshness-{rate}")
        print(f"freshness @ {rate} events/s: completed {r['completed_per_s_during_load']}/s during the load, "
              f"accept->searchable p50 {r['accept_to_searchable_s']['p50']} s p95 {r['accept_to_searchable_s']['p95']} s,"
              f" backlog at end {r['backlog_at_load_end']}", flush=True)
    return {"stages": stages, "freshness": fresh}


def search(out: Path, quick: bool) -> Any:
    args = ["--quick"] if quick else ["--queries", 300, "--org-queries", 30]
    printed = script("search_scale.py", *args, "--json", out / "search-scale.json", out=out, tag="search")
    print("\n".join(line for line in str(printed).splitlines() if line.startswith("|")), flush=True)
    return json.loads((out / "search-scale.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=Path("/tmp") / f"engram-bench-{time.strftime('%Y%m%dT%H%M%S')}")
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"--only: unknown {set(parts) - set(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in parts:
        results[part] = globals()[part](args.out, args.quick)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
