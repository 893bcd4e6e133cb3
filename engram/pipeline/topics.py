"""What a fact is about, for telling which of a person's facts conflict: its topic words
and whether it is a state (something that can stop being true). Reconciliation asks it
when a fact says something changed (which stored fact is it about?); search asks it when
two active facts of one person compete (rank the newer first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engram.pipeline.extract.rules.changes import says_addition
from engram.pipeline.extract.rules.text import singular
from engram.pipeline.extract.rules.vocabulary import PAST_TENSE, STOPWORDS

_TOPIC_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+|\d+")
_SAID = re.compile(r"^[^:]{1,80}?\bsaid(?:\s+to\s+[^:]{1,60})?:\s*")
_OPENING = re.compile(r"^((?:The|the)\s+[a-z]+|[A-Z][\w-]*)(?='s\b|\s)")
_NOT_TOPICS = STOPWORDS | frozenset(
    "user users assistant others speaker now new these days nowadays currently instead anymore longer "
    "old previous since ago last next week month year today".split())


def topic_words(text: str, subject: str | None) -> set[str]:
    """The words that say what a fact is about: not the name of whom it is about (which
    the extractor writes into every fact of theirs), not function words."""
    skip = _NOT_TOPICS | set((subject or "").lower().split())
    out = set()
    for t in _TOPIC_WORD.findall(_SAID.sub("", text)):
        w = t.lower().removesuffix("'s").strip("'-")
        if len(w) >= 3 and w not in skip:
            out.add(w)
    return out


def same_topic(a: set[str], b: set[str]) -> bool:
    """Some word of one is a form of a word of the other ("runs" / "run", "teaches" /
    "teaching", "supports" / "supporter", "phone" / "iPhone")."""
    for x in map(singular, a):
        for y in map(singular, b):
            short, long_ = (x, y) if len(x) <= len(y) else (y, x)
            if short == long_ or (len(short) >= 4 and long_.startswith(short[:max(4, len(short) - 2)])) \
                    or (len(short) >= 5 and short in long_):
                return True
    return False


_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")


_EVERLASTING = frozenset({"event", "opinion", "plan", "question"})
_PAST = re.compile(r"(?:\s+and others)?(?:\s+(?:just|finally|recently|already|once))?\s+" + PAST_TENSE)
# "Evan's old car broke down", not "the user's cat is called Pepper" or "the user's preferred airline"
_OWNED_PAST = re.compile(r"(?:\s+(?!(?:is|are|was|were|has|have|had)\b)[\w-]+){1,3}?\s+" + PAST_TENSE)


def subject_of(text: str) -> str:
    """Whom a fact the rules extractor wrote is about: the name it opens with ("The user",
    "Caroline"), as written."""
    m = _OPENING.match(text)
    return m.group(1) if m else ""


def is_state(text: str, fact_type: str | None, subject: str | None) -> bool:
    """A fact about `subject` that can stop being true: it opens with their name ("The
    user's cat…", "Caroline lives…"), is told in the present, and is no event (dated or told
    as one), opinion or plan, which stay true of their time whatever comes later."""
    if subject:
        opening = re.match(re.escape(subject) + r"(?:'s|\b)", text, re.I)
        told_in_past = _OWNED_PAST if opening is not None and opening.group(0).endswith("'s") else _PAST
        if opening is None or told_in_past.match(text, opening.end()):
            return False
    return fact_type not in _EVERLASTING and not _YEAR.search(text)


@dataclass(frozen=True, slots=True)
class Aspect:
    """What a state fact is about: whom, and its topic words (stemmed)."""

    subject: str
    words: frozenset[str]

    def conflicts_with(self, other: "Aspect") -> bool:
        """Two states of one person on one topic: at most one of them is current. (Two of
        one fact type without a shared word are not rivals: ranking the later of those
        first cost LoCoMo dev 0.5 recall@10 for 2.5 points of currency.)"""
        return self.subject == other.subject and same_topic(self.words, other.words)


def state_aspect(text: str, fact_type: str | None) -> Aspect | None:
    """The aspect of a state fact; None for events, opinions, plans, facts said as additions
    ("… also …": one of several values, no rival of the others) and facts of no one."""
    subject = subject_of(text)
    if not subject or not is_state(text, fact_type, subject) or says_addition(text):
        return None
    return Aspect(subject.lower(), frozenset(topic_words(text, subject)))
