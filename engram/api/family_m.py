"""Family M: the events API (/v1/ingest, /v1/status, /v1/search, /v1/health), SPEC §4.

Only wire shapes live here. Its field names are camelCase where the published client
reads them so (`completedIds`), and its search filters map onto the same filter AST
that family X uses: `actor_id` is `user_id`, `session_id` is `conv_id`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from engram.api.deps import documented_body, json_body, principal_of, reader, service
from engram.auth import Principal
from engram.domain.filters import Cmp, Not, conjoin
from engram.domain.inputs import EventIn, SearchQuery, kind_for_role
from engram.domain.records import Event, iso
from engram.service import SearchHit, Service, ValidationFailed

router = APIRouter(prefix="/v1", tags=["events"])


class EventBody(BaseModel):
    actor_id: str
    session_id: str
    kind: str
    content: str
    ts: datetime | None = None
    metadata: str | dict[str, Any] | None = None
    role_id: str | None = None
    team_id: str | None = None
    event_id: str | None = None


class IngestBody(BaseModel):
    events: list[EventBody]


class StatusBody(BaseModel):
    event_ids: list[str]


class SearchBody(BaseModel):
    query: str
    actor_id: str | None = None
    session_id: str | None = None
    exclude_session_id: str | None = None
    limit: int = Field(10, ge=1, le=100)
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    include_source_events: bool = False


def _metadata(value: str | dict[str, Any] | None, index: int, limit: int) -> dict[str, Any]:
    """Family M sends metadata as a JSON string; text that is not a JSON object is kept raw."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if len(value) > limit:
        raise ValidationFailed([{"loc": ["body", "events", index, "metadata"],
                                 "msg": f"metadata is longer than {limit} characters", "type": "string_too_long"}])
    try:
        parsed = json.loads(value)
    except ValueError:
        return {"raw": value}
    return parsed if isinstance(parsed, dict) else {"raw": value}


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _source_event_wire(event: Event) -> dict[str, Any]:
    return {"event_id": event.id, "kind": event.kind, "content": event.content, "ts": iso(event.occurred_at),
            "session_id": event.conv_id, "actor_id": event.user_id}


def _result_wire(hit: SearchHit) -> dict[str, Any]:
    m = hit.memory
    source_role = m.details.get("source_role") or "user"
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


_INGEST_BODY = TypeAdapter(IngestBody)


# The hot path: no dependency solving, one parse-and-validate pass, no response re-encoding.
# The body is declared for the OpenAPI document by hand since FastAPI does not parse it.
@router.post("/ingest", openapi_extra=documented_body(IngestBody))
async def ingest(request: Request) -> JSONResponse:
    principal = await principal_of(request, "write")
    body = await json_body(request, _INGEST_BODY)
    svc: Service = request.app.state.service
    limit = svc.settings.limits.max_metadata_chars
    events = [
        EventIn(actor_id=e.actor_id, session_id=e.session_id, kind=e.kind, content=e.content, ts=_utc(e.ts),
                metadata=_metadata(e.metadata, i, limit), role_id=e.role_id, team_id=e.team_id, event_id=e.event_id)
        for i, e in enumerate(body.events)
    ]
    return JSONResponse({"event_ids": await svc.ingest_events(principal.org_id, events)})


@router.post("/status")
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


@router.post("/search")
async def search(body: SearchBody, principal: Principal = Depends(reader),
                 svc: Service = Depends(service)) -> dict[str, Any]:
    clauses = []
    if body.actor_id is not None:
        clauses.append(Cmp("user_id", "eq", body.actor_id))
    if body.session_id is not None:
        clauses.append(Cmp("conv_id", "eq", body.session_id))
    if body.exclude_session_id is not None:
        clauses.append(Not(Cmp("conv_id", "eq", body.exclude_session_id)))
    query = SearchQuery(text=body.query, where=conjoin(*clauses), limit=body.limit, threshold=body.threshold,
                        with_source_events=body.include_source_events)
    results = await run_in_threadpool(svc.search, principal.org_id, query)
    return {"results": [_result_wire(h) for h in results.hits]}


@router.get("/health")
async def health(svc: Service = Depends(service)) -> dict[str, Any]:
    return await run_in_threadpool(svc.health)
