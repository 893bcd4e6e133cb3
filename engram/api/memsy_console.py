"""memsy's console reads: `/v1/console/memories` (list, stats, one), `/v1/actors` (derived from
the memories) and the control client's `/v1/console/events`. Only wire shapes live here; the
filters are engram/memsy_console.py's, and what each engram field becomes is docs/design.md's
("Console reads").
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from engram.api.codec import StrictJSONRoute
from engram.api.deps import reader, service
from engram.api.errors import documented
from engram.auth import Principal
from engram.memsy_console import MEMORY_KIND, MemoryStats
from engram.domain.details import FactDetails
from engram.domain.records import Event, Memory, iso
from engram.service import Service
from engram.store.memsy_console import ActorRow

router = APIRouter(prefix="/v1", tags=["console"], route_class=StrictJSONRoute)

MAX_OFFSET = 1_000_000
# The values each filter takes, declared so the OpenAPI document says them (engram/memsy_console.py checks them too).
MemoryKind = Literal["semantic", "episodic", "artifact"]
MemoryType = Literal["fact", "artifact", "episode"]
MemoryStatus = Literal["active", "superseded", "retracted"]
MemorySort = Literal["observed_at_desc", "observed_at_asc", "created_at_desc", "strength_desc", "confidence_desc"]
ActorSort = Literal["first_memory_desc", "first_memory_asc", "last_memory_desc", "actor_id_asc"]
EventSort = Literal["ts_desc", "ts_asc"]
# What engram does not model, as one value for every memory (docs/design.md, "Console reads").
CONFIDENCE = 1.0  # engram keeps what was said; it does not grade belief
STRENGTH = 1.0  # memsy's starting strength: nothing reinforces or decays a memory here
DECAY_HALF_LIFE_DAYS = 0.0  # no decay


def _text_of(metadata: dict[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) else None


def memory_item(m: Memory) -> dict[str, Any]:
    kind = MEMORY_KIND.get(m.type, m.type)
    title = m.details.get("title") if m.type in ("artifact", "episode") else None
    source_role = FactDetails.of(m).source_role if m.type == "fact" else None
    return {
        "memory_id": m.id, "org_id": m.org_id,
        "scope": {"level": "actor" if m.user_id else "org", "actor_id": m.user_id,
                  "role_id": _text_of(m.metadata, "role_id"), "team_id": _text_of(m.metadata, "team_id")},
        "type": m.type, "kind": kind, "memory_kind": kind, "status": m.status, "text": m.text,
        "confidence": CONFIDENCE, "strength": STRENGTH, "recall_count": 0,
        "decay_half_life_days": DECAY_HALF_LIFE_DAYS, "pinned": False,
        "tags": list(m.categories), "entity_refs": [], "source_event_ids": list(m.source_event_ids), "source_urls": [],
        "summary": title if isinstance(title, str) else None,
        "payload": {"details": m.details, "metadata": m.metadata, "session_id": m.conv_id, "agent_id": m.agent_id,
                    "app_id": m.app_id, "source_role": source_role},
        "last_recalled_at": None,
        "effective_from": iso(m.valid_at),
        "effective_to": iso(m.updated_at) if m.status == "superseded" else None,
        "observed_at": iso(m.created_at), "created_at": iso(m.created_at), "updated_at": iso(m.updated_at),
    }


def stats_wire(s: MemoryStats) -> dict[str, Any]:
    return {"total": s.total, "total_memories": s.total, "active_memories": s.active, "by_type": s.by_type,
            "by_kind": s.by_kind, "by_status": s.by_status,
            "avg_confidence": CONFIDENCE if s.total else 0.0, "avg_strength": STRENGTH if s.total else 0.0,
            "top_entities": [], "confidence_buckets": [{"min": CONFIDENCE, "max": CONFIDENCE, "count": s.total}],
            "date_range": {"earliest": iso(s.first_at), "latest": iso(s.last_at)}}


def actor_wire(a: ActorRow) -> dict[str, Any]:
    return {"actor_id": a.user_id, "first_memory_at": iso(a.first_memory_at), "last_memory_at": iso(a.last_memory_at),
            "memory_count": a.memory_count, "active_memory_count": a.active_memory_count,
            "scope_levels": ["actor"], "role_ids": list(a.role_ids), "team_ids": list(a.team_ids)}


def event_wire(e: Event) -> dict[str, Any]:
    return {"event_id": e.id, "org_id": e.org_id, "actor_id": e.user_id, "kind": e.kind, "content": e.content,
            "ts": iso(e.occurred_at), "session_id": e.conv_id, "metadata": e.metadata,
            "ingested_at": iso(e.received_at), "status": e.status}


# ---------------------------------------------------------------------- memories
@router.get("/console/memories", responses=documented(401, 403, 422))
async def list_memories(actor_id: str | None = None, kind: MemoryKind | None = None, type: MemoryType | None = None,
                        status: MemoryStatus | None = None, sort: MemorySort = "observed_at_desc",
                        search: str | None = None,
                        limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                        principal: Principal = Depends(reader), svc: Service = Depends(service)) -> dict[str, Any]:
    items, total = await run_in_threadpool(lambda: svc.console.memories(
        principal.org_id, actor_id=actor_id, kind=kind, type=type, status=status, sort=sort, search=search,
        limit=limit, offset=offset))
    return {"items": [memory_item(m) for m in items], "total": total, "limit": limit, "offset": offset}


@router.get("/console/memories/stats", responses=documented(401, 403, 422))
async def memory_stats(principal: Principal = Depends(reader), svc: Service = Depends(service)) -> dict[str, Any]:
    return stats_wire(await run_in_threadpool(svc.console.stats, principal.org_id))


@router.get("/console/memories/{memory_id}", responses=documented(401, 403, 404, 422))
async def get_memory(memory_id: str, principal: Principal = Depends(reader),
                     svc: Service = Depends(service)) -> dict[str, Any]:
    return memory_item(await run_in_threadpool(svc.console.memory, principal.org_id, memory_id))


# ---------------------------------------------------------------------- actors
@router.get("/actors", responses=documented(401, 403, 404, 422))
async def list_actors(org_id: str | None = None, limit: int = Query(100, ge=1, le=500),
                      offset: int = Query(0, ge=0, le=MAX_OFFSET), sort: ActorSort = "first_memory_desc",
                      q: str | None = None, principal: Principal = Depends(reader),
                      svc: Service = Depends(service)) -> dict[str, Any]:
    def read() -> tuple[list[ActorRow], int]:
        org = svc.onboarding.org_for(principal, org_id, "read")
        return svc.console.actors(org.id, sort=sort, q=q, limit=limit, offset=offset)

    items, total = await run_in_threadpool(read)
    # engram reads every memory of the org, so the counts are whole: never truncated
    return {"items": [actor_wire(a) for a in items], "total": total, "limit": limit, "offset": offset,
            "truncated": False}


@router.get("/actors/{actor_id}", responses=documented(401, 403, 404, 422))
async def get_actor(actor_id: str, org_id: str | None = None, principal: Principal = Depends(reader),
                    svc: Service = Depends(service)) -> dict[str, Any]:
    def read() -> ActorRow:
        org = svc.onboarding.org_for(principal, org_id, "read")
        return svc.console.actor(org.id, actor_id)

    return actor_wire(await run_in_threadpool(read))


# ---------------------------------------------------------------------- events
@router.get("/console/events", responses=documented(401, 403, 422))
async def list_events(actor_id: str | None = None, session_id: str | None = None, kind: str | None = None,
                      sort: EventSort = "ts_desc", limit: int = Query(50, ge=1, le=200),
                      offset: int = Query(0, ge=0, le=MAX_OFFSET), principal: Principal = Depends(reader),
                      svc: Service = Depends(service)) -> dict[str, Any]:
    items, total = await run_in_threadpool(lambda: svc.console.events(
        principal.org_id, actor_id=actor_id, session_id=session_id, kind=kind, sort=sort, limit=limit, offset=offset))
    return {"items": [event_wire(e) for e in items], "total": total, "limit": limit, "offset": offset}
