"""The FastAPI application: middleware, error handlers and the route modules."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engram import __version__, console, metrics
from engram.api import (admin, errors, family_m, family_x, groups, hosted, lifecycle, memsy_console, onboarding,
                        usage, webhooks)
from engram.api.codec import JSONResponse
from engram.api.deps import DOCUMENTED_BODIES
from engram.auth import Authenticator
from engram.config import Limits
from engram.domain.cursors import MAX_CURSOR_CHARS
from engram.domain.inputs import ROLE_BY_KIND
from engram.errors import ServiceError
from engram.onboarding import MAX_FOCUS_CHARS
from engram.prompts import MAX_PROMPT_CHARS
from engram.service import Service

log = logging.getLogger("engram.api")
access_log = logging.getLogger("engram.access")


class RequestEnvelope:
    """What wraps every request, in one pass over the response's start:

    - `X-Request-Id` (the client's, else a new one) on every response, and the stable 500
      envelope (logged with the id) when a route raises;
    - `RateLimit-Limit/Remaining/Reset` (and memsy's `X-RateLimit-*`) on every response a rate
      limit applied to (engram/ratelimit.py; a 429 carries its own);
    - with `observe`, the latency into `engram_http_request_duration_seconds` (route template,
      method, status), and with `json_log` one access-log line (request id, org, route, status,
      latency).
    """

    def __init__(self, app: ASGIApp, observe: bool = True, json_log: bool = False) -> None:
        self.app = app
        self.observe = observe
        self.json_log = json_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1").strip()
        request_id = incoming[:128] if incoming else uuid.uuid4().hex
        scope["engram.request_id"] = request_id
        status = 0  # 0 until a response has started

        async def send_decorated(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
                decision = scope.get("state", {}).get("rate_limit")
                if decision is not None and not any(name == b"ratelimit-limit" for name, _ in headers):
                    headers += decision.headers()
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_decorated)
        except Exception:
            # Last line of defence: log with the request id, answer the stable 500 envelope.
            log.exception("unhandled error (request %s)", request_id)
            if status:
                raise
            body = json.dumps(errors.error_body("server_error", f"internal error; quote request id {request_id}",
                                                500)).encode()
            await send_decorated({"type": "http.response.start", "status": 500,
                                  "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())]})
            await send_decorated({"type": "http.response.body", "body": body})
        finally:
            if self.observe or self.json_log:
                self._record(scope, status or 500, time.perf_counter() - begun)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", None) or "unmatched"  # a template, never the raw path
        if self.observe:
            metrics.REQUEST_SECONDS.labels(template, scope["method"], str(status)).observe(seconds)
        if self.json_log:
            principal = scope.get("state", {}).get("principal")
            access_log.info("request", extra={"fields": {
                "request_id": scope["engram.request_id"], "org": getattr(principal, "org_id", None),
                "method": scope["method"], "route": template, "status": status,
                "latency_ms": round(seconds * 1000, 3)}})


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413 before they are parsed (and before they are read whole).

    A declared `Content-Length` over the limit is answered at once. A body sent without one
    (chunked) is counted as it arrives; the chunk that crosses the limit raises the 413 as an
    `HTTPException` from `receive`, which FastAPI passes through its body reading untouched
    (any other exception there becomes a generic 400) to the error handlers, so every route
    answers the same envelope. (FastAPI's own `max_body_size` answers plain text when a
    route responds without reading an over-long declared body; this does not.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}  # routes that stream their body (an import) have a limit of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, self._message(limit))
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    def _message(limit: int) -> str:
        return f"the request body is larger than {limit} bytes"

    async def _reject(self, send: Send, limit: int) -> None:
        body = json.dumps(errors.error_body("payload_too_large", self._message(limit), 413)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(service: Service, authenticator: Authenticator) -> FastAPI:
    app = FastAPI(title="engram", version=__version__, default_response_class=JSONResponse,
                  description="Long-term memory for AI agents: family X (/v1/memories) and family M (/v1/ingest, "
                              "/v1/status, /v1/search) on one core.")
    app.state.service = service
    app.state.authenticator = authenticator
    app.add_exception_handler(ServiceError, errors.handle_service_error)
    app.add_exception_handler(RequestValidationError, errors.handle_request_validation)
    app.add_exception_handler(StarletteHTTPException, errors.handle_http_error)
    app.include_router(family_x.router)
    app.include_router(family_m.router)
    app.include_router(lifecycle.router)
    app.include_router(admin.router)
    app.include_router(usage.router)
    app.include_router(webhooks.router)
    app.include_router(groups.router)
    app.include_router(onboarding.router)
    app.include_router(memsy_console.router)
    app.include_router(hosted.router)
    console.install(app)  # the HTML console at /console (engram/console/)
    limits = service.settings.limits
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes,
                       per_path={lifecycle.IMPORT_PATH: limits.max_import_bytes})
    app.add_middleware(RequestEnvelope, observe=service.settings.metrics,
                       json_log=service.settings.log_format == "json")
    if service.settings.metrics:
        metrics.initialise("api")

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            """Prometheus text format: every engram process of this machine, and the queue."""
            body, content_type = await run_in_threadpool(metrics.render, service.store)
            return Response(body, media_type=content_type)
    app.openapi = _openapi_with_documented_bodies(app, service.settings.limits)  # type: ignore[method-assign]
    app.router.add_event_handler("shutdown", service.usage.close)  # the last second's counts too
    return app


def _openapi_with_documented_bodies(app: FastAPI, limits: Limits) -> Callable[[], dict[str, Any]]:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, model in DOCUMENTED_BODIES.items():
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[name] = schema
            _document_limits(schemas, limits)
        return app.openapi_schema or document

    return openapi


def _document_limits(schemas: dict[str, Any], limits: Limits) -> None:
    """The configured limits of this server, written into the body schemas, so that a request
    the document calls valid is one the server accepts (docs/design.md, "Hostile input")."""
    # Text engram keeps: at least one non-space character, no NUL (a NUL in free text is
    # stripped, so only the non-space rule is stated there).
    ids = {"maxLength": limits.max_id_chars, "pattern": r"^[^\x00]*\S[^\x00]*$"}
    label = {"maxLength": limits.max_id_chars, "pattern": r"^[^\x00]*$"}
    unset_or_id = {"maxLength": limits.max_id_chars, "pattern": r"^$|^[^\x00]*\S[^\x00]*$"}  # memsy: "" is unset
    text = {"pattern": r"[^\s\x00]"}
    rules: dict[str, dict[str, dict[str, Any]]] = {
        "MessagesIngestBody": {"messages": {"minItems": 1, "maxItems": limits.max_items_per_call}, "user_id": ids,
                               "conv_id": ids, "agent_id": ids, "app_id": ids, "group_ids": {"items": ids}},
        "MessageBody": {"content": {"maxLength": limits.max_content_chars_x, **text}, "role": ids,
                        "name": label, "dia_id": label},
        "MemorySearchBody": {"query": {"maxLength": limits.max_query_chars, **text},
                             "cursor": {"maxLength": MAX_CURSOR_CHARS},
                             "include": {"items": {"enum": sorted(family_x.SEARCH_INCLUDES | family_x.CORPORA)},
                                         "uniqueItems": True},
                             "user_id": ids, "agent_id": ids, "app_id": ids, "group_ids": {"items": ids}},
        "UpdateBody": {"text": {"maxLength": limits.max_content_chars_x, **text}},
        "EventsIngestBody": {"events": {"minItems": 1, "maxItems": limits.max_items_per_call}},
        "EventBody": {"content": {"maxLength": limits.max_content_chars_m, **text}, "kind": {"enum": list(ROLE_BY_KIND)},
                      "actor_id": ids, "session_id": ids, "role_id": ids, "team_id": ids, "event_id": ids,
                      "metadata": {"maxLength": limits.max_metadata_chars}},
        "StatusBody": {"event_ids": {"maxItems": limits.max_status_ids, "items": ids}},
        "OrgCreateBody": {"org_id": ids, "name": ids, "focus": {"maxLength": MAX_FOCUS_CHARS, **text}},
        "UnitCreateBody": {"org_id": ids, "name": ids, "focus": {"maxLength": MAX_FOCUS_CHARS, **text}},
        "RecordUpdateBody": {"name": ids, "focus": {"maxLength": MAX_FOCUS_CHARS, **text},
                             "promotion_prompt": {"maxLength": MAX_PROMPT_CHARS, **text}},
        "EventSearchBody": {"query": {"maxLength": limits.max_query_chars, **text}, "actor_id": unset_or_id,
                            "session_id": unset_or_id, "exclude_session_id": unset_or_id,
                            "role_ids": {"items": ids}, "team_ids": {"items": ids}},
    }
    for name, fields in rules.items():
        properties = schemas.get(name, {}).get("properties", {})
        for field, bounds in fields.items():
            if field in properties:
                _bound(properties[field], bounds)


def _bound(prop: dict[str, Any], bounds: dict[str, Any]) -> None:
    """Add `bounds` to a property, or to the branches of its `anyOf` that they fit (a string
    bound to the string branch of `str | None`, an item bound to the array branch)."""
    branches = prop.get("anyOf", [prop])
    for branch in branches:
        kind = branch.get("type")
        for key, value in bounds.items():
            if key == "items" and kind == "array":
                branch.setdefault("items", {}).update(value)
            elif key in ("maxItems", "minItems", "uniqueItems") and kind == "array":
                branch[key] = value
            elif key in ("maxLength", "enum", "pattern") and kind == "string":
                branch[key] = value


def openapi_document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()
