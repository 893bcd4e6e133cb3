"""`/v1/groups` as the xtrace v1.0 contract declares it: register, list, read, edit and archive
an org's groups. What groups mean is engram/groups.py's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from engram.api.codec import JSONResponse, StrictJSONRoute
from engram.api.deps import reader, service, writer
from engram.api.errors import documented
from engram.auth import Principal
from engram.domain.records import Group, iso
from engram.service import Service

router = APIRouter(prefix="/v1/groups", tags=["groups"], route_class=StrictJSONRoute)


class GroupBody(BaseModel):
    name: str
    prompt: str | None = None  # omitted or null: a catch-all group


class GroupPatch(BaseModel):
    name: str | None = None
    prompt: str | None = None
    status: str | None = None


def group_wire(group: Group) -> dict[str, Any]:
    return {"object": "group", "id": group.id, "name": group.name, "prompt": group.prompt, "status": group.status,
            "created_at": iso(group.created_at), "updated_at": iso(group.updated_at)}


@router.post("", status_code=201, responses=documented(401, 403, 413, 422))
async def create_group(body: GroupBody, principal: Principal = Depends(writer),
                       svc: Service = Depends(service)) -> JSONResponse:
    group = await run_in_threadpool(svc.groups.create, principal.org_id, body.name, body.prompt)
    return JSONResponse(group_wire(group), status_code=201)


@router.get("", responses=documented(401, 403, 422))
async def list_groups(include_archived: bool = False, principal: Principal = Depends(reader),
                      svc: Service = Depends(service)) -> dict[str, Any]:
    groups = await run_in_threadpool(lambda: svc.groups.list(principal.org_id, include_archived=include_archived))
    return {"object": "list", "data": [group_wire(g) for g in groups]}


@router.get("/{group_id}", responses=documented(401, 403, 404, 422))
async def get_group(group_id: str, principal: Principal = Depends(reader),
                    svc: Service = Depends(service)) -> dict[str, Any]:
    return group_wire(await run_in_threadpool(svc.groups.get, principal.org_id, group_id))


@router.patch("/{group_id}", responses=documented(401, 403, 404, 413, 422))
async def update_group(group_id: str, body: GroupPatch, principal: Principal = Depends(writer),
                       svc: Service = Depends(service)) -> dict[str, Any]:
    group = await run_in_threadpool(lambda: svc.groups.update(principal.org_id, group_id, name=body.name,
                                                              prompt=body.prompt, status=body.status))
    return group_wire(group)


@router.delete("/{group_id}", responses=documented(401, 403, 404, 422))
async def archive_group(group_id: str, principal: Principal = Depends(writer),
                        svc: Service = Depends(service)) -> dict[str, Any]:
    """Archive (the contract's soft delete): tags stay readable, new ingests ignore the id.
    Idempotent; `PATCH {"status": "active"}` restores it."""
    return group_wire(await run_in_threadpool(svc.groups.archive, principal.org_id, group_id))
