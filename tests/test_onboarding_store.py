"""memsy's onboarding records and console reads as store rules, on every backend (SQLite and
PostgreSQL, the conformance suite's fixtures): written once (store/onboarding.py,
store/memsy_console.py), so they must answer alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from engram.domain.records import utcnow
from engram.store.onboarding import NameTaken, OrgUnit
from tests import test_store_conformance as conformance
from tests.test_store_conformance import ORG, OTHER, T0, memory, run_job, unit

# the conformance suite's fixtures: every test here runs on each backend
store = conformance.store
pg_conformance_url = conformance.pg_conformance_url


def role(org: str, unit_id: str, name: str, at_s: int = 0, kind: str = "role") -> OrgUnit:
    at = T0 + timedelta(seconds=at_s)
    return OrgUnit(org, kind, unit_id, name, f"{name} focus", f"{name} prompt", {"generator": "template"}, at, at)


def test_roles_and_teams_page_per_org_and_kind(store: Any) -> None:
    for r in (role(ORG, "r2", "Two", 2), role(ORG, "r1", "One", 1), role(ORG, "t1", "Team", 0, "team"),
              role(OTHER, "r1", "Theirs", 0)):
        store.put_org_unit(r)
    assert [u.id for u in store.org_units(ORG, "role", limit=10, offset=0)] == ["r1", "r2"]
    assert [u.id for u in store.org_units(ORG, "role", limit=1, offset=1)] == ["r2"]
    assert [u.id for u in store.org_units(ORG, "team", limit=10, offset=0)] == ["t1"]
    assert [u.name for u in store.org_units(OTHER, "role", limit=10, offset=0)] == ["Theirs"]
    assert [u.id for u in store.org_units_named(ORG, "role", ["r2", "t1", "nope", "r2"])] == ["r2"]
    changed = store.put_org_unit(replace(store.org_unit(ORG, "role", "r1"), name="Uno", updated_at=utcnow()))
    assert changed.name == "Uno" and changed.created_at == T0 + timedelta(seconds=1) and changed.updated_at > T0
    assert changed.prompt_meta == {"generator": "template"}
    assert store.delete_org_unit(ORG, "role", "r1") and not store.delete_org_unit(ORG, "role", "r1")
    assert store.org_unit(ORG, "role", "r1") is None and store.org_unit(OTHER, "role", "r1") is not None


def test_an_orgs_record_renames_it_and_keeps_its_id(store: Any) -> None:
    org = store.get_org(ORG)
    assert org.focus is None and org.promotion_prompt is None and org.prompt_meta is None
    store.update_org_profile(replace(store.get_org(OTHER), name="Org B Ltd"))
    for taken in ("Org B Ltd", OTHER):  # another org's name, or its id (which name lookups match)
        with pytest.raises(NameTaken):
            store.update_org_profile(replace(org, name=taken))
    saved = store.update_org_profile(replace(org, name="Org A Inc", focus="f", promotion_prompt="p",
                                             prompt_meta={"generator": "llm", "llm": True}, updated_at=utcnow()))
    assert (saved.id, saved.name, saved.focus, saved.prompt_meta) == (ORG, "Org A Inc", "f",
                                                                    {"generator": "llm", "llm": True})
    assert store.ensure_org(ORG).id == ORG, "the old name is still its id"
    assert store.ensure_org("Org A Inc").id == ORG
    cleared = store.update_org_profile(replace(saved, focus=None, promotion_prompt=None, prompt_meta=None))
    assert cleared.focus is None and cleared.prompt_meta is None and cleared.name == "Org A Inc"
    assert store.update_org_profile(replace(saved, id="no-such-org", name="zz")) is None


def test_console_pages_counts_filters_and_actors(store: Any) -> None:
    made = [memory(ORG, "ann", f"Ann likes {w}", created_at=T0 + timedelta(seconds=i),
                   metadata={"role_id": "eng", "team_id": f"t{i % 2}"} if i < 3 else {})
            for i, w in enumerate(["tea", "100% cocoa", "jazz_music", "TEA leaves", "rain"])]
    made.append(memory(ORG, "bob", "Bob likes tea", created_at=T0 + timedelta(seconds=9), type_="episode"))
    run_job(store, ORG, "ann", "c1", [(m, unit(i)) for i, m in enumerate(made[:5])])
    run_job(store, ORG, "bob", "c2", [(made[5], unit(9))])
    run_job(store, OTHER, "ann", "c1", [(memory(OTHER, "ann", "Ann elsewhere"), unit(10))])

    page, total = store.console_memories(ORG, status="active", limit=2, offset=1)
    assert total == 6 and [m.id for m in page] == [made[4].id, made[3].id], "newest first, in SQL pages"
    page, total = store.console_memories(ORG, status="active", ascending=True, limit=10, offset=4)
    assert total == 6 and [m.id for m in page] == [made[4].id, made[5].id]
    assert store.console_memories(ORG, status="active", search="tea", limit=10, offset=0)[1] == 3, "any ASCII case"
    assert [m.id for m in store.console_memories(ORG, status="active", search="0%", limit=10, offset=0)[0]] == \
        [made[1].id], "% is the text's own"
    assert [m.id for m in store.console_memories(ORG, status="active", search="z_m", limit=10, offset=0)[0]] == \
        [made[2].id], "_ is the text's own"
    assert store.console_memories(ORG, status="active", search="jazzXmusic", limit=10, offset=0)[1] == 0
    assert store.console_memories(ORG, status="active", user_id="bob", type="episode", limit=10, offset=0)[1] == 1
    assert store.console_memories(ORG, status="superseded", limit=10, offset=0) == ([], 0)
    stats = {(s.type, s.status): s.count for s in store.console_memory_stats(ORG)}
    assert stats == {("fact", "active"): 5, ("episode", "active"): 1}

    actors, total = store.actors(ORG, sort="first_memory_desc", limit=10, offset=0)
    assert total == 2 and [a.user_id for a in actors] == ["bob", "ann"]
    ann = store.actor(ORG, "ann")
    assert (ann.memory_count, ann.active_memory_count, ann.role_ids, ann.team_ids) == (5, 5, ("eng",), ("t0", "t1"))
    assert ann.first_memory_at == T0 and ann.last_memory_at == T0 + timedelta(seconds=4)
    assert [a.user_id for a in store.actors(ORG, sort="actor_id_asc", limit=1, offset=1)[0]] == ["bob"]
    assert store.actors(ORG, sort="last_memory_desc", search="AN", limit=10, offset=0)[1] == 1
    assert store.actor(ORG, "carol") is None and store.actor(OTHER, "ann").memory_count == 1

    events, total = store.console_events(ORG, user_id="ann", limit=10, offset=0)
    assert total == 1 and events[0].user_id == "ann" and events[0].org_id == ORG
    assert store.console_events(ORG, kind="assistant_message", limit=10, offset=0) == ([], 0)
    assert store.console_events(ORG, limit=1, offset=0, ascending=True)[1] == 2
