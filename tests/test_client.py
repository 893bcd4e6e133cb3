"""The Python client against real `engram serve` processes: every method, both faces, typed errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Iterator

import pytest

import engram
from tests.conftest import ServerProcess, create_key


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(server: ServerProcess) -> Iterator[engram.Client]:
    with engram.Client(server.url) as c:
        yield c


def wait_events(client: engram.Client, event_ids: list[str], timeout_s: float = 60.0) -> engram.StatusResponse:
    deadline = time.monotonic() + timeout_s
    status = client.status(event_ids=event_ids)
    while status.pending_ids and time.monotonic() < deadline:
        time.sleep(0.2)
        status = client.status(event_ids=event_ids)
    return status


# ------------------------------------------------------------------ family X
def test_family_x_ingest_poll_get_list_search_delete(client: engram.Client) -> None:
    user = uid()
    job = client.memories.ingest(
        messages=[{"role": "user", "content": "My favorite food is pad see ew."},
                  engram.Message(role="assistant", content="Noted — Thai food."),  # an acknowledgement: no memory
                  {"role": "user", "content": "I cook Thai food at home on Sundays."}],
        user_id=user, conv_id="conv_2026_05_16", metadata={"project": "atlas", "channel": "support"})
    assert isinstance(job, engram.IngestJob) and job.status == "pending" and job.id.startswith("job_")

    done = client.memories.jobs.poll_until_done(job.id, timeout=60)
    assert done.status == "succeeded", done.error
    assert client.memories.jobs.get(job.id).status == "succeeded"
    created = done.result.memories_created
    assert any("pad see ew" in ref.text for ref in created)
    assert not any("assistant" in ref.text.lower() for ref in created), "the acknowledgement is no memory"

    memory = client.memories.get(created[0].id)
    assert memory.id == created[0].id and memory.user_id == user and memory.metadata["project"] == "atlas"
    assert isinstance(memory.details, engram.FactDetails) and memory.details.status == "active"
    assert memory.details.source_event_ids

    listed = list(client.memories.list(user_id=user, page_size=1))
    assert sorted(m.id for m in listed) == sorted(ref.id for ref in created), "list must follow every cursor"
    assert len(created) >= 2, "the cursor-following check needs two pages"

    results = client.memories.search(query="thai food", filters={"user_id": user, "project": "atlas"},
                                     include=["source_events", "context_prompt"], limit=5)
    assert isinstance(results, engram.SearchResults) and results.data
    assert all(m.user_id == user and m.score is not None for m in results.data)
    assert results.data[0].details.source_events and results.extras.context_prompt
    assert not client.memories.search(query="thai food", filters={"user_id": user, "project": "other"}).data

    client.memories.delete(memory.id)
    with pytest.raises(engram.NotFoundError) as caught:
        client.memories.delete(memory.id)
    assert caught.value.code == "memory_not_found"
    assert memory.id not in {m.id for m in client.memories.list(user_id=user)}


def test_family_x_sync_mode_and_idempotency_key(client: engram.Client) -> None:
    user = uid()
    job = client.memories.ingest(messages=[{"role": "user", "content": "I am vegetarian."}],
                                 user_id=user, conv_id="conv_2026_05_16", wait=True)
    assert job.status == "succeeded" and job.result.memories_created

    body = dict(messages=[{"role": "user", "content": "I live in Porto."}], user_id=user, conv_id="c2")
    first = client.memories.ingest(**body, idempotency_key=f"k-{user}")
    again = client.memories.ingest(**body, idempotency_key=f"k-{user}")
    assert again.id == first.id, "the same Idempotency-Key and body name the same job"
    other = client.memories.ingest(**body)
    assert other.id != first.id, "without a shared key, a second call is a second job"


# ------------------------------------------------------------------ family M
def test_family_m_ingest_status_search_health(client: engram.Client) -> None:
    actor = uid("a")
    events = [
        {"actor_id": actor, "session_id": "s1", "kind": "user_message", "content": "I moved to Lisbon last month.",
         "ts": "2026-05-16T10:00:00Z", "metadata": {"channel": "chat"}},
        engram.Event(actor_id=actor, session_id="s1", kind="assistant_message", content="Congratulations!"),
    ]
    result = client.ingest(events)
    assert isinstance(result, engram.IngestResponse) and len(result.event_ids) == 2

    # The seed's polling loop, as written.
    status = client.status(event_ids=result.event_ids)
    while status.pending_ids:
        time.sleep(0.2)
        status = client.status(event_ids=result.event_ids)
    assert sorted(status.completed_ids) == sorted(result.event_ids) and not status.failed_ids
    assert status.total == 2 and set(status.statuses.values()) == {"completed"}

    plain = client.search("where does the user live", actor_id=actor, limit=5)
    assert plain.results and all("source_events" not in r.metadata for r in plain.results)
    found = client.search("where does the user live", actor_id=actor, include_source_events=True, threshold=0.0)
    lisbon = [r for r in found.results if "Lisbon" in r.content]
    assert lisbon and lisbon[0].metadata["source_events"][0]["content"] == "I moved to Lisbon last month."
    assert lisbon[0].metadata["channel"] == "chat", "dict metadata arrives as the event's metadata"

    health = client.health()
    assert health.status == "ok" and health.version == engram.__version__ and "store" in health.components


def test_family_m_event_ids_make_a_repeat_harmless(client: engram.Client) -> None:
    actor = uid("a")
    events = [{"actor_id": actor, "session_id": "s1", "kind": "user_message", "content": "I own two bikes.",
               "event_id": f"evt-{actor}"}]
    first = client.ingest(events)
    again = client.ingest(events)
    assert again.event_ids == first.event_ids


def test_status_reports_unknown_ids_as_failed(client: engram.Client) -> None:
    status = client.status(event_ids=["01UNKNOWNUNKNOWNUNKNOWNUNK"])
    assert status.failed_ids == ["01UNKNOWNUNKNOWNUNKNOWNUNK"]
    assert status.reasons["01UNKNOWNUNKNOWNUNKNOWNUNK"] == "not_found"


# ------------------------------------------------------------------ the async face
def test_async_client_both_families(server: ServerProcess) -> None:
    user = uid()

    async def main() -> None:
        async with engram.AsyncClient(server.url) as client:
            assert (await client.health()).status == "ok"
            job = await client.memories.ingest(messages=[{"role": "user", "content": "I work as a nurse."},
                                                         {"role": "user", "content": "I play the cello."}],
                                               user_id=user, conv_id="c1", metadata={"project": "atlas"})
            done = await client.memories.jobs.poll_until_done(job, timeout=60)
            assert done.status == "succeeded"
            assert (await client.memories.jobs.get(job.id)).status == "succeeded"
            ids = [ref.id for ref in done.result.memories_created]
            memory = await client.memories.get(ids[0])
            assert memory.user_id == user
            listed = [m.id async for m in client.memories.list(user_id=user, page_size=1)]
            assert sorted(listed) == sorted(ids)
            results = await client.memories.search(query="what is their job", filters={"project": "atlas",
                                                                                       "user_id": user})
            assert any("nurse" in m.text for m in results.data)
            synced = await client.memories.ingest(messages=[{"role": "user", "content": "I am allergic to nuts."}],
                                                  user_id=user, conv_id="c1", wait=True)
            assert synced.status == "succeeded"
            await client.memories.delete(ids[0])
            with pytest.raises(engram.NotFoundError):
                await client.memories.get("00000000-0000-0000-0000-000000000000")

            result = await client.ingest([{"actor_id": user, "session_id": "s9", "kind": "user_message",
                                           "content": "I drive a blue van."}])
            status = await client.status(event_ids=result.event_ids)
            while status.pending_ids:
                await asyncio.sleep(0.2)
                status = await client.status(event_ids=result.event_ids)
            assert status.completed_ids == result.event_ids
            found = await client.search("what car", actor_id=user, include_source_events=True)
            assert any("van" in r.content for r in found.results)

    asyncio.run(main())


# ------------------------------------------------------------------ typed errors from the real server
def test_typed_errors_from_the_real_server(client: engram.Client) -> None:
    with pytest.raises(engram.NotFoundError) as not_found:
        client.memories.jobs.get("job_" + "0" * 32)
    assert not_found.value.code == "job_not_found" and not_found.value.request_id

    with pytest.raises(engram.BadRequestError) as empty:
        client.memories.ingest(messages=[], user_id="u", conv_id="c")
    assert empty.value.code == "invalid_messages" and empty.value.status_code == 400

    with pytest.raises(engram.BadRequestError) as bad_filter:
        client.memories.search(query="x", filters={"project": {"$regex": "a"}})
    assert bad_filter.value.code == "invalid_filter"

    with pytest.raises(engram.ValidationError) as bad_kind:
        client.ingest([{"actor_id": "a", "session_id": "s", "kind": "shout", "content": "hi"}])
    assert bad_kind.value.status_code == 422
    assert bad_kind.value.errors[0]["loc"] == ["body", "events", 0, "kind"]

    with pytest.raises(engram.ValidationError) as bad_cursor:
        client.memories.search(query="x", cursor="garbage")
    assert bad_cursor.value.code == "invalid_cursor"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with keys (so auth is enforced) and no workers (so jobs stay pending)."""
    srv = ServerProcess(tmp_path_factory.mktemp("keyed") / "data", env={"ENGRAM_WORKERS": "0"}).start()
    yield srv
    srv.stop()
    srv.kill()


