"""The search filter DSL (SPEC §3) parsed into a small AST.

Parsing is strict: an unknown operator or a malformed clause raises `invalid_filter`
naming the clause, so a filter is never silently ignored. Each store compiles the AST to
its own query language; nothing here touches rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence, Union

from engram.domain.records import iso
from engram.domain.text import unstorable
from engram.errors import ServiceError

# Fields stored as columns; every other field name is a metadata key. `id` (the memory's id)
# is no metadata key either: ingest drops it as reserved.
CORE_FIELDS = frozenset(
    {"id", "user_id", "agent_id", "conv_id", "app_id", "type", "status", "created_at", "updated_at", "valid_at"}
)
TIME_FIELDS = frozenset({"created_at", "updated_at", "valid_at"})
# The groups a memory is tagged with (a set, not a column): `{"group_ids": "grp_…"}` matches a
# memory in that group, `$in` one in any of them, `$ne`/`$nin` one in none, `$exists` one in some.
GROUP_FIELD = "group_ids"
GROUP_OPERATORS = frozenset({"eq", "ne", "in", "nin", "exists"})
OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", "$between"})
Scalar = Union[str, int, float, bool]

# How large a filter may be (docs/design.md "Limits"). Depth counts the nesting of AND / OR /
# NOT and of operator objects; terms count comparisons plus the values of every $in / $nin.
# They keep the compiled SQL within what SQLite's parser and PostgreSQL's planner take
# (SQLite refuses expression trees deeper than 1000) and a filter's cost bounded.
MAX_FILTER_DEPTH = 10
MAX_FILTER_TERMS = 500
MAX_FILTER_VALUE_CHARS = 4096
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


@dataclass(frozen=True, slots=True)
class Cmp:
    """`field op value`. op is one of OPERATORS without the `$`, or `null` for 'unset'."""

    field: str
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class And:
    clauses: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Or:
    clauses: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Not:
    clause: "Node"


Node = Union[Cmp, And, Or, Not]
MATCH_ALL = And(())
MATCH_NONE = Or(())  # e.g. a scope that no memory can be in


def _bad(clause: Any, why: str) -> ServiceError:
    text = json.dumps(clause, default=str, ensure_ascii=False)
    if len(text) > 200:
        text = text[:200] + "…"
    return ServiceError("invalid_filter", f"invalid filter clause {text}: {why}")


class _Budget:
    """What is left of a filter's size limits while it is parsed."""

    def __init__(self) -> None:
        self.terms = MAX_FILTER_TERMS

    def spend(self, clause: Any, terms: int = 1) -> None:
        self.terms -= terms
        if self.terms < 0:
            raise _bad(clause, f"a filter may hold at most {MAX_FILTER_TERMS} comparisons and $in/$nin values")


def parse_filter(filters: Any) -> Node:
    """Parse the `filters` object of a search request; `None`/`{}` match everything."""
    if filters is None:
        return MATCH_ALL
    if not isinstance(filters, dict):
        raise _bad(filters, "filters must be an object")
    return _parse_object(filters, 1, _Budget())


def _parse_object(obj: dict[str, Any], depth: int, budget: _Budget) -> Node:
    if depth > MAX_FILTER_DEPTH:
        raise _bad(obj, f"filters nest at most {MAX_FILTER_DEPTH} levels deep")
    clauses = tuple(_parse_entry(key, value, depth, budget) for key, value in obj.items())
    return clauses[0] if len(clauses) == 1 else And(clauses)


def _parse_clause(clause: Any, depth: int, budget: _Budget) -> Node:
    if not isinstance(clause, dict) or not clause:
        raise _bad(clause, "a clause must be a non-empty object")
    return _parse_object(clause, depth, budget)


