"""What a search query says, read without a model: its words and the dates it names.

Two readings feed the ranking (search/engine.py):

- `terms` are the words the lexical index is asked for, and the words whose document
  frequency decides which of them are *ubiquitous* in the searched scope (a speaker's name
  in a conversation about that speaker). `without_terms` removes those from the text that
  is embedded, so the dense side compares what the query asks about, not whose name it
  carries.
- `date_ranges` are the calendar ranges a query names explicitly ("in May 2023",
  "on 13 October, 2023", "in 2022"), read by the grammar the rules extractor reads a
  turn's dates by (`engram.domain.dates`). Memories whose event time (`valid_at`) falls
  inside one rank higher. Relative phrases ("last week") are left alone: a query has no
  anchor but the clock, and the clock is rarely what a question about the past means.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

from engram.domain.dates import explicit_dates
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


def date_ranges(text: str) -> list[tuple[datetime, datetime]]:
    """The explicit dates the text names, in text order, each as a half-open UTC range [start, end)."""
    return [(_utc(d.start), _utc(d.end)) for d in explicit_dates(text)]


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
