"""Every endpoint the client calls, as an `Operation`: path, body, parser, idempotency.

Both faces build their requests here, so a wire detail is written once.
"""

from __future__ import annotations

import json as _json
import uuid
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from engram.client._core import Operation
from engram.client.models import (
    Event,
    Health,
    IngestJob,
    IngestResponse,
    Memory,
    MemoryPage,
    Message,
    SearchResponse,
    SearchResults,
    StatusResponse,
)

MAX_STATUS_IDS = 500  # the server's default per-call limit; larger requests are split


def _seg(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _model(cls: type[BaseModel]):  # type: ignore[no-untyped-def]
    return lambda response: cls.model_validate(response.json())


def _none(response: httpx.Response) -> None:
    return None


def _dump(item: BaseModel | Mapping[str, Any], cls: type[BaseModel]) -> dict[str, Any]:
    """A dict or a model, validated as `cls` and turned into JSON-ready data (unset fields omitted)."""
    model = item if isinstance(item, cls) else cls.model_validate(dict(item))
    return model.model_dump(mode="json", exclude_none=True)


def new_idempotency_key() -> str:
    return f"engram-py-{uuid.uuid4().hex}"


def new_event_id() -> str:
    return f"evt-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------- family X
def ingest_messages(messages: Sequence[Message | Mapping[str, Any]], *, user_id: str, conv_id: str,
                    agent_id: str | None, app_id: str | None, metadata: Mapping[str, Any] | None,
                    extract_artifacts: bool, wait: bool, idempotency_key: str | None,
                    group_ids: Sequence[str] | None = None) -> Operation[IngestJob]:
    if isinstance(messages, (str, bytes)) or isinstance(messages, Mapping):
        raise TypeError("messages must be a list of {role, content} dicts or Message objects")
    body: dict[str, Any] = {"messages": [_dump(m, Message) for m in messages], "user_id": user_id,
                            "conv_id": conv_id, "extract_artifacts": extract_artifacts}
    if agent_id is not None:
        body["agent_id"] = agent_id
    if app_id is not None:
        body["app_id"] = app_id
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if group_ids:  # the groups its new memories may join (docs/design.md, "Groups")
        body["group_ids"] = list(group_ids)
    # The key is fixed before the first attempt, so every retry of this call names the same job.
    headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
    return Operation("POST", "/v1/memories", _model(IngestJob), params={"wait": "true"} if wait else None,
                     json=body, headers=headers, idempotent=True)


def get_job(job_id: str) -> Operation[IngestJob]:
    return Operation("GET", f"/v1/memories/jobs/{_seg(job_id)}", _model(IngestJob))


def get_memory(memory_id: str) -> Operation[Memory]:
    return Operation("GET", f"/v1/memories/{_seg(memory_id)}", _model(Memory))


def list_memories(*, user_id: str | None, agent_id: str | None, conv_id: str | None, app_id: str | None,
                  type: str | None, order: str, page_size: int, include: Iterable[str] | str | None,
                  cursor: str | None) -> Operation[MemoryPage]:
    params = {"user_id": user_id, "agent_id": agent_id, "conv_id": conv_id, "app_id": app_id, "type": type,
              "order": order, "limit": page_size, "cursor": cursor, "include": _csv(include)}
    return Operation("GET", "/v1/memories", _model(MemoryPage), params=params)


def search_memories(query: str, *, filters: Mapping[str, Any] | None, limit: int | None, cursor: str | None,
                    include: Iterable[str] | str | None) -> Operation[SearchResults]:
    body: dict[str, Any] = {"query": query}
    if filters is not None:
        body["filters"] = dict(filters)
    if limit is not None:
        body["limit"] = limit
    if cursor is not None:
        body["cursor"] = cursor
    if include:
        body["include"] = [include] if isinstance(include, str) else list(include)
    return Operation("POST", "/v1/memories/search", _model(SearchResults), json=body)


def update_memory(memory_id: str, *, text: str | None, metadata: Mapping[str, Any] | None) -> Operation[Memory]:
    body: dict[str, Any] = {}
    if text is not None:
        body["text"] = text
    if metadata is not None:
        body["metadata"] = dict(metadata)
    # Not idempotent: a text update supersedes the fact, and a second one would find it superseded.
    return Operation("PATCH", f"/v1/memories/{_seg(memory_id)}", _model(Memory), json=body, idempotent=False)


def delete_memory(memory_id: str) -> Operation[None]:
    # A second delete is 404, so a lost answer must not be "retried" into a misleading error.
    return Operation("DELETE", f"/v1/memories/{_seg(memory_id)}", _none, idempotent=False)


def _revisions(response: httpx.Response) -> list[Memory]:
    body = response.json()
    rows = body.get("data", []) if isinstance(body, dict) else body
    return [Memory.model_validate(row) for row in rows]


def memory_revisions(memory_id: str) -> Operation[list[Memory]]:
    return Operation("GET", f"/v1/memories/{_seg(memory_id)}/revisions", _revisions)


def _csv(value: Iterable[str] | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return ",".join(value) or None


# ---------------------------------------------------------------------------- family M
def ingest_events(events: Sequence[Event | Mapping[str, Any]]) -> Operation[IngestResponse]:
    if isinstance(events, (str, bytes)) or isinstance(events, Mapping):
        raise TypeError("events must be a list of event dicts or Event objects")
    wire = []
    for item in events:
        event = _dump(item, Event)
        if isinstance(event.get("metadata"), dict):
            event["metadata"] = _json.dumps(event["metadata"], ensure_ascii=False)  # the wire carries a JSON string
        # An event id is the server's idempotency key (no time limit): with one on every event,
        # a retry after a lost answer returns the same ids instead of storing the events twice.
        event.setdefault("event_id", new_event_id())
        wire.append(event)
    return Operation("POST", "/v1/ingest", _model(IngestResponse), json={"events": wire}, idempotent=True)


def event_status(event_ids: Sequence[str]) -> Operation[StatusResponse]:
    return Operation("POST", "/v1/status", _model(StatusResponse), json={"event_ids": list(event_ids)})


def status_chunks(event_ids: Sequence[str] | str) -> list[list[str]]:
    if isinstance(event_ids, str):
        event_ids = [event_ids]
    ids = list(event_ids)
    return [ids[i:i + MAX_STATUS_IDS] for i in range(0, len(ids), MAX_STATUS_IDS)] or [[]]


def merge_status(parts: list[StatusResponse]) -> StatusResponse:
    if len(parts) == 1:
        return parts[0]
    merged = StatusResponse()
    for part in parts:
        merged.completed_ids += part.completed_ids
        merged.pending_ids += part.pending_ids
        merged.failed_ids += part.failed_ids
        merged.total += part.total
        merged.statuses.update(part.statuses)
        merged.reasons.update(part.reasons)
    return merged


def search_events(query: str, *, actor_id: str | None, session_id: str | None, exclude_session_id: str | None,
                  limit: int, threshold: float, include_source_events: bool) -> Operation[SearchResponse]:
    body: dict[str, Any] = {"query": query, "limit": limit, "threshold": threshold,
                            "include_source_events": include_source_events}
    for name, value in (("actor_id", actor_id), ("session_id", session_id),
                        ("exclude_session_id", exclude_session_id)):
        if value is not None:
            body[name] = value
    return Operation("POST", "/v1/search", _model(SearchResponse), json=body)


def health() -> Operation[Health]:
    return Operation("GET", "/v1/health", _model(Health))