def test_authentication_and_permission_errors(keyed_server: ServerProcess) -> None:
    writer = create_key(keyed_server, "acme", "read,write")
    reader = create_key(keyed_server, "acme", "read")
    time.sleep(1.1)  # the server re-checks whether keys exist at most once a second

    with pytest.raises(engram.AuthenticationError) as no_key:
        engram.Client(keyed_server.url, api_key="").memories.jobs.get("job_" + "0" * 32)
    assert no_key.value.code == "unauthorized" and no_key.value.status_code == 401
    with pytest.raises(engram.AuthenticationError):
        engram.Client(keyed_server.url, api_key="ek_not_a_key").search("x")

    with pytest.raises(engram.PermissionDeniedError) as scope:
        engram.Client(keyed_server.url, api_key=reader).memories.ingest(
            messages=[{"role": "user", "content": "hi"}], user_id="u", conv_id="c")
    assert scope.value.code == "insufficient_scope" and scope.value.status_code == 403
    with pytest.raises(engram.PermissionDeniedError) as org:
        engram.Client(keyed_server.url, api_key=writer, org_id="someone-else").status(event_ids=["x"])
    assert org.value.code == "org_mismatch"

    ok = engram.Client(keyed_server.url, api_key=writer).memories.ingest(
        messages=[{"role": "user", "content": "I live in Oslo."}], user_id="u", conv_id="c")
    assert ok.status == "pending"


