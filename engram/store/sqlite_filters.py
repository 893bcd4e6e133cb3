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

from engram.domain.filters import CORE_FIELDS, GROUP_FIELD, And, Cmp, Node, Not, Or, is_iso_date
from engram.domain.records import iso
from engram.errors import ServiceError
from engram.store.filters import SQL_OPS, core_comparison, group_comparison, metadata_comparison
from engram.store.sql import Params


def compile_filter(node: Node, params: Params, *, negated: bool = False) -> str:
    """A boolean SQL expression over `memories m`; every value is bound through `params`."""
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
    if node.field == GROUP_FIELD:
        expr = group_comparison(node, params)
    else:
        expr = _core(node, params) if node.field in CORE_FIELDS else _meta(node, params)
    return f"COALESCE(({expr}), 0)" if negated else f"({expr})"


def _time_value(value: Any) -> str:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return iso(ts) or ""


def _core(node: Cmp, params: Params) -> str:
    return core_comparison(node, params, time=_time_value, false="0")


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


def _typed_eq(jt: str, jx: str, value: Any, params: Params) -> str:
    """Equality that respects JSON types: 1 never equals "1" or true."""
    if isinstance(value, bool):
        return f"{jt} = '{'true' if value else 'false'}'"
    if isinstance(value, (int, float)):
        return f"({jt} IN ('integer','real') AND {jx} = {params.add(value)})"
    return f"({jt} = 'text' AND {jx} = {params.add(value)})"


class _Key:
    """One metadata key, read with SQLite's JSON functions."""

    false = "0"

    def __init__(self, field: str, params: Params) -> None:
        self.jt = _json_of("json_type", field)
        self.jx = _json_of("json_extract", field)
        self.params = params

    def is_set(self) -> str:
        return f"({self.jt} IS NOT NULL AND {self.jt} != 'null')"

    def equals(self, value: Any) -> str:
        return _typed_eq(self.jt, self.jx, value, self.params)

    def ordered(self, op: str, value: Any) -> str:
        return _ordered(self.jt, self.jx, op, value, self.params)


def _meta(node: Cmp, params: Params) -> str:
    return metadata_comparison(node, _Key(node.field, params))


def _stored_date(jx: str) -> str:
    """Whether a metadata string is an ISO date: YYYY-MM-DD first (a real calendar day), and
    the rest as SQLite's date functions read it (time, fraction, zone). Julian day numbers
    ("12345") and impossible days ("2023-02-30") are not dates, as on PostgreSQL."""
    return (f"{jx} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
            f" AND substr({jx}, 1, 4) != '0000' AND julianday({jx}) IS NOT NULL"
            f" AND date(julianday(substr({jx}, 1, 10))) = substr({jx}, 1, 10)")


def _ordered(jt: str, jx: str, op: str, value: Any, params: Params) -> str:
    """Numbers compare as numbers, ISO dates as instants, other strings as text."""
    sql_op = SQL_OPS[op]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"({jt} IN ('integer','real') AND {jx} {sql_op} {params.add(value)})"
    if is_iso_date(value):
        at = params.add(_time_value(value))
        return f"({jt} = 'text' AND {_stored_date(jx)} AND julianday({jx}) {sql_op} julianday({at}))"
    return f"({jt} = 'text' AND {jx} {sql_op} {params.add(value)})"
