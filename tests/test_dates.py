"""The one date grammar (engram/domain/dates.py) and its two readers: the rules extractor
(a fact's `valid_at`) and search (`date_ranges`, the explicit dates a query names).

DATES is the one table: every row is read by the grammar, by search and by the extractor,
and all three must agree with it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from engram.domain.dates import MONTHS, explicit_dates, month_number
from engram.domain.extraction import Turn
from engram.pipeline.extract.rules import RulesExtractor
from engram.search.query import date_ranges

D = date


def day(y: int, m: int, d: int) -> tuple[date, date]:
    return D(y, m, d), D(y, m, d) + timedelta(days=1)


def month(y: int, m: int) -> tuple[date, date]:
    return D(y, m, 1), D(y + m // 12, m % 12 + 1, 1)


def year(y: int) -> tuple[date, date]:
    return D(y, 1, 1), D(y + 1, 1, 1)


# (a statement with explicit dates and no relative ones, the dates it names in text order)
DATES: list[tuple[str, list[tuple[date, date]]]] = [
    # days, in every order and spelling
    ("We met at the park on 13 October, 2023.", [day(2023, 10, 13)]),
    ("We met at the park on October 13th, 2023.", [day(2023, 10, 13)]),
    ("We married on the 4th of July 2015.", [day(2015, 7, 4)]),
    ("We married on Oct. 4 2015.", [day(2015, 10, 4)]),
    ("The forest picture was taken on December 1,2023.", [day(2023, 12, 1)]),
    ("The deadline is 2023-10-13, not 2023-13-01.", [day(2023, 10, 13)]),
    ("The backup ran at 2023-10-13T10:30:00Z.", [day(2023, 10, 13)]),
    ("We flew to Oslo on Friday, 13 October 2023.", [day(2023, 10, 13)]),
    # months: any case, every short form, "of"
    ("I started the job in December 2023.", [month(2023, 12)]),
    ("I moved to Berlin in may 2023.", [month(2023, 5)]),
    ("The SEPTEMBER 2022 trip was great.", [month(2022, 9)]),
    ("I started there in Sept. 2022.", [month(2022, 9)]),
    ("I started there in Sept 2022.", [month(2022, 9)]),
    ("We went to Lisbon in May of 2023.", [month(2023, 5)]),
    ("I was there in Jan 2021.", [month(2021, 1)]),
    # an impossible day names its month
    ("Since 31 February 2023 I have been vegan.", [month(2023, 2)]),
    ("We married on February 30, 2020.", [month(2020, 2)]),
    ("The invoice says 2023-02-30.", [month(2023, 2)]),
    # a year alone, where a word makes it a time
    ("I was born in 1990.", [year(1990)]),
    ("I moved there back in 2010.", [year(2010)]),
    ("I'll move there by 2025.", [year(2025)]),
    ("I visited Rome in the summer of 2022.", [year(2022)]),
    ("It was the end of 2019 when I quit.", [year(2019)]),
    ("We moved there in mid-2020.", [year(2020)]),
    ("I lived there from 2015 to 2019.", [year(2015), year(2019)]),
    ("I graduated in 2019 or 2020.", [year(2019), year(2020)]),
    ("I paid $2000 in 2020.", [year(2020)]),
    # several dates: text order, the most specific reading of the same words
    ("We went there in Sept. 2022 and again in 2021.", [month(2022, 9), year(2021)]),
    ("I went to Paris in 2019 and to Rome on 13 May 2021.", [year(2019), day(2021, 5, 13)]),
    # not dates
    ("I have 2000 followers now.", []),
    ("I got a 1968 Kustom guitar.", []),
    ("I loved Cyberpunk 2077.", []),
    ("I joined the club in 2019-2020.", []),
    ("I bought the car on 10/12/2023.", []),
    ("I loved the music of the 1990s.", []),
    ("We kept 1999 photos from the trip.", []),
]


@pytest.mark.parametrize(("text", "expected"), DATES)
def test_the_grammar_reads_the_table(text: str, expected: list[tuple[date, date]]) -> None:
    found = explicit_dates(text)
    assert [(d.start, d.end) for d in found] == expected
    assert [d.span for d in found] == sorted(d.span for d in found)


@pytest.mark.parametrize(("text", "expected"), DATES)
def test_search_reads_the_table(text: str, expected: list[tuple[date, date]]) -> None:
    def utc(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)

    assert date_ranges(text) == [(utc(a), utc(b)) for a, b in expected]


@pytest.mark.parametrize(("text", "expected"), DATES)
def test_the_extractor_reads_the_table(text: str, expected: list[tuple[date, date]]) -> None:
    anchor = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)
    [fact] = RulesExtractor().extract([Turn("e1", "user", text, anchor, "Caroline")], extract_artifacts=False).facts
    assert (fact.valid_at.date() if fact.valid_at else None) == (expected[0][0] if expected else None)
    assert fact.valid_at is None or fact.valid_at.tzinfo == timezone.utc


def test_an_explicit_date_is_not_read_again_as_a_relative_one() -> None:
    anchor = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)
    for text in ("We flew to Oslo on Friday, 13 October 2023.", "We went to Lisbon in May of 2023."):
        [fact] = RulesExtractor().extract([Turn("e1", "user", text, anchor, "Caroline")], extract_artifacts=False).facts
        assert fact.text == text.replace("We ", "Caroline and others ")


def test_month_names_and_short_forms() -> None:
    assert [month_number(m) for m in MONTHS] == list(range(1, 13))
    assert month_number("Sept") == month_number("sep.") == month_number("SEPTEMBER") == 9
    assert month_number("jun") == 6 and month_number("May") == 5
    assert month_number("mon") is None and month_number("septem") is None and month_number("") is None


def test_the_grammar_never_raises_on_odd_digits() -> None:
    for text in ("00 May 2023", "39 May 2023", "2023-00-10", "2099-12-31", "May 0, 1900", "in 1900 and 2099"):
        for d in explicit_dates(text):
            assert d.start < d.end
