"""Search over HTTP, both families: time as data, includes, errors naming the clause,
pagination and cursors (the gaps left by test_family_x.py / test_family_m.py)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from engram.domain import cursors
from engram.errors import ServiceError
from tests.conftest import ServerProcess, wait_job
from tests.contract import validate_response


def checked(response: httpx.Response) -> httpx.Response:
    body = response.json() if response.content else None
    validate_response(response.request.method, response.request.url.path, response.status_code, body)
    return response


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


def uid() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


def ingest_and_wait(client: httpx.Client, user: str, conv: str, messages: list[dict], **extra: object) -> dict:
    response = checked(client.post("/v1/memories", json={"messages": messages, "user_id": user, "conv_id": conv,
                                                         **extra}))
    assert response.status_code == 202
    done = wait_job(client, response.json()["id"])
    assert done["status"] == "succeeded", done
    return done


def search(client: httpx.Client, **body: object) -> dict:
    response = checked(client.post("/v1/memories/search", json=body))
    assert response.status_code == 200, response.text
    return response.json()


def test_event_time_is_the_turn_date_and_filters_and_ranks_by_it(client: httpx.Client) -> None:
    user = uid()
    days = {"2023-03-14T09:00:00Z": "I adopted a kitten named Miso.",
            "2023-05-20T18:30:00Z": "I adopted a puppy named Biscuit.",
            "2023-07-02T11:00:00Z": "I adopted a goldfish named Bubbles."}
    for n, (day, text) in enumerate(days.items()):
        ingest_and_wait(client, user, f"s{n}", [{"role": "user", "name": "Dana", "content": text, "date": day}])
    facts = search(client, query="adopted", filters={"user_id": user}, limit=10)["data"]
    assert {f["details"]["valid_at"][:10] for f in facts} == {"2023-03-14", "2023-05-20", "2023-07-02"}, \
        "a fact with no date in its text happened when its turn did"

    in_may = search(client, query="adopted", filters={"user_id": user, "valid_at": {
        "$gte": "2023-05-01", "$lt": "2023-06-01T00:00:00+00:00"}})["data"]
    assert [f["text"] for f in in_may] == ["Dana adopted a puppy named Biscuit."]
    not_may = search(client, query="adopted", filters={"user_id": user, "NOT": {"valid_at": {
        "$between": ["2023-05-01", "2023-05-31T23:59:59Z"]}}})["data"]
    assert len(not_may) == 2 and "Biscuit" not in " ".join(f["text"] for f in not_may)

    # a query that names a month ranks what happened then first, and scores stay in [0, 1]
    for month, pet in (("March 2023", "Miso"), ("May 2023", "Biscuit"), ("July 2023", "Bubbles")):
        ranked = search(client, query=f"Which pet did Dana adopt in {month}?", filters={"user_id": user})["data"]
        assert pet in ranked[0]["text"], (month, [r["text"] for r in ranked])
        assert all(0 <= r["score"] <= 1 for r in ranked)


def test_includes_full_content_source_events_and_context_prompt(client: httpx.Client) -> None:
    user = uid()
    code = "```python\ndef area(r):\n    return 3.14159 * r * r\n```"
    ingest_and_wait(client, user, "c", [
        {"role": "user", "name": "Kim", "dia_id": "D1:1", "content": f"Here is my circle helper:\n{code}"},
        {"role": "user", "name": "Kim", "dia_id": "D1:2", "content": "I bake sourdough bread every Saturday."}],
        extract_artifacts=True)
    plain = search(client, query="circle area helper", filters={"user_id": user, "type": "artifact"})
    assert plain["data"] and plain["data"][0]["details"]["full_content"] is None, "bodies only when asked for"
    assert plain["extras"]["context_prompt"] is None and "source_events" not in plain["data"][0]["details"]
    full = search(client, query="circle area helper", filters={"user_id": user, "type": "artifact"},
                  include=["full_content", "source_events", "context_prompt"])
    artifact = full["data"][0]
    assert "3.14159" in artifact["details"]["full_content"]
    assert [(e["dia_id"], e["name"]) for e in artifact["details"]["source_events"]] == [("D1:1", "Kim")]
    bread = search(client, query="sourdough bread", filters={"user_id": user, "type": "fact"},
                   include=["context_prompt"])
    prompt = bread["extras"]["context_prompt"]
    assert prompt.startswith("## Relevant memories for: sourdough bread") and "Kim bakes sourdough" in prompt
    assert search(client, query="x", filters={"user_id": uid()}, include=["context_prompt"])["extras"][
        "context_prompt"].endswith("- (no relevant memories)")


def test_an_invalid_clause_is_named_wherever_it_sits(client: httpx.Client) -> None:
    cases = [
        ({"OR": [{"user_id": "a"}, {"NOT": {"score": {"$like": "x"}}}]}, '{"score": {"$like": "x"}}'),
        ({"AND": [{"n": {"$between": [1, "2"]}}]}, '{"n": {"$between": [1, "2"]}}'),
        ({"created_at": {"$gt": "last tuesday"}}, '{"created_at": {"$gt": "last tuesday"}}'),
        ({"user_id": {"$gte": 3}}, '{"user_id": {"$gte": 3}}'),
        ({"OR": []}, '{"OR": []}'),
        ({"tags": ["a", "b"]}, '{"tags": ["a", "b"]}'),
        ({'say "hi"': 1}, '{"say \\"hi\\"": 1}'),
    ]
    for filters, clause in cases:
        response = checked(client.post("/v1/memories/search", json={"query": "x", "filters": filters}))
        assert response.status_code == 400, (filters, response.text)
        detail = response.json()["detail"]
        assert detail["code"] == "invalid_filter" and clause in detail["message"], (filters, detail)


def test_search_pages_are_disjoint_complete_and_bound_to_their_query(client: httpx.Client) -> None:
    user = uid()
    lines = [f"I planted {n} rows of tomatoes in garden bed {n}." for n in range(1, 13)]
    ingest_and_wait(client, user, "garden", [{"role": "user", "name": "Lee", "content": line} for line in lines])
    everything = search(client, query="tomatoes garden", filters={"user_id": user}, limit=100)["data"]
    seen, scores, cursor = [], [], None
    while True:
        page = search(client, query="tomatoes garden", filters={"user_id": user}, limit=5,
                      **({"cursor": cursor} if cursor else {}))
        seen += [m["id"] for m in page["data"]]
        scores += [m["score"] for m in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == [m["id"] for m in everything] and len(set(seen)) == len(seen) >= 12
    assert scores == sorted(scores, reverse=True)
    first = search(client, query="tomatoes garden", filters={"user_id": user}, limit=5)
    for other in ({"query": "tomatoes", "filters": {"user_id": user}},
                  {"query": "tomatoes garden", "filters": {"user_id": user, "type": "fact"}}):
        refused = checked(client.post("/v1/memories/search", json={**other, "limit": 5,
                                                                   "cursor": first["next_cursor"]}))
        assert refused.status_code == 422 and refused.json()["detail"]["code"] == "cursor_mismatch"


def test_a_cursor_belongs_to_its_org_and_its_ordering() -> None:
    signer = cursors.Cursors(b"s" * 32)
    scope = cursors.query_scope("search", "q", "filter", 0.0)
    token = signer.encode("acme", scope, 20)
    is_int = lambda p: isinstance(p, int)  # noqa: E731
    assert signer.decode(token, "acme", scope, is_int) == 20
    for org, other_scope in (("globex", scope), ("acme", cursors.query_scope("search", "q2", "filter", 0.0)),
                             ("acme", cursors.query_scope("list", True))):
        with pytest.raises(ServiceError) as err:
            signer.decode(token, org, other_scope, is_int)
        assert err.value.code == "cursor_mismatch"
    # Signed with the server's secret: the same cursor under another secret, or with its
    # position edited, is no cursor at all.
    for bad in (cursors.Cursors(b"t" * 32).encode("acme", scope, 20), token[:-2] + "AA"):
        with pytest.raises(ServiceError) as err:
            signer.decode(bad, "acme", scope, is_int)
        assert err.value.code == "invalid_cursor"
    with pytest.raises(ServiceError) as err:  # the right tag around a position of the wrong shape
        signer.decode(signer.encode("acme", scope, "20"), "acme", scope, is_int)
    assert err.value.code == "invalid_cursor"


def test_family_m_sessions_threshold_and_source_events(client: httpx.Client) -> None:
    actor = uid()
    events = [{"actor_id": actor, "session_id": session, "kind": "user_message", "content": text,
               "ts": "2024-02-01T10:00:00Z"}
              for session, text in (("work", "I am migrating the billing service to Rust."),
                                    ("home", "I am teaching my daughter to ride a bike."),
                                    ("home", "My daughter's bike is blue."))]
    ids = client.post("/v1/ingest", json={"events": events}).json()["event_ids"]
    for _ in range(600):
        status = client.post("/v1/status", json={"event_ids": ids}).json()
        if not status["pendingIds"]:
            break
        import time
        time.sleep(0.05)
    assert sorted(status["completedIds"]) == sorted(ids)

    def m_search(**body: object) -> list[dict]:
        response = client.post("/v1/search", json={"actor_id": actor, **body})
        assert response.status_code == 200, response.text
        return response.json()["results"]

    home = m_search(query="bike", session_id="home", include_source_events=True)
    assert home and {r["metadata"]["session_id"] for r in home} == {"home"}
    assert all(e["session_id"] == "home" and e["actor_id"] == actor
               for r in home for e in r["metadata"]["source_events"])
    assert {r["metadata"]["session_id"] for r in m_search(query="bike", exclude_session_id="home")} <= {"work"}
    everything = m_search(query="bike")
    cut = everything[0]["score"]
    assert [r["id"] for r in m_search(query="bike", threshold=cut)] == [
        r["id"] for r in everything if r["score"] >= cut]
    assert "source_events" not in everything[0]["metadata"]
