"""Every public method of the published `memsy` 0.3.5 clients, unmodified, against a real
`engram serve`: `MemsyClient`, `AsyncMemsyClient`, `MemsyControlClient`,
`AsyncMemsyControlClient` and every resource they carry. Each method either works (its result
is checked) or, where a self-hosted server cannot apply it (billing, the Pro plan's interest
form, connectors), raises the client's own typed error with the code engram answers.

The methods are enumerated with `inspect` from the installed package; a method the scenarios
below did not call fails the test, so a new SDK method cannot slip by untested. Sync and async
clients run the same scenario (`Driver` awaits what the async ones return).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

import memsy
from memsy import (
    AsyncMemsyClient, AsyncMemsyControlClient, AuthorizationError, BillingNotEnabledError, EventPayload,
    FeatureNotAvailable, MemsyAPIError, MemsyClient, MemsyControlClient, ResourceSelection,
)
from tests.conftest import ServerProcess, create_key, serve_on
from tests.openai_server import ScriptedOpenAI, chat

ORG = "memsy-co"
PROCESS_TIMEOUT_S = 60


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------- which methods exist
def public_methods(client: Any) -> set[str]:
    """`name` of each public method of the client and `resource.name` of each of its resources'."""
    names = {n for n, _ in inspect.getmembers(type(client), inspect.isfunction) if not n.startswith("_")}
    for attr, resource in vars(client).items():
        if not attr.startswith("_") and type(resource).__module__.startswith("memsy."):
            names |= {f"{attr}.{n}" for n, _ in inspect.getmembers(type(resource), inspect.isfunction)
                      if not n.startswith("_")}
    return names


class Driver:
    """Calls a client's methods by dotted name, awaiting what an async client returns, and
    remembers which it called."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.called: set[str] = set()
        self.loop = asyncio.new_event_loop()

    def __call__(self, path: str, *args: Any, **kwargs: Any) -> Any:
        target = self.client
        for part in path.split("."):
            target = getattr(target, part)
        self.called.add(path)
        result = target(*args, **kwargs)
        return self.loop.run_until_complete(result) if inspect.isawaitable(result) else result

    def raises(self, error: type[Exception], path: str, *args: Any, **kwargs: Any) -> Any:
        with pytest.raises(error) as caught:
            self(path, *args, **kwargs)
        return caught.value

    def uncalled(self) -> set[str]:
        return public_methods(self.client) - self.called

    def close(self) -> None:
        self("close")
        self.loop.close()


# ---------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("memsy-whole") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(srv: ServerProcess) -> dict[str, str]:
    """An admin key of ORG (not the operator), a read-only key of ORG, the operator's key."""
    return {"admin": create_key(srv, ORG, "read,write,admin"), "reader": create_key(srv, ORG, "read"),
            "operator": create_key(srv, "default", "read,write,admin")}


def base_url(srv: ServerProcess) -> str:
    return srv.url + "/v1"


def data_client(srv: ServerProcess, key: str, asynchronous: bool) -> Any:
    cls = AsyncMemsyClient if asynchronous else MemsyClient
    return cls(base_url=base_url(srv), api_key=key, max_retries=0, timeout=30)


def control_client(srv: ServerProcess, key: str, asynchronous: bool) -> Any:
    cls = AsyncMemsyControlClient if asynchronous else MemsyControlClient
    return cls(base_url=base_url(srv), api_key=key, max_retries=0, timeout=30)


def wait_completed(call: Callable[..., Any], event_ids: list[str]) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while True:
        st = call("status", event_ids)
        if not st.pending_ids:
            assert set(st.completed_ids) == set(event_ids), st
            return
        assert time.monotonic() < deadline, f"still pending: {st}"
        time.sleep(0.1)


