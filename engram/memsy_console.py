"""memsy's console reads over engram's memories and events: the filters its clients send, checked
and mapped onto the store's columns (docs/design.md, "Console reads"). The wire shapes are
engram/api/console.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engram.config import Settings
from engram.domain.records import Event, Memory
from engram.domain.validation import FieldChecks
from engram.errors import ServiceError
from engram.store.base import Store
from engram.store.memsy_console import ACTOR_SORTS, ActorRow, TypeStatusCount

# engram's memory types as memsy's memory kinds: a fact is what someone knows (semantic), an
# episode what happened in a conversation (episodic); an artifact (a document or code kept
# verbatim) has no memsy kind and keeps its own name.
MEMORY_KIND = {"fact": "semantic", "episode": "episodic", "artifact": "artifact"}
TYPE_OF_KIND = {kind: type_ for type_, kind in MEMORY_KIND.items()}
STATUSES = ("active", "superseded", "retracted")
# Every memory has the same confidence and strength (engram models neither), so sorting by them
# is sorting by the tie-break alone: newest first.
MEMORY_SORTS = {"observed_at_desc": False, "observed_at_asc": True, "created_at_desc": False,
                "strength_desc": False, "confidence_desc": False}
EVENT_SORTS = {"ts_desc": False, "ts_asc": True}


@dataclass(slots=True)
class MemoryStats:
    by_type: dict[str, int]
    by_kind: dict[str, int]
    by_status: dict[str, int]
    total: int
    active: int
    first_at: Any
    last_at: Any


class Console:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def _check(self) -> FieldChecks:
        return FieldChecks(self.settings.limits)

    @staticmethod
    def _one_of(check: FieldChecks, name: str, value: str | None, allowed: Any) -> None:
        if value is not None and value not in allowed:
            check.fail(("query", name), f"{name} must be one of {', '.join(allowed)}", "enum")

    def memories(self, org_id: str, *, actor_id: str | None, kind: str | None, type: str | None,
                 status: str | None, sort: str, search: str | None, limit: int,
                 offset: int) -> tuple[list[Memory], int]:
        """One page of the org's memories: `kind` (memsy's memory kind) and `type` both name
        engram's type; `status` defaults to active; `search` is a substring of the text."""
        check = self._check()
        check.id(("query", "actor_id"), actor_id)
        self._one_of(check, "kind", kind, list(TYPE_OF_KIND))
        self._one_of(check, "type", type, list(MEMORY_KIND))
        self._one_of(check, "status", status, STATUSES)
        self._one_of(check, "sort", sort, list(MEMORY_SORTS))
        if search is not None:
            check.label(("query", "search"), search)
            if len(search) > self.settings.limits.max_query_chars:
                check.fail(("query", "search"), f"longer than {self.settings.limits.max_query_chars} characters",
                           "string_too_long")
        check.raise_if_any()
        wanted = {t for t in (type, TYPE_OF_KIND.get(kind or "")) if t}
        if len(wanted) > 1:  # a kind and a type that name different types: nothing is both
            return [], 0
        return self.store.console_memories(org_id, status=status or "active", user_id=actor_id,
                                           type=next(iter(wanted), None), search=search or None,
                                           ascending=MEMORY_SORTS[sort], limit=limit, offset=offset)

    def memory(self, org_id: str, memory_id: str) -> Memory:
        check = self._check()
        check.id(("path", "memory_id"), memory_id)
        memory = self.store.get_memory(org_id, memory_id) if not check.errors else None
        if memory is None:
            raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org")
        return memory

    def stats(self, org_id: str) -> MemoryStats:
        rows: list[TypeStatusCount] = self.store.console_memory_stats(org_id)
        by_type: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for r in rows:
            by_type[r.type] = by_type.get(r.type, 0) + r.count
            kind = MEMORY_KIND.get(r.type, r.type)
            by_kind[kind] = by_kind.get(kind, 0) + r.count
            by_status[r.status] = by_status.get(r.status, 0) + r.count
        return MemoryStats(by_type, by_kind, by_status, sum(r.count for r in rows), by_status.get("active", 0),
                           min((r.first_at for r in rows), default=None), max((r.last_at for r in rows), default=None))

    def actors(self, org_id: str, *, sort: str, q: str | None, limit: int, offset: int) -> tuple[list[ActorRow], int]:
        check = self._check()
        self._one_of(check, "sort", sort, ACTOR_SORTS)
        check.label(("query", "q"), q)
        check.raise_if_any()
        return self.store.actors(org_id, sort=sort, search=q or None, limit=limit, offset=offset)

    def actor(self, org_id: str, actor_id: str) -> ActorRow:
        check = self._check()
        check.id(("path", "actor_id"), actor_id)
        found = self.store.actor(org_id, actor_id) if not check.errors else None
        if found is None:
            raise ServiceError("not_found", f"no actor {actor_id!r} with memories in this org")
        return found

    def events(self, org_id: str, *, actor_id: str | None, session_id: str | None, kind: str | None, sort: str,
               limit: int, offset: int) -> tuple[list[Event], int]:
        check = self._check()
        check.id(("query", "actor_id"), actor_id)
        check.id(("query", "session_id"), session_id)
        check.label(("query", "kind"), kind)
        self._one_of(check, "sort", sort, list(EVENT_SORTS))
        check.raise_if_any()
        return self.store.console_events(org_id, user_id=actor_id, conv_id=session_id, kind=kind,
                                         ascending=EVENT_SORTS[sort], limit=limit, offset=offset)
