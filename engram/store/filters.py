"""What both filter compilers share: a core field, a plain column of `memories m`, compared.

The metadata side differs between the dialects (SQLite's JSON functions, PostgreSQL's jsonb
operators); a column compares the same way in both: text bytewise (both use the "C"
collation or bytes), the time fields as instants, bound through the dialect's own value for
a time. A comparison the parser would never build (a number against a text column) is false.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from engram.domain.filters import TIME_FIELDS, Cmp
from engram.store.sql import Params

SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def group_comparison(node: Cmp, params: Params) -> str:
    """Membership in the memory's group tags (`memory_groups`). Group ids are random, so a
    tag names one org's group: the subquery needs no org, and its index drives a search by
    group across every user of the org."""
    op, value = node.op, node.value
    if op in ("null", "exists"):
        tagged = "EXISTS (SELECT 1 FROM memory_groups g WHERE g.org_id = m.org_id AND g.memory_id = m.id)"
        return tagged if op == "exists" and value else f"NOT {tagged}"
    values = value if op in ("in", "nin") else (value,)
    marks = ",".join(params.add(v) for v in values)
    member = f"m.id IN (SELECT g.memory_id FROM memory_groups g WHERE g.group_id IN ({marks}))"
    return member if op in ("eq", "in") else f"NOT {member}"


def core_comparison(node: Cmp, params: Params, *, time: Callable[[Any], Any], false: str) -> str:
    col = f"m.{node.field}"
    timed = node.field in TIME_FIELDS
    conv = time if timed else (lambda v: v)
    op, value = node.op, node.value
    if op == "null":
        return f"{col} IS NULL"
    if op == "exists":
        return f"{col} IS NOT NULL" if value else f"{col} IS NULL"
    if op in ("in", "nin"):
        marks = ",".join(params.add(conv(v)) for v in value)
        return f"{col} IN ({marks})" if op == "in" else f"({col} IS NULL OR {col} NOT IN ({marks}))"
    bounds = value if op == "between" else (value,)
    if not timed and not all(isinstance(v, str) for v in bounds):
        return false  # a number never compares with a text column (the parser refuses it)
    if op == "ne":
        return f"{col} IS NOT NULL AND {col} <> {params.add(conv(value))}"
    if op == "between":
        low, high = (params.add(conv(v)) for v in value)
        return f"{col} BETWEEN {low} AND {high}"
    return f"{col} {SQL_OPS[op]} {params.add(conv(value))}"


class MetadataPrimitives(Protocol):
    """How a dialect reads one metadata key; `metadata_comparison` builds every operator on it."""

    false: str  # the dialect's false literal

    def is_set(self) -> str: ...
    def equals(self, value: Any) -> str: ...
    def ordered(self, op: str, value: Any) -> str: ...


def metadata_comparison(node: Cmp, key: MetadataPrimitives) -> str:
    """The meaning of each operator on a metadata key (tests/filter_oracle.py states it):
    unset is missing or JSON null; `$ne` requires the key to be set, `$nin` lets unset pass."""
    op, value = node.op, node.value
    if op == "null":
        return f"NOT {key.is_set()}"
    if op == "exists":
        return key.is_set() if value else f"NOT {key.is_set()}"
    if op == "eq":
        return key.equals(value)
    if op == "ne":
        return f"{key.is_set()} AND NOT COALESCE({key.equals(value)}, {key.false})"
    if op in ("in", "nin"):
        any_of = " OR ".join(f"COALESCE({key.equals(v)}, {key.false})" for v in value)
        return f"({any_of})" if op == "in" else f"NOT ({any_of})"
    if op == "between":
        low, high = value
        return f"({key.ordered('gte', low)} AND {key.ordered('lte', high)})"
    return key.ordered(op, value)
