"""Unit tests for tests/contract.py (no server needed)."""

from __future__ import annotations

import copy
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

try:
    from contract import (
        CONTRACT_URI,
        contract_defects,
        raw_document,
        resolve_operation,
        validate_component,
        validate_response,
    )
except ImportError:  # if tests/ becomes a package
    from tests.contract import (  # type: ignore[no-redef]
        CONTRACT_URI,
        contract_defects,
        raw_document,
        resolve_operation,
        validate_component,
        validate_response,
    )

JOB_ID = "job_a1b2c3d4e5f6071829304a5b6c7d8e9f"
VARIANTS = ("FactDetails", "ArtifactDetails", "EpisodeDetails")
TYPE_TO_VARIANT = {"fact": "FactDetails", "artifact": "ArtifactDetails", "episode": "EpisodeDetails"}

FACT_DETAILS = {
    "fact_type": "preference",
    "status": "active",
    "supersedes": None,
    "source_role": "user",
    "episode_id": "3f0c2a8e-0000-4000-8000-000000000001",
    "artifact_id": None,
    "artifact_ids": [],
    "source_event_ids": ["evt_1"],
}


def fact_memory(**overrides):
    mem = {
        "id": "0fa1c0e6-1111-4000-8000-000000000000",
        "object": "memory",
        "type": "fact",
        "text": "Alice prefers green tea",
        "user_id": "alice",
        "agent_id": None,
        "conv_id": "conv-1",
        "app_id": None,
        "metadata": {"source": "test"},
        "categories": ["preferences"],
        "score": None,
        "created_at": "2026-05-15T18:42:11Z",
        "updated_at": "2026-05-15T18:42:11Z",
        "details": copy.deepcopy(FACT_DETAILS),
    }
    mem.update(overrides)
    return mem


def ingest_job(**overrides):
    job = {
        "object": "ingest_job",
        "id": JOB_ID,
        "status": "pending",
        "created_at": "2026-05-15T18:42:11Z",
        "updated_at": None,
        "result": None,
        "error": None,
    }
    job.update(overrides)
    return job


