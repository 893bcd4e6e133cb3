"""Family X: the messages/jobs API under /v1/memories (SPEC §3).

Only wire shapes live here: requests become core inputs, core results become the
documented JSON. Every rule is in the service.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from engram.api.codec import JSONResponse, StrictJSONRoute
from engram.api.deps import reader, service, writer
from engram.api.errors import documented
from engram.api.fields import Instant
from engram.auth import Principal
from engram.domain.filters import GROUP_FIELD, MATCH_NONE, Cmp, conjoin, parse_filter
from engram.domain.inputs import AcceptOptions, Grouping, SearchQuery, Turn
from engram.domain.records import Event, Job, Memory, iso
from engram.domain.validation import Loc, relocate
from engram.errors import ServiceError, ValidationFailed
from engram.service import SearchHit, Service

router = APIRouter(prefix="/v1/memories", tags=["memories"], route_class=StrictJSONRoute)

SEARCH_INCLUDES = {"full_content", "source_events", "context_prompt"}
CORPORA = {"fact", "artifact", "episode"}


class MessageBody(BaseModel):
    role: str
    content: str
    name: str | None = None
    date: Instant | None = None
    dia_id: str | None = None


class MessagesIngestBody(BaseModel):
    messages: list[MessageBody]
    user_id: str
    conv_id: str
    agent_id: str | None = None
    app_id: str | None = None
    metadata: dict[str, Any] | None = None
    extract_artifacts: bool = False
    # The v1.0 contract's groups: the job may tag its new memories with the active ones
    # (engram/groups.py); unknown or archived ids are echoed in `result.ignored_group_ids`.
    group_ids: list[str] = Field(default_factory=list)


class UpdateBody(BaseModel):
    """Both contracts' PATCH: v0.1 edits `text` (facts) and `metadata`; v1.0 adds and removes
    group tags. A body may carry either or both (docs/design.md, "Two contracts")."""

    text: str | None = None
    metadata: dict[str, Any] | None = None
    add_group_ids: list[str] | None = None
    remove_group_ids: list[str] | None = None


class MemorySearchBody(BaseModel):
    query: str = Field(min_length=1)
    filters: dict[str, Any] | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None
    # v0.1's options (full_content, source_events, context_prompt) and v1.0's corpora
    # (fact, artifact, episode: restrict the types searched) in one list.
    include: list[str] = Field(default_factory=list)
    # The v1.0 contract's scope axes at the top level: each is ANDed with `filters`, so a
    # search can only narrow; `group_ids` reads the memories tagged with any of them.
    user_id: str | None = None
    agent_id: str | None = None
    app_id: str | None = None
    group_ids: list[str] | None = None
    mode: Literal["retrieve", "compose"] | None = None

    def speaks_v1(self) -> bool:
        """Whether the request is the v1.0 contract's (its response is v1.0's `search` object,
        not v0.1's list envelope): it names a mode, a top-level scope axis or a corpus."""
        return (self.mode is not None or any(v is not None for v in (self.user_id, self.agent_id, self.app_id,
                                                                        self.group_ids))
                or bool(set(self.include) & CORPORA))


# ---------------------------------------------------------------------- wire shapes
def job_wire(job: Job) -> dict[str, Any]:
    result = job.result if job.status == "succeeded" else None
    if result is not None:  # v1.0's IngestResult always names what it dropped (often nothing)
        result = {**result, "ignored_group_ids": list(job.params.get("ignored_group_ids") or [])}
    return {
        "object": "ingest_job",
        "id": job.id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "result": result,
        "error": {"type": job.error.type, "code": job.error.code, "message": job.error.message}
        if job.status == "failed" and job.error else None,
    }


def source_event_wire(event: Event) -> dict[str, Any]:
    return {"event_id": event.id, "role": event.role, "name": event.name, "content": event.content,
            "date": iso(event.occurred_at), "dia_id": event.dia_id}


