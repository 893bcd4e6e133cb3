"""Request-scoped dependencies shared by every route module."""

from __future__ import annotations

from typing import Callable

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from engram.auth import Authenticator, Principal, credentials_from_headers
from engram.service import Service


def service(request: Request) -> Service:
    return request.app.state.service


async def _principal(
    request: Request,
    authorization: str | None = Header(default=None, include_in_schema=False),
    x_api_key: str | None = Header(default=None, include_in_schema=False),
    x_org_id: str | None = Header(default=None, include_in_schema=False),
) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    secret = credentials_from_headers(authorization, x_api_key)
    return await run_in_threadpool(authenticator.authenticate, secret, x_org_id)


def scoped(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates and checks one scope."""

    async def dependency(principal: Principal = Depends(_principal)) -> Principal:
        principal.require(scope)
        return principal

    return dependency


reader = scoped("read")
writer = scoped("write")
admin = scoped("admin")