def _parse_entry(key: str, value: Any, depth: int, budget: _Budget) -> Node:
    if key in ("AND", "OR"):
        if not isinstance(value, list) or not value:
            raise _bad({key: value}, f"{key} takes a non-empty list of clauses")
        budget.spend({key: value}, 0)
        parts = tuple(_parse_clause(c, depth + 1, budget) for c in value)
        return And(parts) if key == "AND" else Or(parts)
    if key == "NOT":
        return Not(_parse_clause(value, depth + 1, budget))
    if key.startswith("$"):
        raise _bad({key: value}, f"unknown operator {key} at field position")
    if not key or len(key) > 256:
        raise _bad({key: value}, "field names are 1-256 characters")
    if key not in CORE_FIELDS and key != GROUP_FIELD and (_UNFILTERABLE_KEY.search(key) or unstorable(key)):
        raise _bad({key: value}, "metadata keys with quotes, backslashes or control characters are not filterable")
    return _parse_field(key, value, depth, budget)


def _parse_field(field: str, value: Any, depth: int, budget: _Budget) -> Node:
    node = _parse_value(field, value, depth, budget)
    if field == GROUP_FIELD:
        _check_group_clause(node, {field: value})
    return node


def _check_group_clause(node: Node, clause: Any) -> None:
    for part in (node.clauses if isinstance(node, And) else (node,)):
        assert isinstance(part, Cmp)
        if part.op == "null":
            continue  # no group at all
        if part.op not in GROUP_OPERATORS:
            raise _bad(clause, "group_ids takes a group id, $eq, $ne, $in, $nin or $exists")
        values = part.value if part.op in ("in", "nin") else (part.value,) if part.op != "exists" else ()
        if not all(isinstance(v, str) for v in values):
            raise _bad(clause, "group ids are strings")


def _parse_value(field: str, value: Any, depth: int, budget: _Budget) -> Node:
    if value is None:
        budget.spend({field: value})
        return Cmp(field, "null")
    if isinstance(value, dict):
        if not value:
            raise _bad({field: value}, "empty operator object")
        if depth + 1 > MAX_FILTER_DEPTH:
            raise _bad({field: value}, f"filters nest at most {MAX_FILTER_DEPTH} levels deep")
        parts = tuple(_parse_operator(field, op, arg, budget) for op, arg in value.items())
        return parts[0] if len(parts) == 1 else And(parts)
    if isinstance(value, list):
        raise _bad({field: value}, "a list needs an operator such as $in")
    budget.spend({field: value})
    return Cmp(field, "eq", _scalar(field, value))


def _scalar(field: str, value: Any, clause: Any = None) -> Scalar:
    """A comparison value; `clause` (default `{field: value}`) is what an error names."""
    clause = {field: value} if clause is None else clause
    if isinstance(value, (str, bool, int, float)) and not (isinstance(value, float) and value != value):
        _check_value(clause, value)
        if field in TIME_FIELDS and not isinstance(value, str):
            raise _bad(clause, "time fields compare with ISO-8601 strings")
        if field in TIME_FIELDS:
            _parse_time(clause, value)
        elif field in CORE_FIELDS and not isinstance(value, str):
            raise _bad(clause, f"{field} is a string field")
        return value
    raise _bad(clause, "values must be strings, numbers or booleans")


def _check_value(clause: Any, value: Scalar) -> None:
    """What every comparison value obeys: storable text of bounded length, 64-bit integers."""
    if isinstance(value, str):
        if len(value) > MAX_FILTER_VALUE_CHARS:
            raise _bad(clause, f"string values are at most {MAX_FILTER_VALUE_CHARS} characters")
        why = unstorable(value)
        if why is not None:
            raise _bad(clause, f"string values {why}")
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise _bad(clause, "integers must fit in 64 bits")


