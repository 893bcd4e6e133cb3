"""Which of a job's new memories join the groups its ingest named (the v1.0 contract's
`group_ids`), judged without a model (docs/design.md, "Groups").

Two questions, asked of every memory the job creates:

1. **Is it personal?** A personal memory is never group-tagged, whatever the groups. It is
   personal when its text — or, for a fact, the turn it came from — says so ("private",
   "just for me", "between us", "don't tell") or touches a part of a life people do not share
   by default: health of body or mind, money of one's own, intimate relationships, beliefs,
   legal trouble. The words are kinds of things, never one conversation's sentences.
2. **Does it belong to the group?** A catch-all group (no prompt) takes every memory that is
   not personal. A prompted group takes a memory whose embedding is near the prompt's
   (cosine ≥ `PROMPT_MATCH`), or that names one of the prompt's names (a proper noun or a
   number: "Tokyo", "2026"), which the embedding alone weighs too little. Without a model this
   errs towards not sharing; a prompt is read far better by the llm extractor's model, which
   engram does not ask yet (docs/design.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engram.domain.records import Group
from engram.domain.stopwords import ENGLISH_STOPWORDS as STOPWORDS

# Cosine between a memory and a group's prompt from which the memory is the group's. With the
# default embedder a fact squarely on the prompt's subject measured 0.44–0.56, one loosely on it
# 0.15–0.33, an unrelated one up to 0.32 (docs/design.md, "Groups"): sharing by mistake costs
# more than not sharing, so the line is above the unrelated ones.
PROMPT_MATCH = 0.35

# A turn's own words that keep what it says out of every group.
_PRIVATE_MARKERS = re.compile(
    r"\b(?:private(?:ly)?|confidential(?:ly)?|just (?:for|between) (?:me|us|you and me)|between (?:us|you and me)|"
    r"(?:don'?t|do not|never) (?:tell|share|mention)|keep (?:it|this|that) (?:to yourself|quiet|secret|private)|"
    r"off the record|in confidence|personal(?:ly)? (?:matter|note|issue)|secret(?:ly)?)\b", re.I)

# Kinds of things people do not share by default. Stems end where the word may go on.
_SENSITIVE = re.compile(
    r"\b(?:"
    # health of body and mind
    r"therap(?:y|ist|ies|ists)|psychiatr\w*|psycholog\w*|counsel(?:l)?(?:or|ing)|anxiety|anxious|depress\w*|"
    r"panic attacks?|bipolar|adhd|autis\w*|ptsd|trauma\w*|mental health|diagnos\w*|medicat\w*|prescri\w*|"
    r"antidepressants?|symptoms?|illness\w*|disease\w*|disorder\w*|cancer|tumou?r|chemo\w*|diabet\w*|hiv|std|"
    r"surgery|surgeries|hospital\w*|clinic\w*|doctor'?s? (?:appointment|visit)|pregnan\w*|miscarr\w*|"
    r"fertility|ivf|abortion|rehab|addict\w*|sobriety|sober|relapse\w*|suicid\w*|self[- ]harm|eating disorder|"
    # one's own money
    r"salary|salaries|my (?:pay|wage|income|bonus|debt|loan|mortgage|savings|credit score|bank)|debts?|"
    r"bankrupt\w*|overdraft|credit card debt|net worth|tax return|"
    # intimate life and family trouble
    r"divorc\w*|affair|break[- ]?up|broke up|dating|boyfriend|girlfriend|sex\w*|intimate|custody|"
    # beliefs and identity
    r"religio\w*|pray(?:er|ing)?|church|mosque|synagogue|politic(?:s|al views)|sexual orientation|"
    r"coming out|came out|gay|lesbian|bisexual|transgender|"
    # legal trouble
    r"arrest\w*|lawsuit|sued|court case|criminal record|probation|convict\w*"
    r")\b", re.I)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")


def is_personal(*texts: str) -> bool:
    """Whether any of the texts (a memory's, the turns it came from) marks it as personal."""
    return any(_PRIVATE_MARKERS.search(t) or _SENSITIVE.search(t) for t in texts if t)


def _words(text: str) -> set[str]:
    return {w.strip("'-") for w in _WORD.findall(text)}


def _anchors(prompt: str) -> set[str]:
    """A prompt's name-like words, as written: capitalised words not at a sentence start, and
    numbers of three or more digits. They match the same word, same case, in a memory."""
    anchors: set[str] = set()
    for sentence in re.split(r"[.!?:;]\s+", prompt):
        for i, word in enumerate(_WORD.findall(sentence)):
            bare = word.strip("'-")
            if bare.lower() in STOPWORDS or len(bare) < 2:
                continue
            if (bare.isdigit() and len(bare) >= 3) or (i > 0 and bare[0].isupper()):
                anchors.add(bare)
    return anchors


@dataclass(frozen=True, slots=True)
class Judge:
    """The groups of one ingest, ready to judge its memories."""

    groups: Sequence[Group]
    prompt_vectors: np.ndarray  # one L2-normalised row per prompted group, in `groups` order
    anchors: Sequence[set[str]]  # each group's prompt's names (empty for a catch-all)

    @classmethod
    def of(cls, groups: Sequence[Group], prompt_vectors: np.ndarray) -> "Judge":
        return cls(groups, prompt_vectors, [_anchors(g.prompt) if g.prompt else set() for g in groups])

    def groups_of(self, text: str, vector: np.ndarray, evidence: Sequence[str] = ()) -> list[str]:
        if is_personal(text, *evidence):
            return []
        words = _words(text)
        joined: list[str] = []
        row = 0
        for group, anchors in zip(self.groups, self.anchors):
            if group.prompt is None:
                joined.append(group.id)
                continue
            near = float(self.prompt_vectors[row] @ vector) >= PROMPT_MATCH
            row += 1
            if near or words & anchors:
                joined.append(group.id)
        return joined


def prompted(groups: Sequence[Group]) -> list[str]:
    """The prompts to embed for a `Judge`, in its order."""
    return [g.prompt for g in groups if g.prompt is not None]


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def source_sentences(text: str, turns: Sequence[str]) -> list[str]:
    """The sentences of a memory's turns it came from: those sharing the most content words
    with its text. A turn may say something shareable and, in its next sentence, something
    private; each memory answers for its own sentence only."""
    mine = {w.lower() for w in _words(text)} - STOPWORDS
    best, chosen = 0, []
    for turn in turns:
        for sentence in _SENTENCE_END.split(turn):
            overlap = len(mine & ({w.lower() for w in _words(sentence)} - STOPWORDS))
            if overlap > best:
                best, chosen = overlap, [sentence]
            elif overlap == best and overlap:
                chosen.append(sentence)
    return chosen
