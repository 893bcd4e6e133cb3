"""Which sentences are worth a fact: questions, small talk and boilerplate are not."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engram.pipeline.extract.rules.person import HAS_FIRST_PERSON, HAS_SECOND_PERSON
from engram.pipeline.extract.rules.text import content_words, proper_nouns
from engram.pipeline.extract.rules.vocabulary import (
    BOILERPLATE,
    IRREGULAR_PAST,
    LEADING_MARKERS,
    QUESTION_OPENERS,
    SUBJECT_DROP,
)


QUESTION_CONTENT_WORDS = 2  # a question with fewer content words (time words aside) names no topic
# "What did you do last weekend?" asks about a time, not a topic
_TIME_WORDS = frozenset(
    "today tonight yesterday tomorrow weekend weekends week weeks month months year years last next "
    "lately recently earlier later ago".split()
)
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_DID_YOU_KNOW = re.compile(r"^(?i:did you know|you know what|guess what|fun fact)(?:\s+that)?\s*[,:?!]?\s+(?=\S)")
_CLAUSE_SPLIT = re.compile(r"(?<=[,;:])\s+|\s+[-–—]\s+")
_INTERROGATIVE_START = re.compile(r"^(?i:how|what|why|where|when|who|which|whose|do|did|does|are|is|was|were|have|has|can|could|would|will|should)\b")


def _strip_markers(s: str) -> str:
    for _ in range(4):
        before = s
        for rx in LEADING_MARKERS:
            s = rx.sub("", s, count=1)
        if s == before:
            break
    return s.strip()


def _is_question(s: str) -> bool:
    if s.rstrip(" \"')").endswith("?"):
        return True
    # chat often drops the "?": "how are you doing", "did you like it"
    return bool(
        _INTERROGATIVE_START.match(s)
        and HAS_SECOND_PERSON.search(s)
        and not re.search(r"\bI\b", s)
        and len(s.split()) <= 12
    )


def _statement_before_question(s: str) -> str | None:
    """"I went to Paris last week, have you been?" -> "I went to Paris last week"."""
    clauses = _CLAUSE_SPLIT.split(s.rstrip(" ?!\"')"))
    kept: list[str] = []
    for clause in clauses:
        tokens = [t.lower().strip(",.;:!\"'") for t in clause.split()]
        if tokens and tokens[0] in ("but", "and", "so", "or", "then") and len(tokens) > 1:
            tokens = tokens[1:]  # "..., but why Starbucks?"
        first = tokens[0] if tokens else ""
        if first in QUESTION_OPENERS or first in ("you", "your", "have", "any"):
            break
        kept.append(clause)
    if not kept or len(kept) == len(clauses):
        return None
    statement = " ".join(kept).rstrip(" ,;:-–—")
    return statement if len(statement.split()) >= 3 else None


def _fix_dropped_subject(s: str) -> str:
    """"Went hiking with the kids" -> "I went hiking with the kids"."""
    m = re.match(r"([A-Za-z']+)(\s+\S+)?", s)
    if not m:
        return s
    first = m.group(1).lower()
    prefix = SUBJECT_DROP.get(first)
    if prefix is None:
        return s
    if first.endswith("ing") and re.search(r"\b(?:is|are|was|were)\b", s, re.I):
        return s  # a gerund subject: "Taking care of ourselves is vital"
    if first == "never" and (m.group(2) or "").strip().lower() == "been":
        return f"I've {s[0].lower()}{s[1:]}"
    if first == "just":
        nxt = (m.group(2) or "").strip().lower()
        if not (nxt.endswith("ed") or nxt in IRREGULAR_PAST):
            return s
    return f"{prefix} {s[0].lower()}{s[1:]}"


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str  # cleaned, first person kept, relative dates not yet resolved
    first_person: bool
    second_person: bool


def _cleaned(raw: str) -> str:
    """A sentence without its list marker and leading discourse markers."""
    return _strip_markers(_LIST_MARKER.sub("", raw).strip())


def _is_boilerplate(s: str) -> bool:
    """Small talk ("thanks so much!", "how are you?"), with or without its punctuation."""
    bare = re.sub(r"[^\w\s']", " ", s.lower()).strip()
    return bool(BOILERPLATE.match(bare) or BOILERPLATE.match(s.lower().strip(" .!?")))


def prepare_question(raw: str, names: frozenset[str]) -> str | None:
    """A question worth remembering that it was asked, cleaned; None for any other sentence
    and for questions without content ("How are you?", "What about you?"). The turn after
    it often answers it in words that miss the topic ("My friend got me into it"): the
    question names the topic, and search's turn context lifts the answer by it."""
    s = _cleaned(raw)
    if not s or not s.rstrip(" \"')").endswith("?"):
        return None
    statement = _statement_before_question(s)
    if statement is not None:  # "I went to Paris, have you been?": the statement is a fact already
        if not s.startswith(statement):
            return None
        s = s[len(statement):].lstrip(" ,;:-–—")
    if _is_boilerplate(s):
        return None
    topical = [w for w in content_words(s, names) if w not in _TIME_WORDS]
    if len(topical) + proper_nouns(s, names) < QUESTION_CONTENT_WORDS:
        return None
    return s


def prepare(raw: str, names: frozenset[str]) -> Sentence | None:
    """Clean one sentence; None when it is a question, small talk or empty."""
    s = _DID_YOU_KNOW.sub("", _cleaned(raw))
    if not s or not re.search(r"[^\W_]", s):
        return None
    if _is_question(s):
        salvaged = _statement_before_question(s)
        if salvaged is None:
            return None
        s = _strip_markers(salvaged)
    s = _fix_dropped_subject(s)
    if _is_boilerplate(s):
        return None
    first = bool(HAS_FIRST_PERSON.search(s))
    second = bool(HAS_SECOND_PERSON.search(s))
    # "I'm vegan" and "You'd be a great counselor" are facts; "That's so cool" is not
    needed = 1 if (first or second) else 2
    if len(content_words(s, names)) + proper_nouns(s, names) < needed:
        return None
    return Sentence(s, first, second)
