"""SQL as data: every statement the stores run is a named query in a `.sql` file.

A file is a sequence of blocks, each opened by `-- name: <name>` (a statement) or
`-- fragment: <name>` (a piece of one); a block runs to the next such line. Comment lines
right under the name are for the file's reader and are not sent.

The rules' statements (`store/relational.py`) are written once, in `queries/common.sql`, with
`:name` parameters. Where the dialects say one thing two ways, the statement names a fragment
that each dialect's file defines — `{{for_update}}` (PostgreSQL locks the rows it reads,
SQLite's one writer needs nothing), `{{in:ids}}` (a list parameter: `= ANY(…)` or
`IN (SELECT value FROM json_each(…))`), `{{org}}` (SQLite keeps its planner off the org's
index with `+org_id`). A statement only one dialect has lives in `queries/<dialect>_only.sql`.
tests/test_store_sql.py checks that both dialects resolve the same statements and fragments.

`{{where}}`, `{{after}}` and a few more are filled at run time by `Queries.get(name, slot=…)`,
with fragments the store builds (a compiled filter whose values are all bound parameters);
nothing a client sends is ever spliced into the text.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- (name|fragment): (\w+)\s*$", re.M)
_SLOT = re.compile(r"\{\{(\w+)(?::([\w.]+))?\}\}")  # {{name}} or {{name:argument}}; an argument may be table.column
# `:name` outside string literals and {{slots}}; not `::type` casts
_NAMED = re.compile(r"'(?:[^']|'')*'|\{\{[^}]*\}\}|(?<![:\w]):([A-Za-z_]\w*)")


class Queries:
    """The statements of one dialect, with their fragments resolved."""

    def __init__(self, statements: dict[str, str], source: str) -> None:
        self._sql = statements
        self.source = source

    def names(self) -> frozenset[str]:
        return frozenset(self._sql)

    def get(self, name: str, **slots: str) -> str:
        """The statement's text, with its run-time `{{slot}}`s filled (every one must be given)."""
        sql = self._sql[name]
        if not slots and "{{" not in sql:
            return sql
        missing = {m.group(1) for m in _SLOT.finditer(sql)} - set(slots)
        if missing:
            raise KeyError(f"{self.source}: query {name!r} needs {', '.join(sorted(missing))}")
        return _SLOT.sub(lambda m: slots[m.group(1)], sql)

    def __contains__(self, name: object) -> bool:
        return name in self._sql


def parse(text: str, source: str = "<sql>") -> tuple[dict[str, str], dict[str, str]]:
    """(statements, fragments) of one file."""
    parts = _HEADER.split(text)
    statements: dict[str, str] = {}
    fragments: dict[str, str] = {}
    for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        into = statements if kind == "name" else fragments
        if name in into:
            raise ValueError(f"{source}: {kind} {name!r} is defined twice")
        into[name] = _without_leading_comments(body)
    return statements, fragments


def _without_leading_comments(body: str) -> str:
    """The block as it is sent: comment lines above it (its explanation) and after it (the
    next section's banner) are for the file's reader."""
    lines = body.strip().splitlines()
    while lines and (lines[0].lstrip().startswith("--") or not lines[0].strip()):
        lines.pop(0)
    while lines and (lines[-1].lstrip().startswith("--") or not lines[-1].strip()):
        lines.pop()
    return "\n".join(lines).strip()


def to_pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (a literal `%` doubled)."""
    sql = sql.replace("%", "%%")
    return _NAMED.sub(lambda m: f"%({m.group(1)})s" if m.group(1) else m.group(0), sql)


def _resolve(sql: str, fragments: dict[str, str], runtime: frozenset[str], where: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name in runtime and arg is None:
            return match.group(0)  # filled per call by Queries.get
        if name not in fragments:
            raise KeyError(f"{where}: no fragment {name!r}")
        body = fragments[name]
        body = body.replace("{}", arg) if arg is not None else body
        return _resolve(body, fragments, runtime, where)  # a fragment may name fragments of its own

    return _SLOT.sub(fill, sql)


# Slots the store fills per call; every other {{slot}} is a fragment, resolved at load.
RUNTIME_SLOTS = frozenset({"where", "after", "direction", "cmp", "n", "columns", "dim"})


@cache
def rules(dialect: str) -> Queries:
    """The rules' statements for `dialect` ("sqlite" or "postgres"): queries/common.sql with
    the dialect's fragments (queries/<dialect>.sql)."""
    common, common_fragments = parse(_read("common.sql"), "queries/common.sql")
    own, fragments = parse(_read(f"{dialect}.sql"), f"queries/{dialect}.sql")
    if own:
        raise ValueError(f"queries/{dialect}.sql holds fragments only; statements go in common.sql or "
                         f"{dialect}_only.sql ({', '.join(sorted(own))})")
    style = (lambda s: s) if dialect == "sqlite" else to_pyformat
    fragments = {**{name: style(body) for name, body in common_fragments.items()}, **fragments}
    resolved = {name: _resolve(style(sql), fragments, RUNTIME_SLOTS, f"common.sql:{name}")
                for name, sql in common.items()}
    return Queries(resolved, f"queries/common.sql ({dialect})")


@cache
def load(filename: str) -> Queries:
    """A file of a dialect's own statements (`queries/<dialect>_only.sql`), as written."""
    statements, fragments = parse(_read(filename), f"queries/{filename}")
    if fragments:
        raise ValueError(f"queries/{filename}: fragments belong in the dialect's rule file")
    return Queries(statements, f"queries/{filename}")


def _read(filename: str) -> str:
    return resources.files("engram.store").joinpath("queries").joinpath(filename).read_text(encoding="utf-8")


class Params(dict[str, object]):
    """The named parameters of one statement. `add` binds a value under a fresh name and
    returns its placeholder in the dialect's style, for fragments built at run time (filters)."""

    def __init__(self, style: str, /, **named: object) -> None:
        super().__init__(named)
        self._placeholder = ":{}" if style == "sqlite" else "%({})s"
        self._next = 0

    def add(self, value: object) -> str:
        name = f"p{self._next}"
        self._next += 1
        self[name] = value
        return self._placeholder.format(name)
