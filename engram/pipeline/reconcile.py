"""Reconcile new facts with what the user's memory already holds (SPEC §6.5).

- a fact that repeats an active fact (same normalised text, or a near-identical vector)
  adds its sources to the existing one instead of creating a duplicate row;
- a fact with the same attribute `key` as an active fact of the same user but different
  text supersedes it (the old one stays, with status `superseded`);
- a fact whose sentence says an earlier state ended or changed (`cue` "change" or "shift",
  see pipeline/extract/rules/changes.py) supersedes the user's active fact it is about: one
  of the few nearest by vector that shares a topic word with it (a stem other than the
  speaker's name and function words: "quit *teach*ing" / "*teach*es math") and is close
  enough, or, without a shared word, is closer still. A "shift" ("… now", "these days")
  needs more of both than an explicit "change" ("quit", "switched", "no longer"). A fact
  that says it adds ("also", "too", "another") never supersedes, not even by key;
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

from engram.domain.details import FactDetails
from engram.domain.extraction import FactCandidate
from engram.domain.records import Memory
from engram.domain.text import text_hash
from engram.pipeline.extract.rules.changes import ADDITION, CHANGE, SHIFT, says_addition
from engram.pipeline.topics import is_state, same_topic, topic_words

NEAR_DUPLICATE_COSINE = 0.95
_SPECIFIC = re.compile(r"\d+(?:[.,]\d+)?|\b[A-Z][\w'-]+")

# How close a stored fact must be to the one that says it changed, by cue: (cosine with a
# shared topic word, cosine without one; a shift needs the word). The word and the cue do
# most of the work: on the LoCoMo dev set the same 7 of 5,586 facts are superseded with the
# word's bar at 0.3 or at 0.5; "These days I cycle to work" / "takes the bus to work" is 0.33.
CHANGE_MATCH = {CHANGE: (0.3, 0.5), SHIFT: (0.3, None)}
CHANGE_NEIGHBOURS = 3  # stored facts considered for a change: the nearest few by vector
CHANGE_MARGIN = 0.04  # without a shared word, the match must beat the next fact by this much
def _changed_fact(candidate: FactCandidate, neighbours: Sequence[tuple[Memory, float]]) -> str | None:
    """The stored fact a candidate that says something changed is about, if one is clear."""
    with_word, without_word = CHANGE_MATCH[candidate.cue or CHANGE]
    mine = topic_words(candidate.text, candidate.subject)
    for i, (memory, cosine) in enumerate(neighbours):
        if not is_state(memory.text, FactDetails.from_wire(memory.details).fact_type, candidate.subject) \
                or (candidate.cue == SHIFT and says_addition(memory.text)):
            continue  # a shift does not end one of several values ("also learning piano" / "violin now")
        if cosine >= with_word and same_topic(mine, topic_words(memory.text, candidate.subject)):
            return memory.id
        runner_up = neighbours[i + 1][1] if i + 1 < len(neighbours) else -1.0
        if i == 0 and without_word is not None and cosine >= without_word and cosine - runner_up >= CHANGE_MARGIN:
            return memory.id
    return None


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
    nearest: Callable[[np.ndarray, int], Sequence[tuple[Memory, float]]],
) -> Plan:
    """Decide, for each candidate in order, whether it repeats, supersedes or is new.

    `existing` holds the user's active facts sharing a key or a text hash with a
    candidate; `nearest(vector, k)` finds the user's k most similar active facts by vector,
    with their cosines, best first. A near-identical vector counts as a repeat only when
    both texts name the same numbers and names.
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
        keyed = bool(candidate.key) and candidate.cue != ADDITION  # "I also live in Porto" adds a home
        if digest in fresh_by_hash:  # repeated inside this batch: merge into the first copy
            decision.repeats = f"#{fresh_by_hash[digest]}"
        elif digest in by_hash:
            decision.repeats = by_hash[digest]
        elif candidate.repeats in texts_by_id:  # the extractor saw that fact and says this repeats it
            decision.repeats = candidate.repeats
        elif candidate.supersedes in texts_by_id:  # … or replaces it
            decision.supersedes = candidate.supersedes
        elif keyed and candidate.key in fresh_by_key:
            decision.supersedes = f"#{fresh_by_key[candidate.key]}"
        elif keyed and candidate.key in by_key and texts_by_id[by_key[candidate.key]] != candidate.text:
            decision.supersedes = by_key[candidate.key]
        else:
            changes = candidate.cue in CHANGE_MATCH
            near = nearest(vector, CHANGE_NEIGHBOURS if changes else 1)
            if near and near[0][1] >= NEAR_DUPLICATE_COSINE and _specifics(near[0][0].text) == _specifics(candidate.text):
                decision.repeats = near[0][0].id
            elif changes:
                decision.supersedes = _changed_fact(candidate, near)
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