def test_poll_until_done_times_out_on_a_job_no_worker_runs(keyed_server: ServerProcess,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    key = create_key(keyed_server, "polling", "read,write")
    time.sleep(1.1)
    monkeypatch.setenv("ENGRAM_BASE_URL", keyed_server.url)
    monkeypatch.setenv("ENGRAM_API_KEY", key)
    client = engram.Client()
    job = client.memories.ingest(messages=[{"role": "user", "content": "I live in Oslo."}], user_id="u",
                                 conv_id="c")
    started = time.monotonic()
    with pytest.raises(engram.PollTimeoutError) as caught:
        client.memories.jobs.poll_until_done(job.id, timeout=1.5)
    assert time.monotonic() - started >= 1.5
    assert caught.value.job.id == job.id and caught.value.job.status == "pending"

    async def poll() -> None:
        async with engram.AsyncClient() as aclient:
            await aclient.memories.jobs.poll_until_done(job.id, timeout=0.6)

    with pytest.raises(engram.PollTimeoutError):
        asyncio.run(poll())


# ------------------------------------------------------------------ update and revisions end to end
def test_update_supersedes_a_fact_end_to_end(client: engram.Client) -> None:
    user = uid()
    done = client.memories.ingest(messages=[{"role": "user", "content": "I live in Porto."}], user_id=user,
                                  conv_id="c1", wait=True)
    old_id = done.result.memories_created[0].id
    new = client.memories.update(old_id, text="The user lives in Lisbon.")
    assert new.id != old_id and new.text == "The user lives in Lisbon." and new.details.supersedes == old_id
    assert client.memories.get(old_id).details.status == "superseded"
    merged = client.memories.update(new.id, metadata={"source": "profile"})
    assert merged.metadata["source"] == "profile"
    with pytest.raises(engram.NotFoundError):
        client.memories.update("00000000-0000-0000-0000-000000000000", text="x")
    with pytest.raises(engram.BadRequestError) as empty:
        client.memories.update(new.id)
    assert empty.value.status_code == 400 and empty.value.code == "invalid_request"
    with pytest.raises(engram.ValidationError) as blank:
        client.memories.update(new.id, text="   ")
    assert blank.value.code == "empty_text_field"


def test_revisions_end_to_end(client: engram.Client) -> None:
    user = uid()
    done = client.memories.ingest(messages=[{"role": "user", "content": "I live in Porto."}], user_id=user,
                                  conv_id="c1", wait=True)
    memory_id = done.result.memories_created[0].id
    chain = client.memories.revisions(memory_id)
    assert [m.id for m in chain] == [memory_id]

    async def later() -> list[engram.Memory]:
        async with engram.AsyncClient(client.base_url) as aclient:
            new = await aclient.memories.update(memory_id, text="The user lives in Lisbon.")
            return await aclient.memories.revisions(new.id)

    chain = asyncio.run(later())
    assert [m.text for m in chain] == ["The user lives in Porto.", "The user lives in Lisbon."]


def test_ingest_names_groups_and_memories_carry_their_tags(server: ServerProcess, client: engram.Client) -> None:
    import httpx

    group = httpx.post(f"{server.url}/v1/groups", json={"name": "climbing club"}).json()
    user = uid()
    job = client.memories.ingest(messages=[{"role": "user", "content": "The club meets at the crag every Saturday."}],
                                 user_id=user, conv_id="c", group_ids=[group["id"], "grp_unknown"], wait=True)
    assert job.status == "succeeded" and job.result.ignored_group_ids == ["grp_unknown"]
    memory = client.memories.get(job.result.memories_created[0].id)
    assert memory.group_ids == [group["id"]]
    found = client.memories.search(query="when does the club meet", filters={"group_ids": group["id"]})
    assert [m.id for m in found.data] == [memory.id] and found.data[0].group_ids == [group["id"]]
