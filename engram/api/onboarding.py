"""memsy's onboarding API: `/v1/orgs` (the org's record: engram's org and memsy's customization
in one object), `/v1/roles` and `/v1/teams`. Only wire shapes live here; the rules, and who may
do what, are engram/onboarding.py's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from engram.api.codec import JSONResponse, StrictJSONRoute
from engram.api.deps import authenticated, service
from engram.api.errors import documented
from engram.auth import Principal
from engram.domain.records import Org, iso
from engram.onboarding import MAX_UNITS_PAGE, Onboarding, record_wire_base
from engram.service import Service
from engram.store.onboarding import OrgUnit

router = APIRouter(prefix="/v1", tags=["onboarding"], route_class=StrictJSONRoute)


class OrgCreateBody(BaseModel):
    org_id: str | None = None  # memsy's; without it, engram's own `{"name"}`: the operator makes an org
    name: str | None = None
    focus: str | None = None


class RecordUpdateBody(BaseModel):
    name: str | None = None
    focus: str | None = None
    promotion_prompt: str | None = None


class UnitCreateBody(BaseModel):
    org_id: str | None = None
    name: str
    focus: str


def org_wire(org: Org) -> dict[str, Any]:
    """One object for both products: engram's (`object`, `id`, `name`, `created_at`) and memsy's
    OrgResource (`org_id`, `name`, `focus`, `promotion_prompt`, `prompt_meta`, …)."""
    return {"object": "org", "id": org.id, "org_id": org.id,
            **record_wire_base(org.name, org.focus, org.promotion_prompt, org.prompt_meta, iso(org.created_at),
                               iso(org.updated_at))}


def unit_wire(unit: OrgUnit) -> dict[str, Any]:
    return {"object": unit.kind, f"{unit.kind}_id": unit.id, "id": unit.id, "org_id": unit.org_id,
            **record_wire_base(unit.name, unit.focus, unit.promotion_prompt, unit.prompt_meta,
                               iso(unit.created_at), iso(unit.updated_at))}


def _core(svc: Service) -> Onboarding:
    return svc.onboarding


# ---------------------------------------------------------------------- orgs
@router.get("/orgs", responses=documented(401, 403, 422))
async def list_orgs(principal: Principal = Depends(authenticated), svc: Service = Depends(service)) -> JSONResponse:
    """Every org for the operator; the caller's own org for any other key (a bare array, as memsy reads it)."""
    orgs = await run_in_threadpool(_core(svc).list_orgs, principal)
    return JSONResponse([org_wire(o) for o in orgs])


@router.post("/orgs", status_code=201, responses=documented(401, 403, 404, 409, 413, 422))
async def create_org(body: OrgCreateBody, principal: Principal = Depends(authenticated),
                     svc: Service = Depends(service)) -> JSONResponse:
    org = await run_in_threadpool(_core(svc).create_org, principal, body.org_id, body.name, body.focus)
    return JSONResponse(org_wire(org), status_code=201)


@router.get("/orgs/{org_id}", responses=documented(401, 403, 404, 422))
async def get_org(org_id: str, principal: Principal = Depends(authenticated),
                  svc: Service = Depends(service)) -> dict[str, Any]:
    return org_wire(await run_in_threadpool(_core(svc).get_org, principal, org_id))


@router.patch("/orgs/{org_id}", responses=documented(401, 403, 404, 409, 413, 422))
async def update_org(org_id: str, body: RecordUpdateBody, principal: Principal = Depends(authenticated),
                     svc: Service = Depends(service)) -> dict[str, Any]:
    return org_wire(await run_in_threadpool(lambda: _core(svc).update_org(
        principal, org_id, name=body.name, focus=body.focus, promotion_prompt=body.promotion_prompt)))


@router.post("/orgs/{org_id}/regenerate-prompt", responses=documented(400, 401, 403, 404, 422))
async def regenerate_org_prompt(org_id: str, principal: Principal = Depends(authenticated),
                                svc: Service = Depends(service)) -> dict[str, Any]:
    return org_wire(await run_in_threadpool(_core(svc).regenerate_org_prompt, principal, org_id))


@router.delete("/orgs/{org_id}", status_code=204, responses=documented(401, 403, 404, 422))
async def clear_org(org_id: str, principal: Principal = Depends(authenticated),
                    svc: Service = Depends(service)) -> Response:
    """Removes the org's customization (focus and prompt); the org, its keys and memories stay."""
    await run_in_threadpool(_core(svc).clear_org, principal, org_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------- roles and teams
def _unit_routes(kind: str) -> None:
    plural = f"/{kind}s"
    one = f"{plural}/{{unit_id}}"

    @router.get(plural, responses=documented(401, 403, 404, 422), name=f"list_{kind}s")
    async def list_units(org_id: str | None = None, limit: int = Query(100, ge=1, le=MAX_UNITS_PAGE),
                         offset: int = Query(0, ge=0, le=1_000_000), principal: Principal = Depends(authenticated),
                         svc: Service = Depends(service)) -> JSONResponse:
        units = await run_in_threadpool(lambda: _core(svc).list_units(principal, kind, org_id, limit=limit,
                                                                     offset=offset))
        return JSONResponse([unit_wire(u) for u in units])

    @router.post(plural, status_code=201, responses=documented(401, 403, 404, 413, 422), name=f"create_{kind}")
    async def create_unit(body: UnitCreateBody, principal: Principal = Depends(authenticated),
                          svc: Service = Depends(service)) -> JSONResponse:
        unit = await run_in_threadpool(_core(svc).create_unit, principal, kind, body.org_id, body.name, body.focus)
        return JSONResponse(unit_wire(unit), status_code=201)

    @router.get(one, responses=documented(401, 403, 404, 422), name=f"get_{kind}")
    async def get_unit(unit_id: str, org_id: str | None = None, principal: Principal = Depends(authenticated),
                       svc: Service = Depends(service)) -> dict[str, Any]:
        return unit_wire(await run_in_threadpool(_core(svc).get_unit, principal, kind, unit_id, org_id))

    @router.patch(one, responses=documented(401, 403, 404, 413, 422), name=f"update_{kind}")
    async def update_unit(unit_id: str, body: RecordUpdateBody, org_id: str | None = None,
                          principal: Principal = Depends(authenticated),
                          svc: Service = Depends(service)) -> dict[str, Any]:
        return unit_wire(await run_in_threadpool(lambda: _core(svc).update_unit(
            principal, kind, unit_id, org_id, name=body.name, focus=body.focus,
            promotion_prompt=body.promotion_prompt)))

    @router.post(f"{one}/regenerate-prompt", responses=documented(401, 403, 404, 422), name=f"regenerate_{kind}_prompt")
    async def regenerate_unit_prompt(unit_id: str, org_id: str | None = None,
                                     principal: Principal = Depends(authenticated),
                                     svc: Service = Depends(service)) -> dict[str, Any]:
        return unit_wire(await run_in_threadpool(_core(svc).regenerate_unit_prompt, principal, kind, unit_id, org_id))

    @router.delete(one, status_code=204, responses=documented(401, 403, 404, 422), name=f"delete_{kind}")
    async def delete_unit(unit_id: str, org_id: str | None = None, principal: Principal = Depends(authenticated),
                          svc: Service = Depends(service)) -> Response:
        await run_in_threadpool(_core(svc).delete_unit, principal, kind, unit_id, org_id)
        return Response(status_code=204)


_unit_routes("role")
_unit_routes("team")
