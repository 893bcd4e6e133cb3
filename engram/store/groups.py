"""Groups' store rules, written once over a SQL dialect (a mixin of RelationalStore): an org's
registered groups and the tags that put memories in them. What a group means for ingest and
search is engram/groups.py's; here are only the rows.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from engram.domain.records import Group
from engram.store import codec

if TYPE_CHECKING:
    from engram.store.dialect import Dialect, Tx


class GroupLimitReached(Exception):
    """The org already has its maximum number of active groups."""


def _groups_lock(org_id: str) -> str:
    return f"groups\x1f{org_id}"


def new_group_id() -> str:
    return f"grp_{secrets.token_hex(16)}"


class GroupRules:
    dialect: "Dialect"
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]

    def create_group(self, org_id: str, name: str, prompt: str | None, at: datetime, *, max_active: int) -> Group:
        d = self.dialect
        group_id = new_group_id()
        with d.transaction() as tx:
            # Counted under the org's groups lock (SQLite's one writer is already that): two
            # creates never both take the last place.
            d.lock(tx, _groups_lock(org_id))
            if tx.one("active_group_count", {"org_id": org_id})["n"] >= max_active:
                raise GroupLimitReached()
            tx.run("insert_group", {"org_id": org_id, "id": group_id, "name": name, "prompt": prompt,
                                    "now": d.time(at)})
            return codec.group(tx.one("group_of_org", {"org_id": org_id, "id": group_id}))

    def list_groups(self, org_id: str, *, archived_too: bool) -> list[Group]:
        return [codec.group(r) for r in self._all("groups_of_org", org_id=org_id, archived_too=int(archived_too))]

    def get_group(self, org_id: str, group_id: str) -> Group | None:
        row = self._one("group_of_org", org_id=org_id, id=group_id)
        return codec.group(row) if row else None

    def groups_by_id(self, org_id: str, group_ids: Iterable[str]) -> dict[str, Group]:
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return {}
        rows = self._all("groups_by_id", org_id=org_id, ids=self.dialect.array(ids))
        return {r["id"]: codec.group(r) for r in rows}

    def update_group(self, org_id: str, group_id: str, *, name: str, prompt: str | None, status: str,
                     at: datetime, max_active: int) -> Group | None:
        d = self.dialect
        with d.transaction() as tx:
            d.lock(tx, _groups_lock(org_id))
            row = tx.one("group_of_org", {"org_id": org_id, "id": group_id})
            if row is None:
                return None
            current = codec.group(row)
            if (name, prompt, status) == (current.name, current.prompt, current.status):
                return current  # the same patch again writes nothing
            if status == "active" and current.status != "active" \
                    and tx.one("active_group_count", {"org_id": org_id})["n"] >= max_active:
                raise GroupLimitReached()
            tx.run("update_group", {"org_id": org_id, "id": group_id, "name": name, "prompt": prompt,
                                    "status": status, "now": d.time(at)})
            return codec.group(tx.one("group_of_org", {"org_id": org_id, "id": group_id}))

    # ------------------------------------------------------------------ tags
    def group_tags(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each memory's group ids (sorted); a memory without tags is absent."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return {}
        tags: dict[str, list[str]] = {}
        for r in self._all("tags_of_memories", org_id=org_id, ids=self.dialect.array(ids)):
            tags.setdefault(r["memory_id"], []).append(r["group_id"])
        return tags

    def retag_memory(self, org_id: str, memory_id: str, add: Sequence[str], remove: Sequence[str]) -> bool:
        """Remove, then add, tags on one memory that is still there (False if it is not). The
        caller has checked that every added group is active."""
        d = self.dialect
        with d.transaction() as tx:
            if tx.one("memory_owner", {"org_id": org_id, "id": memory_id}) is None:
                return False
            if remove:
                tx.run("untag_memory", {"org_id": org_id, "memory_id": memory_id, "ids": d.array(list(remove))})
            self._tag(tx, org_id, {memory_id: list(add)})
            return True

    def _tag(self, tx: "Tx", org_id: str, tags: Mapping[str, Sequence[str]]) -> None:
        tx.many("tag_memory", [{"org_id": org_id, "memory_id": memory_id, "group_id": group_id}
                               for memory_id in sorted(tags) for group_id in tags[memory_id]])
