"""The admin API (docs/operations.md): who the caller is and API keys — in the shapes the memsy
control client reads (`/v1/me`, `/v1/keys`), with engram's own fields beside them. Orgs are
one resource with memsy's onboarding records (engram/api/onboarding.py).

Only wire shapes live here; the rules are engram/admin.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from engram.admin import Admin
from engram.api.codec import JSONResponse, StrictJSONRoute
from engram.api.deps import authenticated, service
from engram.api.errors import documented
from engram.api.fields import Instant
from engram.auth import Principal
from engram.domain.records import ApiKey, iso
from engram.service import Service

router = APIRouter(prefix="/v1", tags=["admin"], route_class=StrictJSONRoute)


class KeyBody(BaseModel):
    name: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["read", "write"])
    expires_at: Instant | None = None
    org_id: str | None = None  # the operator's: a key of another org


def _admin(svc: Service) -> Admin:
    return svc.admin


def key_wire(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.id, "prefix": key.prefix, "name": key.name, "scopes": list(key.scopes),
            "is_active": key.revoked_at is None, "created_at": iso(key.created_at), "last_used_at": None,
            "expires_at": iso(key.expires_at), "revoked_at": iso(key.revoked_at), "org_id": key.org_id}


@router.get("/me", responses=documented(401, 403, 422))
async def me(principal: Principal = Depends(authenticated), svc: Service = Depends(service)) -> dict[str, Any]:
    """The calling key: its org and scopes (memsy's `control.me()` reads the same object)."""
    org = await run_in_threadpool(svc.store.get_org, principal.org_id)
    operator = Admin.is_operator(principal)
    return {"object": "me", "org_id": principal.org_id, "org_name": org.name if org else principal.org_id,
            "key_id": principal.key_id, "scopes": sorted(principal.scopes), "is_operator": operator,
            # memsy's MeResponse; a self-hosted server has no customers, e-mails or billing
            "customer_id": principal.org_id, "email": None, "tier": "self-hosted", "is_superadmin": operator,
            "is_billing_admin": False, "user_id": None, "org_role": "admin" if "admin" in principal.scopes else "member"}


@router.get("/keys", responses=documented(401, 403, 404, 422))
async def list_keys(org_id: str | None = None, principal: Principal = Depends(authenticated),
                    svc: Service = Depends(service)) -> dict[str, Any]:
    """The org's keys (never their secrets), in the shape of memsy's `control.keys.list()`."""
    keys = await run_in_threadpool(_admin(svc).list_keys, principal, org_id)
    return {"keys": [key_wire(k) for k in keys], "active_count": sum(k.revoked_at is None for k in keys),
            "max_keys": svc.settings.max_keys_per_org}


@router.post("/keys", status_code=201, responses=documented(401, 403, 404, 413, 422))
async def create_key(body: KeyBody, principal: Principal = Depends(authenticated),
                     svc: Service = Depends(service)) -> JSONResponse:
    """A new key; `raw_key` is shown in this answer only."""
    key, secret = await run_in_threadpool(lambda: _admin(svc).create_key(
        principal, body.scopes, name=body.name, expires_at=body.expires_at, org_id=body.org_id))
    return JSONResponse({**key_wire(key), "raw_key": secret}, status_code=201)


@router.delete("/keys/{key_id}", status_code=204, responses=documented(401, 403, 404, 422))
async def revoke_key(key_id: str, principal: Principal = Depends(authenticated),
                     svc: Service = Depends(service)) -> Response:
    await run_in_threadpool(_admin(svc).revoke_key, principal, key_id)
    return Response(status_code=204)
