"""One fact from one sentence (or one shared image), and one fact for a sentence said twice."""

from __future__ import annotations

from datetime import date, datetime

from engram.domain.extraction import FactCandidate, Turn
from engram.pipeline.extract.rules.changes import cue
from engram.pipeline.extract.rules.dates import resolve_dates
from engram.pipeline.extract.rules.keys import detect_key, fact_type
from engram.pipeline.extract.rules.person import rewrite_first_person
from engram.pipeline.extract.rules.sentences import prepare, prepare_question
from engram.pipeline.extract.rules.speakers import Lazy, Speaker
from engram.pipeline.extract.rules.text import cap_first, finish


def sentence_fact(raw: str, turn: Turn, speaker: Speaker, other: Lazy, names: frozenset[str]) -> FactCandidate | None:
    """The fact a sentence of ``turn`` states; None when it states none."""
    sentence = prepare(raw, names)
    if sentence is None:
        return None
    s = sentence.text
    dated = resolve_dates(s, turn.date)
    key: str | None = None
    text: str | None = None
    change = None if sentence.second_person else cue(s)  # "…, you should try it now" is no change of the speaker's
    if sentence.first_person and not sentence.second_person:
        rewritten = rewrite_first_person(dated.text, speaker)
        if speaker.label.lower() in rewritten.lower():
            text = rewritten
            key = detect_key(s)
    if text is None:
        quoted = cap_first(dated.text.strip())
        listener = other.get() if sentence.second_person else None
        if listener is not None:
            text = f"{speaker.display} said to {listener.label}: {quoted}"
        else:
            text = f"{speaker.display} said: {quoted}"
    return FactCandidate(
        text=finish(text),
        fact_type=fact_type(s, key, dated),
        source_event_ids=(turn.event_id,),
        source_role=turn.role,
        valid_at=_at(dated.valid_at, turn.date),
        key=key,
        cue=change,
        subject=speaker.label,
    )


def question_fact(raw: str, turn: Turn, speaker: Speaker, other: Lazy, names: frozenset[str]) -> FactCandidate | None:
    """"<Speaker> asked <other>: <question>?" for a question with content; None otherwise.
    A question asserts nothing: no key, no change cue, no date it holds at."""
    question = prepare_question(raw, names)
    if question is None:
        return None
    quoted = cap_first(resolve_dates(question, turn.date).text.strip())
    listener = other.get()
    asked = f"{speaker.display} asked {listener.label}" if listener is not None else f"{speaker.display} asked"
    return FactCandidate(
        text=finish(f"{asked}: {quoted}", stop="?"),
        fact_type="question",
        source_event_ids=(turn.event_id,),
        source_role=turn.role,
        subject=speaker.label,
    )


def caption_fact(caption: str, turn: Turn, speaker: Speaker) -> FactCandidate:
    return FactCandidate(
        text=finish(f"{speaker.display} shared an image of {caption}"),
        fact_type="statement",
        source_event_ids=(turn.event_id,),
        source_role=turn.role,
    )


def add_fact(facts: list[FactCandidate], seen: dict[str, int], fact: FactCandidate) -> None:
    """The same sentence said twice in one batch is one fact citing both turns."""
    k = fact.text.casefold()
    if k not in seen:
        seen[k] = len(facts)
        facts.append(fact)
        return
    old = facts[seen[k]]
    ids = tuple(dict.fromkeys(old.source_event_ids + fact.source_event_ids))
    facts[seen[k]] = FactCandidate(
        text=old.text, fact_type=old.fact_type, source_event_ids=ids, source_role=old.source_role,
        valid_at=old.valid_at, key=old.key, cue=old.cue, subject=old.subject,
    )


def _at(d: date | None, anchor: datetime) -> datetime | None:
    if d is None:
        return None
    try:
        return datetime(d.year, d.month, d.day, tzinfo=anchor.tzinfo)
    except (ValueError, OverflowError):  # pragma: no cover - defensive
        return None
