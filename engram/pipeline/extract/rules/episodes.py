"""Episodes: a title from the dominant topic words and the date range, and an extractive
summary of the most informative sentences of a stretch of turns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from engram.domain.dates import MONTHS
from engram.domain.extraction import EpisodeCandidate, Turn
from engram.pipeline.extract.rules.dates import fmt_day, resolve_dates
from engram.pipeline.extract.rules.sentences import prepare
from engram.pipeline.extract.rules.speakers import Speaker, name_tokens
from engram.pipeline.extract.rules.text import WORD_RE, cap_first, content_words, finish, truncate
from engram.pipeline.extract.rules.turns import parse_turn, prose_sentences
from engram.pipeline.extract.rules.vocabulary import SILENT_ROLES, word_set


_TOPIC_EXCLUDE = word_set(
    """
    went go goes going gone get got make made take took come came give gave think thought
    know knew want wanted love loved like liked said say says see saw look looking need
    needed try tried feel felt find found tell told let put keep kept start started use
    used work worked call called help helped seem seemed leave left mean meant show
    showed able sure lot time times day days week weeks today yesterday tomorrow year
    years month months people person someone everyone guys guy yes yeah right thanks
    thank good great nice new old big little last next first other others many much
    taking making doing going getting having looking trying thinking feeling being saying
    coming giving telling seeing talking important amazing awesome really
    """
)


def _fmt_range(a: datetime, b: datetime) -> str:
    da, db = a.date(), b.date()
    if da == db:
        return fmt_day(da)
    if (da.year, da.month) == (db.year, db.month):
        return f"{da.day}–{db.day} {MONTHS[da.month - 1]} {da.year}"
    if da.year == db.year:
        return f"{da.day} {MONTHS[da.month - 1]} – {db.day} {MONTHS[db.month - 1]} {db.year}"
    return f"{fmt_day(da)} – {fmt_day(db)}"


def _utc_key(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class _Unit:
    order: int
    text: str  # "Caroline: I went to a support group on 7 May 2023."
    content: frozenset[str]
    dated: bool
    weight: float = 1.0


def episode(turns: Sequence[Turn], *, summary_chars: int, summary_sentences: int) -> EpisodeCandidate | None:
    """An extractive summary of a stretch of turns; None when nothing was said."""
    if not turns:
        return None
    names = name_tokens(turns)
    units: list[_Unit] = []
    surface: dict[str, str] = {}
    for turn in turns:
        if (turn.role or "").lower() in SILENT_ROLES:
            continue
        speaker = Speaker.of(turn)
        parsed = parse_turn(turn.content)
        texts = [s.text for raw in prose_sentences(parsed.prose) if (s := prepare(raw, names))]
        for t in texts:
            dated = resolve_dates(t, turn.date)
            content = frozenset(w for w in content_words(t, names) if len(w) > 2 and not w.isdigit())
            units.append(_Unit(len(units), finish(f"{speaker.short}: {dated.text}"), content, dated.valid_at is not None))
            _note_surface(t, surface)
        for c in parsed.captions:  # images count, but less than what people said
            content = frozenset(w for w in content_words(c, names) if len(w) > 2 and not w.isdigit())
            units.append(_Unit(len(units), finish(f"{speaker.short} shared an image of {c}"), content, False, 0.5))
    if not units:
        return None

    freq = Counter(w for u in units for w in u.content)
    start = min((t.date for t in turns), key=_utc_key)
    end = max((t.date for t in turns), key=_utc_key)
    return EpisodeCandidate(
        title=_title(units, freq, surface, start, end),
        summary=_summary(units, freq, summary_chars, summary_sentences),
        started_at=start,
        ended_at=end,
        source_event_ids=tuple(dict.fromkeys(t.event_id for t in turns)),
    )


def _note_surface(sentence: str, surface: dict[str, str]) -> None:
    # Remember how a word is written mid-sentence, so proper nouns keep their capital.
    for i, w in enumerate(WORD_RE.findall(sentence)):
        low = w.lower()
        if i > 0 and w[:1].isupper() and low not in surface:
            surface[low] = w


def _title(units: list[_Unit], freq: Counter[str], surface: dict[str, str], start: datetime, end: datetime) -> str:
    first_seen: dict[str, int] = {}
    for u in units:
        for w in sorted(u.content):
            first_seen.setdefault(w, u.order)
    candidates = [
        w for w in freq
        if w not in _TOPIC_EXCLUDE and not w.endswith(("ly", "ed")) and w.isalpha()
    ]
    candidates.sort(key=lambda w: (-freq[w], first_seen.get(w, 0), w))
    topics = [surface.get(w, w) for w in candidates[:3]]
    span = _fmt_range(start, end)
    if not topics:
        return f"Conversation ({span})"
    return f"{cap_first(', '.join(topics))} ({span})"


def _summary(units: list[_Unit], freq: Counter[str], summary_chars: int, summary_sentences: int) -> str:
    def score(u: _Unit) -> float:
        return u.weight * sum(1 + 0.5 * min(freq[w] - 1, 4) for w in u.content) + (1.5 if u.dated else 0.0)

    ranked = sorted(units, key=lambda u: (-score(u), u.order))
    chosen: list[_Unit] = []
    used = 0
    for u in ranked:
        if len(chosen) >= summary_sentences:
            break
        extra = len(u.text) + (1 if chosen else 0)
        if used + extra <= summary_chars:
            chosen.append(u)
            used += extra
    if not chosen:  # even the best sentence is too long: cut it
        return truncate(ranked[0].text, summary_chars)
    return " ".join(u.text for u in sorted(chosen, key=lambda u: u.order))
