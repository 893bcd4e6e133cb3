"""Running the published Node clients (../shared/clients, unmodified) from pytest: a driver under
tests/js/ calls every public method of one SDK against a real `engram serve` and prints one JSON
object (each call's outcome, the HTTP exchanges behind it, the methods the SDK has at run time);
the family-X exchanges are validated here against the contract the SDK was built for.

The drivers' npm packages (esbuild, and `ai`/`zod` for the AI-SDK helpers) are installed into
tests/js/node_modules by `scripts/setup test`.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests import contract as contract_v01

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "tests" / "js"
SHARED = ROOT.parent / "shared"
CLIENTS = SHARED / "clients"
XTRACE_SDKS = {"0.1.1": CLIENTS / "xtrace-memory-sdk-ts-0.1.1", "0.5.0": CLIENTS / "xtrace-memory-sdk-ts-0.5.0"}
MEMSY_SDK = CLIENTS / "memsy-node-sdk-0.3.2"
CONTRACT_V10 = SHARED / "contracts" / "xtrace-memory-openapi-v1.0.json"
NODE = shutil.which("node")


def node_ready() -> str | None:
    """Why the Node campaign cannot run on this machine, or None when it can."""
    return "node is not installed on this machine" if NODE is None else None


def require_packages() -> None:
    # node is here, so a missing install is a failure, never a skip
    assert (JS / "node_modules" / "esbuild").is_dir() and (JS / "node_modules" / "ai").is_dir(), \
        "tests/js/node_modules is missing or incomplete: run scripts/setup test"


def run_driver(script: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    require_packages()
    done = subprocess.run([NODE or "node", "--import", "./peers.mjs", script, *args], cwd=JS,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def error_of(outcome: dict[str, Any]) -> dict[str, Any]:
    """The typed error a call raised (class, code, status), failing if it did not raise."""
    assert not outcome["ok"], f"expected a typed error, the call returned {outcome.get('value')!r}"
    e = outcome["error"]
    return {"cls": e["cls"], "code": e["code"], "status": e["status"]}


def value_of(outcome: dict[str, Any]) -> Any:
    assert outcome["ok"], f"the call raised {outcome['error']}"
    return outcome["value"]


# ---------------------------------------------------------------- v1.0 contract validation
DIRECTIVE_TYPES = {"fact": "FactDetails", "artifact": "ArtifactDetails", "episode": "EpisodeDetails",
                   "lesson": "DirectiveDetails", "procedure": "DirectiveDetails"}
URI = "urn:xtrace-memory-openapi-v1.0"


@functools.lru_cache(maxsize=None)
def _v10() -> tuple[dict, Registry]:
    doc = json.loads(CONTRACT_V10.read_text())
    patched = copy.deepcopy(doc)
    # Memory.details is `oneOf` four variants none of which has required fields, so every
    # well-formed details object matches several and `oneOf` rejects it (the same defect
    # tests/contract.py documents for v0.1). Validate instead against the variant the memory's
    # own `type` names: stricter than the document's intent, never looser.
    memory = patched["components"]["schemas"]["Memory"]
    details = memory["properties"]["details"]
    if "oneOf" in details:
        del details["oneOf"]
        memory["allOf"] = [{"if": {"properties": {"type": {"const": t}}, "required": ["type"]},
                            "then": {"properties": {"details": {"$ref": f"#/components/schemas/{v}"}}}}
                           for t, v in DIRECTIVE_TYPES.items()]
    return patched, Registry().with_resource(URI, Resource(patched, specification=DRAFT202012))


def _template_for(doc: dict, method: str, path: str) -> str | None:
    segments = path.strip("/").split("/")
    best: tuple[int, str] | None = None
    for template, item in doc["paths"].items():
        parts = template.strip("/").split("/")
        if len(parts) != len(segments) or method.lower() not in item:
            continue
        if all(p == s or (p.startswith("{") and p.endswith("}")) for p, s in zip(parts, segments)):
            params = sum(p.startswith("{") for p in parts)
            if best is None or params < best[0]:
                best = (params, template)
    return best[1] if best else None


def contract_v10_problems(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with one response by the v1.0 contract (empty when it validates). An error
    status the operation does not declare is not checked here: the tests assert the SDK's typed
    error for those calls."""
    doc, registry = _v10()
    template = _template_for(doc, method, path)
    if template is None:
        return [f"{method} {path}: not an operation of the v1.0 contract"]
    responses = doc["paths"][template][method.lower()]["responses"]
    if str(status) not in responses:
        return [] if status >= 400 else [f"{method} {path} -> {status}: status not declared (declared: {sorted(responses)})"]
    content = responses[str(status)].get("content") or {}
    if "application/json" not in content or "schema" not in content["application/json"]:
        return [] if body is None else [f"{method} {path} -> {status}: a body where the contract declares none"]
    pointer = "/".join(["", "paths", template.replace("~", "~0").replace("/", "~1"), method.lower(), "responses",
                        str(status), "content", "application~1json", "schema"])
    validator = Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=registry)
    return [f"{method} {path} -> {status}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(body)]


def contract_v01_problems(method: str, path: str, status: int, body: Any) -> list[str]:
    try:
        contract_v01.validate_response(method, path, status, body)
    except AssertionError as e:
        if status >= 400 and "is not declared by the contract" in str(e):
            return []
        return [str(e)[:600]]
    return []


# A search request that uses none of v1.0's additions (top-level scope axes, `mode`, a corpus in
# `include`) is a v0.1 request (the 0.5.0 SDK's own AI-SDK wrapper still sends `filters` only),
# and the two documents disagree on the answer's `object` ("list" in v0.1, "search" in v1.0):
# such a request may be answered by either (docs/compatibility.md).
V10_SEARCH_FIELDS = {"user_id", "agent_id", "app_id", "group_ids", "mode"}
V10_CORPORA = {"fact", "artifact", "episode"}


def speaks_v10(request: dict[str, Any] | None) -> bool:
    request = request or {}
    return bool(V10_SEARCH_FIELDS & set(request)) or bool(V10_CORPORA & set(request.get("include") or []))


def contract_problems(version: str, exchange: dict[str, Any]) -> list[str]:
    """Problems of one family-X exchange by the contract of SDK `version`."""
    method, path, status, body = exchange["method"], exchange["path"], exchange["status"], exchange["body"]
    if version == "0.1.1":
        return contract_v01_problems(method, path, status, body)
    problems = contract_v10_problems(method, path, status, body)
    legacy = path == "/v1/memories/search" and not speaks_v10(exchange.get("request"))
    if problems and legacy and not contract_v01_problems(method, path, status, body):
        return []
    return problems
