"""Request-scoped dependencies shared by every route module."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from engram.auth import Authenticator, Principal, credentials_from_headers
from engram.service import Service

T = TypeVar("T")
_ONE_REQUEST = {"requests": 1}


async def service(request: Request) -> Service:
    # async so that FastAPI does not hop to a worker thread just to read an attribute
    return request.app.state.service


async def principal_of(request: Request, scope: str) -> Principal:
    """Authenticate a request and check one scope, without FastAPI's dependency machinery
    (the hot routes call this directly; `scoped` wraps it for the others)."""
    headers = request.headers
    principal = await _authenticate(request, headers.get("authorization"), headers.get("x-api-key"),
                                    headers.get("x-org-id"))
    principal.require(scope)
    return principal


async def _principal(
    request: Request,
    authorization: str | None = Header(default=None, include_in_schema=False),
    x_api_key: str | None = Header(default=None, include_in_schema=False),
    x_org_id: str | None = Header(default=None, include_in_schema=False),
) -> Principal:
    return await _authenticate(request, authorization, x_api_key, x_org_id)


async def _authenticate(request: Request, authorization: str | None, x_api_key: str | None,
                        x_org_id: str | None) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    secret = credentials_from_headers(authorization, x_api_key)
    # Known keys are answered from memory on the event loop; only a miss pays a thread hop.
    principal = authenticator.authenticate_cached(secret, x_org_id)
    if principal is None:
        principal = await run_in_threadpool(authenticator.authenticate, secret, x_org_id)
    admit(request, principal)
    return principal


def admit(request: Request, principal: Principal) -> None:
    """One request of an authenticated principal: rate limited first (a refused request is not
    counted as used), then counted; the headers are added to the response by
    app.RequestEnvelope. The API's routes and the web console's pages alike."""
    svc: Service = request.app.state.service
    request.state.principal = principal  # for the access log (app.RequestEnvelope)
    request.state.rate_limit = svc.rate.request(principal.org_id, principal.key_id)
    svc.usage.add(principal.org_id, _ONE_REQUEST, principal.key_id)


def scoped(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates and checks one scope."""

    async def dependency(principal: Principal = Depends(_principal)) -> Principal:
        principal.require(scope)
        return principal

    return dependency


async def authenticated(principal: Principal = Depends(_principal)) -> Principal:
    """Any valid key, whatever its scopes (each operation checks its own)."""
    return principal


reader = scoped("read")
writer = scoped("write")
admin = scoped("admin")


# Models of bodies that hot routes parse themselves; `create_app` adds them to the OpenAPI document.
DOCUMENTED_BODIES: dict[str, type[BaseModel]] = {}


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as a route's JSON body."""
    DOCUMENTED_BODIES[model.__name__] = model
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


async def json_body(request: Request, adapter: TypeAdapter[T]) -> T:
    """Parse and validate a JSON body in one pass (pydantic's parser, not json + a second walk);
    failures are the same 422 that FastAPI's declared bodies give, located under `body`."""
    try:
        return adapter.validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None
