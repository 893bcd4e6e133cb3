"""Contract helper: validate engram "family X" HTTP responses against the
xtrace memory OpenAPI 3.1 document.

The document is NOT vendored into the repo. It is loaded at run time from
``<repo root>/../shared/contracts/xtrace-memory-openapi-v0.1.json``.

Public API
----------
validate_response(method, path, status, body, *, check_formats=True) -> None
    Find the operation for (method, concrete path), pick the
    ``application/json`` response schema for ``status`` and validate ``body``
    (Draft 2020-12). Raises AssertionError with a readable report on failure.
resolve_operation(method, path) -> Operation
    Path-template matching only (literal segments beat ``{params}``).
validate_component(name, instance, *, raw=False, check_formats=True) -> None
    Validate against ``#/components/schemas/<name>`` (patched or raw document).
contract_defects() -> list[str]
    Human-readable description of every rewrite applied to the document.
raw_document() / patched_document()
    Deep copies of the document as published / as used for validation.

Validation details
------------------
* ``$ref``s (``#/components/schemas/...``) are resolved with ``referencing``
  against the whole document registered under ``CONTRACT_URI``.
* ``format: date-time`` is ASSERTED by default (strict RFC 3339, i.e. an
  explicit ``Z`` or ``+hh:mm`` offset is required), which is stricter than
  the 2020-12 default of treating ``format`` as an annotation. Pass
  ``check_formats=False`` to turn it off.
* ``body=None`` means "no body". A declared no-content response (204) must
  get ``None``; a response that declares a JSON schema must get a body.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT_FILE = "xtrace-memory-openapi-v0.1.json"
CONTRACT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "contracts" / CONTRACT_FILE
CONTRACT_URI = "urn:xtrace-memory-openapi-v0.1"
JSON_MEDIA_TYPE = "application/json"

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Memory.type value -> the details variant it selects.
DETAILS_VARIANT_BY_TYPE = {
    "fact": "FactDetails",
    "artifact": "ArtifactDetails",
    "episode": "EpisodeDetails",
}


class Operation(NamedTuple):
    template: str  # e.g. "/v1/memories/jobs/{job_id}"
    method: str  # lower case
    operation_id: str | None
    operation: dict
    path_params: dict[str, str]


# --------------------------------------------------------------------------
# Loading and rewriting
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _load() -> tuple[dict, dict, tuple[str, ...]]:
    if not CONTRACT_PATH.is_file():
        raise FileNotFoundError(f"contract document not found at {CONTRACT_PATH}")
    raw = json.loads(CONTRACT_PATH.read_text(encoding="utf-8"))
    patched, defects = _apply_rewrites(copy.deepcopy(raw))
    for name, schema in patched.get("components", {}).get("schemas", {}).items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # pragma: no cover - document sanity
            raise AssertionError(f"component schema {name!r} is not valid 2020-12: {exc}") from exc
    return raw, patched, tuple(defects)


def _apply_rewrites(doc: dict) -> tuple[dict, list[str]]:
    """Rewrite known defects in (a copy of) the document. Returns (doc, notes)."""
    defects: list[str] = []
    note = _rewrite_memory_details_oneof(doc)
    if note:
        defects.append(note)
    return doc, defects


def _rewrite_memory_details_oneof(doc: dict) -> str | None:
    # WHY THIS REWRITE EXISTS
    # ``Memory.details`` is declared as
    #     oneOf: [FactDetails, ArtifactDetails, EpisodeDetails]
    # but none of the three variants has ``required`` fields or forbids
    # additional properties, and they do not share a conflicting property.
    # So every well-formed details object ({} included) matches ALL THREE
    # variants, and ``oneOf`` ("exactly one") rejects it. ``oneOf`` passes only
    # when details are malformed for exactly two of the variants, for example
    # ``{"title": 5}`` on an *artifact*, which matches only FactDetails.
    # The constraint is therefore both unsatisfiable for correct data and
    # too loose for some wrong data.
    #
    # The document's own prose says ``type`` is the discriminator. We replace
    # the oneOf with a check driven by the memory's own ``type``:
    #     if type == "fact"     then details must match FactDetails
    #     if type == "artifact" then details must match ArtifactDetails
    #     if type == "episode"  then details must match EpisodeDetails
    # Compared with the document's intent ("details is one of the variants"),
    # this is STRICTER, not looser. It implies at least one variant matches,
    # and it also rejects details that match only the wrong type's variant.
    # The only inputs the raw oneOf rejects and this check accepts are the
    # ones that matched two or more variants, which is exactly the defect.
    #
    # The rewrite is applied only if the defect is still present (``{}``
    # validates against two or more variants). If the document is fixed, the
    # rewrite turns itself off, and
    # tests/test_contract_helper.py::test_raw_document_oneof_rejects_wellformed_fact
    # fails to tell us to delete this code.
    schemas = doc.get("components", {}).get("schemas", {})
    memory = schemas.get("Memory")
    if not isinstance(memory, dict):
        return None
    details = memory.get("properties", {}).get("details")
    if not isinstance(details, dict) or "oneOf" not in details:
        return None
    expected_refs = {f"#/components/schemas/{v}" for v in DETAILS_VARIANT_BY_TYPE.values()}
    refs = {alt.get("$ref") for alt in details["oneOf"] if isinstance(alt, dict)}
    if refs != expected_refs or len(details["oneOf"]) != len(expected_refs):
        return None  # structure changed; don't guess

    registry = _registry(doc)
    matching = [
        v
        for v in DETAILS_VARIANT_BY_TYPE.values()
        if Draft202012Validator(
            {"$ref": f"{CONTRACT_URI}#/components/schemas/{v}"}, registry=registry
        ).is_valid({})
    ]
    if len(matching) < 2:
        return None  # variants are distinguishable now; oneOf can work

    del details["oneOf"]  # keep the sibling "type": "object" etc.
    conditionals = [
        {
            "if": {"properties": {"type": {"const": t}}, "required": ["type"]},
            "then": {"properties": {"details": {"$ref": f"#/components/schemas/{v}"}}},
        }
        for t, v in DETAILS_VARIANT_BY_TYPE.items()
    ]
    memory["allOf"] = list(memory.get("allOf", [])) + conditionals
    return (
        "Memory.details: replaced `oneOf: [FactDetails, ArtifactDetails, EpisodeDetails]` "
        "(unsatisfiable: the variants have no required fields and allow extra properties, so "
        f"every well-formed object, even {{}}, matches {len(matching)} of them) with a stricter "
        "type-discriminated check: details must validate against the variant selected by "
        "Memory.type (fact->FactDetails, artifact->ArtifactDetails, episode->EpisodeDetails) "
        "via Memory.allOf[if/then]."
    )


def _registry(doc: dict) -> Registry:
    return Registry().with_resource(CONTRACT_URI, Resource(doc, specification=DRAFT202012))


@functools.lru_cache(maxsize=None)
def _cached_registry(raw: bool) -> Registry:
    raw_doc, patched, _ = _load()
    return _registry(raw_doc if raw else patched)


def raw_document() -> dict:
    """The document exactly as published (deep copy)."""
    return copy.deepcopy(_load()[0])


def patched_document() -> dict:
    """The document with the rewrites from ``contract_defects()`` applied (deep copy)."""
    return copy.deepcopy(_load()[1])


def contract_defects() -> list[str]:
    """One human-readable line per rewrite applied to the published document."""
    return list(_load()[2])


# --------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------

_RFC3339_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def _is_rfc3339_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # format only constrains strings
    if not _RFC3339_DATE_TIME.match(value):
        return False
    normalized = value.upper().replace("Z", "+00:00")
    # RFC 3339 allows leap second 60; datetime does not.
    normalized = re.sub(r"(T\d{2}:\d{2}):60", r"\1:59", normalized)
    try:
        datetime.fromisoformat(normalized)
    except ValueError:
        return False
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_is_rfc3339_date_time)
    return checker


_FORMAT_CHECKER = _format_checker()


# --------------------------------------------------------------------------
# Operation lookup
# --------------------------------------------------------------------------


def _split(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


def _match_template(template: str, segments: list[str]) -> dict[str, str] | None:
    t_segments = _split(template)
    if len(t_segments) != len(segments):
        return None
    params: dict[str, str] = {}
    for t, s in zip(t_segments, segments):
        m = re.fullmatch(r"\{([^{}]+)\}", t)
        if m:
            if not s:
                return None
            params[m.group(1)] = s
        elif t != s:
            return None
    return params


def _specificity(template: str) -> tuple[int, ...]:
    # Lower sorts first. Literal segment = 0, parameter = 1, compared left to
    # right, so "/v1/memories/search" and "/v1/memories/jobs/{job_id}" win
    # over "/v1/memories/{memory_id}".
    return tuple(1 if seg.startswith("{") else 0 for seg in _split(template))


def resolve_operation(method: str, path: str) -> Operation:
    """Map a concrete request (method, path) to the document's operation.

    Query strings and scheme/host are ignored. Candidate templates are tried
    from most to least specific, and the first that declares ``method`` wins.
    This mirrors routers such as Starlette, where e.g.
    ``GET /v1/memories/search`` falls through to ``GET /v1/memories/{memory_id}``.
    """
    doc = _load()[1]
    concrete = urlsplit(path).path if "://" in path else path.split("?", 1)[0].split("#", 1)[0]
    segments = _split(concrete)
    m = method.lower()

    candidates = []
    for template, item in doc.get("paths", {}).items():
        params = _match_template(template, segments)
        if params is not None:
            candidates.append((_specificity(template), template, item, params))
    if not candidates:
        raise AssertionError(
            f"{method.upper()} {path}: no path template in the contract matches "
            f"(templates: {', '.join(doc.get('paths', {}))})"
        )
    candidates.sort(key=lambda c: c[0])
    for _, template, item, params in candidates:
        op = item.get(m)
        if isinstance(op, dict):
            return Operation(template, m, op.get("operationId"), op, params)
    declared = "; ".join(
        f"{t} [{', '.join(k.upper() for k in i if k in HTTP_METHODS)}]" for _, t, i, _ in candidates
    )
    raise AssertionError(f"{method.upper()} {path}: method not declared by any matching template ({declared})")


def _select_response(op: Operation, status: int) -> tuple[str, dict]:
    responses = op.operation.get("responses", {})
    for key in (str(status), f"{str(status)[0]}XX", f"{str(status)[0]}xx", "default"):
        if key in responses:
            return key, responses[key]
    raise AssertionError(
        f"{op.method.upper()} {op.template}: status {status} is not declared by the contract "
        f"(declared: {', '.join(sorted(responses))})"
    )


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=None)
def _pointer_index(raw: bool) -> dict[int, str]:
    """id(subschema) -> JSON pointer inside the (raw or patched) document."""
    index: dict[int, str] = {}

    def walk(node: Any, pointer: str) -> None:
        if isinstance(node, dict):
            index.setdefault(id(node), pointer)
            for k, v in node.items():
                walk(v, f"{pointer}/{_escape(str(k))}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{pointer}/{i}")

    walk(_load()[0 if raw else 1], "")
    return index


def _describe(err: ValidationError, raw: bool, indent: str = "  ") -> list[str]:
    # The registry holds the very same dict objects as the document, so the
    # failing subschema can be located by identity, even behind $refs.
    location = _pointer_index(raw).get(id(err.schema))
    where = f"#{location}/{_escape(str(err.validator))}" if location is not None else (
        "/".join(str(p) for p in err.absolute_schema_path)
    )
    lines = [f"{indent}- at {err.json_path}: {_short(err.message)}  [keyword: {err.validator}; schema: {where}]"]
    if err.validator in ("anyOf", "oneOf") and err.context:
        for sub in sorted(err.context, key=lambda e: (list(e.schema_path), e.json_path)):
            sub_path = "/".join(str(p) for p in sub.schema_path)
            lines.append(f"{indent}    * {sub.json_path}: {_short(sub.message, 160)}  [{sub.validator} @ {sub_path}]")
    return lines


def _errors(pointer: str, instance: Any, *, raw: bool, check_formats: bool) -> list[ValidationError]:
    validator = Draft202012Validator(
        {"$ref": f"{CONTRACT_URI}#{pointer}"},
        registry=_cached_registry(raw),
        format_checker=_FORMAT_CHECKER if check_formats else None,
    )
    return sorted(validator.iter_errors(instance), key=lambda e: (e.json_path, list(e.schema_path)))


def _raise_if_errors(header: str, errors: list[ValidationError], *, raw: bool) -> None:
    if not errors:
        return
    lines = [f"{header}: body does not match the contract ({len(errors)} error(s)):"]
    for err in errors:
        lines.extend(_describe(err, raw))
    if not raw and contract_defects():
        lines.append("  (validated against the patched document; see contract_defects())")
    raise AssertionError("\n".join(lines))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def validate_component(name: str, instance: Any, *, raw: bool = False, check_formats: bool = True) -> None:
    """Validate ``instance`` against ``#/components/schemas/<name>``.

    ``raw=True`` uses the document as published, without the rewrites.
    """
    doc = _load()[0 if raw else 1]
    if name not in doc.get("components", {}).get("schemas", {}):
        raise KeyError(f"no component schema named {name!r}")
    errors = _errors(f"/components/schemas/{_escape(name)}", instance, raw=raw, check_formats=check_formats)
    _raise_if_errors(f"components/schemas/{name}{' (raw document)' if raw else ''}", errors, raw=raw)


def validate_response(
    method: str,
    path: str,
    status: int,
    body: object | None,
    *,
    check_formats: bool = True,
) -> None:
    """Assert that an HTTP response conforms to the contract.

    Raises AssertionError if no operation matches, if ``status`` is not
    declared for the operation, if a body is given for a response that
    declares none (e.g. 204), if a JSON body is declared but ``body`` is None,
    or if the body fails schema validation.
    """
    status = int(status)
    op = resolve_operation(method, path)
    key, response = _select_response(op, status)
    where = f"{op.method.upper()} {path} -> {status} (operation {op.operation_id or op.template}, response {key!r})"

    content = response.get("content") or {}
    if not content:
        if body is not None:
            raise AssertionError(
                f"{where}: the contract declares no response body, but one was given: "
                f"{_short(repr(body), 200)}"
            )
        return
    if JSON_MEDIA_TYPE not in content:
        raise AssertionError(f"{where}: no {JSON_MEDIA_TYPE} schema declared (media types: {', '.join(content)})")
    if body is None:
        raise AssertionError(f"{where}: the contract declares a {JSON_MEDIA_TYPE} body, but none was given")
    if "schema" not in content[JSON_MEDIA_TYPE]:
        return  # media type without schema: any JSON is allowed

    pointer = "/".join(
        ["", "paths", _escape(op.template), op.method, "responses", _escape(key), "content", _escape(JSON_MEDIA_TYPE), "schema"]
    )
    schema = content[JSON_MEDIA_TYPE]["schema"]
    schema_name = schema.get("$ref", "inline schema") if isinstance(schema, dict) else "inline schema"
    errors = _errors(pointer, body, raw=False, check_formats=check_formats)
    _raise_if_errors(f"{where}, schema {schema_name}", errors, raw=False)