# ---------------------------------------------------------------------- the data client
@pytest.mark.parametrize("asynchronous", [False, True], ids=["MemsyClient", "AsyncMemsyClient"])
def test_every_data_client_method(srv: ServerProcess, keys: dict[str, str], asynchronous: bool) -> None:
    call = Driver(data_client(srv, keys["admin"], asynchronous))
    health = call("health")
    assert health.status == "ok" and health.components

    # ---- the org's own record: engram's org and memsy's customization, one resource
    listed = call("orgs.list")
    assert [o.org_id for o in listed] == [ORG], "an org's key sees its own org only"
    before = call("orgs.get", ORG)
    assert before.org_id == ORG and before.focus == "" and before.promotion_prompt == ""
    created = call("orgs.create", org_id=ORG, name="Memsy Co", focus="support tickets about invoices")
    assert (created.org_id, created.name, created.focus) == (ORG, "Memsy Co", "support tickets about invoices")
    assert "support tickets about invoices" in created.promotion_prompt
    assert created.prompt_meta["generator"] == "template" and created.prompt_meta["llm"] is False, \
        "no model is configured: the prompt says it was built by the template"
    again = call.raises(MemsyAPIError, "orgs.create", org_id=ORG, name="Memsy Co", focus="x")
    assert (again.status_code, again.error_code) == (409, "org_exists")
    updated = call("orgs.update", ORG, focus="refund requests")
    assert "refund requests" in updated.promotion_prompt and updated.name == "Memsy Co"
    manual = call("orgs.update", ORG, promotion_prompt="Remember every refund amount.")
    assert manual.promotion_prompt == "Remember every refund amount." and manual.prompt_meta["generator"] == "manual"
    regenerated = call("orgs.regenerate_prompt", ORG)
    assert "refund requests" in regenerated.promotion_prompt and regenerated.prompt_meta["generator"] == "template"
    assert call("orgs.get", ORG).promotion_prompt == regenerated.promotion_prompt

    # ---- roles and teams
    role = call("roles.create", org_id=ORG, name="Engineer", focus="build failures")
    other_role = call("roles.create", org_id=ORG, name="Support", focus="angry customers")
    team = call("teams.create", org_id=ORG, name="Platform", focus="deploys")
    assert role.org_id == ORG and role.role_id.startswith("role_") and "build failures" in role.promotion_prompt
    assert team.team_id.startswith("team_") and team.prompt_meta["generator"] == "template"
    roles = call("roles.list", ORG)
    assert {role.role_id, other_role.role_id} <= {r.role_id for r in roles}
    assert [r.role_id for r in call("roles.list", ORG, limit=1, offset=1)] == [roles[1].role_id]
    assert call("roles.get", role.role_id, ORG).name == "Engineer"
    assert call("roles.update", role.role_id, ORG, name="Senior Engineer").name == "Senior Engineer"
    assert "flaky tests" in call("roles.update", role.role_id, ORG, focus="flaky tests").promotion_prompt
    assert call("roles.regenerate_prompt", role.role_id, ORG).prompt_meta["generator"] == "template"
    assert team.team_id in {t.team_id for t in call("teams.list", ORG)}
    assert call("teams.get", team.team_id, ORG).focus == "deploys"
    assert call("teams.update", team.team_id, ORG, promotion_prompt="Keep deploy dates.").promotion_prompt == \
        "Keep deploy dates."
    assert "deploys" in call("teams.regenerate_prompt", team.team_id, ORG).promotion_prompt

    # ---- events carrying role and team ids, and searches that honour them
    actor, session, elsewhere = uid("actor"), uid("s"), uid("s")
    ids = call("ingest", [
        EventPayload(actor_id=actor, session_id=session, kind="user_message", role_id=role.role_id,
                     team_id=team.team_id, content="I prefer dark mode in every editor I use.",
                     metadata=json.dumps({"source": "whole"})),
        EventPayload(actor_id=actor, session_id=elsewhere, kind="user_message", role_id=other_role.role_id,
                     content="I drink green tea every morning before work."),
    ]).event_ids
    assert len(ids) == 2
    wait_completed(call, ids)
    everything = call("search", "dark mode green tea", actor_id=actor)
    assert {r.metadata.get("role_id") for r in everything.results} == {role.role_id, other_role.role_id}
    narrowed = call("search", "dark mode green tea", actor_id=actor, role_ids=[role.role_id])
    assert narrowed.results and {r.metadata["role_id"] for r in narrowed.results} == {role.role_id}
    by_team = call("search", "dark mode green tea", actor_id=actor, team_ids=[team.team_id])
    assert by_team.results and all(r.metadata["team_id"] == team.team_id for r in by_team.results)
    assert call("search", "dark mode", actor_id=actor, role_ids=["role_nobody"]).results == []
    unset = call("search", "dark mode green tea", actor_id=actor, session_id="", exclude_session_id=elsewhere)
    assert unset.results and all(r.session_id == session for r in unset.results), "'' is unset, not compared"
    assert call("search", "dark mode", actor_id="", session_id=session).results, "actor_id '' is unset"
    both = call.raises(MemsyAPIError, "search", "dark mode", session_id=session, exclude_session_id=elsewhere)
    assert (both.status_code, both.error_code) == (422, "conflicting_fields")

    # ---- console memories and actors, read over the same memories
    page = call("memories.list", actor_id=actor)
    assert page.total == len(page.items) >= 2 and {m.scope.actor_id for m in page.items} == {actor}
    assert all(m.scope.level == "actor" and m.org_id == ORG and m.status == "active" for m in page.items)
    tagged = next(m for m in page.items if m.scope.role_id == role.role_id)
    assert tagged.scope.team_id == team.team_id and tagged.memory_kind == "semantic" and tagged.type == "fact"
    first, second = (call("memories.list", actor_id=actor, limit=1, offset=n, sort="observed_at_asc") for n in (0, 1))
    assert first.total == page.total and first.items[0].memory_id != second.items[0].memory_id
    assert [m.memory_id for m in call("memories.list", actor_id=actor, search="DARK MODE").items] == [tagged.memory_id]
    assert call("memories.list", actor_id=actor, kind="episodic").total == 0
    assert call("memories.list", actor_id=actor, type="fact").total == page.total
    stats = call("memories.stats")
    assert stats.total_memories >= page.total and stats.by_kind.get("semantic", 0) >= page.total
    assert stats.active_memories == stats.by_status["active"] and stats.avg_confidence == 1.0
    one = call("memories.get", tagged.memory_id)
    assert one.memory_id == tagged.memory_id and one.text == tagged.text
    missing = call.raises(MemsyAPIError, "memories.get", str(uuid.uuid4()))
    assert (missing.status_code, missing.error_code) == (404, "memory_not_found")
    actors = call("actors.list", q=actor)
    assert actors.total == 1 and not actors.truncated
    assert actors.items[0].actor_id == actor and actors.items[0].memory_count == page.total
    assert set(actors.items[0].role_ids) == {role.role_id, other_role.role_id}
    assert actors.items[0].team_ids == [team.team_id] and actors.items[0].scope_levels == ["actor"]
    assert call("actors.get", actor).active_memory_count == page.total
    nobody = call.raises(MemsyAPIError, "actors.get", uid("nobody"))
    assert nobody.status_code == 404

    # ---- deleting records: memories that carry the ids keep them
    call("roles.delete", role.role_id, ORG)
    call("roles.delete", other_role.role_id, ORG)
    call("teams.delete", team.team_id, ORG)
    gone = call.raises(MemsyAPIError, "roles.get", role.role_id, ORG)
    assert (gone.status_code, gone.error_code) == (404, "not_found")
    assert call("search", "dark mode", actor_id=actor, role_ids=[role.role_id]).results
    call("orgs.delete", ORG)
    cleared = call("orgs.get", ORG)
    assert cleared.focus == "" and cleared.promotion_prompt == "" and cleared.name == "Memsy Co"
    call("orgs.update", ORG, name=ORG)  # the next run starts from the same name

    call.close()
    assert call.uncalled() == set()


