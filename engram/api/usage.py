"""What an org used (docs/operations.md, "Usage"): `GET /v1/usage` in the xtrace v1.0 contract's
shape, and memsy's control-plane views (`/v1/usage/summary`, `/v1/usage/timeseries`,
`/v1/keys/{id}/usage`). The counting is engram/usage.py."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from engram import usage
from engram.api.codec import StrictJSONRoute
from engram.api.deps import admin, reader, service
from engram.api.errors import documented
from engram.api.fields import Instant
from engram.auth import Principal
from engram.service import Service

router = APIRouter(prefix="/v1", tags=["usage"], route_class=StrictJSONRoute)

Dimension = Literal["api_calls", "events_ingested", "search_queries", "llm_tokens"]


@router.get("/usage", responses=documented(401, 403, 422))
async def get_usage(daily: bool = False, by_api_key: bool = False, principal: Principal = Depends(reader),
                    svc: Service = Depends(service)) -> dict[str, Any]:
    """The org's usage this calendar month (UTC): messages ingested, searches and requests,
    per day with `daily=true`, per key with `by_api_key=true`; the memories stored now; and
    engram's own counters (`engram`: jobs by outcome and code, memories by type and status,
    provider requests and tokens, all-time totals). Counts reach the store within a second."""
    return await run_in_threadpool(lambda: usage.xtrace_usage(
        svc.store, principal.org_id, daily=daily, by_api_key=by_api_key,
        rate_limit_per_min=svc.settings.rate_limit_requests_per_min))


@router.get("/usage/summary", responses=documented(401, 403, 422))
async def usage_summary(principal: Principal = Depends(admin), svc: Service = Depends(service)) -> dict[str, Any]:
    """memsy's `control.usage.summary()`: this month's totals per dimension."""
    return await run_in_threadpool(usage.memsy_summary, svc.store, principal.org_id)


@router.get("/usage/timeseries", responses=documented(401, 403, 422))
async def usage_timeseries(dimension: Dimension | None = None, granularity: Literal["daily"] = "daily",
                           period_start: Instant | None = None, period_end: Instant | None = None,
                           principal: Principal = Depends(admin), svc: Service = Depends(service)) -> dict[str, Any]:
    """memsy's `control.usage.timeseries()`: one point per day and dimension (counters are kept
    per day, so `granularity` is `daily` only); the last 30 days unless a period is given."""
    points = await run_in_threadpool(usage.memsy_timeseries, svc.store, principal.org_id, period_start, period_end,
                                     dimension)
    return {"org_id": principal.org_id, "granularity": granularity, "data": points}


@router.get("/keys/{key_id}/usage", responses=documented(401, 403, 404, 422))
async def key_usage(key_id: str, principal: Principal = Depends(admin), svc: Service = Depends(service)) -> dict[str, Any]:
    """memsy's `control.keys.usage(id)`: the key's points of the last 30 days."""
    key = await run_in_threadpool(svc.admin.key, principal, key_id)
    points = await run_in_threadpool(usage.memsy_timeseries, svc.store, key.org_id, None, None, None, key_id)
    return {"key_id": key_id, "usage": points}
