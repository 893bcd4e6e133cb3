"""What a search query says, read without a model: its words and the dates it names.

Two readings feed the ranking (search/engine.py):

- `terms` are the words the lexical index is asked for, and the words whose document
  frequency decides which of them are *ubiquitous* in the searched scope (a speaker's name
  in a conversation about that speaker). `without_terms` removes those from the text that
  is embedded, so the dense side compares what the query asks about, not whose name it
  carries.
- `date_ranges` are the calendar ranges a query names explicitly ("in May 2023",
  "on 13 October, 2023", "in 2022"). Memories whose event time (`valid_at`) falls inside
  one rank higher. Relative phrases ("last week") are left alone: a query has no anchor
  but the clock, and the clock is rarely what a question about the past means.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

from engram.domain.text import query_words

_TOKEN = re.compile(r"\w+")


terms = query_words  # the same words the stores' lexical queries use


def without_terms(text: str, dropped: set[str]) -> str:
    """`text` without the words in `dropped` (and their possessive `'s`), spaces tidied."""
    if not dropped:
        return text
    kept = re.sub(r"\w+(?:['’]s\b)?",
                  lambda m: " " if _TOKEN.match(m.group(0)).group(0).lower() in dropped else m.group(0), text)
    return re.sub(r"\s+", " ", kept).strip()


_MONTH = (r"(?P<month>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
# Most specific first: a day inside a month inside a year.
_DATE_PATTERNS = [
    re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<monthnum>[01]\d)-(?P<day>[0-3]\d)\b"),
    re.compile(rf"\b{_DAY}(?:\s+of)?\s+{_MONTH}\.?,?\s+{_YEAR}\b", re.I),
    re.compile(rf"\b{_MONTH}\.?\s+{_DAY},?\s+{_YEAR}\b", re.I),
    re.compile(rf"\b{_MONTH}\.?,?\s+(?:of\s+)?{_YEAR}\b", re.I),
    re.compile(rf"\b{_YEAR}\b(?![-/:]\d)"),
]
_MONTH_PREFIXES = [m.lower()[:3] for m in calendar.month_name[1:]]


def date_ranges(text: str) -> list[tuple[datetime, datetime]]:
    """The explicit dates the text names, each as a half-open UTC range [start, end)."""
    found: list[tuple[datetime, datetime]] = []
    taken: list[tuple[int, int]] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(start < m.end() and m.start() < end for start, end in taken):
                continue  # part of a more specific date already read
            parts = m.groupdict()
            try:
                year = int(parts["year"])
                if parts.get("month") or parts.get("monthnum"):
                    month = (int(parts["monthnum"]) if parts.get("monthnum")
                             else _MONTH_PREFIXES.index(parts["month"][:3].lower()) + 1)
                    if parts.get("day"):
                        start = datetime(year, month, int(parts["day"]), tzinfo=timezone.utc)
                        end = start + timedelta(days=1)
                    else:
                        start = datetime(year, month, 1, tzinfo=timezone.utc)
                        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
                else:
                    start = datetime(year, 1, 1, tzinfo=timezone.utc)
                    end = datetime(year + 1, 1, 1, tzinfo=timezone.utc)
            except ValueError:  # "31 February 2023": not a date
                continue
            taken.append((m.start(), m.end()))
            found.append((start, end))
    return found
