"""Compile the filter AST to a PostgreSQL boolean expression over `memories` (alias m).

The semantics are SQLite's (store/sqlite_filters.py), clause for clause, and the conformance
suite runs the same filters on both backends:

- every comparison is wrapped in COALESCE(…, false), so NULL never leaks three-valued logic
  into NOT and OR: a clause is true or false for every row;
- metadata comparisons are typed: a number equals only a number (1 = 1.0, never "1" or
  true), numbers order as numbers, strings that are ISO dates order as instants when the
  filter value is a date, other strings order bytewise;
- `$ne` requires the field to be set; `$nin` lets unset pass.

Placeholders are psycopg's `%s`; values are always parameters, never spliced into the text.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from engram.domain.filters import CORE_FIELDS, TIME_FIELDS, And, Cmp, Node, Not, Or, is_iso_date
from engram.errors import ServiceError

_SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def compile_filter(node: Node, params: list[Any]) -> str:
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
    expr = _core(node, params) if node.field in CORE_FIELDS else _meta(node, params)
    return f"COALESCE(({expr}), FALSE)"


def _instant(value: Any) -> datetime:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _core(node: Cmp, params: list[Any]) -> str:
    col = f"m.{node.field}"
    conv = _instant if node.field in TIME_FIELDS else (lambda v: v)
    op, value = node.op, node.value
    if op == "null":
        return f"{col} IS NULL"
    if op == "exists":
        return f"{col} IS NOT NULL" if value else f"{col} IS NULL"
    if op in ("in", "nin"):
        params.extend(conv(v) for v in value)
        marks = ",".join(["%s"] * len(value))
        return f"{col} IN ({marks})" if op == "in" else f"({col} IS NULL OR {col} NOT IN ({marks}))"
    if op == "ne":
        params.append(conv(value))
        return f"{col} IS NOT NULL AND {col} <> %s"
    if op == "between":
        # SQLite gives number bounds the column's text affinity; so do we.
        params.extend(conv(v) if node.field in TIME_FIELDS else str(v) for v in value)
        return f"{col} BETWEEN %s AND %s"
    if op in ("gt", "gte", "lt", "lte") and node.field not in TIME_FIELDS and not isinstance(value, str):
        return "FALSE"  # a number never orders against a text column
    if op == "eq" and node.field not in TIME_FIELDS and not isinstance(value, str):
        return "FALSE"  # the parser rejects this; a text column never equals a number
    params.append(conv(value))
    return f"{col} {_SQL_OPS[op]} %s"


def _key(key: str) -> str:
    # Same rule as the embedded store, so a filter valid on one backend is valid on both.
    if '"' in key or "\\" in key:
        raise ServiceError("invalid_filter", f"metadata key {key!r}: quotes and backslashes are not filterable")
    return key


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed_eq(key: str, value: Any, params: list[Any]) -> str:
    """JSON equality that respects types, as containment so the GIN index can serve it."""
    if isinstance(value, float) and math.isinf(value):
        return "FALSE"  # no stored JSON number is infinite
    params.append(json.dumps({key: value}))
    return "m.metadata_b @> %s::jsonb"


def _meta(node: Cmp, params: list[Any]) -> str:
    key = _key(node.field)
    op, value = node.op, node.value
    params.append(key)
    is_set = "COALESCE(jsonb_typeof(m.metadata_b -> %s) <> 'null', FALSE)"
    if op == "null":
        return f"NOT {is_set}"
    if op == "exists":
        return is_set if value else f"NOT {is_set}"
    params.pop()  # the key is appended again by whichever expression uses it
    if op == "eq":
        return _typed_eq(key, value, params)
    if op == "ne":
        params.append(key)
        return f"{is_set} AND NOT COALESCE({_typed_eq(key, value, params)}, FALSE)"
    if op in ("in", "nin"):
        any_of = " OR ".join(f"COALESCE({_typed_eq(key, v, params)}, FALSE)" for v in value)
        return f"({any_of})" if op == "in" else f"NOT ({any_of})"
    if op == "between":
        low, high = value
        return f"({_ordered(key, 'gte', low, params)} AND {_ordered(key, 'lte', high, params)})"
    return _ordered(key, op, value, params)


def _ordered(key: str, op: str, value: Any, params: list[Any]) -> str:
    """Numbers compare as numbers, ISO dates as instants, other strings bytewise."""
    sql_op = _SQL_OPS[op]
    if _is_number(value):
        is_number = "COALESCE(jsonb_typeof(m.metadata_b -> %s) = 'number', FALSE)"
        if isinstance(value, float) and math.isinf(value):
            below = (value > 0) == (op in ("lt", "lte"))  # every finite number is below +inf
            if not below:
                return "FALSE"
            params.append(key)
            return is_number
        params.extend([key, key, json.dumps(value)])
        return f"({is_number} AND (m.metadata_b -> %s) {sql_op} %s::jsonb)"
    if is_iso_date(value):
        params.extend([key, key, _instant(value)])
        return (f"(jsonb_typeof(m.metadata_b -> %s) = 'string'"
                f" AND engram_instant(m.metadata_b ->> %s) {sql_op} %s::timestamptz)")
    params.extend([key, key, value])
    return f"(jsonb_typeof(m.metadata_b -> %s) = 'string' AND (m.metadata_b ->> %s) COLLATE \"C\" {sql_op} %s)"
