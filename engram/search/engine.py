"""Hybrid ranking: which memories a query should return, best first, with scores in [0, 1].

For a query and a filter (already narrowed to active memories by the service):

1. **Ubiquitous words.** The query's words that occur in at least a fifth (and at least
   UBIQUITY_MIN_DOCS) of the memories the filter admits say little about *which* of them
   is meant — in one user's memory that is typically a person's name, which the extractor
   writes into every fact about them. Sentence embeddings weigh names heavily, so the
   query is embedded twice, as written and without those words, and the two vectors are
   blended, NEUTRAL_SHARE to the second (cosine is linear in the query vector: this blends
   the two similarities).
   Lexical scoring keeps every word; BM25 already gives common words little weight.
2. **Candidates.** Dense: cosine over every memory the filter admits (exact; a store may
   use an index for org-wide queries). Lexical: BM25 over the same scope. A lexical
   candidate outside the dense top-k gets its exact cosine by id (the filter admitted it already).
3. **Time.** When the query names dates ("in May 2023"), memories whose event time
   (`valid_at`) falls inside one are fetched as candidates too, and get the time boost.
4. **Fusion** into one score (search/fusion.py).
5. **Context.** The best CONTEXT_WINDOW candidates by that score are read once more
   (`Store.turn_context`, one statement): a memory whose turn follows the turn of a better
   candidate moves part of the way toward that score (a question and its answer are two
   turns), and a fact taken from an assistant's turn is weighted below the user's own words.
   Both are in search/fusion.py, with their reasons.
6. **Recency.** Of two active states of one person on one topic that both answer the query
   about as well (pipeline/topics.py says what a fact is about), the earlier ranks just below
   the later: a change told without the words that let reconciliation supersede still puts
   the current value first.

The filter is resolved once, into the store's search scope (`Store.search_scope`), and every
step asks that scope: on SQLite it is the admitted row ids, read once, with their term counts
and event times from the caches; on PostgreSQL, the compiled filter each statement carries.
Everything here goes through the store protocol, so every backend ranks the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from engram.domain.filters import Node
from engram.search import query as q
from engram.pipeline.topics import state_aspect
from engram.search.fusion import (
    CONTEXT_WINDOW, RECENCY_MARGIN, RECENCY_WINDOW, by_kind, by_role, in_context, relevance, relevance_parts, yield_to,
)
from engram.store.base import Store, TurnContext
from engram.stages import timed

UBIQUITY = 0.2  # a word in at least this share of the scope's memories is ubiquitous ...
UBIQUITY_MIN_DOCS = 10  # ... and in at least this many (tiny scopes have no such words)
NEUTRAL_SHARE = 0.7  # weight of the embedding without ubiquitous words in the dense query (search/fusion.py)
LEXICAL_DEPTH = 1000  # lexical candidates read: their BM25 is exact (FTS computes it for every match anyway)


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """How one memory's score was made (asked for with `rank(…, explain=True)`): the raw
    evidence, the three fused terms (search/fusion.py `relevance_parts`), and what turn
    context, the role weight and recency then moved (`adjustment`, final − fused)."""

    cosine: float
    bm25: float
    dense: float
    lexical: float
    time: float
    adjustment: float
    score: float


@dataclass(slots=True)
class Ranking:
    scored: list[tuple[str, float]]  # memory id, score; best first
    timings: dict[str, float] = field(default_factory=dict)
    dropped_terms: list[str] = field(default_factory=list)
    date_ranges: int = 0
    parts: dict[str, ScoreParts] | None = None  # with explain=True


class HybridRanker:
    def __init__(self, store: Store, embed: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.store = store
        self.embed = embed

    def rank(self, org_id: str, where: Node, text: str, depth: int, *, explain: bool = False) -> Ranking:
        """At least the best `depth` memories by score (more when other candidates came along);
        with `explain`, each one's score parts too (the ranking itself is the same)."""
        timings: dict[str, float] = {}
        words = q.terms(text)
        with timed(timings, "scope"):
            scope = self.store.search_scope(org_id, where)  # resolved once, for every step below

        dropped: list[str] = []
        if words:
            with timed(timings, "terms"):
                total, counts = scope.frequencies(words)
            floor = max(UBIQUITY_MIN_DOCS, UBIQUITY * total)
            dropped = [w for w in words if counts.get(w, 0) >= floor]
        neutral = q.without_terms(text, set(dropped)) if dropped else ""

        with timed(timings, "embed"):
            if neutral and q.terms(neutral):
                first, second = self.embed([text, neutral])
                vector = (1 - NEUTRAL_SHARE) * first + NEUTRAL_SHARE * second
                # Unit length, as the stores take a query (PostgreSQL's cosine normalises it
                # anyway; a dot product would not, and the stores would rank apart).
                vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            else:
                vector = self.embed([text])[0]

        with timed(timings, "dense"):
            cosine = dict(scope.dense(vector, depth))
        with timed(timings, "lexical"):
            bm25 = dict(scope.lexical(text, max(depth, LEXICAL_DEPTH)))

        ranges = q.date_ranges(text)
        in_range: set[str] = set()
        if ranges:
            with timed(timings, "time"):
                dated = scope.narrowed(ranges)
                found = dated.dense(vector, depth)
                cosine.update(found)
                in_range.update(i for i, _ in found)
                in_range.update(dated.admits([i for i in {*cosine, *bm25} if i not in in_range]))

        missing = [i for i in bm25 if i not in cosine]
        if missing:  # lexical candidates outside the dense top-k: their exact cosine too
            with timed(timings, "dense"):
                cosine.update(scope.cosines(vector, missing))

        scored = [(i, relevance(cosine.get(i, 0.0), bm25.get(i, 0.0), i in in_range)) for i in {*cosine, *bm25}]
        scored.sort(key=_best_first)
        if scored:
            with timed(timings, "context"):
                window = scored[:CONTEXT_WINDOW]
                context = self.store.turn_context(org_id, [i for i, _ in window])
                adjusted = sorted(in_turn_context(window, context), key=_best_first)
            with timed(timings, "recency"):
                adjusted = newer_first(adjusted, context)
                scored = sorted(adjusted + scored[CONTEXT_WINDOW:], key=_best_first)
        parts = _explained(scored, cosine, bm25, in_range) if explain else None
        return Ranking(scored, timings, dropped, len(ranges), parts)


