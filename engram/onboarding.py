"""memsy's onboarding records: an org's customization, and its roles and teams (docs/design.md,
"Onboarding records").

Each record has a `name`, a `focus` (what matters to it, in its own words) and a
`promotion_prompt` written from the focus (engram/prompts.py), which the llm extractor is given
for every turn of the org, and of the event's role and team (engram/pipeline/guidance.py).

Who may do what:

- reading an org's records (the org, its roles, its teams): any key of the org with `read`;
- changing them (create, update, regenerate-prompt, delete): a key of the org with `admin`;
- the operator (engram/admin.py) does both for every org, and alone creates new orgs;
- naming another org than one's own is `403 org_mismatch` (the operator: `404 org_not_found`
  for an org that does not exist).

The org record *is* the org: `name` is the org's name (renaming it changes what `X-Org-Id`
and the CLI's `--org` match; its id never changes), and deleting the record clears the
customization only — the org, its keys and its memories stay.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from engram.admin import Admin
from engram.auth import Principal
from engram.config import Settings
from engram.domain.records import Org, utcnow
from engram.domain.validation import FieldChecks, Loc
from engram.errors import ServiceError
from engram.prompts import MAX_PROMPT_CHARS, PromptWriter, WrittenPrompt, manual_meta
from engram.store.base import Store
from engram.store.onboarding import UNIT_KINDS, NameTaken, OrgUnit
from engram.usage import UsageMeter

MAX_FOCUS_CHARS = 4000
MAX_UNITS_PAGE = 500


class Onboarding:
    def __init__(self, store: Store, settings: Settings, admin: Admin, usage: UsageMeter,
                 writer: PromptWriter | None = None) -> None:
        self.store = store
        self.settings = settings
        self.admin = admin
        self.usage = usage
        self.writer = writer or PromptWriter(settings)

    # ------------------------------------------------------------------ who
    def org_for(self, principal: Principal, org_id: str | None, scope: str) -> Org:
        """The org a request is about (the caller's when none is named), if the caller may `scope` it."""
        principal.require(scope)
        if org_id is None or org_id == principal.org_id:
            org = self.store.get_org(principal.org_id)
        elif Admin.is_operator(principal):
            org = self.store.get_org(org_id) if self._storable(org_id) else None
            if org is None:
                raise ServiceError("org_not_found", f"no org {org_id!r}")
        else:
            raise ServiceError("org_mismatch", f"this key belongs to org {principal.org_id!r}, not {org_id!r}")
        if org is None:  # the caller's own org always exists; a store emptied under it does not
            raise ServiceError("org_not_found", f"no org {principal.org_id!r}")
        return org

    def _storable(self, some_id: str) -> bool:
        check = FieldChecks(self.settings.limits)
        check.id(("id",), some_id)
        return not check.errors

    def _checked(self, loc: Loc, *, name: str | None = None, focus: str | None = None,
                 prompt: str | None = None) -> None:
        check = FieldChecks(self.settings.limits)
        if name is not None:
            check.id((*loc, "name"), name)
        if focus is not None:
            check.text((*loc, "focus"), focus, MAX_FOCUS_CHARS, name="focus")
        if prompt is not None:
            check.text((*loc, "promotion_prompt"), prompt, MAX_PROMPT_CHARS, name="promotion_prompt")
        check.raise_if_any()

    def _written(self, org_id: str, kind: str, name: str, focus: str) -> WrittenPrompt:
        written = self.writer.write(kind, name, focus)
        if written.usage:
            self.usage.add(org_id, written.usage)  # a model's tokens are the org's, as a job's are
        return written

    # ------------------------------------------------------------------ orgs
    def list_orgs(self, principal: Principal) -> list[Org]:
        """Every org for the operator; the caller's own for anyone else."""
        if Admin.is_operator(principal):
            return self.store.list_orgs()
        return [self.org_for(principal, None, "read")]

    def get_org(self, principal: Principal, org_id: str) -> Org:
        return self.org_for(principal, org_id, "read")

    def create_org(self, principal: Principal, org_id: str | None, name: str | None, focus: str | None) -> Org:
        """memsy's `orgs.create(org_id, name, focus)`: the customization of an org the caller
        administers (`409 org_exists` when it has one), or — for the operator — a new org of
        that id. engram's own `{"name"}` (no `org_id`) is the operator creating an org."""
        self._checked(("body",), name=name, focus=focus)
        check = FieldChecks(self.settings.limits)
        check.id(("body", "org_id"), org_id)
        if org_id is None and name is None:
            check.fail(("body", "name"), "field required", "missing")
        check.raise_if_any()
        existing = self.store.get_org(org_id) if org_id is not None else None
        if existing is None:
            if org_id not in (None, principal.org_id) and not Admin.is_operator(principal):
                raise ServiceError("org_mismatch", f"this key belongs to org {principal.org_id!r}, not {org_id!r}")
            if org_id is not None and name not in (None, org_id) and self._name_taken(name):
                raise ServiceError("org_exists", f"an org named {name!r} exists")  # before anything is made
            org = self.admin.create_org(principal, org_id or name or "")  # the operator's alone; 409 if taken
            if focus is None:
                return org if name in (None, org.name) else self._save(replace(org, name=name))
        else:
            org = self.org_for(principal, org_id, "admin")
            if org.focus is not None or focus is None:
                raise ServiceError("org_exists", f"org {org.id!r} exists and has a customization record; change "
                                   f"it with PATCH /v1/orgs/{org.id}" if org.focus is not None else
                                   f"an org {org.id!r} exists")
        written = self._written(org.id, "org", name or org.name, focus)
        return self._save(replace(org, name=name or org.name, focus=focus, promotion_prompt=written.text,
                                  prompt_meta=written.meta, updated_at=utcnow()))

    def update_org(self, principal: Principal, org_id: str, *, name: str | None = None, focus: str | None = None,
                   promotion_prompt: str | None = None) -> Org:
        """A partial update. A new `focus` without a `promotion_prompt` writes the prompt again."""
        self._checked(("body",), name=name, focus=focus, prompt=promotion_prompt)
        org = self.org_for(principal, org_id, "admin")
        changed = replace(org, name=name or org.name, focus=focus if focus is not None else org.focus,
                          updated_at=utcnow())
        if promotion_prompt is not None:
            changed = replace(changed, promotion_prompt=promotion_prompt.strip(), prompt_meta=manual_meta())
        elif focus is not None and focus != org.focus:
            written = self._written(org.id, "org", changed.name, focus)
            changed = replace(changed, promotion_prompt=written.text, prompt_meta=written.meta)
        return self._save(changed)

    def regenerate_org_prompt(self, principal: Principal, org_id: str) -> Org:
        org = self.org_for(principal, org_id, "admin")
        if not org.focus:
            raise ServiceError("invalid_request", f"org {org.id!r} has no focus to write a prompt from; set one "
                               f"first (POST /v1/orgs or PATCH /v1/orgs/{org.id})")
        written = self._written(org.id, "org", org.name, org.focus)
        return self._save(replace(org, promotion_prompt=written.text, prompt_meta=written.meta, updated_at=utcnow()))

    def clear_org(self, principal: Principal, org_id: str) -> None:
        """Remove the customization (focus, prompt); the org, its keys and memories stay."""
        org = self.org_for(principal, org_id, "admin")
        self._save(replace(org, focus=None, promotion_prompt=None, prompt_meta=None, updated_at=utcnow()))

    def _name_taken(self, name: str | None) -> bool:
        return name is not None and any(o.name == name or o.id == name for o in self.store.list_orgs())

    def _save(self, org: Org) -> Org:
        try:
            saved = self.store.update_org_profile(org)
        except NameTaken:
            raise ServiceError("org_exists", f"another org is named {org.name!r}") from None
        if saved is None:
            raise ServiceError("org_not_found", f"no org {org.id!r}")
        return saved

    # ------------------------------------------------------------------ roles and teams
    @staticmethod
    def _kind(kind: str) -> str:
        if kind not in UNIT_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        return kind

    def list_units(self, principal: Principal, kind: str, org_id: str | None, *, limit: int,
                   offset: int) -> list[OrgUnit]:
        org = self.org_for(principal, org_id, "read")
        return self.store.org_units(org.id, self._kind(kind), limit=limit, offset=offset)

    def get_unit(self, principal: Principal, kind: str, unit_id: str, org_id: str | None) -> OrgUnit:
        org = self.org_for(principal, org_id, "read")
        return self._unit(org.id, kind, unit_id)

    def _unit(self, org_id: str, kind: str, unit_id: str) -> OrgUnit:
        unit = self.store.org_unit(org_id, self._kind(kind), unit_id) if self._storable(unit_id) else None
        if unit is None:
            raise ServiceError("not_found", f"no {kind} {unit_id!r} in org {org_id!r}")
        return unit

    def create_unit(self, principal: Principal, kind: str, org_id: str | None, name: str, focus: str) -> OrgUnit:
        self._checked(("body",), name=name, focus=focus)
        check = FieldChecks(self.settings.limits)
        check.id(("body", "name"), name, required=True)
        check.raise_if_any()
        org = self.org_for(principal, org_id, "admin")
        written = self._written(org.id, self._kind(kind), name, focus)
        now = utcnow()
        return self.store.put_org_unit(OrgUnit(org.id, kind, f"{kind}_{secrets.token_hex(8)}", name, focus,
                                               written.text, written.meta, now, now))

    def update_unit(self, principal: Principal, kind: str, unit_id: str, org_id: str | None, *,
                    name: str | None = None, focus: str | None = None,
                    promotion_prompt: str | None = None) -> OrgUnit:
        self._checked(("body",), name=name, focus=focus, prompt=promotion_prompt)
        org = self.org_for(principal, org_id, "admin")
        unit = self._unit(org.id, kind, unit_id)
        changed = replace(unit, name=name or unit.name, focus=focus if focus is not None else unit.focus,
                          updated_at=utcnow())
        if promotion_prompt is not None:
            changed = replace(changed, promotion_prompt=promotion_prompt.strip(), prompt_meta=manual_meta())
        elif focus is not None and focus != unit.focus:
            written = self._written(org.id, kind, changed.name, focus)
            changed = replace(changed, promotion_prompt=written.text, prompt_meta=written.meta)
        return self.store.put_org_unit(changed)

    def regenerate_unit_prompt(self, principal: Principal, kind: str, unit_id: str, org_id: str | None) -> OrgUnit:
        org = self.org_for(principal, org_id, "admin")
        unit = self._unit(org.id, kind, unit_id)
        written = self._written(org.id, kind, unit.name, unit.focus)
        return self.store.put_org_unit(replace(unit, promotion_prompt=written.text, prompt_meta=written.meta,
                                               updated_at=utcnow()))

    def delete_unit(self, principal: Principal, kind: str, unit_id: str, org_id: str | None) -> None:
        """Remove the record; events and memories that carry its id keep it (search still narrows by it)."""
        org = self.org_for(principal, org_id, "admin")
        if not self._storable(unit_id) or not self.store.delete_org_unit(org.id, self._kind(kind), unit_id):
            raise ServiceError("not_found", f"no {kind} {unit_id!r} in org {org.id!r}")


def record_wire_base(name: str, focus: str | None, prompt: str | None, meta: dict[str, Any] | None,
                     created: str | None, updated: str | None) -> dict[str, Any]:
    """The fields every onboarding record shares on the wire (memsy's `_onboarding_base`)."""
    return {"name": name, "focus": focus or "", "promotion_prompt": prompt or "", "prompt_meta": meta,
            "created_at": created, "updated_at": updated or created}
