"""False positives and cost of the content filter on real conversation (LoCoMo dev).

Runs `ContentFilter.check_event` over every turn of the LoCoMo dev set (read from
../shared/data/locomo/locomo_dev.json at run time, never copied). Those turns carry no
secrets, so every rejection is a false positive. Two passes:

- `ingest`: each turn as engram receives it from bench/locomo.py: `content` is the text
  plus ` [shares: <blip_caption>]`, `name` is the speaker, no metadata;
- `stress`: the same, plus every other field of the turn (`dia_id`, `img_url` links,
  `blip_caption`, `query`, `re-download`) as the event's metadata.

Prints, per pass: turns checked, rejections (rule, where, and a redacted excerpt), the FP
rate, and the cost per turn (mean and p99 in µs: each turn is timed `--repeat` times and
its median kept, so a busy machine's stalls do not pass for the filter's cost).

    .venv/bin/python bench/content_filter_fp.py [--repeat 5] [--data PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import percentile  # noqa: E402

from engram.pipeline.content_filter import ContentFilter  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo_dev.json"


def turns(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for conversation in data:
        conv = conversation["conversation"]
        for key, session in conv.items():
            if not key.startswith("session_") or not isinstance(session, list):
                continue
            for turn in session:
                content = turn["text"] + (f" [shares: {turn['blip_caption']}]" if turn.get("blip_caption") else "")
                metadata = {k: v for k, v in turn.items() if k not in ("text", "speaker")}
                out.append({"sample": conversation["sample_id"], "dia_id": turn["dia_id"], "content": content,
                            "name": turn["speaker"], "metadata": metadata})
    return out


_SECRETISH = re.compile(r"\S*\d\S*|\S{16,}")


def redact(text: str, limit: int = 100) -> str:
    """The excerpt, with every token that could be the flagged value masked."""
    masked = _SECRETISH.sub(lambda m: m.group(0)[:2] + "•" * max(0, min(len(m.group(0)), 12) - 2), text)
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"


def run(cf: ContentFilter, items: list[dict[str, Any]], *, with_metadata: bool, repeat: int) -> dict[str, Any]:
    rejections, costs_us = [], []
    cpu0 = time.process_time()
    for item in items:
        metadata = item["metadata"] if with_metadata else {}
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            rejection = cf.check_event(item["content"], name=item["name"], metadata=metadata)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        costs_us.append(statistics.median(samples))
        if rejection is not None:
            excerpt = item["content"] if rejection.where == "content" else (
                item["name"] if rejection.where == "name" else json.dumps(metadata, ensure_ascii=False))
            rejections.append({"turn": f"{item['sample']} {item['dia_id']}", "reason": rejection.reason,
                               "where": rejection.where, "excerpt": redact(excerpt)})
    cpu_us = (time.process_time() - cpu0) / (len(items) * repeat) * 1e6
    return {
        "turns": len(items),
        "rejections": rejections,
        "fp_rate": len(rejections) / len(items) if items else float("nan"),
        "mean_us": statistics.fmean(costs_us) if costs_us else float("nan"),
        "p99_us": percentile(costs_us, 0.99),
        "max_us": max(costs_us, default=float("nan")),
        "cpu_mean_us": cpu_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"LoCoMo dev JSON (default: {DATA})")
    parser.add_argument("--repeat", type=int, default=5, help="timings per turn; the median is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"LoCoMo dev set not found at {args.data} (it lives in ../shared/data, beside the repo)")
    items = turns(json.loads(args.data.read_text()))
    cf = ContentFilter()
    for item in items[:200]:  # warm the caches and the regex engine
        cf.check_event(item["content"], name=item["name"], metadata=item["metadata"])

    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "repeat": args.repeat,
        "ingest": run(cf, items, with_metadata=False, repeat=args.repeat),
        "stress": run(cf, items, with_metadata=True, repeat=args.repeat),
    }
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    print(f"content filter on LoCoMo dev ({args.data.name}), {report['date']}, {report['machine']}, "
          f"load {report['load_avg_1m']}, median of {args.repeat} timings per turn")
    for name, label in (("ingest", "content + name (as ingested)"), ("stress", "content + name + turn fields as metadata")):
        r = report[name]
        print(f"\n[{name}] {label}")
        print(f"  turns checked   {r['turns']}")
        print(f"  rejections      {len(r['rejections'])}  (FP rate {r['fp_rate']:.4%})")
        for rej in r["rejections"]:
            print(f"    {rej['turn']}  {rej['reason']} in {rej['where']}: {rej['excerpt']}")
        print(f"  cost per turn   mean {r['mean_us']:.1f} µs  p99 {r['p99_us']:.1f} µs  max {r['max_us']:.1f} µs"
              f"  (process CPU {r['cpu_mean_us']:.1f} µs)")


if __name__ == "__main__":
    main()
