"""What the console's pages show, read through the service and the store: the rules of the
pages (which rows, in which order, which cursor comes next), apart from their HTML.

Every list is a keyset page: the cursor carries the last key of the page before (a user id,
a conversation id, a job's arrival number, or the memory list's `(created_at, id)`), signed by
the server (`domain/cursors.py`) and bound to the org and the listing, so a page costs its own
rows at any size of the org and a cursor cannot be edited or carried to another listing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generic, Sequence, TypeVar

from engram import usage
from engram.auth import Principal
from engram.domain.cursors import Cursors, query_scope
from engram.domain.filters import MATCH_ALL, Cmp, conjoin, parse_filter
from engram.domain.inputs import SearchQuery
from engram.domain.records import ApiKey, Event, Job, Memory
from engram.errors import ServiceError
from engram.service import SearchResults, Service
from engram.store.console import ConversationRow, UserRow

T = TypeVar("T")

PAGE_SIZE = 50
MEMORY_STATUSES = ("active", "superseded", "retracted")
MEMORY_TYPES = ("fact", "episode", "artifact")
JOB_STATUSES = ("pending", "running", "succeeded", "failed")
SEARCH_LIMITS = (5, 10, 20, 50)


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(slots=True)
class MemoryView:
    memory: Memory
    revisions: list[Memory]  # oldest first; the memory itself alone when never revised
    sources: list[Event]  # the turns it was taken from, in the memory's order
    groups: list[str]
    successor: Memory | None = None


@dataclass(slots=True)
class SearchForm:
    """The playground's inputs as typed (shown back in the form) and what they became."""

    query: str = ""
    user_id: str = ""
    filters: str = ""
    limit: int = 10
    results: SearchResults | None = None
    memories_by_id: dict[str, Memory] = field(default_factory=dict)


def _one_of(name: str, value: str | None, allowed: Sequence[str]) -> str | None:
    if value in (None, ""):
        return None
    if value not in allowed:
        raise ServiceError("validation_error", f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    return value


class ConsoleReads:
    def __init__(self, service: Service) -> None:
        self.svc = service
        self.store = service.store
        self._cursors = Cursors(service.store.server_secret())

    # ------------------------------------------------------------------ users and conversations
    def users(self, org_id: str, cursor: str | None) -> Page[UserRow]:
        scope = query_scope("console-users")
        after = self._cursors.decode(cursor, org_id, scope, _is_text) if cursor else ""
        rows = self.store.console_users(org_id, after, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page(rows, self._cursors.encode(org_id, scope, rows[-1].user_id) if more else None)

    def conversations(self, org_id: str, user_id: str, cursor: str | None) -> Page[ConversationRow]:
        self._check_id("user_id", user_id)
        scope = query_scope("console-conversations", user_id)
        after = self._cursors.decode(cursor, org_id, scope, _is_text) if cursor else ""
        rows = self.store.console_conversations(org_id, user_id, after, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page(rows, self._cursors.encode(org_id, scope, rows[-1].conv_id) if more else None)

    # ------------------------------------------------------------------ memories
    def memories(self, org_id: str, *, user_id: str | None, conv_id: str | None, status: str | None,
                 type_: str | None, cursor: str | None) -> Page[Memory]:
        """Newest first; active ones unless `status` says otherwise (as the API lists them)."""
        scope = {"user_id": user_id or None, "conv_id": conv_id or None,
                 "status": _one_of("status", status, MEMORY_STATUSES), "type": _one_of("type", type_, MEMORY_TYPES)}
        page = self.svc.list_memories(org_id, scope, ascending=False, cursor=cursor or None, limit=PAGE_SIZE)
        return Page(page.items, page.next_cursor)

    def memory(self, org_id: str, memory_id: str) -> MemoryView:
        memory = self.svc.get_memory(org_id, memory_id)
        revisions = self.svc.memory_revisions(org_id, memory_id)
        sources = self.svc.source_events(org_id, [memory])[memory.id]
        groups = self.svc.group_tags(org_id, [memory.id]).get(memory.id, [])
        at = next((i for i, m in enumerate(revisions) if m.id == memory.id), None)
        successor = revisions[at + 1] if at is not None and at + 1 < len(revisions) else None
        return MemoryView(memory, revisions, sources, groups, successor)

    # ------------------------------------------------------------------ search
    async def search(self, principal: Principal, form: SearchForm) -> SearchForm:
        """Run the playground's query as the API would (same ranking, same filters), asking
        the ranker for each hit's score parts."""
        if not form.query.strip():
            return form
        if form.limit not in SEARCH_LIMITS:
            raise ServiceError("validation_error", f"limit must be one of {', '.join(map(str, SEARCH_LIMITS))}")
        self.svc.check_scope({"user_id": form.user_id or None}, where="query")
        where = conjoin(Cmp("user_id", "eq", form.user_id) if form.user_id else MATCH_ALL,
                        parse_filter(self._filters(form.filters)))
        query = SearchQuery(text=form.query, where=where, limit=form.limit, with_source_events=True,
                            with_score_parts=True)
        form.results = await self.svc.run_search(principal.org_id, query, key_id=principal.key_id)
        return form

    @staticmethod
    def _filters(text: str) -> Any:
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ServiceError("invalid_filter", f"filters must be a JSON object: {exc}") from None

    # ------------------------------------------------------------------ jobs
    def jobs(self, org_id: str, status: str | None, cursor: str | None) -> Page[Job]:
        status = _one_of("status", status, JOB_STATUSES)
        scope = query_scope("console-jobs", status)
        before = self._cursors.decode(cursor, org_id, scope, _is_seq) if cursor else None
        rows = self.store.console_jobs(org_id, status, before, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page([r.job for r in rows], self._cursors.encode(org_id, scope, rows[-1].seq) if more else None)

    def job_counts(self, org_id: str) -> dict[str, int]:
        counts = self.store.console_job_counts(org_id)
        return {s: counts.get(s, 0) for s in JOB_STATUSES}

    def job(self, org_id: str, job_id: str) -> Job:
        return self.svc.get_job(org_id, job_id)

    # ------------------------------------------------------------------ health, usage, keys
    def health(self) -> dict[str, Any]:
        report = self.svc.health()
        report["oldest_pending_age_s"] = self.store.oldest_pending_age_s()
        return report

    def usage(self, org_id: str) -> dict[str, Any]:
        return usage.xtrace_usage(self.store, org_id, daily=True, by_api_key=True,
                                  rate_limit_per_min=self.svc.settings.rate_limit_requests_per_min)

    def keys(self, principal: Principal) -> list[ApiKey]:
        principal.require("admin")
        return self.svc.admin.list_keys(principal)

    # ------------------------------------------------------------------ admin actions
    def revoke_key(self, principal: Principal, key_id: str) -> None:
        principal.require("admin")
        self.svc.admin.revoke_key(principal, key_id)

    def erase_user(self, principal: Principal, user_id: str) -> Any:
        """What `DELETE /v1/users/{id}` does: the user's events, memories and jobs, gone."""
        principal.require("admin")
        self._check_id("user_id", user_id)
        return self.svc.lifecycle.erase_user(principal.org_id, user_id)

    def _check_id(self, name: str, value: str) -> None:
        self.svc.check_scope({name: value}, where="query")


def _is_text(position: Any) -> bool:
    return isinstance(position, str)


def _is_seq(position: Any) -> bool:
    return isinstance(position, int) and not isinstance(position, bool) and 0 < position