def memory_wire(memory: Memory, *, score: float | None = None, full_content: bool = False,
                source_events: list[Event] | None = None, group_ids: list[str] | None = None) -> dict[str, Any]:
    details = dict(memory.details)
    if memory.type == "fact":
        details["status"] = memory.status
        details["source_event_ids"] = list(memory.source_event_ids)
        details["valid_at"] = iso(memory.valid_at)
    if memory.type == "artifact" and not full_content:
        details["full_content"] = None
    if source_events is not None:
        details["source_events"] = [source_event_wire(e) for e in source_events]
    wire: dict[str, Any] = {
        "id": memory.id,
        "object": "memory",
        "type": memory.type,
        "text": memory.text,
        "user_id": memory.user_id,
        "agent_id": memory.agent_id,
        "conv_id": memory.conv_id,
        "app_id": memory.app_id,
        "group_ids": group_ids or [],
        "metadata": memory.metadata,
        "categories": memory.categories,
        "created_at": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
        "details": details,
    }
    if score is not None:
        wire["score"] = round(score, 6)
    return wire


def _hit_wire(hit: SearchHit, full_content: bool, tags: dict[str, list[str]]) -> dict[str, Any]:
    return memory_wire(hit.memory, score=hit.score, full_content=full_content, source_events=hit.source_events,
                       group_ids=tags.get(hit.memory.id))


# ---------------------------------------------------------------------- error locations
# The core names a call's turns `turns` and their fields by `Turn`'s names; this family's
# clients sent `messages`, the call-wide ids and metadata at the top level, and a header.
_CALL_FIELDS = frozenset({"user_id", "conv_id", "agent_id", "app_id", "metadata"})
_WIRE_FIELD = {"occurred_at": "date"}
# Field errors in the order this family has always listed them: the list, the ids, each
# message, the metadata, the group ids, the header.
_ORDER = {"user_id": 1, "conv_id": 2, "agent_id": 3, "app_id": 4, "metadata": 6, "group_ids": 7}


def wire_loc(loc: Loc) -> Loc:
    """A core location as this family's wire names it."""
    if loc[:1] == ("turns",):
        if len(loc) == 1:
            return ("body", "messages")
        field = loc[2]
        if field in _CALL_FIELDS:
            return ("body", field, *loc[3:])
        return ("body", "messages", loc[1], _WIRE_FIELD.get(field, field), *loc[3:])
    if loc == ("idempotency_key",):
        return ("header", "Idempotency-Key")
    return ("body", *loc)


def _wire_order(loc: Loc) -> int:
    if loc[0] == "header":
        return 8
    if loc[1] == "messages":
        return 0 if len(loc) == 2 else 5
    return _ORDER.get(loc[1], 9)


def wire_error(exc: ServiceError) -> ServiceError:
    """What the core raised, as this family answers it: located in its names, and an empty
    `messages` list is `400 invalid_messages` (SPEC §3), not a field error."""
    exc = relocate(exc, wire_loc, _wire_order)
    if isinstance(exc, ValidationFailed):
        for entry in exc.errors:
            if entry["loc"] == ["body", "messages"] and entry["type"] == "too_short":
                return ServiceError("invalid_messages", entry["msg"])
    return exc


# ---------------------------------------------------------------------- routes
@router.post("", status_code=202, responses={
    200: {"description": "With `?wait=true`: the job ended (succeeded or failed) within the wait budget."},
    **documented(400, 401, 403, 413, 422, list_422=True)})
