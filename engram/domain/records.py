"""The rows engram keeps, as plain data shared by the service, the pipeline and every store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

JobStatus = Literal["pending", "running", "succeeded", "failed"]
EventStatus = Literal["pending", "completed", "failed", "deleted"]
MemoryType = Literal["fact", "artifact", "episode"]
MemoryStatus = Literal["active", "superseded", "retracted"]

TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed"})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime | None) -> str | None:
    """Fixed-width ISO-8601 UTC with microseconds and `Z`: sorts as text in time order."""
    if ts is None:
        return None
    if ts.utcoffset():
        ts = ts.astimezone(timezone.utc)
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@dataclass(slots=True)
class Org:
    id: str
    name: str
    created_at: datetime
    # Its customization (memsy's onboarding record, engram/onboarding.py): None until set.
    focus: str | None = None
    promotion_prompt: str | None = None
    prompt_meta: dict[str, Any] | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """A registered group of an org (the v1.0 sharing axis): memories tagged with its id are
    read by a search that names it, whoever's they are. `prompt` None is a catch-all group."""

    org_id: str
    id: str
    name: str
    prompt: str | None
    status: str  # active | archived
    created_at: datetime
    updated_at: datetime | None


@dataclass(slots=True)
class ApiKey:
    id: str
    org_id: str
    name: str
    prefix: str  # first characters of the secret, to recognise a key in listings
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(slots=True)
class Event:
    id: str
    org_id: str
    user_id: str
    conv_id: str
    role: str  # user | assistant | tool | app
    kind: str  # family M's kind (user_message, …); derived from role for family X
    content: str
    occurred_at: datetime
    received_at: datetime
    job_id: str | None = None
    agent_id: str | None = None
    app_id: str | None = None
    name: str | None = None
    dia_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    client_event_id: str | None = None
    dedup_hash: str | None = None
    status: EventStatus = "pending"
    fail_reason: str | None = None


@dataclass(slots=True)
class JobError:
    code: str
    message: str
    type: str = "ingest_error"


@dataclass(slots=True)
class Job:
    id: str
    org_id: str
    user_id: str
    conv_id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    kind: Literal["ingest", "episode", "replay"] = "ingest"
    params: dict[str, Any] = field(default_factory=dict)  # agent_id, app_id, metadata, extract_artifacts
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: JobError | None = None


@dataclass(slots=True)
class Memory:
    id: str
    org_id: str
    type: MemoryType
    text: str
    user_id: str | None
    conv_id: str | None
    created_at: datetime
    updated_at: datetime
    agent_id: str | None = None
    app_id: str | None = None
    status: MemoryStatus = "active"
    metadata: dict[str, Any] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # type-specific, as on the wire
    key: str | None = None  # single-valued attribute key of a fact
    valid_at: datetime | None = None  # when it happened / holds (event time)
    source_event_ids: list[str] = field(default_factory=list)
    job_id: str | None = None
