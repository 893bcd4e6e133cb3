"""Groups: the family-X v1.0 sharing axis (docs/design.md, "Groups").

An org registers groups (a name and, optionally, a prompt saying what belongs). An ingest that
names active groups has its new memories judged (engram/pipeline/sharing.py): personal ones
are never tagged, the others join the catch-all groups and the prompted groups they match. A
search or list by group reads every user's memories tagged with it; PATCH adds or removes tags
on one memory. Archiving a group keeps its tags readable and stops new ones: an ingest naming
it drops it into `ignored_group_ids`.
"""

from __future__ import annotations

from typing import Sequence

from engram.config import Settings
from engram.domain.records import Group, utcnow
from engram.domain.text import unstorable
from engram.errors import ServiceError
from engram.store.base import Store
from engram.store.groups import GroupLimitReached

MAX_NAME_CHARS = 120
MAX_PROMPT_CHARS = 2000
STATUSES = ("active", "archived")


class Groups:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def _quota(self) -> ServiceError:
        limit = self.settings.max_groups_per_org
        return ServiceError("groups_quota_exceeded", f"an org holds at most {limit} active groups "
                            "(ENGRAM_MAX_GROUPS_PER_ORG); archive one first", extra={"limit": limit})

    def create(self, org_id: str, name: str, prompt: str | None) -> Group:
        _check(name=name, prompt=prompt)
        try:
            return self.store.create_group(org_id, name, prompt, utcnow(), max_active=self.settings.max_groups_per_org)
        except GroupLimitReached:
            raise self._quota() from None

    def list(self, org_id: str, *, include_archived: bool) -> list[Group]:
        return self.store.list_groups(org_id, archived_too=include_archived)

    def get(self, org_id: str, group_id: str) -> Group:
        group = self.store.get_group(org_id, group_id)
        if group is None:
            raise ServiceError("group_not_found", f"no group {group_id!r} in this org")
        return group

    def update(self, org_id: str, group_id: str, *, name: str | None = None, prompt: str | None = None,
               status: str | None = None) -> Group:
        """Fields left None are kept. A prompt can be set (a catch-all becomes prompted) but not
        removed; tags made under an earlier prompt stay."""
        _check(name=name, prompt=prompt, status=status)
        current = self.get(org_id, group_id)
        try:
            updated = self.store.update_group(
                org_id, group_id, name=current.name if name is None else name,
                prompt=current.prompt if prompt is None else prompt,
                status=current.status if status is None else status,
                at=utcnow(), max_active=self.settings.max_groups_per_org)
        except GroupLimitReached:
            raise self._quota() from None
        if updated is None:
            raise ServiceError("group_not_found", f"no group {group_id!r} in this org")
        return updated

    def archive(self, org_id: str, group_id: str) -> Group:
        return self.update(org_id, group_id, status="archived")

    # ------------------------------------------------------------------ what ingest and PATCH use
    def for_ingest(self, org_id: str, group_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """(kept, ignored): the active groups among those named, and the rest (unknown or
        archived), each in the order first named."""
        named = list(dict.fromkeys(group_ids))
        known = self.store.groups_by_id(org_id, named) if named else {}
        kept = [g for g in named if g in known and known[g].status == "active"]
        return kept, [g for g in named if g not in kept]

    def retag(self, org_id: str, memory_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        """PATCH's set-based change: `remove` then `add`. Every added group must be active;
        removed ones are not checked (an archived group's tag can always be taken off)."""
        add = list(dict.fromkeys(g.strip() for g in add if g.strip()))
        remove = list(dict.fromkeys(g.strip() for g in remove if g.strip()))
        if not add and not remove:
            raise ServiceError("empty_patch", "send add_group_ids or remove_group_ids (at least one id)")
        both = sorted(set(add) & set(remove))
        if both:
            raise ServiceError("contradictory_group_ids", f"in both add_group_ids and remove_group_ids: "
                               f"{', '.join(both)}")
        kept, refused = self.for_ingest(org_id, add)
        if refused:
            raise ServiceError("invalid_group_ids", f"not an active group of this org: {', '.join(refused)}",
                               extra={"invalid_group_ids": refused})
        if not self.store.retag_memory(org_id, memory_id, kept, remove):
            raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org")


def _check(*, name: str | None = None, prompt: str | None = None, status: str | None = None) -> None:
    """A group's fields, each 422 `invalid_request` when wrong: an empty prompt is refused
    (only omission or null makes a catch-all, so a blank field cannot make one by mistake)."""
    problems = []
    if name is not None and not (1 <= len(name.strip()) and len(name) <= MAX_NAME_CHARS):
        problems.append(f"name must be 1-{MAX_NAME_CHARS} characters, not blank")
    if prompt is not None and not (prompt.strip() and len(prompt) <= MAX_PROMPT_CHARS):
        problems.append(f"prompt must be 1-{MAX_PROMPT_CHARS} characters, not blank (omit it for a catch-all group)")
    if status is not None and status not in STATUSES:
        problems.append("status is active or archived")
    for field, text in (("name", name), ("prompt", prompt)):
        why = unstorable(text) if text is not None else None
        if why is not None:
            problems.append(f"{field} {why}")
    if problems:
        raise ServiceError("invalid_request", "; ".join(problems), status=422)
