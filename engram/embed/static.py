"""A static sentence embedder distilled from the transformer: one vector per vocabulary token.

Embedding a text with the transformer costs a forward pass through six attention layers;
here it costs a tokenisation and a sum of table rows. The table is made once, from the
transformer itself, and kept in a cache file:

1. **Token vectors.** Every WordPiece token of the vocabulary goes through the transformer
   alone, as the one-token text ``[CLS] token [SEP]``; its row is the hidden state at the
   token's own position (``pooling="token"``; the mean over the three positions, as the
   transformer pools a sentence, measured a little worse), L2-normalised.
2. **Centering.** Those rows share a large common component: uncentered, two random facts
   of one LoCoMo user come out at cosine 0.75 on average (the transformer: 0.24), squeezing
   related and unrelated into one narrow band (with an uncentered table, ~270 more of
   LoCoMo's 5,583 facts pass reconcile's near-duplicate bar, 0.95, and merge as repeats).
   The frequency-weighted mean of the rows (below) is subtracted, and with it the top
   ``common_components`` principal directions (1), which all texts share rather than
   telling them apart.
3. **PCA, half-whitened.** The centered rows are rotated onto their principal axes (cut to
   ``dims``, if given) and each axis is scaled by its standard deviation to the power -1/2
   (``whiten`` 0.5), so that the few dominant axes of the token space no longer drown the
   many smaller ones; full whitening (1.0) measured worse than none (offline, dense only).
4. **Weights.** A sentence vector is the weighted mean of its tokens' rows, L2-normalised.
   The weight is SIF's a / (a + p(t)) (Arora et al. 2017), with p(t) estimated from the
   token's rank under Zipf's law, p(r) = 1 / (r · H_N): BERT's WordPiece vocabulary lists
   whole words in frequency order, so no corpus is needed and nothing but the teacher and
   its tokenizer decides the table. Frequent words ("the", "i", "is", punctuation) weigh
   almost nothing (unweighted, LoCoMo recall@10 falls by 7 points). The weight is folded
   into the row, so a sentence is a plain sum of rows.

Steps 1-4 (token position or mean, centering, dimensions, whitening, weights) were chosen by
measurement on LoCoMo dev for issue 15; `Recipe` keeps the alternatives selectable.

The derivation is a function of a transformer session (anything with onnxruntime's
``run``/``get_inputs``, returning hidden states ``(batch, width, dim)``) and its tokenizer,
so the teacher can be swapped: ``default_teacher`` is the one place that names today's.
The table is written through a temporary file and ``os.replace`` (never half-written), with
the sha256 of its bytes in the file's header; a file whose bytes do not match is derived
again. The file name is a digest of the teacher's identity and the recipe, so a new teacher
or recipe never reads an old table, and the embedder's ``name`` carries the table's own
digest: vectors of two different tables are never mistaken for one space.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from engram.embed.files import default_cache_dir, exclusive, replaced_whole

log = logging.getLogger("engram")

FORMAT = b"engram-static-table 1\n"
CLS, SEP = "[CLS]", "[SEP]"
DERIVE_BATCH = 512  # one-token texts per transformer run while deriving


@dataclass(frozen=True)
class Recipe:
    """How the table is made from the teacher (module docstring, steps 1-4)."""

    dims: int | None = None  # PCA output dimensions; None: all the teacher's left (table_dim)
    center: bool = True  # subtract the weighted mean row
    common_components: int = 1  # principal directions removed after centering
    weighting: str = "sif"  # "sif" (a / (a + p)), "logrank" (log of the Zipf rank) or "none"
    sif_a: float = 1e-3
    pooling: str = "token"  # "mean" over [CLS] t [SEP] (as the teacher pools), or "token": t's position only
    whiten: float = 0.5  # scale principal axis i by variance_i ** (-whiten / 2): 0 none, 1 full whitening

    def __post_init__(self) -> None:
        if self.dims is not None and self.dims < 1:
            raise ValueError("dims must be >= 1 or None")
        if self.weighting not in ("sif", "logrank", "none") or self.pooling not in ("mean", "token"):
            raise ValueError(f"unknown weighting {self.weighting!r} or pooling {self.pooling!r}")
        if self.common_components < 0 or not self.sif_a > 0 or not 0 <= self.whiten <= 1:
            raise ValueError("common_components must be >= 0, sif_a > 0 and whiten in [0, 1]")


DEFAULT_RECIPE = Recipe()


def table_dim(teacher_dim: int, recipe: Recipe) -> int:
    """The dimensions of a table: the recipe's, or the teacher's less the removed directions."""
    left = teacher_dim - (recipe.common_components if recipe.center else 0)
    return left if recipe.dims is None else min(recipe.dims, left)


class Teacher(NamedTuple):
    """What a table is derived from. `identity` names the exact weights and vocabulary
    (it keys the cache); `load` gives (session, tokenizer) and is only called on a miss."""

    identity: str
    tokenizer_path: Path
    load: Any  # Callable[[], tuple[session, tokenizers.Tokenizer]]


def default_teacher(cache_dir: str | Path | None = None) -> Teacher:
    """Today's default transformer (engram.embed.local; its graph kept in `cache_dir`) and its
    tokenizer.json."""
    from engram.embed import local

    def load() -> tuple[Any, Any]:
        teacher = local.LocalEmbedder(cache_dir=cache_dir)
        return teacher._session, teacher._tokenizer

    identity = f"{local.NAME} model={local.MODEL_SHA256} tokenizer={local.TOKENIZER_SHA256}"
    path = local.default_tokenizer_path()
    local._verify(path, local.TOKENIZER_SHA256)
    return Teacher(identity, path, load)


# ---------------------------------------------------------------------- derivation
def token_vectors(session: Any, tokenizer: Any, *, pooling: str = "mean",
                  ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the teacher's unit vector of every token id as a one-token text, of the empty text).

    `ids`: only these token ids (tests); default the whole vocabulary, in id order."""
    cls, sep = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    if cls is None or sep is None:
        raise ValueError("the tokenizer has no [CLS] or [SEP] token")
    ids = np.arange(tokenizer.get_vocab_size(), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    names = {i.name for i in session.get_inputs()}

    def run(batch: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch)}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(batch)
        return np.asarray(session.run(None, feeds)[0], dtype=np.float32)

    rows = []
    for start in range(0, len(ids), DERIVE_BATCH):
        chunk = ids[start:start + DERIVE_BATCH]
        batch = np.stack([np.full(len(chunk), cls), chunk, np.full(len(chunk), sep)], axis=1)
        hidden = run(batch)
        rows.append(hidden.mean(axis=1) if pooling == "mean" else hidden[:, 1])
    vectors = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    empty = run(np.array([[cls, sep]], dtype=np.int64))[0].mean(axis=0)
    return _unit(vectors.astype(np.float64)), _unit(empty.astype(np.float64))


