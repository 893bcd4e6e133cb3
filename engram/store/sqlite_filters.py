"""Compile the filter AST to a SQLite boolean expression over the `memories` table (alias m).

Every comparison is wrapped in COALESCE(…, 0) so that NULLs never leak three-valued logic
into NOT and OR: a clause is either true or false for every row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from engram.domain.filters import CORE_FIELDS, TIME_FIELDS, And, Cmp, Node, Not, Or
from engram.domain.records import iso
from engram.errors import ServiceError


def compile_filter(node: Node, params: list[Any]) -> str:
    if isinstance(node, And):
        if not node.clauses:
            return "1"
        return "(" + " AND ".join(compile_filter(c, params) for c in node.clauses) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(compile_filter(c, params) for c in node.clauses) + ")"
    if isinstance(node, Not):
        return "(NOT " + compile_filter(node.clause, params) + ")"
    expr = _core(node, params) if node.field in CORE_FIELDS else _meta(node, params)
    return f"COALESCE(({expr}), 0)"


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
        params.extend(conv(v) for v in value)
        return f"{col} BETWEEN ? AND ?"
    if op in ("gt", "gte", "lt", "lte") and node.field not in TIME_FIELDS and not isinstance(value, str):
        return "0"  # a number never orders against a text column
    params.append(conv(value))
    return f"{col} {_SQL_OPS[op]} ?"


def _path(key: str) -> str:
    if '"' in key or "\\" in key:
        raise ServiceError("invalid_filter", f"metadata key {key!r}: quotes and backslashes are not filterable")
    return f'$."{key}"'


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _typed_eq(jt: str, jx: str, value: Any, params: list[Any]) -> str:
    """Equality that respects JSON types: 1 never equals "1" or true."""
    if isinstance(value, bool):
        return f"{jt} = '{'true' if value else 'false'}'"
    params.append(value)
    if isinstance(value, (int, float)):
        return f"({jt} IN ('integer','real') AND {jx} = ?)"
    return f"({jt} = 'text' AND {jx} = ?)"


def _meta(node: Cmp, params: list[Any]) -> str:
    path = _path(node.field)
    jt = f"json_type(m.metadata, '{path}')"
    jx = f"json_extract(m.metadata, '{path}')"
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


def _ordered(jt: str, jx: str, op: str, value: Any, params: list[Any]) -> str:
    """Numbers compare as numbers, ISO dates as instants, other strings as text."""
    sql_op = _SQL_OPS[op]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        params.append(value)
        return f"({jt} IN ('integer','real') AND {jx} {sql_op} ?)"
    if _is_date(value):
        params.append(_time_value(value))
        return f"({jt} = 'text' AND julianday({jx}) IS NOT NULL AND julianday({jx}) {sql_op} julianday(?))"
    params.append(value)
    return f"({jt} = 'text' AND {jx} {sql_op} ?)"