async def ingest(
    body: MessagesIngestBody,
    wait: bool = False,
    principal: Principal = Depends(writer),
    svc: Service = Depends(service),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    metadata = body.metadata or {}  # one object for the call's turns: the core checks it once
    turns = [Turn(user_id=body.user_id, conv_id=body.conv_id, role=m.role, content=m.content, occurred_at=m.date,
                  metadata=metadata, name=m.name, dia_id=m.dia_id, agent_id=body.agent_id, app_id=body.app_id)
             for m in body.messages]
    options = AcceptOptions(Grouping.PER_CALL, svc.settings.limits.max_content_chars_x,
                            extract_artifacts=body.extract_artifacts, group_ids=body.group_ids)
    try:
        outcome = await svc.accept(principal.org_id, turns, options, idempotency_key=idempotency_key,
                                   key_id=principal.key_id)
    except ServiceError as exc:
        raise wire_error(exc) from None
    job = outcome.replayed or outcome.jobs[0]
    if wait:
        job = await svc.wait_for_job(principal.org_id, job.id)
    status = 200 if job.status in ("succeeded", "failed") and wait else 202
    return JSONResponse(job_wire(job), status_code=status)


@router.get("/jobs/{job_id}", responses=documented(401, 403, 404, 422, list_422=True))
async def get_job(job_id: str, principal: Principal = Depends(reader), svc: Service = Depends(service)) -> dict[str, Any]:
    return job_wire(await run_in_threadpool(svc.get_job, principal.org_id, job_id))


@router.post("/search", responses=documented(400, 401, 403, 413, 422, 429, 503))
async def search(body: MemorySearchBody, principal: Principal = Depends(reader), svc: Service = Depends(service)) -> dict[str, Any]:
    unknown = set(body.include) - SEARCH_INCLUDES - CORPORA
    if unknown:
        raise ServiceError("unsupported_include_option",
                          f"unsupported include option(s): {', '.join(sorted(unknown))}; "
                          f"use {', '.join(sorted(SEARCH_INCLUDES | CORPORA))}")
    svc.check_scope({"user_id": body.user_id, "agent_id": body.agent_id, "app_id": body.app_id,
                     "group_ids": body.group_ids})
    scope = [Cmp(name, "eq", value) for name in ("user_id", "agent_id", "app_id")
             if (value := getattr(body, name)) is not None]
    if body.group_ids is not None:  # any of them; an empty list names no group, so no memory
        scope.append(Cmp(GROUP_FIELD, "in", tuple(body.group_ids)) if body.group_ids else MATCH_NONE)
    corpora = sorted(set(body.include) & CORPORA)
    if corpora:
        scope.append(Cmp("type", "in", tuple(corpora)))
    v1 = body.speaks_v1()
    compose = v1 and body.mode != "retrieve"  # v1.0's default mode is compose
    query = SearchQuery(
        text=body.query, where=conjoin(*scope, parse_filter(body.filters)), limit=body.limit, cursor=body.cursor,
        with_source_events="source_events" in body.include, with_full_content="full_content" in body.include,
        with_context_prompt=compose or "context_prompt" in body.include,
    )
    results = await svc.run_search(principal.org_id, query, key_id=principal.key_id)
    tags = await run_in_threadpool(svc.group_tags, principal.org_id, [h.memory.id for h in results.hits])
    data = [_hit_wire(h, query.with_full_content, tags) for h in results.hits]
    if not v1:
        return {"object": "list", "data": data, "has_more": results.has_more, "next_cursor": results.next_cursor,
                "extras": {"context_prompt": results.context_prompt, "stage_timings": results.timings}}
    # v1.0: `compose` assembles the markdown block from the ranked rows; no model picks among
    # them first, which `context_selection_applied: false` says (docs/design.md).
    return {"object": "search", "mode": "compose" if compose else "retrieve", "data": data,
            "context": results.context_prompt if compose else None, "stage_timings": results.timings,
            "context_selection_applied": False, "has_more": results.has_more, "next_cursor": results.next_cursor}


@router.post("/trigger", status_code=501, responses=documented(401, 403, 422, 501))
async def trigger(principal: Principal = Depends(reader)) -> None:
    """v1.0's procedural recall (lessons and procedures before a tool call). engram does not
    learn lessons or procedures from sessions, so it has none to recall: it says so rather
    than answer an empty list that would read as "nothing applies" (docs/compatibility.md)."""
    raise ServiceError("not_supported", "engram does not extract lessons or procedures, so /v1/memories/trigger has "
                       "nothing to recall; search (POST /v1/memories/search) reads every memory it keeps")


@router.get("", responses=documented(401, 403, 422))
async def list_memories(
    principal: Principal = Depends(reader),
    svc: Service = Depends(service),
    user_id: str | None = None,
    agent_id: str | None = None,
    conv_id: str | None = None,
    app_id: str | None = None,
    type: Literal["fact", "artifact", "episode"] | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    order: Literal["created_at_desc", "created_at_asc"] = "created_at_desc",
    include: str | None = None,
    group_id: str | None = None,
) -> dict[str, Any]:
    includes = {part.strip() for part in (include or "").split(",") if part.strip()}
    if includes - {"full_content"}:
        raise ServiceError("unsupported_include_option", "list supports include=full_content only")
    scope = {"user_id": user_id, "agent_id": agent_id, "conv_id": conv_id, "app_id": app_id, "type": type}
    page = await run_in_threadpool(svc.list_memories, principal.org_id, scope, in_group=group_id,
                                   ascending=order == "created_at_asc", cursor=cursor, limit=limit)
    tags = await run_in_threadpool(svc.group_tags, principal.org_id, [m.id for m in page.items])
    return {
        "object": "list",
        "data": [memory_wire(m, full_content="full_content" in includes, group_ids=tags.get(m.id))
                 for m in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


@router.get("/{memory_id}", responses=documented(401, 403, 404, 422, list_422=True))
async def get_memory(memory_id: str, principal: Principal = Depends(reader),
                     svc: Service = Depends(service)) -> dict[str, Any]:
    memory = await run_in_threadpool(svc.get_memory, principal.org_id, memory_id)
    return memory_wire(memory, full_content=True, group_ids=await _tags_of(svc, principal.org_id, memory.id))


async def _tags_of(svc: Service, org_id: str, memory_id: str) -> list[str]:
    return (await run_in_threadpool(svc.group_tags, org_id, [memory_id])).get(memory_id, [])


@router.patch("/{memory_id}", responses=documented(400, 401, 403, 404, 413, 422, 429, 503))
async def update_memory(memory_id: str, body: UpdateBody | None = None, principal: Principal = Depends(writer),
                        svc: Service = Depends(service)) -> dict[str, Any]:
    body = body or UpdateBody()
    memory = await run_in_threadpool(lambda: svc.update_memory(
        principal.org_id, memory_id, body.text, body.metadata, add_group_ids=body.add_group_ids,
        remove_group_ids=body.remove_group_ids))
    return memory_wire(memory, full_content=True, group_ids=await _tags_of(svc, principal.org_id, memory.id))


@router.get("/{memory_id}/revisions", responses=documented(401, 403, 404, 422))
async def memory_revisions(memory_id: str, principal: Principal = Depends(reader),
                           svc: Service = Depends(service)) -> dict[str, Any]:
    """engram's extension: the revision chain through this memory, oldest first."""
    chain = await run_in_threadpool(svc.memory_revisions, principal.org_id, memory_id)
    tags = await run_in_threadpool(svc.group_tags, principal.org_id, [m.id for m in chain])
    return {"object": "list", "data": [memory_wire(m, full_content=True, group_ids=tags.get(m.id)) for m in chain],
            "has_more": False, "next_cursor": None}


@router.delete("/{memory_id}", status_code=204, responses=documented(401, 403, 404, 422, list_422=True))
async def delete_memory(memory_id: str, principal: Principal = Depends(writer),
                        svc: Service = Depends(service)) -> Response:
    await run_in_threadpool(svc.delete_memory, principal.org_id, memory_id)
    return Response(status_code=204)
