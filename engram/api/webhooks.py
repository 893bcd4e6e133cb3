"""`PUT/GET/DELETE /v1/webhooks` as the xtrace v1.0 contract declares them, and engram's
`GET /v1/webhooks/deliveries` (docs/operations.md, "Webhooks"). The rules: engram/webhooks.py."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from engram.api.codec import StrictJSONRoute
from engram.api.deps import reader, service, writer
from engram.api.errors import documented
from engram.auth import Principal
from engram.domain.records import iso
from engram.service import Service
from engram.store.webhooks import WebhookConfig
from engram.webhooks import masked

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=StrictJSONRoute)

Event = Literal["memory.learning.completed", "memory.learning.failed"]


class WebhookBody(BaseModel):
    url: str
    events: list[str] | None = None
    enabled: bool = True


def config_wire(config: WebhookConfig, *, show_secret: bool) -> dict[str, Any]:
    return {"object": "webhook", "url": config.url, "events": list(config.events), "enabled": config.enabled,
            "secret": config.secret if show_secret else masked(config.secret),
            "created_at": iso(config.created_at), "updated_at": iso(config.updated_at)}


@router.put("", responses=documented(401, 403, 413, 422))
async def put_webhook(body: WebhookBody, rotate_secret: bool = False, principal: Principal = Depends(writer),
                      svc: Service = Depends(service)) -> dict[str, Any]:
    """Create or replace the org's webhook. The signing secret is shown in full only when it
    is new (the first PUT, or `rotate_secret=true`); masked otherwise."""
    config, fresh = await run_in_threadpool(svc.webhooks.put, principal.org_id, body.url, body.events, body.enabled,
                                            rotate_secret)
    return config_wire(config, show_secret=fresh)


@router.get("", responses=documented(401, 403, 404, 422))
async def get_webhook(principal: Principal = Depends(reader), svc: Service = Depends(service)) -> dict[str, Any]:
    return config_wire(await run_in_threadpool(svc.webhooks.get, principal.org_id), show_secret=False)


@router.delete("", status_code=204, responses=documented(401, 403, 422))
async def delete_webhook(principal: Principal = Depends(writer), svc: Service = Depends(service)) -> Response:
    await run_in_threadpool(svc.webhooks.delete, principal.org_id)
    return Response(status_code=204)


@router.get("/deliveries", responses=documented(401, 403, 422))
async def deliveries(principal: Principal = Depends(reader), svc: Service = Depends(service)) -> dict[str, Any]:
    """engram's own: the org's latest deliveries, newest first, with their attempts and last error."""
    rows = await run_in_threadpool(svc.store.deliveries, principal.org_id)
    return {"object": "list", "data": rows}
