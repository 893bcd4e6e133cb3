"""The rules every request field obeys, whichever API family it came through.

Routes turn wire shapes into core inputs; the service runs each field through one
`FieldChecks` and raises everything it found at once, as FastAPI-style per-field entries
(`{"loc", "msg", "type"}`, answered 422). One rule per kind of field:

- **ids** (user, conversation, agent, app, actor, session, role, team, a client's event id,
  the ids a status call names): non-blank, at most `max_id_chars`, storable;
- **labels** (a message's `role`, `name`, `dia_id`): at most `max_id_chars`, storable;
- **text** (a turn's content, a PATCH's text, a search query): NUL characters stripped
  (SPEC §4), non-blank, at most the field's own limit;
- **metadata**: reserved keys dropped silently (SPEC §3); at most `max_metadata_keys` keys
  and `max_metadata_chars` serialized; every key and string storable; numbers finite, and
  integers within 64 bits (what every store and the filter language can compare); metadata
  sent as text (family M) is refused when the text itself is over `max_metadata_chars`.

The core checks with neutral locations (`("turns", 3, "content")`, `("idempotency_key",)`);
each route `relocate`s what the core raised into its own wire names, so a family's clients
see `body.messages.3.content` or `body.events.3.content`.

"Storable" is `domain.text.unstorable`: well-formed Unicode without NUL. Request bodies are
read by one strict JSON reader (`api/codec.py`) that already refuses lone surrogates; the
check here covers text that reached the core another way and NUL, which JSON allows.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable

from engram.config import Limits
from engram.domain.inputs import RESERVED_METADATA_KEYS
from engram.domain.text import unstorable
from engram.errors import ServiceError, ValidationFailed

Loc = tuple[Any, ...]

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def error(loc: Loc, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


class FieldChecks:
    """Checks the fields of one request against the configured limits; collects errors."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.errors: list[dict[str, Any]] = []

    def fail(self, loc: Loc, msg: str, kind: str = "value_error") -> None:
        self.errors.append(error(loc, msg, kind))

    def count(self, loc: Loc, items: int, limit: int) -> None:
        if items > limit:
            self.fail(loc, f"at most {limit} items per call", "too_long")

    def id(self, loc: Loc, value: str | None, *, required: bool = False) -> None:
        if value is None:
            if required:
                self.fail(loc, "field required", "missing")
            return
        if not value.strip():
            self.fail(loc, "must not be blank")
        elif len(value) > self.limits.max_id_chars:
            self.fail(loc, f"longer than {self.limits.max_id_chars} characters", "string_too_long")
        elif (why := unstorable(value)) is not None:
            self.fail(loc, why)

    def label(self, loc: Loc, value: str | None, *, blank_ok: bool = True) -> None:
        if value is None:
            return
        if not blank_ok and not value.strip():
            self.fail(loc, "must not be blank")
        elif len(value) > self.limits.max_id_chars:
            self.fail(loc, f"longer than {self.limits.max_id_chars} characters", "string_too_long")
        elif (why := unstorable(value)) is not None:
            self.fail(loc, why)

    def text(self, loc: Loc, value: str, limit: int, *, name: str = "content") -> str:
        """The text with NUL characters stripped; a blank or over-long one is an error."""
        value = value.replace("\x00", "")
        if not value.strip():
            self.fail(loc, f"{name} must not be blank")
        elif len(value) > limit:
            self.fail(loc, f"{name} is longer than {limit} characters", "string_too_long")
        elif (why := unstorable(value)) is not None:
            self.fail(loc, f"{name} {why}")
        return value

    def metadata_text(self, loc: Loc, chars: int | None) -> None:
        """Metadata that came as text of `chars` characters (None: it did not come as text)."""
        if chars is not None and chars > self.limits.max_metadata_chars:
            self.fail(loc, f"metadata is longer than {self.limits.max_metadata_chars} characters", "string_too_long")

    def metadata(self, loc: Loc, metadata: dict[str, Any] | None) -> dict[str, Any]:
        """The metadata without reserved keys; size and content rules are errors."""
        if not metadata:
            return {}
        cleaned = {k: v for k, v in metadata.items() if k not in RESERVED_METADATA_KEYS}
        limits = self.limits
        if len(cleaned) > limits.max_metadata_keys:
            self.fail(loc, f"metadata has more than {limits.max_metadata_keys} keys", "too_long")
            return cleaned
        problem = json_value_problem(cleaned)
        if problem is not None:
            where, why = problem
            self.fail((*loc, *where), why)
            return cleaned
        if len(json.dumps(cleaned, ensure_ascii=False)) > limits.max_metadata_chars:
            self.fail(loc, f"metadata is longer than {limits.max_metadata_chars} characters serialized", "too_long")
        return cleaned

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def relocate(exc: ServiceError, rename: Callable[[Loc], Loc],
             order: Callable[[Loc], Any] | None = None) -> ServiceError:
    """`exc` as a family's clients see it: every location the core named renamed by `rename`
    (a field-error entry's, or a single `extra["loc"]`), and an entry's message too when it
    begins with its field's name ("turns must be a non-empty list" → "events must be …").
    Entries that become identical (one call-wide field checked on each of its turns) are kept
    once; `order`, if given, sorts them (stably) by their new location. Anything without
    locations is returned as it is."""
    if isinstance(exc, ValidationFailed):
        seen: set[tuple[str, str, str]] = set()
        entries: list[dict[str, Any]] = []
        for entry in exc.errors:
            renamed = _renamed(entry, rename)
            identity = (repr(renamed["loc"]), renamed["msg"], renamed["type"])
            if identity not in seen:
                seen.add(identity)
                entries.append(renamed)
        if order is not None:
            entries.sort(key=lambda e: order(tuple(e["loc"])))
        return ValidationFailed(entries)
    loc = exc.extra.get("loc")
    if loc is None:
        return exc
    return ServiceError(exc.code, exc.message, extra={**exc.extra, "loc": list(rename(tuple(loc)))},
                        headers=exc.headers, status=exc.status)


def _renamed(entry: dict[str, Any], rename: Callable[[Loc], Loc]) -> dict[str, Any]:
    loc = tuple(entry["loc"])
    new = rename(loc)
    msg = entry["msg"]
    if loc and new and isinstance(loc[-1], str) and isinstance(new[-1], str) and loc[-1] != new[-1] \
            and msg.startswith(loc[-1] + " "):
        msg = new[-1] + msg[len(loc[-1]):]
    return {**entry, "loc": list(new), "msg": msg}


def json_value_problem(value: Any) -> tuple[Loc, str] | None:
    """The first part of a JSON value engram cannot keep, as (where inside it, why).

    Walks iteratively (no recursion limit to hit): every key and string storable, every
    number finite and every integer within 64 bits."""
    stack: list[tuple[Loc, Any]] = [((), value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            why = unstorable(item)
            if why is not None:
                return where, f"strings {why}"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return where, "integers must fit in 64 bits (send larger numbers as strings)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, "numbers must be finite"
        elif isinstance(item, dict):
            for key, child in item.items():
                why = unstorable(key) if isinstance(key, str) else "keys must be strings"
                if why is not None:
                    return (*where, key if isinstance(key, str) else repr(key)), f"keys {why}"
                stack.append(((*where, key), child))
        elif isinstance(item, (list, tuple)):
            stack.extend(((*where, i), child) for i, child in enumerate(item))
        else:
            return where, f"unsupported value of type {type(item).__name__}"
    return None


def all_storable(values: Iterable[str]) -> bool:
    return all(unstorable(v) is None for v in values)
