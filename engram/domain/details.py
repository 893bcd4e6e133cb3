"""The `details` of each memory type, typed once: `FactDetails`, `ArtifactDetails`, `EpisodeDetails`.

`Memory.details` holds the JSON object itself, as stored and as served (SPEC §3 lists its
keys per type); these types are built at the edges. The pipeline decides in them and calls
`to_wire()` once, when it builds a memory; whoever reads a field asks `details_of(memory)`
(or `FactDetails.of(memory)` …) for the typed view instead of indexing the object by key.

Why the record keeps the JSON object rather than the typed value: the stores treat
`details` as one opaque JSON value (the codec reads it back with no knowledge of the three
shapes, SQLite keeps its key order, `complete()` only sets `episode_id` in it), so the store
protocol and `store/codec.py` stay as small as they are, and a row is served byte for byte as
it was written — including rows with another key set (written by an older version, or by a
test), which a typed round trip would fill with keys they never had. Reading is lenient for
the same reason: a key that is missing takes the field's default, a key the type does not
know is ignored. For every memory the pipeline or a text PATCH writes, `to_wire()` of the
typed value is exactly the object stored, keys in the order of the fields below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Union

from engram.domain.records import iso, parse_iso

if TYPE_CHECKING:
    from engram.domain.records import Memory


@dataclass(frozen=True, slots=True)
class FactDetails:
    fact_type: str | None = None
    supersedes: str | None = None  # the fact this one replaced (a changed attribute, a text PATCH)
    source_role: str | None = None  # the role of the turn it came from
    episode_id: str | None = None  # the episode covering its turns
    artifact_ids: tuple[str, ...] = ()  # artifacts of its job that cite its turns

    def to_wire(self) -> dict[str, Any]:
        return {"fact_type": self.fact_type, "supersedes": self.supersedes, "source_role": self.source_role,
                "episode_id": self.episode_id, "artifact_ids": list(self.artifact_ids)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> FactDetails:
        return cls(fact_type=wire.get("fact_type"), supersedes=wire.get("supersedes"),
                   source_role=wire.get("source_role"), episode_id=wire.get("episode_id"),
                   artifact_ids=tuple(wire.get("artifact_ids") or ()))

    @classmethod
    def of(cls, memory: Memory) -> FactDetails:
        return cls.from_wire(_checked(memory, "fact"))


@dataclass(frozen=True, slots=True)
class ArtifactDetails:
    title: str | None = None
    rationale: str | None = None
    version: int | None = None  # 1, 2, … along the versions of one artifact
    root_id: str | None = None  # the first version's id
    supersedes: str | None = None  # the version before
    source_fact_ids: tuple[str, ...] = ()  # facts of its job that cite its turns
    episode_ids: tuple[str, ...] = ()  # episodes covering its turns
    full_content: str | None = None  # the artifact, verbatim

    def to_wire(self) -> dict[str, Any]:
        return {"title": self.title, "rationale": self.rationale, "version": self.version, "root_id": self.root_id,
                "supersedes": self.supersedes, "source_fact_ids": list(self.source_fact_ids),
                "episode_ids": list(self.episode_ids), "full_content": self.full_content}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ArtifactDetails:
        return cls(title=wire.get("title"), rationale=wire.get("rationale"), version=wire.get("version"),
                   root_id=wire.get("root_id"), supersedes=wire.get("supersedes"),
                   source_fact_ids=tuple(wire.get("source_fact_ids") or ()),
                   episode_ids=tuple(wire.get("episode_ids") or ()), full_content=wire.get("full_content"))

    @classmethod
    def of(cls, memory: Memory) -> ArtifactDetails:
        return cls.from_wire(_checked(memory, "artifact"))


@dataclass(frozen=True, slots=True)
class EpisodeDetails:
    title: str | None = None
    started_at: datetime | None = None  # its first turn (ISO-8601 text on the wire)
    ended_at: datetime | None = None  # its last turn
    fact_ids: tuple[str, ...] = ()  # the facts citing its turns
    artifact_ids: tuple[str, ...] = ()  # the artifacts citing its turns

    def to_wire(self) -> dict[str, Any]:
        return {"title": self.title, "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
                "fact_ids": list(self.fact_ids), "artifact_ids": list(self.artifact_ids)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> EpisodeDetails:
        return cls(title=wire.get("title"), started_at=parse_iso(wire.get("started_at")),
                   ended_at=parse_iso(wire.get("ended_at")), fact_ids=tuple(wire.get("fact_ids") or ()),
                   artifact_ids=tuple(wire.get("artifact_ids") or ()))

    @classmethod
    def of(cls, memory: Memory) -> EpisodeDetails:
        return cls.from_wire(_checked(memory, "episode"))


Details = Union[FactDetails, ArtifactDetails, EpisodeDetails]
_BY_TYPE: dict[str, type[FactDetails] | type[ArtifactDetails] | type[EpisodeDetails]] = {
    "fact": FactDetails, "artifact": ArtifactDetails, "episode": EpisodeDetails}


def details_of(memory: Memory) -> Details:
    """The typed view of a memory's details, by its type."""
    return _BY_TYPE[memory.type].from_wire(memory.details)


def supersedes(memory: Memory) -> str | None:
    """The id of the memory this one revised (`details.supersedes`; facts and artifacts)."""
    details = details_of(memory)
    return None if isinstance(details, EpisodeDetails) else details.supersedes


def with_episode(wire: Mapping[str, Any], episode_id: str) -> dict[str, Any]:
    """A stored fact's details once an episode covers its turns: `episode_id` set in place,
    every other key (and the keys' order) as it was — the store edits rows it did not write
    in this job, whatever their key set."""
    return {**wire, "episode_id": episode_id}


def _checked(memory: Memory, type_: str) -> Mapping[str, Any]:
    if memory.type != type_:
        raise TypeError(f"memory {memory.id} is of type {memory.type!r}, not {type_!r}")
    return memory.details