# ---------------------------------------------------------------------- the control client
NOT_SELF_HOSTED: dict[str, tuple[tuple, dict, type[Exception], str, str | None]] = {
    # method: (args, kwargs, typed error, error code, `feature`)
    "billing.summary": ((), {}, BillingNotEnabledError, "billing_not_enabled", None),
    "billing.invoices": ((), {}, BillingNotEnabledError, "billing_not_enabled", None),
    "interest.express": (("ann@example.com", "Ann"), {"company": "Acme"}, FeatureNotAvailable,
                         "feature_not_available", "pro_interest"),
    "interest.status": ((), {}, FeatureNotAvailable, "feature_not_available", "pro_interest"),
    **{f"connectors.{name}": (args, kwargs, FeatureNotAvailable, "feature_not_available", "connectors")
       for name, args, kwargs in [
           ("list_providers", (), {}), ("status", ("slack",), {}), ("create", ("slack",), {}),
           ("configure_s3", (), {"access_key_id": "AKIA", "secret_access_key": "s", "region": "eu-west-1",
                                 "bucket": "b"}),
           ("list", (), {}), ("get", ("con_1",), {}), ("list_resources", ("con_1",), {}),
           ("list_branches", ("con_1", "repo"), {}), ("picker_config", ("con_1",), {}),
           ("wait_until_authorized", ("con_1",), {"timeout": 1, "poll_interval": 0.1}),
           ("configure_resources", ("con_1", [ResourceSelection(external_id="C1")]), {}),
           ("sync", ("con_1",), {}), ("delete", ("con_1",), {})]},
}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["MemsyControlClient", "AsyncMemsyControlClient"])
def test_every_control_client_method(srv: ServerProcess, keys: dict[str, str], asynchronous: bool) -> None:
    actor = uid("ctl")
    with MemsyClient(base_url=base_url(srv), api_key=keys["admin"], max_retries=0) as data:
        ids = data.ingest([EventPayload(actor_id=actor, session_id="s1", kind="user_message", content="I live in Oslo."),
                           EventPayload(actor_id=actor, session_id="s2", kind="assistant_message", content="Noted.")
                           ]).event_ids
    call = Driver(control_client(srv, keys["admin"], asynchronous))
    health = call("health")
    assert health.status == "ok" and health.billing_enabled is False
    me = call("me")
    assert me.org_id == ORG and me.tier == "self-hosted" and me.org_role == "admin" and not me.is_superadmin

    summary = call("usage.summary")
    assert summary.org_id == ORG and {d.dimension for d in summary.dimensions}
    series = call("usage.timeseries", granularity="daily")
    assert series.org_id == ORG and series.granularity == "daily"

    listed = call("keys.list")
    assert listed.active_count == sum(k.is_active for k in listed.keys) >= 2
    made = call("keys.create", "ci-reader", scopes=["read"])
    assert made.raw_key.startswith("egm_") and made.scopes == ["read"] and made.name == "ci-reader"
    assert isinstance(call("keys.usage", made.key_id), list)
    call("keys.delete", made.key_id)
    assert not next(k for k in call("keys.list").keys if k.key_id == made.key_id).is_active

    events = call("events.list", actor_id=actor)
    assert events.total == 2 and {e.event_id for e in events.items} == set(ids)
    assert all(e.org_id == ORG and e.actor_id == actor for e in events.items)
    newest, oldest = call("events.list", actor_id=actor, limit=1), call("events.list", actor_id=actor, limit=1,
                                                                        sort="ts_asc")
    assert newest.total == 2 and newest.items[0].event_id != oldest.items[0].event_id
    assert [e.session_id for e in call("events.list", actor_id=actor, session_id="s2").items] == ["s2"]
    assert [e.kind for e in call("events.list", actor_id=actor, kind="assistant_message").items] == \
        ["assistant_message"]

    for method, (args, kwargs, error, code, feature) in NOT_SELF_HOSTED.items():
        raised = call.raises(error, method, *args, **kwargs)
        assert (raised.status_code, raised.error_code) == (403, code), method
        assert "self-hosted" in raised.detail, method
        if feature is not None:
            assert raised.feature == feature and raised.current_tier == "self-hosted", method

    call.close()
    assert call.uncalled() == set()