def _explained(scored: list[tuple[str, float]], cosine: dict[str, float], bm25: dict[str, float],
               in_range: set[str]) -> dict[str, ScoreParts]:
    parts = {}
    for i, score in scored:
        c, b = cosine.get(i, 0.0), bm25.get(i, 0.0)
        dense, lexical, time = relevance_parts(c, b, i in in_range)
        parts[i] = ScoreParts(c, b, dense, lexical, time, score - (dense + lexical + time), score)
    return parts


def _best_first(item: tuple[str, float]) -> tuple[float, str]:
    return -item[1], item[0]  # ties by id, so pages of one query agree


def in_turn_context(window: list[tuple[str, float]], context: dict[str, TurnContext]) -> list[tuple[str, float]]:
    """The window's scores with turn context and the role weight (search/fusion.py). Every
    neighbour's evidence is its score before this step, so the order the window came in
    does not matter. Episodes neither give nor take context (they cite a whole stretch): the
    store names no neighbours for them (Store.turn_context)."""
    base = dict(window)
    out = []
    for i, score in window:
        c = context.get(i)
        if c is not None:
            score = in_context(score, max((base[n] for n in c.before if n in base), default=0.0))
            score = by_role(score, c.source_role)
            score = by_kind(score, c.fact_type, c.text)
        out.append((i, score))
    return out


def newer_first(window: list[tuple[str, float]], context: dict[str, TurnContext]) -> list[tuple[str, float]]:
    """Of two active states of one person on one topic that both answer the query (within
    RECENCY_MARGIN), the one said earlier ranks just below the later one: where a change was
    told without words that let reconciliation supersede ("we bought a cottage" after "we
    rent a flat"), the current value still comes first. Only the best RECENCY_WINDOW are
    compared; a score only ever goes down (search/fusion.py)."""
    top = window[:RECENCY_WINDOW]
    aspects = {}
    for i, _ in top:
        c = context.get(i)
        if c is not None and c.type == "fact" and c.said_at is not None:
            aspect = state_aspect(c.text, c.fact_type)
            if aspect is not None:
                aspects[i] = (c.user_id, c.said_at, aspect)
    if len(aspects) < 2:
        return window
    rivals: dict[str, list[str]] = {i: [] for i in aspects}
    for i, (user, _, aspect) in aspects.items():
        for j, (other_user, _, other) in aspects.items():
            if i != j and user == other_user and aspect.conflicts_with(other):
                rivals[i].append(j)
    base = dict(top)
    score = dict(top)
    for older, found in rivals.items():
        # A pair: one value replaced another. A family of three or more states on one topic
        # is a many-valued one ("reads Dune", "reads Emma", "reads Ulysses"): age says nothing.
        if len(found) == 1 and len(rivals[found[0]]) == 1:
            newer = found[0]
            if aspects[newer][1] > aspects[older][1] and base[newer] >= base[older] - RECENCY_MARGIN:
                score[older] = min(score[older], yield_to(base[newer]))
    return [(i, score[i]) for i, _ in top] + window[RECENCY_WINDOW:]
