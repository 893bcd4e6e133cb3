"""Reconcile new facts with what the user's memory already holds (SPEC §6.5).

- a fact that repeats an active fact (same normalised text, or a near-identical vector)
  adds its sources to the existing one instead of creating a duplicate row;
- a fact with the same attribute `key` as an active fact of the same user but different
  text supersedes it (the old one stays, with status `superseded`);
- anything else is new.

An extractor that was shown the user's stored memories (the `llm` one) may have said which
fact a candidate repeats or supersedes. Its word is taken when the fact it names is among
`existing` (still active, this user's), after the exact-text check and before the key and
vector rules; the rules decide everything it left open. A fact superseded twice in one
batch becomes a chain (old → first → second), never a fork.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from engram.domain.extraction import FactCandidate
from engram.domain.records import Memory
from engram.domain.text import text_hash

NEAR_DUPLICATE_COSINE = 0.95
_SPECIFIC = re.compile(r"\d+(?:[.,]\d+)?|\b[A-Z][\w'-]+")


def _specifics(text: str) -> set[str]:
    """Numbers and capitalised words (names, places): two texts that differ in these
    state different facts, however close their vectors ("owns 2 bikes" / "owns 3 bikes")."""
    words = _SPECIFIC.findall(text)
    return {w.lower() for w in words}


@dataclass(slots=True)
class Decision:
    candidate: FactCandidate
    vector: np.ndarray
    repeats: str | None = None  # id of the active fact this one repeats
    supersedes: str | None = None  # id of the active fact this one replaces


@dataclass(slots=True)
class Plan:
    decisions: list[Decision] = field(default_factory=list)


def reconcile(
    candidates: Sequence[FactCandidate],
    vectors: np.ndarray,
    existing: Sequence[Memory],
    nearest: Callable[[np.ndarray], tuple[str, str, float] | None],
) -> Plan:
    """Decide, for each candidate in order, whether it repeats, supersedes or is new.

    `existing` holds the user's active facts sharing a key or a text hash with a
    candidate; `nearest` finds the user's most similar active fact by vector, as
    (id, text, cosine). A near-identical vector counts as a repeat only when both texts
    name the same numbers and names.
    Candidates of one batch are reconciled against each other too.
    """
    by_hash = {text_hash(m.text): m.id for m in existing}
    by_key = {m.key: m.id for m in existing if m.key}
    texts_by_id = {m.id: m.text for m in existing}
    keys_by_id = {m.id: m.key for m in existing}
    plan = Plan()
    fresh_by_hash: dict[str, int] = {}
    fresh_by_key: dict[str, int] = {}
    claimed: dict[str, int] = {}  # stored fact id -> the latest candidate of this batch superseding it
    for index, (candidate, vector) in enumerate(zip(candidates, vectors)):
        decision = Decision(candidate, vector)
        digest = text_hash(candidate.text)
        if digest in fresh_by_hash:  # repeated inside this batch: merge into the first copy
            decision.repeats = f"#{fresh_by_hash[digest]}"
        elif digest in by_hash:
            decision.repeats = by_hash[digest]
        elif candidate.repeats in texts_by_id:  # the extractor saw that fact and says this repeats it
            decision.repeats = candidate.repeats
        elif candidate.supersedes in texts_by_id:  # … or replaces it
            decision.supersedes = candidate.supersedes
        elif candidate.key and candidate.key in fresh_by_key:
            decision.supersedes = f"#{fresh_by_key[candidate.key]}"
        elif candidate.key and candidate.key in by_key and texts_by_id[by_key[candidate.key]] != candidate.text:
            decision.supersedes = by_key[candidate.key]
        else:
            near = nearest(vector)
            if near is not None and near[2] >= NEAR_DUPLICATE_COSINE \
                    and _specifics(near[1]) == _specifics(candidate.text):
                decision.repeats = near[0]
        old = decision.supersedes
        if old is not None and not old.startswith("#"):
            if old in claimed:  # already replaced in this batch: replace the replacement
                decision.supersedes = f"#{claimed[old]}"
            claimed[old] = index
            if not candidate.key and keys_by_id.get(old):  # the new value of a keyed attribute keeps its key
                decision.candidate = replace(candidate, key=keys_by_id[old])
        if decision.repeats is None:
            fresh_by_hash[digest] = index
            if decision.candidate.key:
                fresh_by_key[decision.candidate.key] = index
        plan.decisions.append(decision)
    return plan
