"""engram's own data-lifecycle endpoints (SPEC §5, docs/lifecycle.md): erase a user, retract
a conversation, replay one, export either as JSON Lines, import an export.

Only wire shapes live here; the operations are `engram/lifecycle/`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from engram.api.codec import JSONResponse, StrictJSONRoute
from engram.api.deps import reader, service, writer
from engram.api.errors import documented
from engram.api.family_x import job_wire
from engram.auth import Principal
from engram.errors import ServiceError
from engram.service import Service

router = APIRouter(prefix="/v1", tags=["data lifecycle"], route_class=StrictJSONRoute)

IMPORT_PATH = "/v1/import"
NDJSON = "application/x-ndjson"


@router.delete("/users/{user_id}", responses=documented(401, 403, 422))
async def erase_user(user_id: str, compact: bool = False, principal: Principal = Depends(writer),
                     svc: Service = Depends(service)) -> dict[str, Any]:
    """Erase everything of the user in this org (right to erasure). With `compact=true`
    (scope `admin`), also purge the store's files of what the delete left behind."""
    if compact:
        principal.require("admin")
    erased = await run_in_threadpool(svc.lifecycle.erase_user, principal.org_id, user_id)
    compacted = await run_in_threadpool(svc.lifecycle.compact) if compact else None
    return {"object": "user_erasure", "user_id": user_id, "events_deleted": erased.events,
            "memories_deleted": erased.memories, "memories_deleted_by_status": erased.memories_by_status,
            "jobs_deleted": erased.jobs_deleted, "jobs_failed": erased.jobs_failed,
            "idempotency_keys_deleted": erased.idempotency_keys, "compacted": compacted}


@router.delete("/conversations/{conv_id}", responses=documented(401, 403, 422))
async def retract_conversation(conv_id: str, user_id: str | None = Query(None), principal: Principal = Depends(writer),
                               svc: Service = Depends(service)) -> dict[str, Any]:
    """Retract every memory derived only from this conversation of the user; its turns are
    marked deleted and its unfinished jobs fail with `resource_deleted`."""
    done = await run_in_threadpool(svc.lifecycle.retract_conversation, principal.org_id, user_id, conv_id)
    return {"object": "conversation_retraction", "user_id": user_id, "conv_id": conv_id, **asdict(done)}


@router.post("/conversations/{conv_id}/replay", status_code=202, responses={
    200: {"description": "With `?wait=true`: the job ended (succeeded or failed) within the wait budget."},
    **documented(401, 403, 404, 422)})
async def replay_conversation(conv_id: str, user_id: str | None = Query(None), wait: bool = False,
                              principal: Principal = Depends(writer), svc: Service = Depends(service)) -> JSONResponse:
    """Extract the conversation's remembered turns again with the current extractor: a job
    (family X's job shape) whose result lists what changed; the old facts are superseded."""
    job = await run_in_threadpool(svc.lifecycle.replay, principal.org_id, user_id, conv_id)
    if wait:
        job = await svc.wait_for_job(principal.org_id, job.id)
    return JSONResponse(job_wire(job), status_code=200 if wait and job.status in ("succeeded", "failed") else 202)


@router.get("/users/{user_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {}}}, **documented(401, 403, 422)})
async def export_user(user_id: str, principal: Principal = Depends(reader),
                      svc: Service = Depends(service)) -> StreamingResponse:
    """The user's events and memories as JSON Lines (docs/lifecycle.md), streamed."""
    lines = await run_in_threadpool(svc.lifecycle.export, principal.org_id, user_id)
    return StreamingResponse(lines, media_type=NDJSON,
                             headers={"content-disposition": 'attachment; filename="engram-export.jsonl"'})


@router.get("/conversations/{conv_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {}}}, **documented(401, 403, 422)})
async def export_conversation(conv_id: str, user_id: str | None = Query(None), principal: Principal = Depends(reader),
                              svc: Service = Depends(service)) -> StreamingResponse:
    lines = await run_in_threadpool(svc.lifecycle.export, principal.org_id, user_id, conv_id)
    return StreamingResponse(lines, media_type=NDJSON,
                             headers={"content-disposition": 'attachment; filename="engram-export.jsonl"'})


@router.post("/import", responses=documented(401, 403, 409, 413, 422))
async def import_export(request: Request, principal: Principal = Depends(writer),
                        svc: Service = Depends(service)) -> dict[str, Any]:
    """Take an export back (ids kept; importing twice writes nothing twice). The body is
    read a line at a time and written in batches, whatever its size."""
    importer = svc.lifecycle.importer(principal.org_id)
    async for line in _lines(request, svc.settings.limits.max_body_bytes):
        importer.add(line)
        if importer.ready:
            await run_in_threadpool(importer.flush)
    report = await run_in_threadpool(importer.finish)
    return report.wire()


async def _lines(request: Request, max_line_bytes: int) -> AsyncIterator[bytes]:
    """The body's lines as they arrive; one longer than `max_line_bytes` is refused."""
    pending = b""
    number = 0
    async for chunk in request.stream():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            yield line
        if len(pending) > max_line_bytes:
            raise ServiceError("invalid_import", f"line {number + 1} is longer than {max_line_bytes} bytes",
                               extra={"line": number + 1})
    if pending.strip():
        yield pending

