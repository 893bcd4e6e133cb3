"""The filter DSL of SPEC §3, evaluated in plain Python over one memory at a time.

This is the test oracle: an independent statement of what a filter means, written from the
spec and the decisions in docs/design.md, not from either store's SQL. The property tests
(tests/test_filter_properties.py) require every store to admit exactly the memories this
module admits, and the parser to reject exactly the filters `validate` rejects.

What a clause means:

- top-level keys, the keys of a clause and the operators of one field are ANDed;
  `AND`/`OR` take non-empty lists of non-empty objects, `NOT` one non-empty object;
- a bare value is equality, `null` (or `{"$eq": null}`) is "unset" (missing or JSON null),
  `{"$ne": null}` is "set";
- core fields (`id user_id agent_id conv_id app_id type status`) are strings and compare as
  strings (bytewise); `created_at updated_at valid_at` take ISO-8601 strings and compare
  as instants (a zone-less time is UTC); a number on any core field is invalid;
- metadata values compare by JSON type: a number equals a number (1 == 1.0) but never "1"
  or true; `$gt`-style operators order numbers as numbers; a filter string that is an
  ISO date (at least YYYY-MM-DD) orders the metadata strings that are ISO dates as instants,
  to the millisecond; any other string orders strings bytewise; lists and objects in
  metadata are set but equal and order against nothing;
- `$ne` requires the field to be set; `$nin` lets unset pass; `$between [a, b]` is
  `$gte a` and `$lte b`, with bounds of one type.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Callable

CORE = frozenset({"id", "user_id", "agent_id", "conv_id", "app_id", "type", "status", "created_at", "updated_at",
                  "valid_at"})
TIME = frozenset({"created_at", "updated_at", "valid_at"})
OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", "$between"})
MISSING = object()


class Invalid(Exception):
    """The filter is malformed: the service must answer 400 invalid_filter."""


# ---------------------------------------------------------------------- validity
def validate(filters: Any) -> None:
    if filters is None:
        return
    if not isinstance(filters, dict):
        raise Invalid("filters must be an object")
    for key, value in filters.items():
        _validate_entry(key, value)


def _validate_clause(clause: Any) -> None:
    if not isinstance(clause, dict) or not clause:
        raise Invalid("a clause is a non-empty object")
    validate(clause)


def _validate_entry(key: str, value: Any) -> None:
    if key in ("AND", "OR"):
        if not isinstance(value, list) or not value:
            raise Invalid(f"{key} takes a non-empty list")
        for clause in value:
            _validate_clause(clause)
        return
    if key == "NOT":
        _validate_clause(value)
        return
    if key.startswith("$") or not key or len(key) > 256:
        raise Invalid("bad field name")
    if key not in CORE and (any(c in key for c in '"\\') or any(ord(c) < 32 or ord(c) == 127 for c in key)):
        raise Invalid("unfilterable metadata key")
    if value is None:
        return
    if isinstance(value, list):
        raise Invalid("a list needs an operator")
    if isinstance(value, dict):
        if not value:
            raise Invalid("empty operator object")
        for op, arg in value.items():
            _validate_operator(key, op, arg)
        return
    _validate_scalar(key, value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_scalar(field: str, v: Any) -> None:
    if not isinstance(v, (str, bool, int, float)) or (isinstance(v, float) and math.isnan(v)):
        raise Invalid("not a scalar")
    if field in CORE and not isinstance(v, str):
        raise Invalid("core fields are strings")
    if field in TIME:
        _instant(v)


def _validate_ordered(field: str, v: Any) -> None:
    if _is_number(v):
        if field in CORE or (isinstance(v, float) and math.isnan(v)):
            raise Invalid("numbers order metadata only")
        return
    if not isinstance(v, str):
        raise Invalid("order by a number or a string")
    if field in TIME:
        _instant(v)


def _validate_operator(field: str, op: str, arg: Any) -> None:
    if op not in OPERATORS:
        raise Invalid(f"unknown operator {op}")
    if op in ("$in", "$nin"):
        if not isinstance(arg, list) or not arg:
            raise Invalid(f"{op} takes a non-empty list")
        for v in arg:
            _validate_scalar(field, v)
    elif op == "$exists":
        if not isinstance(arg, bool):
            raise Invalid("$exists takes a boolean")
    elif op == "$between":
        if not isinstance(arg, list) or len(arg) != 2:
            raise Invalid("$between takes two bounds")
        for v in arg:
            _validate_ordered(field, v)
        if not (all(_is_number(v) for v in arg) or all(isinstance(v, str) for v in arg)):
            raise Invalid("bounds of one type")
    elif op in ("$gt", "$gte", "$lt", "$lte"):
        _validate_ordered(field, arg)
    elif arg is not None:  # $eq / $ne
        _validate_scalar(field, arg)


def _instant(text: Any) -> datetime:
    if not isinstance(text, str):
        raise Invalid("a time is an ISO-8601 string")
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("not ISO-8601") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------- meaning
def admits(filters: Any, row: dict[str, Any]) -> bool:
    """Whether a memory (core fields as keys, datetimes for the time fields, plus
    `metadata`) satisfies a filter that `validate` accepted."""
    if not filters:
        return True
    return all(_entry(key, value, row) for key, value in filters.items())


def _entry(key: str, value: Any, row: dict[str, Any]) -> bool:
    if key == "AND":
        return all(admits(c, row) for c in value)
    if key == "OR":
        return any(admits(c, row) for c in value)
    if key == "NOT":
        return not admits(value, row)
    have = row.get(key) if key in CORE else row["metadata"].get(key, MISSING)
    is_set = have is not MISSING and have is not None
    if value is None:
        return not is_set
    if not isinstance(value, dict):
        return is_set and _equal(key, have, value)
    return all(_operator(key, have, is_set, op, arg) for op, arg in value.items())


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
}


def _operator(field: str, have: Any, is_set: bool, op: str, arg: Any) -> bool:
    if op == "$exists":
        return is_set == arg
    if op == "$eq":
        return (not is_set) if arg is None else (is_set and _equal(field, have, arg))
    if op == "$ne":
        return is_set if arg is None else (is_set and not _equal(field, have, arg))
    if op == "$in":
        return is_set and any(_equal(field, have, v) for v in arg)
    if op == "$nin":
        return not (is_set and any(_equal(field, have, v) for v in arg))
    if op == "$between":
        return is_set and _ordered(field, have, "$gte", arg[0]) and _ordered(field, have, "$lte", arg[1])
    return is_set and _ordered(field, have, op, arg)


def _equal(field: str, have: Any, want: Any) -> bool:
    if field in TIME:
        return have == _instant(want)
    if field in CORE:
        return have == want
    if isinstance(want, bool):
        return isinstance(have, bool) and have == want
    if _is_number(want):
        return _is_number(have) and have == want
    return isinstance(have, str) and have == want


def _ordered(field: str, have: Any, op: str, want: Any) -> bool:
    compare = _ORDER[op]
    if field in TIME:
        return compare(have, _instant(want))
    if field in CORE:
        return compare(have, want)
    if _is_number(want):
        return _is_number(have) and compare(have, want)
    if _is_date_value(want):
        return isinstance(have, str) and _is_stored_date(have) and compare(_ms(_instant(have)), _ms(_instant(want)))
    return isinstance(have, str) and compare(have, want)


def _is_date_value(text: str) -> bool:
    """A filter string is a date when Python reads it as ISO-8601 and it has at least a day."""
    if len(text) < 10:
        return False
    try:
        _instant(text)
    except Invalid:
        return False
    return True


_STORED_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?)?(?:Z|[+-]\d{2}:\d{2})?")


def _is_stored_date(text: str) -> bool:
    """A metadata string is a date when it is YYYY-MM-DD, optionally with a time to the
    millisecond and a zone, and names a real day."""
    if not _STORED_DATE.fullmatch(text):
        return False
    try:
        _instant(text)
    except Invalid:
        return False
    return True


def _ms(ts: datetime) -> datetime:
    """Metadata instants compare to the millisecond."""
    return ts.replace(microsecond=(ts.microsecond // 1000) * 1000)
