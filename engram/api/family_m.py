"""Family M: the events API (/v1/ingest, /v1/status, /v1/search, /v1/health), SPEC §4.

Only wire shapes live here. Its field names are camelCase where the published client
reads them so (`completedIds`), and its search filters map onto the same filter AST
that family X uses: `actor_id` is `user_id`, `session_id` is `conv_id`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from engram.api.codec import JSONResponse, StrictJSONRoute, read_json
from engram.api.deps import documented_body, json_body, principal_of, reader, service
from engram.api.errors import documented
from engram.api.fields import Instant
from engram.auth import Principal
from engram.domain.details import FactDetails
from engram.domain.filters import Cmp, Not, conjoin
from engram.domain.inputs import AcceptOptions, Grouping, SearchQuery, Turn, kind_for_role
from engram.domain.records import Event, iso
from engram.domain.validation import Loc, relocate
from engram.errors import ServiceError
from engram.service import SearchHit, Service

router = APIRouter(prefix="/v1", tags=["events"], route_class=StrictJSONRoute)


class EventBody(BaseModel):
    actor_id: str
    session_id: str
    kind: str
    content: str
    ts: Instant | None = None
    metadata: str | dict[str, Any] | None = None
    role_id: str | None = None
    team_id: str | None = None
    event_id: str | None = None


class EventsIngestBody(BaseModel):
    events: list[EventBody]


class StatusBody(BaseModel):
    event_ids: list[str]


class EventSearchBody(BaseModel):
    query: str
    actor_id: str | None = None
    session_id: str | None = None
    exclude_session_id: str | None = None
    limit: int = Field(10, ge=1, le=100)
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    include_source_events: bool = False
    # The memsy client's role and team scopes. engram promotes no memories to roles or teams;
    # what it knows is the role_id / team_id events carried at ingest (kept in metadata), so
    # these narrow the search to memories of those roles / teams — never widen it.
    role_ids: list[str] | None = None
    team_ids: list[str] | None = None


def _metadata(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """Family M sends metadata as a JSON string. A JSON object is the metadata; any other text
    (not JSON, or JSON the strict reader refuses: a lone surrogate, nesting past 200 levels)
    is kept as `{"raw": text}` (SPEC §4). The text's length is the core's to check
    (`Turn.metadata_chars`); reading it costs no more than the body it came in."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    try:
        parsed = read_json(value)
    except ValueError:
        return {"raw": value}
    return parsed if isinstance(parsed, dict) else {"raw": value}


# The core's names for a turn's fields where this family's differ.
_WIRE_FIELD = {"user_id": "actor_id", "conv_id": "session_id", "occurred_at": "ts", "client_event_id": "event_id"}


def wire_loc(loc: Loc) -> Loc:
    """A core location as this family's wire names it: `turns.3.user_id` is `body.events.3.actor_id`."""
    if loc[:1] == ("turns",):
        if len(loc) == 1:
            return ("body", "events")
        return ("body", "events", loc[1], _WIRE_FIELD.get(loc[2], loc[2]), *loc[3:])
    return ("body", *loc)


def _source_event_wire(event: Event) -> dict[str, Any]:
    return {"event_id": event.id, "kind": event.kind, "content": event.content, "ts": iso(event.occurred_at),
            "session_id": event.conv_id, "actor_id": event.user_id}


def _result_wire(hit: SearchHit) -> dict[str, Any]:
    m = hit.memory
    source_role = (FactDetails.of(m).source_role if m.type == "fact" else None) or "user"
    metadata: dict[str, Any] = {
        **m.metadata,
        "type": m.type,
        "kind": kind_for_role(source_role),
        "source_event_ids": list(m.source_event_ids),
        "session_id": m.conv_id,
        "actor_id": m.user_id,
        "created_at": iso(m.created_at),
        "valid_at": iso(m.valid_at),
    }
    if hit.source_events is not None:
        metadata["source_events"] = [_source_event_wire(e) for e in hit.source_events]
    return {"id": m.id, "content": m.text, "score": round(hit.score, 6), "metadata": metadata}


