"""`/mcp` on `engram serve`: the MCP server over streamable HTTP, behind engram's own keys.

A request without a valid key is answered `401` in engram's error envelope before the MCP
layer sees it. Each tool call then runs through the API in-process (httpx's ASGI transport
into this same app) with the caller's own credentials, so the key's scopes, the org's rate
limits and usage counters apply to MCP exactly as to HTTP: a read key recalls but cannot
remember.

Stateless: every POST is one exchange, so any API process can answer it (several processes or
machines behind a balancer need no sticky sessions), and nothing is kept between calls.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
from mcp.server.mcpserver import Context
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engram.api import errors
from engram.auth import Authenticator, credentials_from_headers
from engram.client import AsyncClient
from engram.errors import ServiceError
from engram.mcp.server import build_server

PATH = "/mcp"
_FORWARDED = ("authorization", "x-api-key", "x-org-id")
_INTERNAL = "http://engram.internal"  # never resolved: the ASGI transport carries it


class _KeyGate:
    """Authenticate before the MCP app; refuse in engram's envelope."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app, self.authenticator = app, authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            secret = credentials_from_headers(headers.get("authorization"), headers.get("x-api-key"))
            await run_in_threadpool(self.authenticator.authenticate, secret, headers.get("x-org-id"))
        except ServiceError as exc:
            body = json.dumps(errors.error_body(exc.code, exc.message, exc.status)).encode()
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b'Bearer realm="engram"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def mount(app: Any, authenticator: Authenticator, host: str) -> None:
    """Serve MCP at `/mcp` on the FastAPI `app`; its session manager runs with the app."""

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=_INTERNAL)

    async def connect(ctx: Context) -> AsyncClient:
        forwarded = {k: v for k, v in (ctx.headers or {}).items() if k.lower() in _FORWARDED}
        # api_key="" (not None): never the server's own ENGRAM_API_KEY, only the caller's.
        return AsyncClient(_INTERNAL, api_key="", headers=forwarded, http_client=http, max_retries=0)

    server = build_server(connect)
    # DNS-rebinding protection (Host and Origin checked) when the server is bound to loopback.
    inner = server.streamable_http_app(streamable_http_path=PATH, stateless_http=True, json_response=True,
                                       host=host)
    # A route, not a mount: `/mcp` itself answers (a mount would redirect it to `/mcp/`).
    app.router.routes.append(Route(PATH, _KeyGate(inner, authenticator), methods=["GET", "POST", "DELETE"]))
    stack = contextlib.AsyncExitStack()

    async def start() -> None:
        await stack.enter_async_context(server.session_manager.run())

    async def stop() -> None:
        await stack.aclose()
        await http.aclose()

    app.router.add_event_handler("startup", start)
    app.router.add_event_handler("shutdown", stop)