def test_the_enumeration_finds_what_the_package_exports() -> None:
    """The guard above is only as good as its list: it sees every resource of each client."""
    data, control = public_methods(MemsyClient("http://x/v1", "k")), public_methods(MemsyControlClient("http://x", "k"))
    assert {"ingest", "search", "orgs.regenerate_prompt", "teams.delete", "actors.get", "memories.stats"} <= data
    assert {"me", "keys.usage", "events.list", "connectors.wait_until_authorized", "billing.invoices"} <= control
    assert public_methods(AsyncMemsyClient("http://x/v1", "k")) == data
    assert public_methods(AsyncMemsyControlClient("http://x", "k")) == control
    assert memsy.__name__ == "memsy"


# ---------------------------------------------------------------------- who may do what
def test_who_may_read_and_change_onboarding_records(srv: ServerProcess, keys: dict[str, str]) -> None:
    with MemsyClient(base_url=base_url(srv), api_key=keys["reader"], max_retries=0) as reader:
        assert [o.org_id for o in reader.orgs.list()] == [ORG]
        assert isinstance(reader.roles.list(ORG), list)
        denied = pytest.raises(AuthorizationError, reader.roles.create, org_id=ORG, name="x", focus="y")
        assert denied.value.error_code == "insufficient_scope"
        with pytest.raises(AuthorizationError):
            reader.orgs.update(ORG, focus="z")
    with MemsyClient(base_url=base_url(srv), api_key=keys["admin"], max_retries=0) as admin:
        for call in (lambda: admin.roles.list("default"), lambda: admin.orgs.get("default"),
                     lambda: admin.orgs.create(org_id="someone-else", name="S", focus="f"),
                     lambda: admin.actors.list(org_id="default")):
            with pytest.raises(AuthorizationError) as caught:
                call()
            assert caught.value.error_code == "org_mismatch"
    with MemsyClient(base_url=base_url(srv), api_key=keys["operator"], max_retries=0) as operator:
        new = uid("newco")
        made = operator.orgs.create(org_id=new, name=f"New {new}", focus="onboarding calls")
        assert made.org_id == new and "onboarding calls" in made.promotion_prompt
        assert {ORG, "default", new} <= {o.org_id for o in operator.orgs.list()}
        role = operator.roles.create(org_id=new, name="Sales", focus="deal sizes")
        assert operator.roles.get(role.role_id, new).org_id == new
        with pytest.raises(MemsyAPIError) as unknown:
            operator.roles.list("no-such-org")
        assert (unknown.value.status_code, unknown.value.error_code) == (404, "org_not_found")
        taken = pytest.raises(MemsyAPIError, operator.orgs.update, new, name=ORG)
        assert (taken.value.status_code, taken.value.error_code) == (409, "org_exists")
    # a renamed org is still its own id for the CLI and for X-Org-Id
    assert create_key(srv, new, "read").startswith("egm_")


