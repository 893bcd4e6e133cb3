"""The web console's reads (engram/console/), written once over a SQL dialect: pages of an
org's users, a user's conversations and the org's jobs, each by a keyset (the last key of
the page before), never by OFFSET — a page costs its own rows whatever the org's size.

A mixin of `RelationalStore` (store/relational.py); the statements are in
`queries/common.sql` ("the web console").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from engram.domain.records import Job
from engram.store import codec

if TYPE_CHECKING:
    from engram.store.dialect import Dialect

# Larger than any arrival number a jobs table can hold: "before the end" on the first page.
NO_JOB_YET = 2**62


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    memories: int
    active: int


@dataclass(frozen=True, slots=True)
class ConversationRow:
    conv_id: str
    memories: int
    active: int
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobRow:
    seq: int  # arrival number: the jobs page's key
    job: Job


class ConsoleReads:
    dialect: "Dialect"
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]

    def console_users(self, org_id: str, after: str, limit: int) -> list[UserRow]:
        """Up to `limit` users with memories whose id sorts after `after` ("" for the first page)."""
        rows = self._all("console_users", org_id=org_id, after=after, limit=limit)
        return [UserRow(r["user_id"], int(r["memories"]), int(r["active"])) for r in rows]

    def console_conversations(self, org_id: str, user_id: str, after: str, limit: int) -> list[ConversationRow]:
        rows = self._all("console_conversations", org_id=org_id, user_id=user_id, after=after, limit=limit)
        return [ConversationRow(r["conv_id"], int(r["memories"]), int(r["active"]),
                                codec.time_value(r["last_at"]))
                for r in rows]

    def console_jobs(self, org_id: str, status: str | None, before: int | None, limit: int) -> list[JobRow]:
        """Up to `limit` jobs, newest first, that arrived before job number `before`."""
        named = {"org_id": org_id, "before": NO_JOB_YET if before is None else before, "limit": limit}
        if status is None:
            rows = self._all("console_jobs", **named)
        else:
            rows = self._all("console_jobs_of_status", status=status, **named)
        return [JobRow(int(r["seq"]), codec.job(r)) for r in rows]

    def console_job_counts(self, org_id: str) -> dict[str, int]:
        return {r["status"]: int(r["n"]) for r in self._all("console_jobs_by_status", org_id=org_id)}
