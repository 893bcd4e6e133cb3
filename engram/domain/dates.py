"""The explicit calendar dates a text names: one grammar for all of engram.

Two readers share it. The rules extractor (`pipeline/extract/rules/dates.py`) sets a fact's
`valid_at` from the first date its sentence names: a relative one ("yesterday", "last
week") resolved against the turn's date when there is one, else the first explicit date
read here. Search (`search/query.py`, `date_ranges`) lifts memories whose `valid_at` falls
inside a date the query names explicitly. Relative phrases are the extractor's alone: a
query's only anchor is the clock, and the clock is rarely what a question about the past
means. The calendar words both need (month and weekday names) are here too.

What is read, each as a half-open range of days [start, end):

- an ISO day, `2023-10-13` (a time may follow: `2023-10-13T10:30Z`);
- a day, month and year in either order: `13 October 2023`, `13th of Oct., 2023`,
  `October 13th, 2023`, `December 1,2023`, optionally after the weekday it fell on (`Friday, 13 October 2023`);
- a month and year: `May 2023`, `Sept. 2022`, `May of 2023`;
- a year alone (1900–2099) only where a word makes it a time: after `in`, `during`,
  `since`, `from`, `by`, `until`, `till` (`in the year 2000` too); after a part of a year
  (`early`, `mid-`, `late`, a season, `the start` / `end` / `beginning` / `middle of`);
  or joined to such a year by `and`, `or`, `to` (`from 2015 to 2019`, `in 2019 or 2020`).

Decisions, where the extractor and search each had a grammar of their own and disagreed:

1. *Case.* Month names are read in any case (`may 2023`, `SEPTEMBER 2022`); chat is often
   lower case. (The extractor read only capitalised names.) A month word counts only as part
   of a date with a year, so the verb "may" is never a month here.
2. *Abbreviations.* Every month's three-letter form, and `Sept`, with or without a full
   stop. (The extractor did not know `Sept`.)
3. *Month and year.* `in May 2023` is May 2023. (The extractor read no month without a day:
   the fact got no `valid_at` from it.)
4. *A year alone* needs a word that makes it a time (above); a bare four-digit number is as
   often a count ("2000 followers"), a model ("a 1968 Kustom") or a title ("Cyberpunk 2077").
   (Search read every bare 19xx/20xx as a year; the extractor only after in / since /
   during / from / by.) Not a year either when a digit follows a `-`, `/` or `:`
   (`2019-20`, `2019/20`): spans and numeric forms are left unread.
5. *An impossible day names its month*: `31 February 2023` is February 2023, in every
   order, ISO included. (Search fell back to the month for day-month-year only; the
   extractor dropped the date.)
6. *Which dates, in what order.* Every date in the text, in text order; where a more
   specific reading covers some of the same words (the day in `13 May 2023`), that one
   alone. (The extractor took one date, the first match of the most specific pattern
   wherever it stood, so an ISO day late in a sentence beat a year early in it; it now takes
   the first date in the text, as it does with relative dates.)
7. *A weekday before a date belongs to it* (`Friday, 13 October 2023`), so the extractor
   does not also read "Friday" as the next or last Friday.

Numeric dates (`10/12/2023`: which is the day?) and year spans (`2019-2020`) are not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The short forms a month is written in ("Jan", "Sept"); "may" is its full name.
MONTH_ABBREVIATIONS = frozenset({m[:3].lower() for m in MONTHS if m != "May"} | {"sept"})


def month_number(name: str) -> int | None:
    """1–12 for a month's name or short form, in any case ("Sept" → 9); else None."""
    low = name.lower().rstrip(".")
    for n, month in enumerate(MONTHS, 1):
        if low == month.lower() or (low in MONTH_ABBREVIATIONS and month.lower().startswith(low)):
            return n
    return None


@dataclass(frozen=True, slots=True)
class ExplicitDate:
    """A date the text names: the days [start, end) and where it stands in the text."""

    start: date
    end: date
    span: tuple[int, int]


_MONTH_WORDS = sorted({m.lower() for m in MONTHS} | MONTH_ABBREVIATIONS, key=lambda w: (-len(w), w))  # longest first
_MONTH = r"(?P<month>" + "|".join(_MONTH_WORDS) + r")\b\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)\b"
_LONE = r"(?P<year>(?:19|20)\d\d)\b(?![-/:]\d)"
_COMMA = r"(?:,\s*|\s+)"  # "13 October, 2023", "December 1,2023"
_WEEKDAY = r"(?:(?:" + "|".join(WEEKDAYS) + r")\s*,?\s+(?:the\s+)?)?"
_YEAR_CUE = (r"(?:in|during|since|from|by|until|till)(?:\s+the\s+year)?"
             r"|(?:early|mid|late|spring|summer|fall|autumn|winter)(?:\s+of)?"
             r"|(?:start|end|beginning|middle)\s+of")

# Most specific first: a reading that overlaps one already made is not made.
_DAYS = [
    re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<monthnum>[01]\d)-(?P<day>[0-3]\d)(?!\d)"),
    re.compile(rf"\b{_WEEKDAY}{_DAY}(?:\s+of)?\s+{_MONTH}{_COMMA}{_YEAR}", re.I),
    re.compile(rf"\b{_WEEKDAY}{_MONTH}\s+{_DAY}{_COMMA}{_YEAR}", re.I),
]
_MONTH_YEAR = re.compile(rf"\b{_MONTH}{_COMMA}(?:of\s+)?{_YEAR}", re.I)
_CUED_YEAR = re.compile(rf"\b(?:{_YEAR_CUE})(?:\s+|(?<=mid)-){_LONE}", re.I)
_NEXT_YEAR = re.compile(rf"\s+(?:and|or|to)\s+{_LONE}", re.I)


def explicit_dates(text: str) -> list[ExplicitDate]:
    """The explicit dates `text` names, in text order (see the module docstring)."""
    found: list[ExplicitDate] = []
    taken = bytearray(len(text))  # 1 where a date was read: a linear cost however many dates

    def free(span: tuple[int, int]) -> bool:
        return not any(taken[span[0]:span[1]])

    def add(d: ExplicitDate) -> None:
        found.append(d)
        taken[d.span[0]:d.span[1]] = b"\x01" * (d.span[1] - d.span[0])

    for pattern in _DAYS:
        for m in pattern.finditer(text):
            if not free(m.span()):
                continue
            year = int(m.group("year"))
            month = int(m.group("monthnum")) if "monthnum" in pattern.groupindex else month_number(m.group("month"))
            if not month or month > 12:
                continue
            try:
                day = date(year, month, int(m.group("day")))
                add(ExplicitDate(day, day + timedelta(days=1), m.span()))
            except ValueError:  # "31 February 2023": no such day, but the month is meant
                add(_month(year, month, m.span()))
    for m in _MONTH_YEAR.finditer(text):
        if free(m.span()):
            add(_month(int(m.group("year")), month_number(m.group("month")) or 1, m.span()))
    for m in _CUED_YEAR.finditer(text):
        while m is not None and free(m.span("year")):
            year = int(m.group("year"))
            add(ExplicitDate(date(year, 1, 1), date(year + 1, 1, 1), m.span("year")))
            m = _NEXT_YEAR.match(text, m.end())
    return sorted(found, key=lambda d: d.span)


def _month(year: int, month: int, span: tuple[int, int]) -> ExplicitDate:
    after = date(year + month // 12, month % 12 + 1, 1)
    return ExplicitDate(date(year, month, 1), after, span)
