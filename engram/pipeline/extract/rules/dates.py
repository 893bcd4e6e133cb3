"""Dates in a turn's text: relative phrases ("yesterday", "last week") resolved against the
turn's date and written into the text; explicit ones (read by :mod:`engram.domain.dates`,
the grammar search reads queries by) left as written. The first date sets ``valid_at``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from engram.domain.dates import MONTHS, WEEKDAYS, explicit_dates
from engram.pipeline.extract.rules.text import cap_first
from engram.pipeline.extract.rules.vocabulary import ED_ADJECTIVES, IRREGULAR_PAST, word_set


_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "a couple of": 2, "a couple": 2, "couple of": 2, "a pair of": 2,
}
_VAGUE_NUMBERS = ("a few", "few", "several", "some", "many")
_NUM = r"(?P<num>a couple of|a couple|couple of|a pair of|a few|few|several|some|many|an|a|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|\d{1,3})"
_UNIT = r"(?P<unit>day|week|month|year)s?"
_WD = r"(?P<wd>" + "|".join(WEEKDAYS) + ")"
_PART = r"(?:\s+(?P<part>morning|afternoon|evening|night))?"
_SEASON = r"(?P<season>spring|summer|fall|autumn|winter)"

# Prepositions that already introduce a time expression ("since last week").
_TIME_PREPS = word_set("on in since until till by from before after during of at for to around through over within about")
# "Yesterday was fun": the phrase is the subject, so no "on" in front of the date.
_SUBJECT_FOLLOWS = re.compile(r"^(?:\s+(?:was|is|will|has|had|were|felt|seemed|seems|looks|looked)\b|'s\b)", re.I)

_FUTURE_CUES = re.compile(
    r"\b(?:will|shall|going to|gonna|plan|plans|planning|planned to|scheduled|upcoming|"
    r"can't wait|cannot wait|looking forward|hope to|hoping to|want to|wanna|intend|intends|"
    r"about to|until|till|moved to|postponed|rescheduled|tomorrow|next)\b|'ll\b",
    re.I,
)
_PAST_VERB = re.compile(r"\b(?:[a-z]{2,}ed|" + "|".join(sorted(IRREGULAR_PAST)) + r")\b|\bago\b|\byesterday\b", re.I)


def _tense(sentence: str) -> str | None:
    if _FUTURE_CUES.search(sentence):
        return "future"
    for m in _PAST_VERB.finditer(sentence):
        if m.group(0).lower() not in ED_ADJECTIVES:
            return "past"
    return None


def fmt_day(d: date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def _fmt_weekday(d: date) -> str:
    return f"{WEEKDAYS[d.weekday()].capitalize()}, {fmt_day(d)}"


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.year * 12 + d.month - 1 + n, 12)
    return date(y, m + 1, 1)


@dataclass(frozen=True, slots=True)
class _When:
    """A resolved time expression."""

    phrase: str  # "7 May 2023", "the week of 1 May 2023", "June 2023"
    start: date | None  # -> valid_at; None when vague
    prep: str = ""  # "on" / "in": dropped when the text already has a preposition
    append: bool = False  # keep the original words and add "(phrase)" after them
    keep_original: bool = False  # the match is kept as written with phrase already merged in


def _day(d: date, part: str | None = None, *, weekday: bool = False) -> _When:
    text = _fmt_weekday(d) if weekday else fmt_day(d)
    if part:
        return _When(f"the {part.lower()} of {text}", d, "on")
    return _When(text, d, "on")


def _week(d: date) -> _When:
    m = _monday(d)
    return _When(f"the week of {fmt_day(m)}", m, "in")


def _month(d: date) -> _When:
    return _When(f"{MONTHS[d.month - 1]} {d.year}", date(d.year, d.month, 1), "in")


def _year(y: int) -> _When:
    return _When(str(y), date(y, 1, 1), "in")


def _count(m: re.Match[str]) -> int | None:
    raw = m.group("num").lower()
    if raw in _VAGUE_NUMBERS:
        return None
    if raw.isdigit():
        return int(raw)
    return _NUMBER_WORDS.get(raw)


def _shift(anchor: date, unit: str, n: int) -> _When:
    unit = unit.lower()
    if unit == "day":
        return _day(anchor + timedelta(days=n))
    if unit == "week":
        return _week(anchor + timedelta(weeks=n))
    if unit == "month":
        return _month(_add_months(anchor, n))
    return _year(anchor.year + n)


def _h_ago(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    n = _count(m)
    unit = m.group("unit").lower()
    if n is None:  # "a few weeks ago": anchor it, but no precise valid_at
        return _When(f"{m.group('num').lower()} {unit}s before {fmt_day(anchor)}", None, append=True)
    w = _shift(anchor, unit, -n)
    return _When(w.phrase, w.start, append=True)


def _h_in(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    n = _count(m)
    if n is None or (tense == "past" and not m.group(0).lower().endswith("now")):
        return None  # "I read it in a day" is a duration, not a date
    w = _shift(anchor, m.group("unit"), n)
    return _When(w.phrase, w.start, append=True)


def _h_relative_unit(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    step = {"last": -1, "this": 0, "next": 1, "the coming": 1, "this coming": 1}[_squash(m.group("mod"))]
    unit = m.group("unit").lower()
    return _shift(anchor, unit, step)


def _squash(s: str) -> str:
    return " ".join(s.lower().split())


def _weekday_before(anchor: date, wd: int) -> date:
    return anchor - timedelta(days=(anchor.weekday() - wd) % 7 or 7)


def _weekday_after(anchor: date, wd: int) -> date:
    return anchor + timedelta(days=(wd - anchor.weekday()) % 7 or 7)


def _h_weekday_mod(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    wd = WEEKDAYS.index(m.group("wd").lower())
    mod = _squash(m.group("mod"))
    if mod in ("last", "past", "this past"):
        d = _weekday_before(anchor, wd)
    elif mod in ("next", "coming", "this coming"):
        d = _weekday_after(anchor, wd)
    else:  # "this Saturday": the one on or after today, unless the sentence is past tense
        d = _weekday_before(anchor, wd) if tense == "past" and wd != anchor.weekday() else anchor + timedelta(days=(wd - anchor.weekday()) % 7)
    return _day(d, m.group("part"), weekday=True)


def _h_weekday_bare(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    # "on Sunday": a past-tense sentence means the last one, anything else the next one
    wd = WEEKDAYS.index(m.group("wd").lower())
    d = _weekday_before(anchor, wd) if tense == "past" else _weekday_after(anchor, wd)
    return _day(d, m.group("part"), weekday=True)


def _h_weekday_deadline(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    # "The meeting moved to Friday", "until Monday": the next one
    d = _weekday_after(anchor, WEEKDAYS.index(m.group("wd").lower()))
    return _When(f"{m.group('prep')} {_fmt_weekday(d)}", d, keep_original=True)


def _saturday_of_weekend(anchor: date) -> date:
    # the current weekend's Saturday (on a Sunday: yesterday; on a weekday: the coming one)
    return anchor + timedelta(days=5 - anchor.weekday())


def _h_weekend_mod(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    mod = _squash(m.group("mod"))
    sat = _saturday_of_weekend(anchor)
    on_weekend = anchor.weekday() >= 5
    if mod == "last" or (mod in ("the past", "this past") and not on_weekend):
        sat -= timedelta(days=7)  # "this past weekend" said on a Sunday is the current one
    elif mod == "next" or (mod in ("the coming", "this coming") and on_weekend):
        sat += timedelta(days=7)  # "next weekend": the one after this one
    return _When(f"the weekend of {fmt_day(sat)}", sat, "on")


def _h_weekend_bare(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    if tense is None:
        return None
    sat = _saturday_of_weekend(anchor)
    if tense == "past" and sat > anchor:
        sat -= timedelta(days=7)
    return _When(f"(the weekend of {fmt_day(sat)})", sat, append=True)


_SEASON_START = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}


def _season_phrase(season: str, start: date) -> str:
    if season == "winter":
        return f"the winter of {start.year}-{start.year + 1}"
    return f"the {season} of {start.year}"


def _h_season(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    season = m.group("season").lower()
    mod = _squash(m.group("mod"))
    month = _SEASON_START[season]
    # start of the season the anchor is in
    cur_month = {12: 12, 1: 12, 2: 12}.get(anchor.month, (anchor.month - 3) // 3 * 3 + 3)
    cur_start = date(anchor.year - (1 if anchor.month < 3 else 0), cur_month, 1)
    candidates = [date(y, month, 1) for y in range(anchor.year - 2, anchor.year + 3)]
    if mod in ("last", "this past"):
        start = max(c for c in candidates if c < cur_start)
    elif mod == "next":
        start = min(c for c in candidates if c > cur_start)
    else:  # "this summer": the one in this calendar year (winter: the one we are in / next)
        start = cur_start if month == cur_month else date(anchor.year, month, 1)
    return _When(_season_phrase(season, start), start, "in")


def _h_month(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    month = MONTHS.index(m.group("month")) + 1
    mod = _squash(m.group("mod"))
    y = anchor.year
    if mod == "last":
        y = y if month < anchor.month else y - 1
    elif mod == "next":
        y = y if month > anchor.month else y + 1
    elif mod == "this":
        pass
    elif mod in ("until", "till", "by") or tense == "future":
        y = y if month >= anchor.month else y + 1
    elif tense == "past" or mod == "since":
        y = y if month <= anchor.month else y - 1
    text = f"{MONTHS[month - 1]} {y}"
    if mod in ("last", "this", "next"):
        return _When(text, date(y, month, 1), "in")
    # keep the user's own preposition or qualifier: "since June" -> "since June 2022"
    return _When(f"{m.group('mod')}{m.group('sep')}{text}", date(y, month, 1), keep_original=True)


def _fixed(days: int, part: str | None = None) -> Callable[[re.Match[str], date, str | None], _When | None]:
    def handler(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
        p = part
        if p is None and "part" in m.re.groupindex:
            p = m.group("part")
        return _day(anchor + timedelta(days=days), p)

    return handler


def _vague(phrase: str) -> Callable[[re.Match[str], date, str | None], _When | None]:
    def handler(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
        return _When(phrase.format(day=fmt_day(anchor)), None, append=True)

    return handler


_MONTH_ALT = "|".join(MONTHS)
_DATE_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str], date, str | None], _When | None]]] = [
    (re.compile(r"\bthe day before yesterday\b", re.I), _fixed(-2)),
    (re.compile(r"\bthe day after tomorrow\b", re.I), _fixed(2)),
    (re.compile(r"\byesterday" + _PART + r"\b", re.I), _fixed(-1)),
    (re.compile(r"\blast night\b", re.I), _fixed(-1, "night")),
    (re.compile(r"\btonight\b", re.I), _fixed(0, "night")),
    (re.compile(r"\bthis (?P<part>morning|afternoon|evening)\b", re.I), _fixed(0)),
    (re.compile(r"\btoday\b", re.I), _fixed(0)),
    (re.compile(r"\btomorrow" + _PART + r"\b", re.I), _fixed(1)),
    (re.compile(r"\b(?:on\s+)?(?P<mod>this\s+coming|this\s+past|coming|past|last|this|next)\s+" + _WD + _PART + r"\b", re.I), _h_weekday_mod),
    (re.compile(r"\bon\s+" + _WD + _PART + r"\b", re.I), _h_weekday_bare),
    (re.compile(r"\b(?P<prep>to|until|till|by)\s+" + _WD + r"\b(?!['’]s)", re.I), _h_weekday_deadline),
    (re.compile(r"\b(?P<mod>last|this|next|the\s+past|this\s+past|the\s+coming|this\s+coming)\s+weekend\b", re.I), _h_weekend_mod),
    (re.compile(r"\b(?:over|on|during|at)\s+the\s+weekend\b", re.I), _h_weekend_bare),
    (re.compile(r"\b(?P<mod>last|this|next|the\s+coming)\s+(?P<unit>week|month|year)\b", re.I), _h_relative_unit),
    (re.compile(r"\b" + _NUM + r"\s+" + _UNIT + r"\s+ago\b", re.I), _h_ago),
    (re.compile(r"\bin\s+" + _NUM + r"\s+" + _UNIT + r"\b(?!\s+ago)", re.I), _h_in),
    (re.compile(r"\b" + _NUM + r"\s+" + _UNIT + r"\s+from\s+now\b", re.I), _h_in),
    (re.compile(r"\b(?P<mod>last|this\s+past|this|next)\s+" + _SEASON + r"\b", re.I), _h_season),
    (
        re.compile(
            r"\b(?P<mod>(?i:last|this|next|in|since|during|until|till|by|early|late|mid|around|before|after|from|through))"
            r"(?P<sep>\s+|-)(?P<month>" + _MONTH_ALT + r")\b(?!\s*,?\s*\d)(?!-)"
        ),
        _h_month,
    ),
    (re.compile(r"\bthe other day\b", re.I), _vague("a few days before {day}")),
    (re.compile(r"\ba (?:little )?while (?:ago|back)\b", re.I), _vague("some time before {day}")),
]

@dataclass(frozen=True, slots=True)
class Dated:
    text: str
    valid_at: date | None
    future: bool | None  # the first resolved date is after the anchor day


def _render(when: _When, m: re.Match[str], text: str) -> str:
    original = m.group(0)
    if when.append:
        phrase = when.phrase if when.phrase.startswith("(") else f"({when.phrase})"
        return f"{original} {phrase}"
    if when.keep_original:
        return when.phrase
    prev = re.search(r"([A-Za-z]+)\W*$", text[: m.start()])
    has_prep = bool(prev and prev.group(1).lower() in _TIME_PREPS)
    starts_with_on = original.lower().startswith("on ")
    subject = bool(_SUBJECT_FOLLOWS.match(text[m.end():]))
    prep = "" if (has_prep or subject) else ("on" if starts_with_on else when.prep)
    out = f"{prep} {when.phrase}".strip()
    return cap_first(out) if original[:1].isupper() else out


def resolve_dates(text: str, anchor: datetime) -> Dated:
    """Rewrite relative time expressions in ``text`` as absolute dates anchored at ``anchor``."""
    try:
        day = anchor.date()
    except (AttributeError, ValueError):  # pragma: no cover - defensive
        return Dated(text, None, None)
    tense = _tense(text)
    explicit = explicit_dates(text)
    found: list[tuple[int, int, re.Match[str], Callable[..., _When | None]]] = []
    for rx, handler in _DATE_RULES:
        for m in rx.finditer(text):
            if any(d.span[0] < m.end() and m.start() < d.span[1] for d in explicit):
                continue  # part of an explicit date ("Friday, 13 October 2023", "May of 2023")
            found.append((m.start(), -(m.end() - m.start()), m, handler))
    found.sort(key=lambda f: (f[0], f[1]))
    parts: list[str] = []
    pos = 0
    first: _When | None = None
    for start, _neg_len, m, handler in found:
        if start < pos:
            continue  # overlaps a longer expression already resolved
        try:
            when = handler(m, day, tense)
        except (ValueError, OverflowError):  # dates outside the calendar: leave as written
            when = None
        if when is None:
            continue
        parts.append(text[pos:start])
        parts.append(_render(when, m, text))
        pos = m.end()
        if first is None and when.start is not None:
            first = when
    parts.append(text[pos:])
    if first is None:
        return Dated("".join(parts), explicit[0].start if explicit else None, None)
    return Dated("".join(parts), first.start, first.start > day if first.start else None)