def test_bad_input_is_a_clear_422(srv: ServerProcess, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {keys['admin']}"}) as http:
        for method, path, kwargs in [
            ("post", "/v1/roles", {"json": {"org_id": ORG, "name": " ", "focus": "x"}}),
            ("post", "/v1/roles", {"json": {"org_id": ORG, "name": "n", "focus": "x" * 4001}}),
            ("patch", f"/v1/orgs/{ORG}", {"json": {"promotion_prompt": ""}}),
            ("get", "/v1/console/memories", {"params": {"kind": "procedural"}}),
            ("get", "/v1/console/memories", {"params": {"status": "gone"}}),
            ("get", "/v1/console/memories", {"params": {"sort": "random"}}),
            ("get", "/v1/console/memories", {"params": {"limit": 201}}),
            ("get", "/v1/actors", {"params": {"sort": "memory_count_desc"}}),
            ("get", "/v1/console/events", {"params": {"sort": "ts"}}),
        ]:
            r = getattr(http, method)(path, **kwargs)
            assert r.status_code == 422 and r.json()["detail"]["code"] == "validation_error", (path, kwargs, r.text)
        assert http.post(f"/v1/orgs/{ORG}/regenerate-prompt").json()["detail"]["code"] == "invalid_request", \
            "no focus to write a prompt from"


# ---------------------------------------------------------------------- both stores
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_on(request.param, request, tmp_path_factory.mktemp(f"memsy-{request.param}"), "engram_memsy") as s:
        yield s


def test_role_and_team_scopes_and_console_pages_on_both_stores(any_store: ServerProcess) -> None:
    """role_ids / team_ids narrow (a test that fails if they were ignored: the unscoped search
    finds both roles), and the console pages in SQL with the same totals on either store."""
    actor = uid("both")
    with MemsyClient(base_url=base_url(any_store), api_key="open-mode", max_retries=0) as c:
        said = ["I play the cello in a quartet.", "I grow tomatoes on my balcony.", "I run marathons in the spring.",
                "I collect vintage stamps.", "I bake sourdough bread on Sundays.", "I repair old bicycles for friends."]
        events = [EventPayload(actor_id=actor, session_id=f"s-{i}", kind="user_message", role_id=f"r{i % 2}",
                               team_id=f"t{i % 3}", content=content) for i, content in enumerate(said)]
        ids = c.ingest(events).event_ids
        wait_completed(lambda name, *a: getattr(c, name)(*a), ids)
        everything = c.search("what does the user do", actor_id=actor, limit=20).results
        assert len(everything) == 6 and {r.metadata["role_id"] for r in everything} == {"r0", "r1"}
        only = c.search("what does the user do", actor_id=actor, limit=20, role_ids=["r1"]).results
        assert len(only) == 3 and {r.metadata["role_id"] for r in only} == {"r1"}
        teams = c.search("what does the user do", actor_id=actor, limit=20, role_ids=["r0"],
                         team_ids=["t1", "t2"]).results
        assert sorted((r.metadata["role_id"], r.metadata["team_id"]) for r in teams) == [("r0", "t1"), ("r0", "t2")]
        pages = [c.memories.list(actor_id=actor, limit=4, offset=o, sort="observed_at_asc") for o in (0, 4)]
        assert [p.total for p in pages] == [6, 6] and [len(p.items) for p in pages] == [4, 2]
        seen = [m.memory_id for p in pages for m in p.items]
        assert len(set(seen)) == 6
        newest = c.memories.list(actor_id=actor, limit=6).items
        assert [m.memory_id for m in newest] == seen[::-1], "newest first is the same order read backwards"
        assert c.memories.list(actor_id=actor, search="CELLO").total == 1
        assert c.memories.list(actor_id=actor, search="%").total == 0, "LIKE's wildcards are the text's own"
        actor_row = c.actors.get(actor)
        assert actor_row.memory_count == 6 and actor_row.role_ids == ["r0", "r1"]
        assert actor_row.team_ids == ["t0", "t1", "t2"]
    with MemsyControlClient(base_url=base_url(any_store), api_key="open-mode", max_retries=0) as ctl:
        first = ctl.events.list(actor_id=actor, limit=5, sort="ts_asc")
        rest = ctl.events.list(actor_id=actor, limit=5, offset=5, sort="ts_asc")
        assert (first.total, len(first.items), len(rest.items)) == (6, 5, 1)
        assert [e.event_id for e in first.items + rest.items] == ids


# ---------------------------------------------------------------------- prompts and a model
@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedOpenAI) -> Iterator[ServerProcess]:
    from tests.test_llm_e2e import llm_env

    # the default prompt budget: the guidance gets its share (a fifth) of what is left for a chunk
    srv = ServerProcess(tmp_path_factory.mktemp("memsy-llm") / "data",
                        env=llm_env(scripted, ENGRAM_LLM_MAX_PROMPT_TOKENS="6000")).start()
    yield srv
    srv.stop()


