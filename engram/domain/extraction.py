"""What an extractor sees and what it returns: plain data, no I/O.

A worker hands an extractor the turns of one job (plus recent context of the same
conversation) and gets candidate memories back; reconciliation and storage decide
what becomes a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Turn:
    """One stored event as the extractor sees it."""

    event_id: str
    role: str  # user | assistant | tool | app (family M kinds map onto these)
    content: str
    date: datetime  # when the turn happened (timezone-aware UTC); anchors relative dates
    name: str | None = None  # the speaker's name when the client gave one
    dia_id: str | None = None
    role_id: str | None = None  # the speaker's role and team (family M's role_id / team_id), if sent
    team_id: str | None = None


@dataclass(frozen=True, slots=True)
class Guidance:
    """What an org, and the roles and teams its turns came from, want remembered: their
    promotion prompts (engram/onboarding.py). Only an extractor that reads prose can use it."""

    org_name: str | None = None
    org: str | None = None  # the org's prompt
    roles: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # role id -> (name, prompt)
    teams: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # team id -> (name, prompt)

    def __bool__(self) -> bool:
        return bool(self.org or self.roles or self.teams)


@dataclass(frozen=True, slots=True)
class FactCandidate:
    text: str  # self-contained, third person, names the speaker
    fact_type: str  # e.g. preference | biographical | event | plan | relationship | opinion | statement
    source_event_ids: tuple[str, ...]
    source_role: str
    valid_at: datetime | None = None  # when the fact holds / happened, if the text says
    key: str | None = None  # stable attribute key for single-valued facts ("lives_in", "works_at")
    # An extractor that was shown the user's stored memories may say how this fact relates
    # to one of them (a memory id); reconciliation checks the id and falls back to its rules.
    repeats: str | None = None  # says the same as this stored fact
    supersedes: str | None = None  # replaces this stored fact (a changed attribute, a moved plan)
    # What the sentence itself says about earlier facts (rules extractor, rules/changes.py):
    # "change" (an earlier state ended: "I quit…", "no longer…"), "shift" (a present value
    # that implies an earlier one: "…now", "these days"), "addition" ("also", "too"), or None.
    cue: str | None = None
    subject: str | None = None  # whom the fact is about, as its text names them ("Caroline", "the user")


@dataclass(frozen=True, slots=True)
class ArtifactCandidate:
    title: str
    rationale: str
    content: str  # the whole artifact, kept verbatim
    source_event_ids: tuple[str, ...]
    revises: str | None = None  # id of a stored artifact this is a new version of, if the extractor knows


@dataclass(frozen=True, slots=True)
class EpisodeCandidate:
    title: str
    summary: str
    started_at: datetime
    ended_at: datetime
    source_event_ids: tuple[str, ...]


@dataclass(slots=True)
class Extraction:
    facts: list[FactCandidate] = field(default_factory=list)
    artifacts: list[ArtifactCandidate] = field(default_factory=list)
    episodes: list[EpisodeCandidate] = field(default_factory=list)
    # What an extractor had to bend to use the answer it got (the llm extractor: references that
    # did not resolve and became new, items dropped, fields defaulted), by kind; empty when none.
    degraded: dict[str, int] = field(default_factory=dict)
