"""The console's reads, written once over a SQL dialect (a mixin of RelationalStore): an org's
memories and events a page at a time (LIMIT/OFFSET and the count, both in SQL), aggregate
statistics, and actors — derived from the memories on every read, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engram.domain.records import Event, Memory
from engram.store import codec

if TYPE_CHECKING:
    from engram.store.dialect import Dialect

ACTOR_SORTS = ("first_memory_desc", "first_memory_asc", "last_memory_desc", "actor_id_asc")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def contains(text: str | None) -> str | None:
    """A LIKE pattern for "contains `text`": ASCII letters in lower case (the statements lower
    the column the same way, queries/<dialect>.sql `ascii_lower`), `%`, `_` and `\\` escaped."""
    if text is None:
        return None
    escaped = text.translate(_ASCII_LOWER).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class TypeStatusCount:
    type: str
    status: str
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True, slots=True)
class ActorRow:
    user_id: str
    first_memory_at: datetime
    last_memory_at: datetime
    memory_count: int
    active_memory_count: int
    role_ids: tuple[str, ...] = ()
    team_ids: tuple[str, ...] = ()


class MemsyConsoleRules:
    dialect: "Dialect"
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]

    def console_memories(self, org_id: str, *, status: str, user_id: str | None = None, type: str | None = None,
                         search: str | None = None, ascending: bool = False, limit: int,
                         offset: int) -> tuple[list[Memory], int]:
        """One page of the org's memories of one status (newest first unless `ascending`, the id
        breaking ties), and how many match in all. `search` matches a substring of the text."""
        named = {"org_id": org_id, "status": status, "user_id": user_id, "type": type, "pattern": contains(search)}
        sql = self.dialect.queries.get("console_memories", direction="ASC" if ascending else "DESC")
        with self.dialect.reader() as tx:
            rows = tx.sql(sql, {**named, "limit": limit, "offset": offset})
            total = int(tx.one("count_console_memories", named)["n"])
        return [codec.memory(r) for r in rows], total

    def console_memory_stats(self, org_id: str) -> list[TypeStatusCount]:
        return [TypeStatusCount(r["type"], r["status"], int(r["n"]), codec.time_value(r["first_at"]),  # type: ignore[arg-type]
                                codec.time_value(r["last_at"]))  # type: ignore[arg-type]
                for r in self._all("console_memory_stats", org_id=org_id)]

    def actors(self, org_id: str, *, sort: str, limit: int, offset: int,
               search: str | None = None) -> tuple[list[ActorRow], int]:
        """One page of the org's actors (users with memories), and how many there are in all."""
        if sort not in ACTOR_SORTS:
            raise ValueError(f"unknown actor sort {sort!r}")
        named = {"org_id": org_id, "pattern": contains(search), "user_id": None}
        with self.dialect.reader() as tx:
            rows = tx.all(f"actors_{sort}", {**named, "limit": limit, "offset": offset})
            total = int(tx.one("count_actors", named)["n"])
        return self._with_scopes(org_id, rows), total

    def actor(self, org_id: str, user_id: str) -> ActorRow | None:
        rows = self._all("actors_actor_id_asc", org_id=org_id, pattern=None, user_id=user_id, limit=1, offset=0)
        found = self._with_scopes(org_id, rows)
        return found[0] if found else None

    def _with_scopes(self, org_id: str, rows: Sequence[Any]) -> list[ActorRow]:
        users = [r["user_id"] for r in rows]
        roles: dict[str, set[str]] = {u: set() for u in users}
        teams: dict[str, set[str]] = {u: set() for u in users}
        if users:
            for r in self._all("actor_scopes", org_id=org_id, user_ids=self.dialect.array(users)):
                if isinstance(r["role_id"], str):
                    roles[r["user_id"]].add(r["role_id"])
                if isinstance(r["team_id"], str):
                    teams[r["user_id"]].add(r["team_id"])
        return [ActorRow(r["user_id"], codec.time_value(r["first_at"]), codec.time_value(r["last_at"]),  # type: ignore[arg-type]
                         int(r["n"]), int(r["active"]), tuple(sorted(roles[r["user_id"]])),
                         tuple(sorted(teams[r["user_id"]])))
                for r in rows]

    def console_events(self, org_id: str, *, user_id: str | None = None, conv_id: str | None = None,
                       kind: str | None = None, ascending: bool = False, limit: int,
                       offset: int) -> tuple[list[Event], int]:
        """One page of the org's events by when they happened (newest first unless `ascending`),
        and how many match in all."""
        named = {"org_id": org_id, "user_id": user_id, "conv_id": conv_id, "kind": kind}
        sql = self.dialect.queries.get("console_events", direction="ASC" if ascending else "DESC")
        with self.dialect.reader() as tx:
            rows = tx.sql(sql, {**named, "limit": limit, "offset": offset})
            total = int(tx.one("count_console_events", named)["n"])
        return [codec.event(r) for r in rows], total