def test_with_a_model_the_prompt_is_asked_of_it_and_steers_extraction(llm_server: ServerProcess,
                                                                     scripted: ScriptedOpenAI) -> None:
    scripted.reset()
    with MemsyClient(base_url=base_url(llm_server), api_key="open-mode", max_retries=0) as c:
        scripted.script(chat({"prompt": "Remember which invoices a customer disputes, with their numbers."}))
        org = c.orgs.create(org_id="default", name="Ledger Inc", focus="disputed invoices")
        asked = scripted.chat_requests()[-1]
        assert "disputed invoices" in asked.user and "Ledger Inc" in asked.user
        assert org.promotion_prompt == "Remember which invoices a customer disputes, with their numbers."
        assert org.prompt_meta["generator"] == "llm" and org.prompt_meta["llm"] is True
        assert org.prompt_meta["model"] == "scripted-model"
        scripted.script(chat({"prompt": "Note the amount of every refund an agent approves."}))
        role = c.roles.create(org_id="default", name="Agent", focus="refund approvals")
        assert role.prompt_meta["generator"] == "llm"
        # the model fails: the template writes it, and prompt_meta says so
        scripted.script(*(chat("") for _ in range(4)))
        team = c.teams.create(org_id="default", name="Night shift", focus="escalations")
        assert team.prompt_meta["generator"] == "template" and team.prompt_meta["llm"] is False
        assert "llm_error" in team.prompt_meta and "escalations" in team.promotion_prompt

        scripted.reset()
        scripted.script(chat({"facts": [{"text": "The user disputes invoice 4471.", "fact_type": "statement",
                                         "key": None, "turns": [1], "valid_at": None, "action": "new",
                                         "memory": None}]}))
        ids = c.ingest([EventPayload(actor_id="u-ledger", session_id="s", kind="user_message", role_id=role.role_id,
                                     team_id=team.team_id, content="I dispute invoice 4471.")]).event_ids
        wait_completed(lambda name, *a: getattr(c, name)(*a), ids)
        extraction = next(r for r in scripted.chat_requests() if "Turns to extract from" in r.user)
        assert org.promotion_prompt in extraction.user, "the org's prompt is in what the model is asked"
        assert role.promotion_prompt in extraction.user and team.promotion_prompt in extraction.user
        assert f"[role {role.role_id}, team {team.team_id}]" in extraction.user, "the turn names its role and team"
        hit = c.search("invoice 4471", actor_id="u-ledger").results
        assert hit and hit[0].content == "The user disputes invoice 4471."
        scripted.script(chat({"prompt": "Keep refund amounts and who approved them."}))
        again = c.roles.regenerate_prompt(role.role_id, "default")
        assert again.promotion_prompt == "Keep refund amounts and who approved them."
        assert "refund approvals" in scripted.chat_requests()[-1].user
        c.orgs.delete("default")


def test_without_a_model_the_extraction_prompt_has_no_guidance_to_read(tmp_path: Path) -> None:
    """The rules extractor cannot read prose: the prompt is stored and shown, and said to be the
    template's (docs/design.md says what it does not do)."""
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with MemsyClient(base_url=base_url(srv), api_key="open-mode", max_retries=0) as c:
            assert c.health().components["extractor"] == {"status": "ok", "name": "rules"}
            org = c.orgs.create(org_id="default", name="Plain", focus="garden plants")
            assert org.prompt_meta == {**org.prompt_meta, "generator": "template", "llm": False,
                                       "reason": "no model is configured"}
    finally:
        srv.stop()
