"""Memory that stays true: a changed fact supersedes the old one, an added one does not,
and an assistant's acknowledgement is no memory (issue 14).

The sentences here are written for these tests, not taken from the benchmark sets
(bench/currency.py measures those)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import httpx
import numpy as np
import pytest

from engram.domain.extraction import FactCandidate
from engram.domain.records import Memory
from engram.pipeline.extract.rules.assistant import contribution
from engram.pipeline.extract.rules.changes import ADDITION, CHANGE, SHIFT, cue
from engram.pipeline.extract.rules.keys import detect_key
from engram.pipeline.reconcile import reconcile
from tests.conftest import ServerProcess, wait_job

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------------- what a sentence says
@pytest.mark.parametrize("sentence, expected", [
    ("I quit my job at the bakery.", CHANGE),
    ("We sold the old van and bought a minibus.", CHANGE),
    ("I switched from tea to coffee.", CHANGE),
    ("I'm not a smoker anymore.", CHANGE),
    ("I no longer live with my parents.", CHANGE),
    ("We take the tram instead.", CHANGE),
    ("Lena and I broke up in the spring.", CHANGE),
    ("I left the hockey team.", CHANGE),
    ("My brother moved to Leeds.", CHANGE),
    ("The dance class moved to Thursdays.", CHANGE),
    ("My gym fees went up to 40 a month.", CHANGE),
    ("Our old goldfish died last week.", CHANGE),  # the old thing's own end, like "ran away"
    ("Grandpa's parrot passed away in March.", CHANGE),
    ("I dyed my hair green for the festival.", CHANGE),  # a change of how one looks
    ("I shaved off my beard.", CHANGE),
    ("I work nights now.", SHIFT),
    ("These days I mostly paint with oils.", SHIFT),
    ("I've become a morning person.", SHIFT),
    ("Rosa is my landlady now.", SHIFT),
    ("I also play the flute.", ADDITION),
    ("We adopted a rabbit too.", ADDITION),
    ("My other cousin lives in Cork.", ADDITION),
    ("I'm learning Welsh as well.", ADDITION),
    ("I've been playing one more game with friends these days.", ADDITION),
    ("I now also teach piano.", ADDITION),  # an addition word wins
    ("I never give up on my goals.", None),  # a negated verb of ending
    ("I started pottery last month.", None),  # beginning is no cue on its own
    ("I bought a new lamp.", None),
    ("We finally bought a townhouse.", None),  # a key may replace (below), a cue does not
    ("I've started getting up at five.", None),  # as a cue, "started" superseded 13 of 13 wrongly on LoCoMo
    ("I've been running for a year now.", None),  # a duration
    ("I'm busy right now.", None),  # a moment
    ("Instead of giving up, I trained harder.", None),
    ("I stopped by the bakery.", None),
    ("I left early.", None),
    ("The weather is nice.", None),
])
def test_a_sentence_says_whether_it_changes_or_adds(sentence: str, expected: str | None) -> None:
    assert cue(sentence) == expected


@pytest.mark.parametrize("sentence, key", [
    ("We rent a two-bedroom apartment near the river.", "home_tenure"),
    ("I'm renting a studio from a friend.", "home_tenure"),
    ("We just bought our own house.", "home_tenure"),
    ("I commute by ferry.", "commute"),
    ("I usually take the tram to work.", "commute"),
    ("I've started walking to the office.", "commute"),
    ("I code mostly in Rust.", "programming_language"),
    ("We develop in Kotlin.", "programming_language"),
    ("I bought a house plant.", None),  # no home
    ("I walk the dog to the park.", None),  # no way to work
    ("I no longer rent a flat.", None),  # negated: a change cue's business, not a key's
    ("I code for fun.", None),  # no language
])
def test_single_valued_attributes_have_a_key(sentence: str, key: str | None) -> None:
    """Where one lives as tenant or owner, how one gets to work and the language one mainly
    programs in hold one value at a time: a later statement of the same key replaces the
    earlier one without a change word ("We bought a cottage" after "We rent a flat")."""
    assert detect_key(sentence) == key


# ---------------------------------------------------------------------- reconcile decides
def fact(mid: str, text: str, fact_type: str = "statement", key: str | None = None) -> Memory:
    return Memory(id=mid, org_id="o", type="fact", text=text, user_id="u", conv_id="c1", created_at=T0,
                  updated_at=T0, key=key, details={"fact_type": fact_type, "supersedes": None, "source_role": "user"})


def candidate(text: str, cue_: str | None, key: str | None = None) -> FactCandidate:
    return FactCandidate(text=text, fact_type="statement", source_event_ids=("e2",), source_role="user",
                         key=key, cue=cue_, subject="the user")


def decide(new: FactCandidate, neighbours: list[tuple[Memory, float]], existing: list[Memory] = ()) -> str | None:
    plan = reconcile([new], np.zeros((1, 4), np.float32), list(existing), lambda v, k: neighbours[:k])
    return plan.decisions[0].supersedes


def test_a_change_supersedes_the_state_it_names() -> None:
    old = fact("m1", "The user plays hockey on Tuesdays.")
    new = candidate("The user left the hockey team.", CHANGE)
    assert decide(new, [(old, 0.40)]) == "m1", "a shared word ('hockey') and a fair cosine"


def test_a_change_without_a_shared_word_needs_a_clear_nearest_fact() -> None:
    old = fact("m1", "The user commutes by ferry.")
    other = fact("m2", "The user likes jazz.")
    new = candidate("The user switched to cycling to the office.", CHANGE)
    assert decide(new, [(old, 0.56), (other, 0.30)]) == "m1"
    assert decide(new, [(old, 0.56), (other, 0.55)]) is None, "two facts equally close: not clear which"
    assert decide(new, [(old, 0.40), (other, 0.30)]) is None, "not close enough without a shared word"


def test_a_shift_needs_a_shared_word() -> None:
    old = fact("m1", "The user works days at the depot.")
    assert decide(candidate("The user works nights now.", SHIFT), [(old, 0.7)]) == "m1"
    assert decide(candidate("The user is a night owl now.", SHIFT), [(old, 0.7)]) is None


def test_events_opinions_plans_and_other_people_are_not_superseded_by_a_change() -> None:
    new = candidate("The user quit running.", CHANGE)
    for old in (fact("m1", "The user ran a marathon in 2024.", "event"),
                fact("m2", "The user ran a half marathon with friends."),  # told in the past
                fact("m3", "The user thinks running is the best sport.", "opinion"),
                fact("m4", "The user will run in the city race.", "plan"),
                fact("m5", "Maya runs every morning.")):  # not about the user
        assert decide(new, [(old, 0.8)]) is None, old.text


def test_a_shift_does_not_end_one_of_several_values() -> None:
    piano = fact("m1", "The user has also started learning the piano.")
    assert decide(candidate("The user is learning the violin now.", SHIFT), [(piano, 0.7)]) is None
    assert decide(candidate("The user gave up the piano for the violin.", CHANGE), [(piano, 0.7)]) == "m1"


def test_an_addition_never_supersedes_not_even_by_key() -> None:
    home = fact("m1", "The user lives in Porto.", "biographical", key="lives_in")
    added = candidate("The user also lives in Faro part of the year.", ADDITION, key="lives_in")
    assert decide(added, [(home, 0.9)], [home]) is None
    changed = candidate("The user lives in Faro.", None, key="lives_in")
    assert decide(changed, [(home, 0.9)], [home]) == "m1", "the same key without an addition word still replaces"


# ---------------------------------------------------------------------- an assistant's turn
@pytest.mark.parametrize("sentence, answered, expected", [
    ("Noted — Thai food.", "My favorite food is pad see ew.", None),
    ("Got it: Denver.", "I live in Denver now.", None),
    ("I'll remember that you live in Denver.", "I live in Denver now.", None),
    ("So you live in Denver now!", "I live in Denver now.", None),
    ("Sounds good, I'll send you the packing list tonight.", "Let's plan the trip.",
     "I'll send you the packing list tonight."),
    ("I recommend the night train to Vienna.", "How should I get to Vienna?", "I recommend the night train to Vienna."),
])
def test_an_assistant_sentence_is_kept_only_for_what_it_adds(sentence: str, answered: str, expected: str | None) -> None:
    assert contribution(sentence, answered, frozenset()) == expected


# ---------------------------------------------------------------------- over HTTP
@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def say(client: httpx.Client, user: str, conv: str, text: str, at: str) -> dict:
    response = client.post("/v1/memories", json={"messages": [{"role": "user", "content": text, "date": at}],
                                                 "user_id": user, "conv_id": conv})
    assert response.status_code == 202, response.text
    done = wait_job(client, response.json()["id"])
    assert done["status"] == "succeeded", done
    return done


def active_facts(client: httpx.Client, user: str) -> list[dict]:
    page = client.get("/v1/memories", params={"user_id": user, "type": "fact", "limit": 100}).json()
    return [m for m in page["data"] if m["details"]["status"] == "active"]


def test_a_change_in_another_conversation_supersedes_and_keeps_the_revision(client: httpx.Client) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    first = say(client, user, "c1", "I play the trumpet in a brass band.", "2026-01-10T10:00:00Z")
    second = say(client, user, "c2", "I gave up the trumpet and joined a choir.", "2026-06-10T10:00:00Z")
    old_id = first["result"]["memories_created"][0]["id"]
    new_id = second["result"]["memories_created"][0]["id"]
    assert second["result"]["memories_superseded_by"] == {old_id: new_id}
    assert [m["id"] for m in active_facts(client, user)] == [new_id]
    chain = client.get(f"/v1/memories/{new_id}/revisions").json()["data"]
    assert [m["id"] for m in chain] == [old_id, new_id]
    top = client.post("/v1/memories/search", json={"query": "what instrument does the user play",
                                                   "filters": {"user_id": user}, "limit": 5}).json()["data"]
    assert top[0]["id"] == new_id


def test_an_addition_in_another_conversation_keeps_both(client: httpx.Client) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    say(client, user, "c1", "I play the trumpet in a brass band.", "2026-01-10T10:00:00Z")
    second = say(client, user, "c2", "I also play the trombone.", "2026-06-10T10:00:00Z")
    assert second["result"]["memories_superseded_by"] == {}
    texts = " ".join(m["text"] for m in active_facts(client, user))
    assert "trumpet" in texts and "trombone" in texts


# ---------------------------------------------------------------------- ranking prefers the newer rival
def context(text: str, at: int, fact_type: str = "statement", user: str = "u") -> "TurnContext":
    from engram.store.base import TurnContext
    return TurnContext("fact", "user", frozenset(), frozenset(), fact_type=fact_type, user_id=user, text=text,
                       said_at=datetime(2026, at, 1, tzinfo=timezone.utc))


def test_of_two_rival_states_the_later_ranks_first() -> None:
    from engram.search.engine import newer_first
    ctx = {"old": context("The user lives in a flat near the river.", 1),
           "new": context("The user lives in a house on the hill.", 6)}
    ranked = sorted(newer_first([("old", 0.62), ("new", 0.58)], ctx), key=lambda item: -item[1])
    assert [i for i, _ in ranked] == ["new", "old"]
    assert dict(ranked)["new"] == 0.58 and dict(ranked)["old"] < 0.58, "scores only go down"


def test_recency_leaves_alone_what_is_no_rivalry() -> None:
    from engram.search.engine import newer_first
    window = [("old", 0.62), ("new", 0.58)]
    cases = {
        "another person": {"old": context("The user lives in a flat.", 1), "new": context("Maya lives in a house.", 6)},
        "another user": {"old": context("The user lives in a flat.", 1), "new": context("The user lives in a house.", 6, user="v")},
        "no shared topic": {"old": context("The user lives in a flat.", 1), "new": context("The user plays chess.", 6)},
        "an event": {"old": context("The user lives in a flat.", 1), "new": context("The user moved house.", 6, "event")},
        "an addition": {"old": context("The user lives in a flat.", 1), "new": context("The user also lives in a cabin.", 6)},
    }
    for name, ctx in cases.items():
        assert newer_first(window, ctx) == window, name
    far = {"old": context("The user lives in a flat.", 1), "new": context("The user lives in a house.", 6)}
    assert newer_first([("old", 0.80), ("new", 0.50)], far) == [("old", 0.80), ("new", 0.50)], \
        "a state that answers clearly better stays first"
    family = {k: context(f"The user reads {book}.", m) for k, book, m in
              (("a", "Dune", 1), ("b", "Emma", 3), ("c", "Ulysses", 6))}
    books = [("a", 0.6), ("b", 0.59), ("c", 0.58)]
    assert newer_first(books, family) == books, "three states on one topic: a many-valued one"