_INGEST_BODY = TypeAdapter(EventsIngestBody)


# The hot path: no dependency solving, one parse-and-validate pass, no response re-encoding.
# The body is declared for the OpenAPI document by hand since FastAPI does not parse it.
@router.post("/ingest", openapi_extra=documented_body(EventsIngestBody), responses=documented(401, 403, 413, 422))
async def ingest(request: Request) -> JSONResponse:
    principal = await principal_of(request, "write")
    body = await json_body(request, _INGEST_BODY)
    svc: Service = request.app.state.service
    turns = [
        Turn(user_id=e.actor_id, conv_id=e.session_id, kind=e.kind, content=e.content, occurred_at=e.ts,
             metadata=_metadata(e.metadata), role_id=e.role_id, team_id=e.team_id, client_event_id=e.event_id,
             metadata_chars=len(e.metadata) if isinstance(e.metadata, str) else None)
        for e in body.events
    ]
    options = AcceptOptions(Grouping.PER_CONVERSATION, svc.settings.limits.max_content_chars_m, dedup=True)
    try:
        outcome = await svc.accept(principal.org_id, turns, options, key_id=principal.key_id)
    except ServiceError as exc:
        raise relocate(exc, wire_loc) from None
    return JSONResponse({"event_ids": outcome.event_ids})


@router.post("/status", responses=documented(401, 403, 413, 422))
async def status(body: StatusBody, principal: Principal = Depends(reader),
                 svc: Service = Depends(service)) -> dict[str, Any]:
    report = await run_in_threadpool(svc.event_status, principal.org_id, body.event_ids)
    return {
        "completedIds": report.completed,
        "pendingIds": report.pending,
        "failedIds": report.failed,
        "total": len(report.statuses),
        "statuses": report.statuses,
        "reasons": report.reasons,
    }


@router.post("/search", responses=documented(401, 403, 413, 422, 429, 503))
async def search(body: EventSearchBody, principal: Principal = Depends(reader),
                 svc: Service = Depends(service)) -> dict[str, Any]:
    # memsy: an empty string is unset (its clients send "" for "no conversation"), and a session
    # together with an excluded session is a 422 — never an AND that quietly narrows to nothing.
    actor_id, session_id, exclude = (v or None for v in (body.actor_id, body.session_id, body.exclude_session_id))
    svc.check_scope({"actor_id": actor_id, "session_id": session_id, "exclude_session_id": exclude,
                     "role_ids": body.role_ids, "team_ids": body.team_ids})
    if session_id is not None and exclude is not None:
        raise ServiceError("conflicting_fields", "session_id and exclude_session_id cannot be sent together: send "
                           "session_id for one conversation, exclude_session_id for every other one",
                           extra={"fields": ["session_id", "exclude_session_id"]})
    clauses = []
    if actor_id is not None:
        clauses.append(Cmp("user_id", "eq", actor_id))
    if session_id is not None:
        clauses.append(Cmp("conv_id", "eq", session_id))
    if exclude is not None:
        clauses.append(Not(Cmp("conv_id", "eq", exclude)))
    for name, values in (("role_id", body.role_ids), ("team_id", body.team_ids)):
        if values:
            clauses.append(Cmp(name, "in", tuple(values)))
    query = SearchQuery(text=body.query, where=conjoin(*clauses), limit=body.limit, threshold=body.threshold,
                        with_source_events=body.include_source_events)
    results = await svc.run_search(principal.org_id, query, key_id=principal.key_id)
    return {"results": [_result_wire(h) for h in results.hits]}


@router.get("/health")
async def health(svc: Service = Depends(service)) -> dict[str, Any]:
    # memsy's clients read `billing_enabled`: a self-hosted engram bills no one (api/hosted.py)
    return {**await run_in_threadpool(svc.health), "billing_enabled": False}
