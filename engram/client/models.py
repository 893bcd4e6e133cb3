"""Typed request and response models of both API families.

Responses are parsed leniently: fields the server adds later are kept (`extra="allow"`,
read them as attributes or via `model_extra`) instead of breaking old clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ArtifactDetails",
    "EpisodeDetails",
    "Event",
    "FactDetails",
    "Health",
    "IngestJob",
    "IngestResponse",
    "IngestResult",
    "JobError",
    "Memory",
    "MemoryRef",
    "Message",
    "SearchExtras",
    "SearchResponse",
    "SearchResult",
    "SearchResults",
    "SourceEvent",
    "StatusResponse",
]

MemoryType = Literal["fact", "artifact", "episode"]
JobStatus = Literal["pending", "running", "succeeded", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ---------------------------------------------------------------------------- family X: input
class Message(_Model):
    """One chat turn to ingest (family X). Plain dicts with the same keys work as well."""

    role: str
    content: str
    name: str | None = None
    date: datetime | None = None
    dia_id: str | None = None


# ---------------------------------------------------------------------------- family X: jobs
class MemoryRef(_Model):
    """A thin reference to a memory written by a job: fetch the row with `memories.get(id)`."""

    id: str
    type: MemoryType
    text: str


class IngestResult(_Model):
    object: str = "ingest_result"
    memories_created: list[MemoryRef] = Field(default_factory=list)
    memories_updated: list[MemoryRef] = Field(default_factory=list)
    memories_superseded_by: dict[str, str] = Field(default_factory=dict)
    stage_timings: dict[str, float] = Field(default_factory=dict)
    ignored_group_ids: list[str] = Field(default_factory=list)  # named groups that were unknown or archived


class JobError(_Model):
    type: str
    code: str
    message: str


class IngestJob(_Model):
    """A background ingest job: `pending → running → succeeded | failed`."""

    object: str = "ingest_job"
    id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    result: IngestResult | None = None
    error: JobError | None = None

    @property
    def is_done(self) -> bool:
        """True once the job is terminal (succeeded or failed)."""
        return self.status in ("succeeded", "failed")


# ---------------------------------------------------------------------------- family X: memories
class SourceEvent(_Model):
    """A turn a memory came from (search with `include=["source_events"]`)."""

    event_id: str
    role: str | None = None
    name: str | None = None
    content: str
    date: datetime | None = None
    dia_id: str | None = None


class _Details(_Model):
    source_events: list[SourceEvent] | None = None


class FactDetails(_Details):
    fact_type: str | None = None
    status: str | None = None
    supersedes: str | None = None
    source_role: str | None = None
    episode_id: str | None = None
    artifact_ids: list[str] = Field(default_factory=list)
    source_event_ids: list[str] = Field(default_factory=list)
    valid_at: datetime | None = None


class ArtifactDetails(_Details):
    title: str | None = None
    rationale: str | None = None
    version: int | None = None
    root_id: str | None = None
    source_fact_ids: list[str] = Field(default_factory=list)
    episode_ids: list[str] = Field(default_factory=list)
    full_content: str | None = None


class EpisodeDetails(_Details):
    title: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    fact_ids: list[str] = Field(default_factory=list)
    artifact_ids: list[str] = Field(default_factory=list)


_DETAILS_BY_TYPE: dict[str, type[_Details]] = {"fact": FactDetails, "artifact": ArtifactDetails,
                                               "episode": EpisodeDetails}


class Memory(_Model):
    """A memory row. `details` is `FactDetails`, `ArtifactDetails` or `EpisodeDetails` by `type`."""

    id: str
    object: str = "memory"
    type: MemoryType
    text: str
    user_id: str | None = None
    agent_id: str | None = None
    conv_id: str | None = None
    app_id: str | None = None
    group_ids: list[str] = Field(default_factory=list)  # the groups it is shared with
    metadata: dict[str, Any] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    score: float | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    details: FactDetails | ArtifactDetails | EpisodeDetails | None = None

    @model_validator(mode="before")
    @classmethod
    def _details_by_type(cls, data: Any) -> Any:
        # The variant is named by the row's own `type`, not guessed from the details' keys.
        if isinstance(data, dict) and isinstance(data.get("details"), dict):
            variant = _DETAILS_BY_TYPE.get(data.get("type", ""))
            if variant is not None:
                data = {**data, "details": variant.model_validate(data["details"])}
        return data


class SearchExtras(_Model):
    context_prompt: str | None = None
    stage_timings: dict[str, float] = Field(default_factory=dict)


class SearchResults(_Model):
    """One page of family-X search results, best first; `next_cursor` fetches the next page."""

    object: str = "list"
    data: list[Memory] = Field(default_factory=list)
    has_more: bool = False
    next_cursor: str | None = None
    extras: SearchExtras | None = None


class MemoryPage(_Model):
    object: str = "list"
    data: list[Memory] = Field(default_factory=list)
    has_more: bool = False
    next_cursor: str | None = None


# ---------------------------------------------------------------------------- family M
class Event(_Model):
    """One event to ingest (family M). Plain dicts with the same keys work as well.

    `metadata` may be a dict (sent as its JSON text) or a JSON string. `event_id` is an
    idempotency key with no time limit; the client fills one in when you give none, so that
    a retried call never stores an event twice.
    """

    actor_id: str
    session_id: str
    kind: str  # user_message | assistant_message | tool_result | app_event (the server checks)
    content: str
    ts: datetime | None = None
    metadata: dict[str, Any] | str | None = None
    role_id: str | None = None
    team_id: str | None = None
    event_id: str | None = None


class IngestResponse(_Model):
    """The ids of the ingested events, in input order (a repeat gets the original id)."""

    event_ids: list[str]


class StatusResponse(_Model):
    """The ids you asked about, partitioned by processing state."""

    completed_ids: list[str] = Field(default_factory=list, validation_alias=AliasChoices("completedIds", "completed_ids"))
    pending_ids: list[str] = Field(default_factory=list, validation_alias=AliasChoices("pendingIds", "pending_ids"))
    failed_ids: list[str] = Field(default_factory=list, validation_alias=AliasChoices("failedIds", "failed_ids"))
    total: int = 0
    statuses: dict[str, str] = Field(default_factory=dict)
    reasons: dict[str, Any] = Field(default_factory=dict)


class SearchResult(_Model):
    id: str
    content: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(_Model):
    results: list[SearchResult] = Field(default_factory=list)


class Health(_Model):
    status: str
    version: str | None = None
    components: dict[str, Any] = Field(default_factory=dict)
