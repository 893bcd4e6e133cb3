"""The asynchronous face: `AsyncClient`, mirroring `Client` method for method (asyncio or trio)."""

from __future__ import annotations

import builtins
import time
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence, TypeVar

import anyio
import httpx

from engram.client import _operations as ops
from engram.client._core import DEFAULT_MAX_RETRIES, DEFAULT_POLL_TIMEOUT_S, DEFAULT_TIMEOUT_S, MAX_RETRY_AFTER_S, \
    POLL_INITIAL_S, POLL_MAX_S, Core, Operation, poll_delays
from engram.client.errors import PollTimeoutError
from engram.client.models import Event, Health, IngestJob, IngestResponse, Memory, Message, SearchResponse, \
    SearchResults, StatusResponse

T = TypeVar("T")


class AsyncClient:
    """The asynchronous twin of `engram.Client`: the same arguments, methods and errors, awaited.

    Use it as `async with AsyncClient() as client: ...`, or call `await client.aclose()`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, org_id: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_retry_after: float = MAX_RETRY_AFTER_S, headers: dict[str, str] | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._core = Core(base_url, api_key, org_id=org_id, timeout=timeout, max_retries=max_retries,
                          max_retry_after=max_retry_after, headers=headers)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient()
        self.memories = AsyncMemories(self)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    # ------------------------------------------------------------------ plumbing
    async def _send(self, op: Operation[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._core.request_args(op))
            except httpx.TransportError as exc:
                delay = self._core.retry_delay(op, attempt, error=exc)
                if delay is None:
                    raise self._core.connection_error(op, exc) from exc
            else:
                delay = self._core.retry_delay(op, attempt, response=response)
                if delay is None:
                    return self._core.result(op, response)
            await anyio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ family M
    async def ingest(self, events: Sequence[Event | Mapping[str, Any]]) -> IngestResponse:
        return await self._send(ops.ingest_events(events))

    async def status(self, event_ids: Sequence[str]) -> StatusResponse:
        return ops.merge_status([await self._send(ops.event_status(chunk)) for chunk in ops.status_chunks(event_ids)])

    async def search(self, query: str, *, actor_id: str | None = None, session_id: str | None = None,
                     exclude_session_id: str | None = None, limit: int = 10, threshold: float = 0.0,
                     include_source_events: bool = False) -> SearchResponse:
        return await self._send(ops.search_events(query, actor_id=actor_id, session_id=session_id,
                                                  exclude_session_id=exclude_session_id, limit=limit,
                                                  threshold=threshold, include_source_events=include_source_events))

    async def health(self) -> Health:
        return await self._send(ops.health())


class AsyncMemories:
    """Family X, awaited. `list` is an async iterator: `async for memory in client.memories.list(...)`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.jobs = AsyncJobs(client)

    async def ingest(self, *, messages: Sequence[Message | Mapping[str, Any]], user_id: str, conv_id: str,
                     agent_id: str | None = None, app_id: str | None = None,
                     metadata: Mapping[str, Any] | None = None, extract_artifacts: bool = False,
                     wait: bool = False, idempotency_key: str | None = None,
                     group_ids: Sequence[str] | None = None) -> IngestJob:
        return await self._client._send(ops.ingest_messages(
            messages, user_id=user_id, conv_id=conv_id, agent_id=agent_id, app_id=app_id, metadata=metadata,
            extract_artifacts=extract_artifacts, wait=wait, idempotency_key=idempotency_key,
            group_ids=group_ids))

    async def get(self, memory_id: str) -> Memory:
        return await self._client._send(ops.get_memory(memory_id))

    async def list(self, *, user_id: str | None = None, agent_id: str | None = None, conv_id: str | None = None,
                   app_id: str | None = None, type: str | None = None, order: str = "created_at_desc",
                   page_size: int = 50, include: Iterable[str] | str | None = None) -> AsyncIterator[Memory]:
        cursor: str | None = None
        while True:
            page = await self._client._send(ops.list_memories(
                user_id=user_id, agent_id=agent_id, conv_id=conv_id, app_id=app_id, type=type, order=order,
                page_size=page_size, include=include, cursor=cursor))
            for memory in page.data:
                yield memory
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    async def search(self, *, query: str, filters: Mapping[str, Any] | None = None, limit: int | None = None,
                     cursor: str | None = None, include: Iterable[str] | str | None = None) -> SearchResults:
        return await self._client._send(ops.search_memories(query, filters=filters, limit=limit, cursor=cursor,
                                                            include=include))

    async def update(self, memory_id: str, *, text: str | None = None,
                     metadata: Mapping[str, Any] | None = None) -> Memory:
        return await self._client._send(ops.update_memory(memory_id, text=text, metadata=metadata))

    async def delete(self, memory_id: str) -> None:
        await self._client._send(ops.delete_memory(memory_id))

    async def revisions(self, memory_id: str) -> builtins.list[Memory]:
        return await self._client._send(ops.memory_revisions(memory_id))


class AsyncJobs:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, job_id: str) -> IngestJob:
        return await self._client._send(ops.get_job(job_id))

    async def poll_until_done(self, job_id: str | IngestJob, *, timeout: float = DEFAULT_POLL_TIMEOUT_S,
                              initial_interval: float = POLL_INITIAL_S,
                              max_interval: float = POLL_MAX_S) -> IngestJob:
        job_id = job_id.id if isinstance(job_id, IngestJob) else job_id
        deadline = time.monotonic() + timeout
        delays = poll_delays(initial_interval, max_interval)
        while True:
            job = await self.get(job_id)
            if job.is_done:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PollTimeoutError(f"job {job_id} still {job.status} after {timeout:g}s", job=job)
            await anyio.sleep(min(next(delays), remaining))
