"""One relevance score in [0, 1] from the dense and lexical evidence about a memory.

The score is absolute rather than rank-based, so a `threshold` means the same thing from
one query to the next:

    base  = DENSE_WEIGHT · max(cosine, 0) + (1 − DENSE_WEIGHT) · bm25 / (bm25 + BM25_HALF_POINT)
    score = base + TIME_BOOST · (1 − base)   when the memory's event time is inside a date
                                             range the query names, else base

The saturating transform maps any positive BM25 into [0, 1); the time boost closes a fixed
share of the gap to 1, so scores stay in [0, 1] and keep their order within each group.
The constants were chosen on the LoCoMo dev split (docs/benchmarks.md) and chosen again when
the default embedder became int8 per channel (its cosines spread a little differently): the
half point from 12 to 20, the centre of a plateau (16–24 with the neutral share 0.6–0.8 of
search/engine.py all give recall@10 75.8–76.5, every conversation up on the old constants).

Two adjustments follow, over the best CONTEXT_WINDOW candidates by that score (they need the
candidates' rows: Store.turn_context, one statement):

    score = max(score, score + CONTEXT_SHARE · (before − score))
    score = ASSISTANT_WEIGHT · score        for a fact taken from an assistant's turn
    score = QUESTION_WEIGHT · score         for a question someone asked
    score = ADDRESSED_WEIGHT · score        for words said to the other speaker

*Turn context.* A conversation answers in one turn what the turn before asked (“What did you
paint?” / “A sunset by the lake.”): the answer's own words often miss the query that the
question's words match. So a memory moves CONTEXT_SHARE of the way toward `before`, the best
score among the other candidates citing the turn just before one of its turns (same user and
conversation), when that is higher than its own — never above it, and never down. A convex
blend of two scores in [0, 1] stays in [0, 1], and a memory whose previous turn scored no
better keeps its score: a threshold still means what it did. Only the turn before lifts:
lifting a turn by the one after it, or by a fixed share of a neighbour's score whatever its
own, pushed the best hit's neighbours into the budget and cost multi-hop questions 1-5 points
of recall@10 (docs/benchmarks.md). Episodes neither give nor take context (they cite a stretch).

*Assistant facts.* What an assistant says back (an acknowledgement, an echo of the user's
words) restates the user's statement more briefly and often matches a query better; it must
not outrank what the user said. A modest weight below 1 on facts whose source_role is
"assistant" is the safety net (the extractor is meant not to keep echoes at all); what an
assistant contributes (a recommendation, an answer) still ranks, just behind an equally
good match of the user's own words. LoCoMo's speakers are all users: it is unaffected.

*Questions and addressed words.* The rules extractor keeps a question with content ("Sam
asked Evan: How did you get into watercolor painting?") because the answer in the next turn
often misses the topic's words ("My friend got me into it"): the question matches the query
and lends the answer its score through turn context, at full strength (a neighbour's
evidence is its score before this step). The question itself rarely is what was asked for
(on LoCoMo dev 0–3 % of those in a top 10 cite an evidence turn), so it ranks at
QUESTION_WEIGHT of its score. Words said to the other speaker ("Maria said to John: Friends
like you make a big difference") are mostly reactions to what the other said: 5 % of those in
a top 10 cite an evidence turn against 14 % of the facts rewritten about their speaker.
"""

from __future__ import annotations

import re

DENSE_WEIGHT = 0.6
LEXICAL_WEIGHT = 1 - DENSE_WEIGHT
BM25_HALF_POINT = 20.0  # the BM25 score that counts as half a lexical match (12 before the int8 embedder)
TIME_BOOST = 0.2
CONTEXT_SHARE = 0.4  # how far a memory moves toward its previous turn's better score (flat 0.3-0.5)
CONTEXT_WINDOW = 100  # candidates (best by score) that get turn context and the role weight
ASSISTANT_WEIGHT = 0.85  # weight of a fact taken from an assistant's turn
QUESTION_WEIGHT = 0.5  # weight of a question someone asked (fact_type "question"; flat 0.3-0.7)
ADDRESSED_WEIGHT = 0.9  # weight of words said to the other speaker ("Maria said to John: …"; flat 0.8-0.95)
_ADDRESSED = re.compile(r"^[^:]{1,80}? said to [^:]{1,80}?: ")


def lexical_strength(bm25: float) -> float:
    return bm25 / (bm25 + BM25_HALF_POINT) if bm25 > 0 else 0.0


def relevance(cosine: float, bm25: float, in_time_range: bool = False) -> float:
    dense, lexical, time = relevance_parts(cosine, bm25, in_time_range)
    base = dense + lexical
    return base + time if in_time_range else base


def relevance_parts(cosine: float, bm25: float, in_time_range: bool = False) -> tuple[float, float, float]:
    """The three terms `relevance` adds up — dense, lexical, time — for showing a score's
    make-up (the console's search playground); the same arithmetic, so they sum to it exactly."""
    dense = DENSE_WEIGHT * max(cosine, 0.0)
    lexical = LEXICAL_WEIGHT * lexical_strength(bm25)
    base = dense + lexical
    return dense, lexical, TIME_BOOST * (1 - base) if in_time_range else 0.0


def in_context(score: float, before: float) -> float:
    """The score moved toward the previous turn's best score, when that is higher."""
    return score + CONTEXT_SHARE * (min(before, 1.0) - score) if before > score else score


def by_role(score: float, source_role: str | None) -> float:
    return ASSISTANT_WEIGHT * score if source_role == "assistant" else score


def by_kind(score: float, fact_type: str | None, text: str) -> float:
    """A question, or words said to the other speaker, weighted below a statement of one's own."""
    if fact_type == "question":
        return QUESTION_WEIGHT * score
    if _ADDRESSED.match(text):
        return ADDRESSED_WEIGHT * score
    return score


# Recency among rival states (search/engine.py newer_first): of two active states of one
# person on one topic ("rents a flat" / "bought a cottage") that both answer a query about
# as well, the earlier one ranks just below the later. The margin keeps a state that answers
# the query clearly better in front whatever its age; only the best few are compared.
RECENCY_MARGIN = 0.1
RECENCY_WINDOW = 20
RECENCY_YIELD = 0.99  # the earlier state's score becomes at most this share of the later's


def yield_to(newer: float) -> float:
    return RECENCY_YIELD * newer
