"""memsy's onboarding records, written once over a SQL dialect (a mixin of RelationalStore):
an org's customization on its own row, and its roles and teams (`org_units`, one table told
apart by `kind`). What the records mean, and who may change them, is engram/onboarding.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engram.domain.records import Org
from engram.store import codec

if TYPE_CHECKING:
    from engram.store.dialect import Dialect

UNIT_KINDS = ("role", "team")


@dataclass(frozen=True, slots=True)
class OrgUnit:
    """A role or a team of an org: what matters to it and the prompt that steers extraction."""

    org_id: str
    kind: str  # role | team
    id: str
    name: str
    focus: str
    promotion_prompt: str
    prompt_meta: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class NameTaken(Exception):
    """Another org already has the name an org was to be renamed to; nothing was changed."""


class OnboardingRules:
    dialect: "Dialect"
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]

    # ------------------------------------------------------------------ the org's own record
    def update_org_profile(self, org: Org) -> Org | None:
        """Write the org's name and customization as `org` has them; None when there is no such
        org. A name another org has, or another org's id, is `NameTaken` (checked under a lock,
        so two renames cannot both take one name)."""
        d = self.dialect
        with d.transaction() as tx:
            d.lock(tx, "org names")
            # another org's name, or another org's id (lookups by name also match ids: ensure_org)
            for taken in (tx.one("org_by_name", {"name": org.name}), tx.one("org_by_id", {"id": org.name})):
                if taken is not None and taken["id"] != org.id:
                    raise NameTaken(org.name)
            changed = tx.run("update_org_profile", {
                "id": org.id, "name": org.name, "focus": org.focus, "promotion_prompt": org.promotion_prompt,
                "prompt_meta": None if org.prompt_meta is None else d.json(org.prompt_meta),
                "updated_at": d.time(org.updated_at)})
            row = tx.one("org_by_id", {"id": org.id}) if changed else None
        return codec.org(row) if row else None

    # ------------------------------------------------------------------ roles and teams
    def org_units(self, org_id: str, kind: str, *, limit: int, offset: int) -> list[OrgUnit]:
        """One page of the org's roles (or teams), oldest first."""
        return [_unit(r) for r in self._all("org_units_page", org_id=org_id, kind=kind, limit=limit, offset=offset)]

    def org_unit(self, org_id: str, kind: str, unit_id: str) -> OrgUnit | None:
        row = self._one("org_unit", org_id=org_id, kind=kind, id=unit_id)
        return _unit(row) if row else None

    def org_units_named(self, org_id: str, kind: str, unit_ids: Sequence[str]) -> list[OrgUnit]:
        """The org's roles (or teams) among these ids; unknown ids are simply not there."""
        if not unit_ids:
            return []
        return [_unit(r) for r in self._all("org_units_named", org_id=org_id, kind=kind,
                                            ids=self.dialect.array(list(dict.fromkeys(unit_ids))))]

    def put_org_unit(self, unit: OrgUnit) -> OrgUnit:
        """Create the role or team, or replace what it says (its creation time stays)."""
        d = self.dialect
        with d.transaction() as tx:
            tx.run("put_org_unit", {"org_id": unit.org_id, "kind": unit.kind, "id": unit.id, "name": unit.name,
                                    "focus": unit.focus, "promotion_prompt": unit.promotion_prompt,
                                    "prompt_meta": d.json(unit.prompt_meta), "created_at": d.time(unit.created_at),
                                    "updated_at": d.time(unit.updated_at)})
            return _unit(tx.one("org_unit", {"org_id": unit.org_id, "kind": unit.kind, "id": unit.id}))

    def delete_org_unit(self, org_id: str, kind: str, unit_id: str) -> bool:
        """Remove the record (memories and events that name its id keep it); False if absent."""
        with self.dialect.transaction() as tx:
            return tx.run("delete_org_unit", {"org_id": org_id, "kind": kind, "id": unit_id}) == 1


def _unit(row: Any) -> OrgUnit:
    return OrgUnit(row["org_id"], row["kind"], row["id"], row["name"], row["focus"], row["promotion_prompt"],
                   codec.json_value(row["prompt_meta"]) or {}, codec.time_value(row["created_at"]),  # type: ignore[arg-type]
                   codec.time_value(row["updated_at"]))  # type: ignore[arg-type]