def zipf_ranks(tokenizer: Any) -> np.ndarray:
    """Estimated frequency rank (1 = most frequent) of every token id; 0 for tokens that
    never occur in a tokenised text ([PAD], [CLS], [unused…], …).

    BERT's uncased WordPiece vocabulary is laid out as special and unused tokens, then single
    characters, then whole words and word pieces in descending frequency of its training
    corpus (from 'the' on), then rare '##' characters. So the ordered block keeps its order;
    ASCII punctuation ranks with the most frequent words, single ASCII letters and digits
    (the words 'i' and 'a', the pieces of numbers) just after, other characters as rare."""
    vocab = tokenizer.get_vocab()
    n = tokenizer.get_vocab_size()
    ranks = np.zeros(n, dtype=np.float64)
    the = vocab.get("the", 0)
    for token, i in vocab.items():
        if i >= the:
            ranks[i] = 1 + (i - the)
        elif len(token) == 1 and token.isascii():
            ranks[i] = 20.0 if token.isalnum() else 2.0  # 'i', 'a', digits; '.', ',', '?'
        elif token == "[UNK]" or not (token.startswith("[") and token.endswith("]")):
            ranks[i] = n  # a rare character, or one the vocabulary does not know
    return ranks


def token_weights(tokenizer: Any, recipe: Recipe) -> np.ndarray:
    ranks = zipf_ranks(tokenizer)
    known = ranks > 0
    w = np.zeros_like(ranks)
    if recipe.weighting == "none":
        w[known] = 1.0
    elif recipe.weighting == "logrank":
        w[known] = np.log1p(ranks[known])
    else:
        harmonic = np.log(len(ranks)) + 0.5772156649
        p = 1.0 / (ranks[known] * harmonic)
        w[known] = recipe.sif_a / (recipe.sif_a + p)
    return w


