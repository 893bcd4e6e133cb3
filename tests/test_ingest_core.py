"""One ingest check (issue 13, item 3): both families' turns go through `plan_accept`, errors
carry neutral locations that each route renames, and an Idempotency-Key is decided inside the
accepting transaction.

The unit tests drive the check-and-group function directly (no store, no server). The race
tests run real `engram serve` processes (SQLite, and PostgreSQL on the session's server) and
fire many concurrent family-X requests with one key; they fail unless the requests really
overlapped at the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import httpx
import pytest

from engram.api import family_m, family_x
from engram.config import Limits, Settings
from engram.domain.inputs import AcceptOptions, Grouping, Turn, dedup_hash
from engram.domain.validation import relocate
from engram.errors import ServiceError, ValidationFailed
from engram.service import AcceptPlan, Service, _span, plan_accept
from engram.store.base import AcceptResult, IdempotencyConflict
from tests.conftest import ServerProcess, server_on_postgres

ORG = "org-core"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SETTINGS = Settings()
X = AcceptOptions(Grouping.PER_CALL, SETTINGS.limits.max_content_chars_x)
M = AcceptOptions(Grouping.PER_CONVERSATION, SETTINGS.limits.max_content_chars_m, dedup=True)


def x_turns(n: int = 2, metadata: dict[str, Any] | None = None, **call: Any) -> list[Turn]:
    shared = metadata if metadata is not None else {}
    ids = {"user_id": "u", "conv_id": "c", **call}
    return [Turn(role="user" if i % 2 == 0 else "assistant", content=f"turn {i}", metadata=shared, **ids)
            for i in range(n)]


def m_turn(user: str = "a", conv: str = "s", content: str = "hello", **fields: Any) -> Turn:
    return Turn(user_id=user, conv_id=conv, kind=fields.pop("kind", "user_message"), content=content, **fields)


def errors_of(turns: list[Turn], options: AcceptOptions, settings: Settings = SETTINGS,
              **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationFailed) as caught:
        plan_accept(ORG, turns, options, settings, now=NOW, **kwargs)
    return caught.value.errors


def plan(turns: list[Turn], options: AcceptOptions, **kwargs: Any) -> AcceptPlan:
    return plan_accept(ORG, turns, options, SETTINGS, now=NOW, **kwargs)


# ---------------------------------------------------------------------- neutral locations
def test_errors_name_neutral_locations_in_one_pass() -> None:
    turns = [
        Turn(user_id=" ", conv_id="c" * 257, role="", content="\x00", name="n\x00", agent_id="", app_id="ok"),
        Turn(user_id="u", conv_id="c", kind="shout", content=" ", role_id=" ", team_id="t", client_event_id="",
             metadata={"k": float("inf")}),
        Turn(user_id="u", conv_id="c", role="user", content="fine", dia_id="d" * 257, metadata={"a": {"b": ["\x00"]}}),
    ]
    assert [(e["loc"], e["type"]) for e in errors_of(turns, M, idempotency_key=None)] == [
        (["turns", 0, "user_id"], "value_error"),
        (["turns", 0, "conv_id"], "string_too_long"),
        (["turns", 0, "agent_id"], "value_error"),
        (["turns", 0, "content"], "value_error"),
        (["turns", 0, "role"], "value_error"),
        (["turns", 0, "name"], "value_error"),
        (["turns", 1, "kind"], "enum"),
        (["turns", 1, "role_id"], "value_error"),
        (["turns", 1, "client_event_id"], "value_error"),
        (["turns", 1, "content"], "value_error"),
        (["turns", 1, "metadata", "k"], "value_error"),
        (["turns", 2, "dia_id"], "string_too_long"),
        (["turns", 2, "metadata", "a", "b", 0], "value_error"),
    ]


def test_call_fields_have_neutral_locations_too() -> None:
    errors = errors_of(x_turns(1), AcceptOptions(Grouping.PER_CALL, 100, group_ids=["g", " "]), idempotency_key="")
    assert [e["loc"] for e in errors] == [["group_ids", 1], ["idempotency_key"]]


def test_an_empty_list_is_refused_alone() -> None:
    errors = errors_of([], AcceptOptions(Grouping.PER_CALL, 100, group_ids=[" "]), idempotency_key=" ")
    assert errors == [{"loc": ["turns"], "msg": "turns must be a non-empty list", "type": "too_short"}]


def test_metadata_text_over_the_limit_is_refused_before_anything_else() -> None:
    limit = SETTINGS.limits.max_metadata_chars
    turns = [m_turn(content=" "), m_turn(metadata_chars=limit), m_turn(metadata_chars=limit + 1),
             m_turn(metadata_chars=limit + 2)]
    assert errors_of(turns, M) == [{"loc": ["turns", 2, "metadata"], "type": "string_too_long",
                                    "msg": f"metadata is longer than {limit} characters"}]


def test_limits_come_from_settings_and_options() -> None:
    settings = Settings(limits=Limits(max_items_per_call=3, max_id_chars=4, max_metadata_keys=2))
    turns = [m_turn(user="abcde"), m_turn(content="x" * 11), m_turn(metadata={"a": 1, "b": 2, "c": 3}), m_turn()]
    errors = errors_of(turns, AcceptOptions(Grouping.PER_CONVERSATION, 10), settings)
    assert [(e["loc"], e["msg"]) for e in errors] == [
        (["turns"], "at most 3 items per call"),
        (["turns", 0, "user_id"], "longer than 4 characters"),
        (["turns", 1, "content"], "content is longer than 10 characters"),
        (["turns", 2, "metadata"], "metadata has more than 2 keys"),
    ]
    # the same content fits family X's limit
    assert plan([m_turn(content="x" * 8001)], AcceptOptions(Grouping.PER_CONVERSATION, 32000)).jobs


def test_nul_is_stripped_from_content_before_the_length_and_blank_checks() -> None:
    [new] = plan([m_turn(content="a\x00b" + "c" * 7998)], M).jobs
    assert new.events[0].content == "ab" + "c" * 7998
    assert errors_of([m_turn(content="\x00\x00")], M)[0]["msg"] == "content must not be blank"


# ---------------------------------------------------------------------- grouping
def test_per_call_is_one_job_with_the_calls_fields() -> None:
    metadata = {"topic": "bikes", "tag1": "reserved", "user_id": "reserved"}
    turns = x_turns(3, metadata, agent_id="ag", app_id="ap")
    turns[1].occurred_at = NOW - timedelta(days=1)
    turns[2].role = "narrator"
    options = AcceptOptions(Grouping.PER_CALL, 100, extract_artifacts=True, group_ids=["g2", "g1", "g2"],
                            active_group_ids=["g1"])
    result = plan(turns, options)
    [new] = result.jobs
    assert (new.job.user_id, new.job.conv_id, new.job.status) == ("u", "c", "pending")
    assert new.job.params == {"agent_id": "ag", "app_id": "ap", "extract_artifacts": True,
                              "group_ids": ["g1"], "ignored_group_ids": ["g2"]}, "the active ones tag, the rest are echoed"
    assert [e.id for e in new.events] == result.event_ids == sorted(result.event_ids)
    assert [(e.role, e.kind) for e in new.events] == [("user", "user_message"), ("assistant", "assistant_message"),
                                                      ("narrator", "app_event")]
    assert [e.occurred_at for e in new.events] == [NOW, NOW - timedelta(days=1), NOW]
    assert all(e.metadata == {"topic": "bikes"} and e.metadata is new.events[0].metadata for e in new.events)
    assert all(e.dedup_hash is None and e.agent_id == "ag" and e.app_id == "ap" for e in new.events)
    assert result.dedup_since is None and result.idempotency is None


def test_per_call_turns_must_share_the_call() -> None:
    turns = x_turns(2)
    turns[1].conv_id = "other"
    with pytest.raises(ValueError):
        plan(turns, X)
    with pytest.raises(ValueError):  # a key names one job
        plan([m_turn()], M, idempotency_key="k")


def test_per_conversation_is_one_job_per_user_and_conversation_in_first_seen_order() -> None:
    turns = [m_turn("a", "s1", "one"), m_turn("b", "s1", "two", kind="assistant_message"), m_turn("a", "s2", "three"),
             m_turn("a", "s1", "four", kind="tool_result", role_id="r", team_id="t", metadata={"x": 1}),
             m_turn("b", "s1", "five", client_event_id="client-5")]
    result = plan(turns, M)
    assert [(j.job.user_id, j.job.conv_id, [e.content for e in j.events]) for j in result.jobs] == [
        ("a", "s1", ["one", "four"]), ("b", "s1", ["two", "five"]), ("a", "s2", ["three"])]
    assert all(j.job.params == {"extract_artifacts": False} for j in result.jobs)
    by_id = {e.id: e for j in result.jobs for e in j.events}
    assert [by_id[i].content for i in result.event_ids] == ["one", "two", "three", "four", "five"]
    assert result.event_ids == sorted(result.event_ids)  # ULIDs in input order
    four = by_id[result.event_ids[3]]
    assert (four.role, four.kind, four.metadata) == ("tool", "tool_result", {"x": 1, "role_id": "r", "team_id": "t"})
    assert by_id[result.event_ids[4]].client_event_id == "client-5"
    assert result.dedup_since == NOW - timedelta(seconds=SETTINGS.dedup_window_s)


def test_dedup_hashes_are_the_family_m_rule() -> None:
    result = plan([m_turn("a", "s", "hi\x00!"), m_turn("a", "s", "hi!"), m_turn("a", "s", "hi!", kind="app_event")], M)
    hashes = [e.dedup_hash for e in result.jobs[0].events]
    expected = hashlib.sha256("\x1f".join(("a", "s", "user_message", "hi!")).encode()).hexdigest()
    assert hashes[0] == hashes[1] == expected == dedup_hash("a", "s", "user_message", "hi!")
    assert hashes[2] != expected


def test_the_idempotency_body_hash_covers_the_call_as_sent() -> None:
    def key_of(turns: list[Turn], options: AcceptOptions = X) -> str:
        idempotency = plan(turns, options, idempotency_key="k").idempotency
        assert idempotency is not None and idempotency.key == "k" and idempotency.at == NOW
        assert idempotency.since == NOW - timedelta(seconds=SETTINGS.idempotency_ttl_s)
        return idempotency.body_hash

    base = key_of(x_turns(2, {"tag1": 1}))
    same = x_turns(2, {"tag1": 1})
    same[0].content = "tu\x00rn 0"
    assert key_of(same) == base  # NUL stripped: the same body
    other = x_turns(2, {"tag1": 1})
    other[1].name = "Ann"
    assert key_of(other) != base
    assert key_of(x_turns(2, {})) != base  # reserved keys count: the metadata as sent
    assert key_of(x_turns(2, {"tag1": 1}), AcceptOptions(Grouping.PER_CALL, 100, group_ids=["g"])) != base


# ---------------------------------------------------------------------- renaming per family
def test_family_x_renames_orders_and_collapses_the_cores_errors() -> None:
    turns = x_turns(3, {"a": "\x00"}, user_id=" ")
    turns[1].content = ""
    options = AcceptOptions(Grouping.PER_CALL, 100, group_ids=[""])
    with pytest.raises(ValidationFailed) as caught:
        plan_accept(ORG, turns, options, SETTINGS, idempotency_key="")
    wire = family_x.wire_error(caught.value)
    assert isinstance(wire, ValidationFailed)
    assert [e["loc"] for e in wire.errors] == [
        ["body", "user_id"], ["body", "messages", 1, "content"], ["body", "metadata", "a"],
        ["body", "group_ids", 0], ["header", "Idempotency-Key"]]
    assert wire.message == "body.user_id: must not be blank"


def test_family_x_answers_an_empty_list_with_invalid_messages() -> None:
    with pytest.raises(ValidationFailed) as caught:
        plan_accept(ORG, [], X, SETTINGS)
    wire = family_x.wire_error(caught.value)
    assert (wire.code, wire.status, wire.message) == ("invalid_messages", 400, "messages must be a non-empty list")


def test_family_m_renames_fields_and_messages() -> None:
    with pytest.raises(ValidationFailed) as caught:
        plan_accept(ORG, [], M, SETTINGS)
    assert relocate(caught.value, family_m.wire_loc).errors == [
        {"loc": ["body", "events"], "msg": "events must be a non-empty list", "type": "too_short"}]
    turns = [m_turn(user="", conv=" ", client_event_id=" ", metadata={"session_id": "\x00"})]
    with pytest.raises(ValidationFailed) as caught:
        plan_accept(ORG, turns, M, SETTINGS)
    wire = relocate(caught.value, family_m.wire_loc)
    assert [e["loc"] for e in wire.errors] == [
        ["body", "events", 0, "actor_id"], ["body", "events", 0, "session_id"], ["body", "events", 0, "event_id"],
        ["body", "events", 0, "metadata", "session_id"]]  # a metadata key is not a field: not renamed


class _ReplayingStore:
    """A store without group commit that answers every accept with a replay or a conflict."""

    def __init__(self, answer: AcceptResult | Exception) -> None:
        self.answer = answer
        self.jobs: dict[str, Any] = {}

    def server_secret(self) -> bytes:
        return b"s" * 32

    def accept(self, org_id: str, jobs: Any, *, dedup_since: Any, idempotency: Any = None) -> AcceptResult:
        assert idempotency is not None and idempotency.key == "key"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def get_job(self, org_id: str, job_id: str) -> Any:
        return self.jobs.get(job_id)


def test_the_reuse_message_names_the_configured_window() -> None:
    assert (_span(86400), _span(5400), _span(45), _span(1.5)) == ("24 hours", "90 minutes", "45 seconds", "1.5 seconds")


def test_accept_replays_a_known_key_and_refuses_another_body() -> None:
    store = _ReplayingStore(AcceptResult([], [], replay_of="job_old"))
    store.jobs["job_old"] = original = object()
    woken: list[int] = []
    service = Service(store, SETTINGS, lambda: None, on_accept=lambda: woken.append(1))  # type: ignore[arg-type]
    outcome = asyncio.run(service.accept(ORG, x_turns(1), X, idempotency_key="key"))
    assert outcome.replayed is original and outcome.jobs == [] and not woken  # nothing new: no wake-up

    store.answer = IdempotencyConflict("job_old")
    with pytest.raises(ServiceError) as caught:
        asyncio.run(service.accept(ORG, x_turns(1), X, idempotency_key="key"))
    assert caught.value.code == "idempotency_key_reused" and caught.value.extra["loc"] == ["idempotency_key"]
    assert caught.value.message.endswith(f"within {_span(SETTINGS.idempotency_ttl_s)}")
    wire = family_x.wire_error(caught.value)
    assert (wire.code, wire.extra["loc"]) == ("idempotency_key_reused", ["header", "Idempotency-Key"])


# ---------------------------------------------------------------------- the key race, end to end
ROUNDS = 30
CONCURRENCY = 8


@pytest.fixture(scope="module")
def sqlite_race_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("race") / "data", env={"ENGRAM_WORKERS": "0"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pg_race_server(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_on_postgres(postgres, tmp_path_factory.mktemp("race_pg") / "data", "engram_race",
                            {"ENGRAM_WORKERS": "0"}) as srv:
        srv.env["url"] = srv.env["ENGRAM_DATABASE_URL"]
        yield srv


def _jobs_and_events(srv: ServerProcess, conv_id: str) -> tuple[int, int]:
    """How many jobs and events the store holds for one conversation (read from the store)."""
    if "url" in srv.env:
        import psycopg

        with psycopg.connect(srv.env["url"]) as conn:
            jobs = conn.execute("SELECT count(*) FROM jobs WHERE conv_id=%s", (conv_id,)).fetchone()
            events = conn.execute("SELECT count(*) FROM events WHERE conv_id=%s", (conv_id,)).fetchone()
            return jobs[0], events[0]  # type: ignore[index]
    with sqlite3.connect(srv.data_dir / "engram.db") as db:
        return (db.execute("SELECT count(*) FROM jobs WHERE conv_id=?", (conv_id,)).fetchone()[0],
                db.execute("SELECT count(*) FROM events WHERE conv_id=?", (conv_id,)).fetchone()[0])


def _fire(srv: ServerProcess, bodies: list[dict[str, Any]], key: str,
          clients: list[httpx.Client]) -> tuple[list[httpx.Response], bool]:
    """Send every body at once (one thread and connection each, released by a barrier) with
    one Idempotency-Key; the answers, and whether all of them were in flight together."""
    barrier = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(bodies)

    def send(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        answers[i] = clients[i].post("/v1/memories", json=bodies[i], headers={"Idempotency-Key": key})
        spans[i] = (started, time.perf_counter())

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    overlapped = max(s for s, _ in spans) < min(e for _, e in spans)
    return [a for a in answers if a is not None], overlapped


@pytest.mark.parametrize("backend", ["sqlite", "pg"])
def test_concurrent_requests_with_one_key_create_one_job(backend: str, request: pytest.FixtureRequest) -> None:
    srv: ServerProcess = request.getfixturevalue(f"{backend}_race_server")
    clients = [srv.client() for _ in range(CONCURRENCY)]
    try:
        for c in clients:  # open every connection before the race, so the race is the requests'
            assert c.get("/v1/health").status_code == 200
        overlapping = 0
        for r in range(ROUNDS):
            # the same body from every client: one job, every answer names it
            conv = f"same-{uuid.uuid4().hex[:8]}"
            body = {"messages": [{"role": "user", "content": f"I moved to Lisbon in round {r}"},
                                 {"role": "assistant", "content": "Noted."}], "user_id": "racer", "conv_id": conv}
            answers, overlapped = _fire(srv, [body] * CONCURRENCY, uuid.uuid4().hex, clients)
            overlapping += overlapped
            assert [a.status_code for a in answers] == [202] * CONCURRENCY, [a.text for a in answers]
            assert len({a.json()["id"] for a in answers}) == 1, [a.json()["id"] for a in answers]
            assert _jobs_and_events(srv, conv) == (1, 2)

            # another body from every client: exactly one is accepted, the others are refused
            conv = f"other-{uuid.uuid4().hex[:8]}"
            bodies = [{"messages": [{"role": "user", "content": f"variant {i} of round {r}"}], "user_id": "racer",
                       "conv_id": conv} for i in range(CONCURRENCY)]
            answers, overlapped = _fire(srv, bodies, uuid.uuid4().hex, clients)
            overlapping += overlapped
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [202] + [422] * (CONCURRENCY - 1), [a.text for a in answers]
            for refused in (a for a in answers if a.status_code == 422):
                assert refused.json()["code"] == "idempotency_key_reused"
                assert refused.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
            assert _jobs_and_events(srv, conv) == (1, 1)
        # The race was real only if the requests of a round were at the server together.
        assert overlapping >= ROUNDS, f"only {overlapping} of {2 * ROUNDS} rounds overlapped: the race was not run"
    finally:
        for c in clients:
            c.close()