@functools.lru_cache(maxsize=None)
def _raw_validator(pointer: str) -> Draft202012Validator:
    registry = Registry().with_resource(CONTRACT_URI, Resource(raw_document(), specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{CONTRACT_URI}#{pointer}"}, registry=registry)


# ---------------------------------------------------------------- happy paths


def test_valid_ingest_job_response_passes():
    validate_response("POST", "/v1/memories", 202, ingest_job())
    validate_response("GET", f"/v1/memories/jobs/{JOB_ID}", 200, ingest_job(status="running"))
    done = ingest_job(
        status="succeeded",
        updated_at="2026-05-15T18:42:30.123+00:00",
        result={
            "object": "ingest_result",
            "memories_created": [{"id": "m1", "type": "fact", "text": "Alice prefers green tea"}],
            "memories_updated": [],
            "memories_superseded_by": {"old": "new"},
            "stage_timings": {"extract": 0.42},
        },
    )
    validate_response("POST", "/v1/memories?wait=true", 200, done)


def test_list_envelope_with_memories_validates():
    artifact = fact_memory(
        id="a1",
        type="artifact",
        text="design doc",
        details={"title": "Design", "version": 2, "root_id": None, "source_fact_ids": ["f1"], "full_content": None},
    )
    episode = fact_memory(
        id="e1",
        type="episode",
        text="session summary",
        details={"title": "s1", "started_at": None, "ended_at": None, "fact_ids": ["f1"], "artifact_ids": []},
    )
    body = {
        "object": "list",
        "data": [fact_memory(), artifact, episode, fact_memory(id="f2", details={})],
        "has_more": True,
        "next_cursor": "c_opaque",
    }
    validate_response("GET", "/v1/memories", 200, body)
    search = dict(body, data=[fact_memory(score=0.83)], has_more=False, next_cursor=None, extras=None)
    validate_response("POST", "/v1/memories/search", 200, search)


def test_get_memory_and_error_envelope_and_delete():
    validate_response("GET", "/v1/memories/0fa1c0e6", 200, fact_memory())
    validate_response("GET", "/v1/memories/nope", 404, {"detail": {"code": "memory_not_found", "message": "x"}})
    validate_response("DELETE", "/v1/memories/0fa1c0e6", 204, None)


# ---------------------------------------------------------------- failures


def test_job_missing_id_fails():
    job = ingest_job()
    del job["id"]
    with pytest.raises(AssertionError) as exc:
        validate_response("GET", f"/v1/memories/jobs/{JOB_ID}", 200, job)
    msg = str(exc.value)
    assert "'id' is a required property" in msg
    assert "keyword: required" in msg
    assert "IngestJobResponse" in msg


def test_undeclared_status_code_fails():
    with pytest.raises(AssertionError, match=r"status 418 is not declared"):
        validate_response("GET", f"/v1/memories/jobs/{JOB_ID}", 418, ingest_job())
    # 404 is not declared for the list endpoint
    with pytest.raises(AssertionError, match=r"status 404 is not declared"):
        validate_response("GET", "/v1/memories", 404, {"detail": {"code": "x", "message": "y"}})


def test_body_on_no_content_response_fails():
    with pytest.raises(AssertionError, match="declares no response body"):
        validate_response("DELETE", "/v1/memories/m1", 204, {})


def test_missing_body_for_json_response_fails():
    with pytest.raises(AssertionError, match="none was given"):
        validate_response("GET", "/v1/memories/m1", 200, None)


def test_fact_with_non_string_details_status_fails():
    body = fact_memory(details=dict(FACT_DETAILS, status=5))
    with pytest.raises(AssertionError) as exc:
        validate_response("GET", "/v1/memories/m1", 200, body)
    msg = str(exc.value)
    assert "$.details.status" in msg
    assert "keyword: anyOf" in msg
    assert "#/components/schemas/FactDetails/properties/status/anyOf" in msg
    assert "5 is not of type 'string'" in msg
    # same failure inside a list envelope reports the nested path
    with pytest.raises(AssertionError, match=r"\$\.data\[1\]\.details\.status"):
        validate_response("GET", "/v1/memories", 200, {"object": "list", "data": [fact_memory(), body]})


def test_details_checked_against_variant_of_own_type():
    # Matches FactDetails only (title is not a FactDetails property), so the
    # raw oneOf ACCEPTS it, but for an artifact it is wrong.
    bad_artifact = fact_memory(type="artifact", details={"title": 5})
    assert not list(_raw_validator("/components/schemas/Memory").iter_errors(bad_artifact))
    with pytest.raises(AssertionError, match=r"\$\.details\.title"):
        validate_response("GET", "/v1/memories/a1", 200, bad_artifact)
    # episode with non-array fact_ids
    with pytest.raises(AssertionError, match=r"\$\.details\.fact_ids"):
        validate_response("GET", "/v1/memories/e1", 200, fact_memory(type="episode", details={"fact_ids": "f1"}))


def test_date_time_format_is_asserted():
    with pytest.raises(AssertionError, match=r"\$\.created_at.*date-time"):
        validate_response("POST", "/v1/memories", 202, ingest_job(created_at="yesterday"))
    naive = ingest_job(created_at="2026-05-15T18:42:11")  # no offset: not RFC 3339
    with pytest.raises(AssertionError, match="keyword: format"):
        validate_response("POST", "/v1/memories", 202, naive)
    validate_response("POST", "/v1/memories", 202, naive, check_formats=False)


# ---------------------------------------------------------------- path matching


@pytest.mark.parametrize(
    ("method", "path", "template", "operation_id_part"),
    [
        ("POST", "/v1/memories/search", "/v1/memories/search", "search_memory"),
        ("GET", "/v1/memories/jobs/job_abc", "/v1/memories/jobs/{job_id}", "get_ingest_job"),
        ("GET", "/v1/memories/abc-123", "/v1/memories/{memory_id}", "get_memory_by_id"),
        ("PATCH", "/v1/memories/abc-123", "/v1/memories/{memory_id}", "patch_memory"),
        ("DELETE", "/v1/memories/abc-123", "/v1/memories/{memory_id}", "delete_memory"),
        ("GET", "/v1/memories?limit=5&user_id=alice", "/v1/memories", "list_memories"),
        ("POST", "http://localhost:8000/v1/memories?wait=true", "/v1/memories", "ingest_memories"),
        # like a real router: GET on the literal path falls through to {memory_id}
        ("get", "/v1/memories/search", "/v1/memories/{memory_id}", "get_memory_by_id"),
    ],
)
def test_path_matching_precedence(method, path, template, operation_id_part):
    op = resolve_operation(method, path)
    assert op.template == template
    assert operation_id_part in (op.operation_id or "")


def test_path_params_extracted():
    assert resolve_operation("GET", "/v1/memories/jobs/job_abc").path_params == {"job_id": "job_abc"}


def test_unknown_path_or_method_fails():
    with pytest.raises(AssertionError, match="no path template"):
        resolve_operation("GET", "/v1/nothing/here/at/all")
    with pytest.raises(AssertionError, match="method not declared"):
        resolve_operation("DELETE", "/v1/memories/jobs/job_abc")


# ---------------------------------------------------------------- the oneOf defect


def test_premise_every_wellformed_details_matches_all_three_variants():
    for details in ({}, FACT_DETAILS):
        for variant in VARIANTS:
            assert _raw_validator(f"/components/schemas/{variant}").is_valid(details), (details, variant)


def test_raw_document_oneof_rejects_wellformed_fact():
    """Proves the defect. If this fails, the document has been fixed: delete
    the Memory.details rewrite in tests/contract.py."""
    try:
        validate_component("Memory", fact_memory(), raw=True)
    except AssertionError as exc:
        assert "is valid under each of" in str(exc)
        assert "keyword: oneOf" in str(exc)
    else:
        pytest.fail(
            "The published document now accepts a well-formed fact memory: the Memory.details "
            "oneOf defect appears fixed. Remove the rewrite in tests/contract.py."
        )
    validate_component("Memory", fact_memory())  # patched document accepts it


def test_contract_defects_describes_rewrite():
    defects = contract_defects()
    print("\n".join(defects))
    assert len(defects) == 1
    assert "Memory.details" in defects[0] and "oneOf" in defects[0]
    # The raw document is left as published.
    assert "oneOf" in raw_document()["components"]["schemas"]["Memory"]["properties"]["details"]


def test_rewrite_skipped_when_document_is_fixed():
    try:
        from contract import _apply_rewrites
    except ImportError:  # pragma: no cover
        from tests.contract import _apply_rewrites  # type: ignore[no-redef]
    assert len(_apply_rewrites(raw_document())[1]) == 1
    fixed = raw_document()
    for variant, kind in TYPE_TO_VARIANT.items():
        schema = fixed["components"]["schemas"][kind]
        schema["properties"]["kind"] = {"const": variant}
        schema["required"] = ["kind"]
    patched, notes = _apply_rewrites(fixed)
    assert notes == []
    assert "oneOf" in patched["components"]["schemas"]["Memory"]["properties"]["details"]


_values = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.integers(-2, 2),
    st.lists(st.text(max_size=2), max_size=2),
    st.lists(st.integers(0, 2), min_size=1, max_size=2),
)
_keys = st.sampled_from(
    sorted(
        {"fact_type", "status", "supersedes", "source_role", "episode_id", "artifact_id", "artifact_ids",
         "source_event_ids", "title", "rationale", "version", "root_id", "source_fact_ids", "episode_ids",
         "full_content", "started_at", "ended_at", "fact_ids", "extra"}
    )
)


@settings(max_examples=300, deadline=None)
@given(mem_type=st.sampled_from(sorted(TYPE_TO_VARIANT)), details=st.dictionaries(_keys, _values, max_size=4))
def test_rewrite_is_type_discriminated_and_only_relaxes_the_defect(mem_type, details):
    mem = fact_memory(type=mem_type, details=details)
    matches = {v for v in VARIANTS if _raw_validator(f"/components/schemas/{v}").is_valid(details)}
    own_ok = TYPE_TO_VARIANT[mem_type] in matches
    raw_ok = _raw_validator("/components/schemas/Memory").is_valid(mem)
    try:
        validate_component("Memory", mem, check_formats=False)
        patched_ok = True
    except AssertionError:
        patched_ok = False

    # patched accepts exactly when details match the variant of the memory's own type
    assert patched_ok == own_ok
    # the only relaxation vs the raw oneOf: inputs rejected because >=2 variants matched
    if patched_ok and not raw_ok:
        assert len(matches) >= 2
    # whatever raw accepts but patched rejects matched only a wrong-type variant
    if raw_ok and not patched_ok:
        assert len(matches) == 1 and TYPE_TO_VARIANT[mem_type] not in matches