def derive_table(session: Any, tokenizer: Any, recipe: Recipe = DEFAULT_RECIPE, *,
                 ids: Sequence[int] | None = None,
                 raw: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the table: one weighted row per token id, float32; the vector of a text with no token).

    `raw`: the teacher's token vectors (token_vectors), when already computed (experiments).
    Deterministic for a given teacher: float64 throughout, and each principal axis's sign is
    fixed (its largest coordinate positive) instead of left to the eigensolver."""
    vectors, empty = raw if raw is not None else token_vectors(session, tokenizer, pooling=recipe.pooling, ids=ids)
    weights = token_weights(tokenizer, recipe)
    if ids is not None:
        weights = weights[np.asarray(ids)]
    # The rows as texts use them: each token counts by its estimated frequency.
    freq = np.zeros(len(vectors))
    ranks = zipf_ranks(tokenizer)[np.asarray(ids)] if ids is not None else zipf_ranks(tokenizer)
    freq[ranks > 0] = 1.0 / ranks[ranks > 0]
    freq /= max(freq.sum(), 1e-300)

    mean = freq @ vectors if recipe.center else np.zeros(vectors.shape[1])
    x = vectors - mean
    e = empty - mean
    # Principal axes of the rows as texts use them (frequency-weighted second moment).
    moment = (x * freq[:, None]).T @ x + 1e-12 * np.eye(x.shape[1])
    values, axes = np.linalg.eigh(moment)
    order = np.argsort(values)[::-1]
    values, axes = values[order], axes[:, order]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    axes = axes * np.where(signs == 0, 1.0, signs)
    k = recipe.common_components if recipe.center else 0
    d = table_dim(x.shape[1], recipe)
    keep = axes[:, k:k + d]
    if recipe.whiten:
        keep = keep * (np.maximum(values[k:k + d], 1e-12) / max(values[k], 1e-12)) ** (-recipe.whiten / 2)
    table = (x @ keep) * weights[:, None]
    return table.astype(np.float32), _unit((e @ keep)[None])[0].astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------- cache file
class TableFileError(RuntimeError):
    """A cache file that is not a complete table of the expected shape and digest."""


def table_digest(table: np.ndarray, empty: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(table, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(empty, dtype="<f4").tobytes())
    return h.hexdigest()


def write_table(path: Path, table: np.ndarray, empty: np.ndarray, meta: dict[str, Any]) -> str:
    """Write atomically (temporary file in the same directory, fsync, os.replace); the
    sha256 of the table's bytes goes into the header. Returns it."""
    digest = table_digest(table, empty)
    header = json.dumps({**meta, "shape": list(table.shape), "sha256": digest}, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(path) as tmp, open(tmp, "wb") as f:
        f.write(FORMAT + header + b"\n")
        f.write(np.ascontiguousarray(table, dtype="<f4").tobytes())
        f.write(np.ascontiguousarray(empty, dtype="<f4").tobytes())
    return digest


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(table, empty vector, header); TableFileError unless the bytes hash to the header's sha256."""
    data = path.read_bytes()
    if not data.startswith(FORMAT):
        raise TableFileError(f"{path}: not a static embedder table")
    end = data.find(b"\n", len(FORMAT))
    try:
        header = json.loads(data[len(FORMAT):end])
        rows, dim = (int(n) for n in header["shape"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TableFileError(f"{path}: unreadable header") from exc
    payload = data[end + 1:]
    if len(payload) != 4 * (rows + 1) * dim:
        raise TableFileError(f"{path}: {len(payload)} bytes of table, expected {4 * (rows + 1) * dim}")
    flat = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    table, empty = flat[: rows * dim].reshape(rows, dim), flat[rows * dim:]
    if table_digest(table, empty) != header.get("sha256"):
        raise TableFileError(f"{path}: sha256 of the table does not match its header")
    return table, empty, header


def cache_path(cache_dir: Path, teacher: Teacher, recipe: Recipe) -> Path:
    key = hashlib.sha256(json.dumps({"teacher": teacher.identity, "recipe": asdict(recipe)},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"static-{key}.table"


def load_or_derive(teacher: Teacher, recipe: Recipe, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(table, empty vector, sha256): from the cache file, or derived into it on a miss or
    on a file whose bytes do not match its digest."""
    path = cache_path(cache_dir, teacher, recipe)
    with exclusive(path):
        if path.exists():
            try:
                table, empty, header = read_table(path)
                return table, empty, header["sha256"]
            except (TableFileError, OSError) as exc:
                log.warning("static embedder: %s; deriving the table again", exc)
        log.info("static embedder: deriving %s from %s (once)", path.name, teacher.identity)
        session, tokenizer = teacher.load()
        table, empty = derive_table(session, tokenizer, recipe)
        digest = write_table(path, table, empty, {"teacher": teacher.identity, "recipe": asdict(recipe)})
        return table, empty, digest


# ---------------------------------------------------------------------- the embedder
class StaticEmbedder:
    """Sentence vectors as a weighted sum of distilled token vectors (module docstring).

    Args:
        recipe: how the table is derived (default DEFAULT_RECIPE).
        cache_dir: where tables are kept, and the default teacher's graph (ENGRAM_MODEL_CACHE;
            default $XDG_CACHE_HOME/engram or ~/.cache/engram).
        teacher: the transformer to distil (default today's local embedder).
    """

    def __init__(self, recipe: Recipe | None = None, *, cache_dir: str | Path | None = None,
                 teacher: Teacher | None = None) -> None:
        from tokenizers import Tokenizer

        teacher = teacher or default_teacher(cache_dir)
        self.recipe = recipe = recipe or DEFAULT_RECIPE
        self._table, self._empty, self.sha256 = load_or_derive(
            teacher, recipe, Path(cache_dir) if cache_dir else default_cache_dir())
        self._tokenizer = Tokenizer.from_file(str(teacher.tokenizer_path))
        self._tokenizer.no_truncation()  # a sum of rows has no length limit
        self._tokenizer.no_padding()
        if self._table.shape[0] != self._tokenizer.get_vocab_size():
            raise TableFileError("the table does not match the tokenizer's vocabulary")
        self.dim = int(self._table.shape[1])
        self.name = f"static:{teacher.identity.split()[0].split(':', 1)[-1]}-{self.dim}-{self.sha256[:12]}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # would otherwise embed each character
            raise TypeError("embed() takes a sequence of strings, not a string")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int64, count=int(lengths.sum()))
        sums = np.zeros((len(texts), self.dim), dtype=np.float32)
        nonempty = lengths > 0
        if flat.size:
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
            sums[nonempty] = np.add.reduceat(self._table[flat], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1)
        good = norms > 1e-9
        out[good] = sums[good] / norms[good, None]
        out[~good] = self._empty  # no token, or only weightless ones: the empty text's vector
        return out
