"""Compile the filter AST to a PostgreSQL boolean expression over `memories` (alias m).

The semantics are SQLite's (store/sqlite_filters.py), clause for clause, and the conformance
suite runs the same filters on both backends:

- every comparison is wrapped in COALESCE(…, false), so NULL never leaks three-valued logic
  into NOT and OR: a clause is true or false for every row;
- metadata comparisons are typed: a number equals only a number (1 = 1.0, never "1" or
  true), numbers order as numbers, strings that are ISO dates order as instants when the
  filter value is a date, other strings order bytewise;
- `$ne` requires the field to be set; `$nin` lets unset pass.

Values are always named parameters (`Params.add`), never spliced into the text.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from engram.domain.filters import CORE_FIELDS, GROUP_FIELD, And, Cmp, Node, Not, Or, is_iso_date
from engram.errors import ServiceError
from engram.store.filters import SQL_OPS, core_comparison, group_comparison, metadata_comparison
from engram.store.sql import Params

def compile_filter(node: Node, params: Params) -> str:
    """A boolean SQL expression over `memories m`; every value is bound through `params`."""
    if isinstance(node, And):
        if not node.clauses:
            return "TRUE"
        return "(" + " AND ".join(compile_filter(c, params) for c in node.clauses) + ")"
    if isinstance(node, Or):
        if not node.clauses:
            return "FALSE"
        return "(" + " OR ".join(compile_filter(c, params) for c in node.clauses) + ")"
    if isinstance(node, Not):
        return "(NOT " + compile_filter(node.clause, params) + ")"
    if node.field == GROUP_FIELD:
        expr = group_comparison(node, params)
    else:
        expr = _core(node, params) if node.field in CORE_FIELDS else _meta(node, params)
    return f"COALESCE(({expr}), FALSE)"


def _instant(value: Any) -> datetime:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _core(node: Cmp, params: Params) -> str:
    return core_comparison(node, params, time=_instant, false="FALSE")


def _key(key: str) -> str:
    # Same rule as the embedded store, so a filter valid on one backend is valid on both.
    if '"' in key or "\\" in key:
        raise ServiceError("invalid_filter", f"metadata key {key!r}: quotes and backslashes are not filterable")
    return key


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed_eq(key: str, value: Any, params: Params) -> str:
    """JSON equality that respects types, as containment so the GIN index can serve it."""
    if isinstance(value, float) and math.isinf(value):
        return "FALSE"  # no stored JSON number is infinite
    return f"m.metadata_b @> {params.add(json.dumps({key: value}))}::jsonb"


class _Key:
    """One metadata key, read through jsonb operators on `metadata_b`."""

    false = "FALSE"

    def __init__(self, field: str, params: Params) -> None:
        self.key = _key(field)
        self.params = params

    def is_set(self) -> str:
        return f"COALESCE(jsonb_typeof(m.metadata_b -> {self.params.add(self.key)}) <> 'null', FALSE)"

    def equals(self, value: Any) -> str:
        return _typed_eq(self.key, value, self.params)

    def ordered(self, op: str, value: Any) -> str:
        return _ordered(self.key, op, value, self.params)


def _meta(node: Cmp, params: Params) -> str:
    return metadata_comparison(node, _Key(node.field, params))


def _ordered(key: str, op: str, value: Any, params: Params) -> str:
    """Numbers compare as numbers, ISO dates as instants, other strings bytewise."""
    sql_op = SQL_OPS[op]
    k = params.add(key)
    if _is_number(value):
        is_number = f"COALESCE(jsonb_typeof(m.metadata_b -> {k}) = 'number', FALSE)"
        if isinstance(value, float) and math.isinf(value):
            below = (value > 0) == (op in ("lt", "lte"))  # every finite number is below +inf
            return is_number if below else "FALSE"
        return f"({is_number} AND (m.metadata_b -> {k}) {sql_op} {params.add(json.dumps(value))}::jsonb)"
    if is_iso_date(value):
        return (f"(jsonb_typeof(m.metadata_b -> {k}) = 'string'"
                f" AND engram_instant(m.metadata_b ->> {k}) {sql_op} {params.add(_instant(value))}::timestamptz)")
    return (f"(jsonb_typeof(m.metadata_b -> {k}) = 'string'"
            f" AND (m.metadata_b ->> {k}) COLLATE \"C\" {sql_op} {params.add(value)})")
