"""The typed `details` of each memory type (engram/domain/details.py): the wire object they
write is the one engram has always stored and served, key for key and in that order, and
reading one back gives the same value."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from engram.domain.details import (
    ArtifactDetails, EpisodeDetails, FactDetails, details_of, supersedes, with_episode,
)
from engram.domain.records import Memory

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def memory(type_: str, details: dict) -> Memory:
    return Memory(id="m1", org_id="o", type=type_, text="t", user_id="u", conv_id="c", created_at=T0, updated_at=T0,
                  details=details)


def test_each_type_writes_its_keys_in_the_stored_order() -> None:
    assert FactDetails(fact_type="preference", source_role="user").to_wire() == {
        "fact_type": "preference", "supersedes": None, "source_role": "user", "episode_id": None, "artifact_ids": []}
    assert list(FactDetails().to_wire()) == ["fact_type", "supersedes", "source_role", "episode_id", "artifact_ids"]
    assert list(ArtifactDetails().to_wire()) == ["title", "rationale", "version", "root_id", "supersedes",
                                                 "source_fact_ids", "episode_ids", "full_content"]
    assert EpisodeDetails(title="x", started_at=T0, ended_at=T0, fact_ids=("f1",)).to_wire() == {
        "title": "x", "started_at": "2024-05-01T10:00:00.000000Z", "ended_at": "2024-05-01T10:00:00.000000Z",
        "fact_ids": ["f1"], "artifact_ids": []}


@pytest.mark.parametrize("details", [
    FactDetails("event", "old", "assistant", "ep", ("a1", "a1", "a2")),
    ArtifactDetails("Title", "why", 3, "root", "v2", ("f1",), ("ep",), "```\ncode\n```"),
    EpisodeDetails("chat", T0, T0.replace(hour=11), ("f1", "f2"), ("a1",)),
])
def test_reading_the_wire_object_back_gives_the_same_value(details) -> None:
    assert type(details).from_wire(details.to_wire()) == details
    type_ = {FactDetails: "fact", ArtifactDetails: "artifact", EpisodeDetails: "episode"}[type(details)]
    assert details_of(memory(type_, details.to_wire())) == details


def test_reading_is_lenient_and_asks_for_the_right_type() -> None:
    assert FactDetails.from_wire({"fact_type": "fact", "source_event_ids": []}) == FactDetails(fact_type="fact")
    assert ArtifactDetails.of(memory("artifact", {"version": 2})).version == 2
    with pytest.raises(TypeError):
        ArtifactDetails.of(memory("fact", {}))
    assert supersedes(memory("fact", {"supersedes": "m0"})) == "m0"
    assert supersedes(memory("episode", {"title": "x"})) is None


def test_an_episode_is_set_in_place_whatever_the_key_set() -> None:
    assert list(with_episode({"fact_type": "f", "supersedes": None, "episode_id": None, "x": 1}, "ep")) == \
        ["fact_type", "supersedes", "episode_id", "x"]
    assert with_episode({"fact_type": "f"}, "ep") == {"fact_type": "f", "episode_id": "ep"}
