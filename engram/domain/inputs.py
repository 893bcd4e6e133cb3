"""What the two API families hand the core, after their wire shapes are parsed.

Routes build these; the service validates the rules that depend on configured limits and
turns them into events and jobs. Neither family's field names leak past this point.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from engram.domain.filters import MATCH_ALL, Node

# Metadata keys a client may not set: internal storage keys and names of core fields.
RESERVED_METADATA_KEYS = frozenset(
    {"tag1", "tag2", "tag3", "tag4", "tag5", "kb_type", "org_id",
     "id", "user_id", "agent_id", "conv_id", "app_id", "type", "status",
     "created_at", "updated_at", "valid_at"}
)

# family M kind <-> the role the extractor sees
ROLE_BY_KIND = {"user_message": "user", "assistant_message": "assistant", "tool_result": "tool", "app_event": "app"}
KIND_BY_ROLE = {role: kind for kind, role in ROLE_BY_KIND.items()}


def kind_for_role(role: str) -> str:
    return KIND_BY_ROLE.get(role, "app_event")


@dataclass(slots=True)
class Turn:
    """One turn as either family received it, in the core's names: family X's messages and
    family M's events both become a list of these (`user_id` is M's `actor_id`, `conv_id`
    its `session_id`, `occurred_at` X's `date` and M's `ts`, `client_event_id` M's
    `event_id`). `Service.accept` checks them and groups them into jobs.

    Who spoke is `role` (a free label, family X) or `kind` (one of `ROLE_BY_KIND`, family
    M); the other is derived. A family-X call gives every turn the same ids and the same
    `metadata` object; the core checks a shared metadata object once.
    """

    user_id: str
    conv_id: str
    content: str
    role: str | None = None
    kind: str | None = None
    occurred_at: datetime | None = None  # default: when the turn is received
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    dia_id: str | None = None
    agent_id: str | None = None
    app_id: str | None = None
    role_id: str | None = None  # kept in the event's metadata, where memsy-style scopes find it
    team_id: str | None = None
    client_event_id: str | None = None  # the client's idempotency key for this turn, per org, forever
    # The length of the text the metadata was read from, when the wire sends it as text
    # (family M): text over the metadata limit is refused without looking further.
    metadata_chars: int | None = None


class Grouping(enum.Enum):
    """How one call's turns become jobs."""

    PER_CALL = "call"  # the call is one job (family X: one user, one conversation per call)
    PER_CONVERSATION = "conversation"  # one job per (user, conversation), in first-seen order (family M)


@dataclass(frozen=True, slots=True)
class AcceptOptions:
    """What one accept call asks of the core besides its turns."""

    grouping: Grouping
    max_content_chars: int  # per turn (§7: 32,000 for family X, 8,000 for family M)
    # The duplicate window (`Settings.dedup_window_s`): a turn repeating a stored one's
    # (user, conversation, kind, content) within it resolves to that event (family M).
    dedup: bool = False
    extract_artifacts: bool = False
    group_ids: Sequence[str] = ()  # the v1.0 contract's groups the call names (engram/groups.py)
    active_group_ids: Sequence[str] = ()  # those of them active when the call came: the job may tag these


def dedup_hash(user_id: str, conv_id: str, kind: str, content: str) -> str:
    """The dedup key of a turn: equal for the same (user, conversation, kind, content)."""
    return hashlib.sha256("\x1f".join((user_id, conv_id, kind, content)).encode()).hexdigest()


@dataclass(slots=True)
class SearchQuery:
    text: str
    where: Node = MATCH_ALL
    limit: int = 20
    cursor: str | None = None
    threshold: float = 0.0
    with_source_events: bool = False
    with_full_content: bool = False
    with_context_prompt: bool = False
    with_score_parts: bool = False  # each hit's dense/lexical/time make-up (the console; never on the wire)
