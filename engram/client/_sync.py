"""The synchronous face: `Client`, `client.memories`, `client.memories.jobs`."""

from __future__ import annotations

import builtins
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar

import httpx

from engram.client import _operations as ops
from engram.client._core import DEFAULT_MAX_RETRIES, DEFAULT_POLL_TIMEOUT_S, DEFAULT_TIMEOUT_S, MAX_RETRY_AFTER_S, \
    POLL_INITIAL_S, POLL_MAX_S, Core, Operation, poll_delays
from engram.client.errors import PollTimeoutError
from engram.client.models import Event, Health, IngestJob, IngestResponse, Memory, Message, SearchResponse, \
    SearchResults, StatusResponse

T = TypeVar("T")


class Client:
    """A synchronous client for an engram server, speaking both API families.

    `base_url` defaults to `ENGRAM_BASE_URL`, then `http://127.0.0.1:8420`; `api_key` to
    `ENGRAM_API_KEY` (none is needed by a fresh local server). Family X lives under
    `client.memories`; family M is `client.ingest / status / search / health`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, org_id: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_retry_after: float = MAX_RETRY_AFTER_S, headers: dict[str, str] | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self._core = Core(base_url, api_key, org_id=org_id, timeout=timeout, max_retries=max_retries,
                          max_retry_after=max_retry_after, headers=headers)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client()
        self.memories = Memories(self)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    # ------------------------------------------------------------------ plumbing
    def _send(self, op: Operation[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._core.request_args(op))
            except httpx.TransportError as exc:
                delay = self._core.retry_delay(op, attempt, error=exc)
                if delay is None:
                    raise self._core.connection_error(op, exc) from exc
            else:
                delay = self._core.retry_delay(op, attempt, response=response)
                if delay is None:
                    return self._core.result(op, response)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ family M
    def ingest(self, events: Sequence[Event | Mapping[str, Any]]) -> IngestResponse:
        """Store events durably; returns their ids in input order (processing goes on in the background)."""
        return self._send(ops.ingest_events(events))

    def status(self, event_ids: Sequence[str]) -> StatusResponse:
        """Partition event ids into `completed_ids`, `pending_ids` and `failed_ids` (any number of ids)."""
        return ops.merge_status([self._send(ops.event_status(chunk)) for chunk in ops.status_chunks(event_ids)])

    def search(self, query: str, *, actor_id: str | None = None, session_id: str | None = None,
               exclude_session_id: str | None = None, limit: int = 10, threshold: float = 0.0,
               include_source_events: bool = False) -> SearchResponse:
        """Family-M search; no `actor_id` searches the whole org."""
        return self._send(ops.search_events(query, actor_id=actor_id, session_id=session_id,
                                            exclude_session_id=exclude_session_id, limit=limit, threshold=threshold,
                                            include_source_events=include_source_events))

    def health(self) -> Health:
        return self._send(ops.health())


class Memories:
    """Family X: messages in, jobs, memories out."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.jobs = Jobs(client)

    def ingest(self, *, messages: Sequence[Message | Mapping[str, Any]], user_id: str, conv_id: str,
               agent_id: str | None = None, app_id: str | None = None, metadata: Mapping[str, Any] | None = None,
               extract_artifacts: bool = False, wait: bool = False,
               idempotency_key: str | None = None, group_ids: Sequence[str] | None = None) -> IngestJob:
        """Start an ingest job. `wait=True` holds the call until the job ends or the server's budget passes;
        `group_ids` names groups its new memories may join (unknown or archived ones come back in
        `result.ignored_group_ids`)."""
        return self._client._send(ops.ingest_messages(
            messages, user_id=user_id, conv_id=conv_id, agent_id=agent_id, app_id=app_id, metadata=metadata,
            extract_artifacts=extract_artifacts, wait=wait, idempotency_key=idempotency_key,
            group_ids=group_ids))

    def get(self, memory_id: str) -> Memory:
        return self._client._send(ops.get_memory(memory_id))

    def list(self, *, user_id: str | None = None, agent_id: str | None = None, conv_id: str | None = None,
             app_id: str | None = None, type: str | None = None, order: str = "created_at_desc",
             page_size: int = 50, include: Iterable[str] | str | None = None) -> Iterator[Memory]:
        """Every matching memory, fetching page after page as you iterate."""
        cursor: str | None = None
        while True:
            page = self._client._send(ops.list_memories(
                user_id=user_id, agent_id=agent_id, conv_id=conv_id, app_id=app_id, type=type, order=order,
                page_size=page_size, include=include, cursor=cursor))
            yield from page.data
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def search(self, *, query: str, filters: Mapping[str, Any] | None = None, limit: int | None = None,
               cursor: str | None = None, include: Iterable[str] | str | None = None) -> SearchResults:
        return self._client._send(ops.search_memories(query, filters=filters, limit=limit, cursor=cursor,
                                                      include=include))

    def update(self, memory_id: str, *, text: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> Memory:
        """Change a fact's text (a new fact supersedes the old) and/or merge metadata."""
        return self._client._send(ops.update_memory(memory_id, text=text, metadata=metadata))

    def delete(self, memory_id: str) -> None:
        self._client._send(ops.delete_memory(memory_id))

    def revisions(self, memory_id: str) -> builtins.list[Memory]:
        """The memory's history, oldest first."""
        return self._client._send(ops.memory_revisions(memory_id))


class Jobs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, job_id: str) -> IngestJob:
        return self._client._send(ops.get_job(job_id))

    def poll_until_done(self, job_id: str | IngestJob, *, timeout: float = DEFAULT_POLL_TIMEOUT_S,
                        initial_interval: float = POLL_INITIAL_S, max_interval: float = POLL_MAX_S) -> IngestJob:
        """Poll until the job succeeds or fails (backing off 0.5 s → 5 s); a failed job is returned, not raised.

        Raises `PollTimeoutError` (with `.job`, its last state) when `timeout` seconds pass first.
        """
        job_id = job_id.id if isinstance(job_id, IngestJob) else job_id
        deadline = time.monotonic() + timeout
        delays = poll_delays(initial_interval, max_interval)
        while True:
            job = self.get(job_id)
            if job.is_done:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PollTimeoutError(f"job {job_id} still {job.status} after {timeout:g}s", job=job)
            time.sleep(min(next(delays), remaining))
