"""Compile the filter AST to a SQLite boolean expression over the `memories` table (alias m).

The meaning of every clause (tests/filter_oracle.py is its executable statement):

- core fields are columns: strings compare as text (bytewise), the time fields as instants
  (they are stored as fixed-width UTC ISO text, so text order is time order);
- metadata comparisons are typed: a number equals only a number (1 = 1.0, never "1" or
  true), numbers order as numbers, a date filter value orders the metadata strings that are
  ISO dates as instants (to the millisecond), other strings order bytewise;
- unset means missing or JSON null; `$ne` requires the field to be set, `$nin` lets unset pass.

A clause must be plainly true or false for every row. SQL comparisons with NULL are
neither, which only matters under NOT: there each comparison is wrapped in
COALESCE(…, 0). Outside NOT a NULL already excludes the row, and leaving the comparison
bare lets SQLite use the indexes (`m.user_id = ?` on memories_user).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from engram.domain.filters import CORE_FIELDS, TIME_FIELDS, And, Cmp, Node, Not, Or, is_iso_date
from engram.domain.records import iso
from engram.errors import ServiceError


def compile_filter(node: Node, params: list[Any], *, negated: bool = False) -> str:
    if isinstance(node, And):
        if not node.clauses:
            return "1"
        return "(" + " AND ".join(compile_filter(c, params, negated=negated) for c in node.clauses) + ")"
    if isinstance(node, Or):
        if not node.clauses:
            return "0"
        return "(" + " OR ".join(compile_filter(c, params, negated=negated) for c in node.clauses) + ")"
    if isinstance(node, Not):
        return "(NOT " + compile_filter(node.clause, params, negated=True) + ")"
    expr = _core(node, params) if node.field in CORE_FIELDS else _meta(node, params)
    return f"COALESCE(({expr}), 0)" if negated else f"({expr})"


def _time_value(value: Any) -> str:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return iso(ts) or ""


_SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _core(node: Cmp, params: list[Any]) -> str:
    col = f"m.{node.field}"
    conv = _time_value if node.field in TIME_FIELDS else (lambda v: v)
    op, value = node.op, node.value
    if op == "null":
        return f"{col} IS NULL"
    if op == "exists":
        return f"{col} IS NOT NULL" if value else f"{col} IS NULL"
    if op in ("in", "nin"):
        params.extend(conv(v) for v in value)
        marks = ",".join("?" * len(value))
        return f"{col} IN ({marks})" if op == "in" else f"({col} IS NULL OR {col} NOT IN ({marks}))"
    if op == "ne":
        params.append(conv(value))
        return f"{col} IS NOT NULL AND {col} != ?"
    if op == "between":
        if node.field not in TIME_FIELDS and not all(isinstance(v, str) for v in value):
            return "0"  # a number never orders against a text column (the parser rejects it)
        params.extend(conv(v) for v in value)
        return f"{col} BETWEEN ? AND ?"
    if node.field not in TIME_FIELDS and not isinstance(value, str):
        return "0"  # likewise
    params.append(conv(value))
    return f"{col} {_SQL_OPS[op]} ?"


def _path(label: str) -> str:
    """A JSON path to one key, as a SQL string literal."""
    return "'" + f'$."{label}"'.replace("'", "''") + "'"


def _json_of(fn: str, key: str) -> str:
    """`json_type`/`json_extract` of a metadata key. SQLite matches path labels against keys
    as written in the stored JSON, and metadata is stored ASCII-escaped ("\\u043a…"), so a
    non-ASCII key is looked up both as escaped and as written."""
    if '"' in key or "\\" in key:
        raise ServiceError("invalid_filter", f"metadata key {key!r}: quotes and backslashes are not filterable")
    labels = dict.fromkeys([key, json.dumps(key)[1:-1]])
    lookups = [f"{fn}(m.metadata, {_path(label)})" for label in labels]
    return lookups[0] if len(lookups) == 1 else f"COALESCE({', '.join(lookups)})"


def _typed_eq(jt: str, jx: str, value: Any, params: list[Any]) -> str:
    """Equality that respects JSON types: 1 never equals "1" or true."""
    if isinstance(value, bool):
        return f"{jt} = '{'true' if value else 'false'}'"
    params.append(value)
    if isinstance(value, (int, float)):
        return f"({jt} IN ('integer','real') AND {jx} = ?)"
    return f"({jt} = 'text' AND {jx} = ?)"


def _meta(node: Cmp, params: list[Any]) -> str:
    jt = _json_of("json_type", node.field)
    jx = _json_of("json_extract", node.field)
    is_set = f"({jt} IS NOT NULL AND {jt} != 'null')"
    op, value = node.op, node.value
    if op == "null":
        return f"NOT {is_set}"
    if op == "exists":
        return is_set if value else f"NOT {is_set}"
    if op == "eq":
        return _typed_eq(jt, jx, value, params)
    if op == "ne":
        return f"{is_set} AND NOT COALESCE({_typed_eq(jt, jx, value, params)}, 0)"
    if op in ("in", "nin"):
        any_of = " OR ".join(f"COALESCE({_typed_eq(jt, jx, v, params)}, 0)" for v in value)
        return f"({any_of})" if op == "in" else f"NOT ({any_of})"
    if op == "between":
        low, high = value
        return f"({_ordered(jt, jx, 'gte', low, params)} AND {_ordered(jt, jx, 'lte', high, params)})"
    return _ordered(jt, jx, op, value, params)


def _stored_date(jx: str) -> str:
    """Whether a metadata string is an ISO date: YYYY-MM-DD first (a real calendar day), and
    the rest as SQLite's date functions read it (time, fraction, zone). Julian day numbers
    ("12345") and impossible days ("2023-02-30") are not dates, as on PostgreSQL."""
    return (f"{jx} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
            f" AND substr({jx}, 1, 4) != '0000' AND julianday({jx}) IS NOT NULL"
            f" AND date(julianday(substr({jx}, 1, 10))) = substr({jx}, 1, 10)")


def _ordered(jt: str, jx: str, op: str, value: Any, params: list[Any]) -> str:
    """Numbers compare as numbers, ISO dates as instants, other strings as text."""
    sql_op = _SQL_OPS[op]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        params.append(value)
        return f"({jt} IN ('integer','real') AND {jx} {sql_op} ?)"
    if is_iso_date(value):
        params.append(_time_value(value))
        return f"({jt} = 'text' AND {_stored_date(jx)} AND julianday({jx}) {sql_op} julianday(?))"
    params.append(value)
    return f"({jt} = 'text' AND {jx} {sql_op} ?)"
