"""Calls, tokens and time per 100 turns with the `llm` extractor, against the scripted
OpenAI-compatible server of the test suite (tests/openai_server.py), and what that would
mean against a real model.

Ingests LoCoMo turns (read from ../shared at run time) as family-X jobs of `--batch` turns,
speakers as `name` and session dates as `date`, into a throwaway `engram serve` with
ENGRAM_EXTRACTOR=llm pointed at the scripted server. Its stand-in model answers at once,
one fact per statement turn ("<speaker> said: <turn>"), and counts tokens as characters/4,
so the measured time is engram's own overhead and the tokens are the real prompt sizes.

    .venv/bin/python bench/llm_pipeline.py [--turns 100] [--batch 10] [--embedder local|openai]
        [--budget 6000] [--concurrency 1] [--ttft 0.6] [--out-tps 80] [--in-price 0.15] [--out-price 0.60]

The estimate for a real model assumes each request takes ttft + completion_tokens/out_tps
seconds (defaults: roughly a hosted small model such as gpt-4o-mini) and prices in dollars
per million tokens; change them for yours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx

from _server import SHARED, engram_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.openai_server import ScriptedOpenAI, echo_extractor  # noqa: E402


def locomo_turns(conversation: str, count: int) -> list[dict]:
    data = json.loads((SHARED / "data/locomo/locomo_dev.json").read_text())
    conv = next(c for c in data if c["sample_id"] == conversation)["conversation"]
    sessions = sorted(int(k.split("_")[1]) for k in conv if k.startswith("session_") and k.count("_") == 1)
    out: list[dict] = []
    for n in sessions:
        when = datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y").isoformat() + "Z"
        for turn in conv[f"session_{n}"]:
            text = turn["text"] + (f" [shares: {turn['blip_caption']}]" if turn.get("blip_caption") else "")
            out.append({"role": "user", "name": turn["speaker"], "content": text, "date": when,
                        "dia_id": turn["dia_id"]})
            if len(out) == count:
                return out
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10, help="turns per ingest call")
    parser.add_argument("--embedder", choices=["local", "openai"], default="local")
    parser.add_argument("--budget", type=int, default=6000, help="ENGRAM_LLM_MAX_PROMPT_TOKENS")
    parser.add_argument("--concurrency", type=int, default=1, help="ENGRAM_LLM_CONCURRENCY")
    parser.add_argument("--ttft", type=float, default=0.6, help="seconds to first token of a real model")
    parser.add_argument("--out-tps", type=float, default=80.0, help="output tokens per second of a real model")
    parser.add_argument("--in-price", type=float, default=0.15, help="$ per million input tokens")
    parser.add_argument("--out-price", type=float, default=0.60, help="$ per million output tokens")
    args = parser.parse_args()

    turns = locomo_turns(args.conversation, args.turns)
    with ScriptedOpenAI() as llm:
        llm.reset(default_chat=echo_extractor)
        env = {"ENGRAM_EXTRACTOR": "llm", "ENGRAM_LLM_BASE_URL": llm.url, "ENGRAM_LLM_MODEL": "scripted",
               "ENGRAM_LLM_MAX_PROMPT_TOKENS": str(args.budget), "ENGRAM_LLM_CONCURRENCY": str(args.concurrency),
               "ENGRAM_EMBEDDER": args.embedder}
        if args.embedder == "openai":
            env.update({"ENGRAM_EMBEDDING_BASE_URL": llm.url, "ENGRAM_EMBEDDING_MODEL": "scripted-embeddings"})
        with engram_server(None, env) as base, httpx.Client(base_url=base, timeout=60) as client:
            client.post("/v1/memories?wait=true", json={  # warm the worker (model load) outside the measure
                "messages": [{"role": "user", "content": "Warm-up turn, please ignore."}],
                "user_id": "warm-up", "conv_id": "warm-up"}).raise_for_status()
            llm.reset(default_chat=echo_extractor)
            started = time.perf_counter()
            jobs = []
            for start in range(0, len(turns), args.batch):
                response = client.post("/v1/memories", json={"messages": turns[start:start + args.batch],
                                                             "user_id": args.conversation, "conv_id": "bench"})
                response.raise_for_status()
                jobs.append(response.json()["id"])
            results = []
            for job_id in jobs:
                while (job := client.get(f"/v1/memories/jobs/{job_id}").json())["status"] not in ("succeeded",
                                                                                                  "failed"):
                    time.sleep(0.02)
                results.append(job)
            wall = time.perf_counter() - started
        chat = llm.chat_requests()
        extraction = [r for r in chat if r.body.get("response_format", {}).get("json_schema", {}).get("name")
                      == "memories"]

    usage: dict[str, int] = defaultdict(int)
    stages: dict[str, float] = defaultdict(float)
    created: dict[str, int] = defaultdict(int)
    for job in results:
        result = job["result"] or {}
        for name, value in result.get("usage", {}).items():
            usage[name] += value
        for stage, seconds in result.get("stage_timings", {}).items():
            stages[stage] += seconds
        for ref in result.get("memories_created", []):
            created[ref["type"]] += 1
    per100 = 100 / len(turns)
    requests = usage["llm_requests"]
    real_s = requests * args.ttft + usage["completion_tokens"] / args.out_tps
    cost = (usage["prompt_tokens"] * args.in_price + usage["completion_tokens"] * args.out_price) / 1e6

    print(f"{len(turns)} LoCoMo turns of {args.conversation} in {len(jobs)} jobs of {args.batch}; "
          f"{sum(j['status'] == 'succeeded' for j in results)}/{len(results)} succeeded; "
          f"embedder {args.embedder}, budget {args.budget}, concurrency {args.concurrency}")
    print(f"memories created: {dict(created)}")
    print(f"{'per 100 turns':<32} {'value':>10}")
    print(f"{'chat requests':<32} {requests * per100:>10.1f}   (extraction {len(extraction) * per100:.1f}, "
          f"episodes {(len(chat) - len(extraction)) * per100:.1f})")
    print(f"{'prompt tokens':<32} {usage['prompt_tokens'] * per100:>10.0f}   "
          f"(mean {usage['prompt_tokens'] / max(requests, 1):.0f} per request)")
    print(f"{'completion tokens':<32} {usage['completion_tokens'] * per100:>10.0f}")
    print(f"{'embedding requests / tokens':<32} {usage['embedding_requests'] * per100:>10.1f} / "
          f"{usage['embedding_tokens'] * per100:.0f}")
    print(f"{'wall time, scripted model (s)':<32} {wall * per100:>10.2f}")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<30} {seconds * per100:>10.2f}")
    print(f"{'est. model time, real model (s)':<32} {real_s * per100:>10.1f}   "
          f"(ttft {args.ttft}s/request + {args.out_tps:g} output tokens/s, sequential)")
    print(f"{'est. cost, real model ($)':<32} {cost * per100:>10.4f}   "
          f"(${args.in_price}/M in, ${args.out_price}/M out)")
    print(json.dumps({"turns": len(turns), "batch": args.batch, "requests_per_100": requests * per100,
                      "prompt_tokens_per_100": usage["prompt_tokens"] * per100,
                      "completion_tokens_per_100": usage["completion_tokens"] * per100,
                      "wall_s_per_100": round(wall * per100, 3), "est_real_s_per_100": round(real_s * per100, 1),
                      "est_cost_per_100": round(cost * per100, 5)}))


if __name__ == "__main__":
    main()