def _parse_time(clause: Any, value: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(clause, "not an ISO-8601 date or time") from None
    if not within_utc_range(ts):
        raise _bad(clause, "dates must fall within the years 1 to 9999 in UTC")
    return ts


def within_utc_range(ts: datetime) -> bool:
    """Whether an instant, read in UTC, is still a date Python (and so engram) can hold:
    9999-12-31T23:59:59-12:00 is in year 10000 in UTC."""
    try:
        (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:
        return False
    return True


def is_iso_date(value: Any) -> bool:
    """Whether a filter value is a date: ISO-8601 as Python reads it, at least YYYY-MM-DD (so a
    metadata comparison with it orders stored dates as instants, on every store)."""
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _parse_operator(field: str, op: str, arg: Any, budget: _Budget) -> Node:
    if op not in OPERATORS:
        raise _bad({field: {op: arg}}, f"unknown operator {op}")
    name = op[1:]
    if name in ("in", "nin"):
        if not isinstance(arg, list) or not arg:
            raise _bad({field: {op: arg}}, f"{op} takes a non-empty list")
        budget.spend({field: {op: "…"}}, len(arg))
        return Cmp(field, name, tuple(_scalar(field, v, {field: {op: arg}}) for v in arg))
    if name == "exists":
        if not isinstance(arg, bool):
            raise _bad({field: {op: arg}}, "$exists takes true or false")
        budget.spend({field: {op: arg}})
        return Cmp(field, "exists", arg)
    budget.spend({field: {op: arg}})
    if name == "between":
        if not isinstance(arg, list) or len(arg) != 2:
            raise _bad({field: {op: arg}}, "$between takes [low, high]")
        low, high = (_ordered(field, op, v) for v in arg)
        if type(low) is not type(high) and not (_is_number(low) and _is_number(high)):
            raise _bad({field: {op: arg}}, "$between bounds must be of one type")
        return Cmp(field, "between", (low, high))
    if name in ("gt", "gte", "lt", "lte"):
        return Cmp(field, name, _ordered(field, op, arg))
    if arg is None:
        # {"$eq": null} means unset; {"$ne": null} means set.
        return Cmp(field, "null") if name == "eq" else Cmp(field, "exists", True)
    return Cmp(field, name, _scalar(field, arg, {field: {op: arg}}))


_UNFILTERABLE_KEY = re.compile(r'["\\\x00-\x1f\x7f]')


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ordered(field: str, op: str, arg: Any) -> Scalar:
    """Range operators compare numbers with numbers and ISO dates with dates."""
    if _is_number(arg):
        if arg != arg:  # NaN orders against nothing
            raise _bad({field: {op: arg}}, "NaN is not a value")
        if field in TIME_FIELDS:
            raise _bad({field: {op: arg}}, "time fields compare with ISO-8601 strings")
        if field in CORE_FIELDS:
            raise _bad({field: {op: arg}}, f"{field} is a string field")
        _check_value({field: {op: arg}}, arg)
        return arg
    if isinstance(arg, str):
        _check_value({field: {op: arg}}, arg)
        if field in TIME_FIELDS or is_iso_date(arg):  # metadata dates order as instants too
            _parse_time({field: {op: arg}}, arg)
        return arg
    raise _bad({field: {op: arg}}, f"{op} takes a number or a string")


def equality_filter(**fields: str | None) -> Node:
    """The exact-match filter of list endpoints, built from the fields that are set."""
    clauses = tuple(Cmp(k, "eq", v) for k, v in fields.items() if v is not None)
    return clauses[0] if len(clauses) == 1 else And(clauses)


def conjoin(*nodes: Node) -> Node:
    parts = tuple(n for n in nodes if n != MATCH_ALL)
    if not parts:
        return MATCH_ALL
    if MATCH_NONE in parts:
        return MATCH_NONE
    return parts[0] if len(parts) == 1 else And(parts)


def within(ranges: Sequence[tuple[datetime, datetime]]) -> Node:
    """Event time (`valid_at`) inside one of the half-open ranges [start, end)."""
    return Or(tuple(And((Cmp("valid_at", "gte", iso(start)), Cmp("valid_at", "lt", iso(end))))
                    for start, end in ranges))


def mentions(node: Node, field: str) -> bool:
    """Whether the filter says anything about `field` (e.g. `status`)."""
    if isinstance(node, Cmp):
        return node.field == field
    if isinstance(node, Not):
        return mentions(node.clause, field)
    return any(mentions(c, field) for c in node.clauses)


def equality_value(node: Node, field: str) -> str | None:
    """The value a top-level AND pins `field` to, if any (used to pick exact per-user scoring)."""
    if isinstance(node, Cmp) and node.field == field and node.op == "eq":
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, And):
        for clause in node.clauses:
            found = equality_value(clause, field)
            if found is not None:
                return found
    return None
