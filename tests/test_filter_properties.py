"""Property tests of the filter DSL: every store admits exactly what the oracle admits.

Hypothesis draws a handful of memories (core fields, times, metadata of every JSON type)
and a handful of filters (every operator, composition, and malformed clauses), writes the
memories to a store through the pipeline's write path, and compares:

- the parser with `filter_oracle.validate`: a filter is rejected (`invalid_filter`) exactly
  when the oracle calls it malformed;
- `list_memories`, `dense_candidates` and `lexical_candidates` with the memories
  `filter_oracle.admits`.

`check_filters_against_oracle(store, rows, filters)` is the whole check for one draw; the
`filter_store` fixture runs it on every backend (SQLite and PostgreSQL; add a backend by
adding a param that yields a migrated store).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engram.domain.filters import parse_filter
from engram.domain.records import Event, Job, JobError, Memory
from engram.errors import ServiceError
from engram.ids import new_event_id, new_job_id
from engram.store.base import JobOutcome, NewJob, NewMemory
from engram.store.sqlite import SQLiteStore
from tests import filter_oracle as oracle

DIM = 8  # small vectors: exact scoring on every backend (no approximate index is involved)
T0 = datetime(2023, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------------- stores
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def filter_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path_factory.mktemp("filters") / "engram.db", synchronous="OFF")
        store.migrate()
        yield store
        store.close()
        return
    from engram.store.postgres import PostgresStore

    server = request.getfixturevalue("postgres")
    url = server.create_database("engram_filters")
    store = PostgresStore(url, pool_size=2)
    store.migrate()
    yield store
    store.close()
    server.drop_database(url)


# ---------------------------------------------------------------------- data
INSTANTS = [T0 + timedelta(days=d, microseconds=us) for d in (-1, 0, 2) for us in (0, 1, 500_000)]
TIMES = st.one_of(st.sampled_from(INSTANTS),
                  st.datetimes(min_value=datetime(2023, 4, 29), max_value=datetime(2023, 5, 4),
                               timezones=st.just(timezone.utc)))
IDS = {"user_id": ["u1", "u2", "U1", "u1 ", "ü"], "agent_id": ["a1", "a2", ""], "conv_id": ["c1", "c2"],
       "app_id": ["app", "App"], "type": ["fact", "artifact", "episode"], "status": ["active", "superseded", "retracted"]}
META_KEYS = ["n", "s", "d", "b", "x", "a.b", "it's", "ключ", "sp ace", "$dollar"]


def _stored_date(ts: datetime, form: int, zone: str) -> str:
    """ISO dates as clients write them: day only, minutes, seconds or milliseconds, any zone."""
    if form == 0:
        return ts.strftime("%Y-%m-%d")
    sep = "T" if form % 2 else " "
    text = ts.strftime(f"%Y-%m-%d{sep}%H:%M" + (":%S" if form >= 3 else ""))
    if form >= 5:
        text += f".{ts.microsecond // 1000:03d}"
    return text + zone


STORED_DATES = st.builds(_stored_date, TIMES, st.integers(0, 6), st.sampled_from(["", "Z", "+02:00", "-05:30"]))
NUMBERS = st.one_of(st.sampled_from([0, 1, 1.0, -0.0, 2.5, -3, 10**15, 1e-9]), st.integers(-100, 100),
                    st.floats(-1e3, 1e3, allow_nan=False))
STRINGS = st.one_of(
    st.sampled_from(["abc", "abd", "ab", "", "1", "true", "null", "Ä", "a'b", "12345", "2023-02-30",
                     "2023-05-01x", "not a date", "0000-01-01"]),
    STORED_DATES,
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=4),
)
SCALARS = st.one_of(st.booleans(), NUMBERS, STRINGS)
JSON_VALUES = st.one_of(st.none(), SCALARS, st.lists(st.integers(0, 3), max_size=2),
                        st.dictionaries(st.just("k"), st.integers(0, 3), max_size=1))

ROWS = st.lists(st.fixed_dictionaries({
    **{f: st.sampled_from(v) for f, v in IDS.items() if f in ("type", "status")},
    **{f: st.one_of(st.none(), st.sampled_from(v)) for f, v in IDS.items() if f not in ("type", "status")},
    "created_at": TIMES, "updated_at": TIMES, "valid_at": st.one_of(st.none(), TIMES),
    "metadata": st.dictionaries(st.sampled_from(META_KEYS), JSON_VALUES, max_size=4),
}), min_size=1, max_size=8)


# ---------------------------------------------------------------------- filters
def _time_text(ts: datetime, form: int) -> str:
    if form == 0:
        return ts.isoformat()  # +00:00, microseconds when there are some
    if form == 1:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if form == 2:
        return ts.strftime("%Y-%m-%d")
    return (ts + timedelta(hours=2)).replace(tzinfo=timezone(timedelta(hours=2))).isoformat()


TIME_VALUES = st.one_of(st.builds(_time_text, TIMES, st.integers(0, 3)),
                        st.sampled_from(["yesterday", "2023-13-01", "", 5, True, "2023-05-01T12:00:00"]))
ROW_REFS = ["@row0", "@row1", "@row2"]  # replaced by the ids of the drawn memories


def _values(field: str) -> st.SearchStrategy[Any]:
    if field in oracle.TIME:
        return TIME_VALUES
    if field == "id":
        return st.one_of(st.sampled_from(ROW_REFS), st.just("no-such-id"))
    if field in IDS:
        return st.one_of(st.sampled_from(IDS[field]), st.sampled_from([1, True, 2.5]))
    return SCALARS  # infinite bounds: test_infinite_bounds


RANGE_OPS = ["$gt", "$gte", "$lt", "$lte"]


@st.composite
def _leaf(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from([*oracle.CORE, *META_KEYS, "missing", "$weird", 'q"uote', "", "ctl\x01"]))
    values = _values(field)
    kind = draw(st.sampled_from(["bare", "null", "$eq", "$ne", "$in", "$nin", "$exists", *RANGE_OPS, "$between",
                                 "two", "bad"]))
    if kind == "bare":
        return {field: draw(values)}
    if kind == "null":
        return {field: None}
    if kind in ("$eq", "$ne"):
        return {field: {kind: draw(st.one_of(st.none(), values))}}
    if kind in ("$in", "$nin"):
        return {field: {kind: draw(st.lists(values, min_size=0, max_size=3))}}
    if kind == "$exists":
        return {field: {kind: draw(st.one_of(st.booleans(), st.just(1)))}}
    if kind in RANGE_OPS:
        return {field: {kind: draw(values)}}
    if kind == "$between":
        return {field: {kind: draw(st.lists(values, min_size=1, max_size=3))}}
    if kind == "two":  # two operators on one field
        low, high = draw(values), draw(values)
        return {field: {draw(st.sampled_from(RANGE_OPS)): low, draw(st.sampled_from(["$ne", "$lte"])): high}}
    return draw(st.sampled_from([{field: {"$regex": "a"}}, {field: [1, 2]}, {field: {}}, {"AND": []},
                                 {"OR": {}}, {"NOT": {}}, {"AND": [{}]}, {field: {"$in": "u1"}}]))


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


FILTERS = st.recursive(_leaf(), lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"AND": cs}),
    st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"OR": cs}),
    inner.map(lambda c: {"NOT": c}),
    st.lists(inner, min_size=2, max_size=3).map(_merge),  # several keys in one object: AND
), max_leaves=6)


# ---------------------------------------------------------------------- the check
def _write(store: Any, org: str, rows: list[dict[str, Any]]) -> list[Memory]:
    """Store the rows as memories of one job, through accept → lease → complete."""
    store.ensure_org(org)
    now = datetime.now(timezone.utc)
    job = Job(id=new_job_id(), org_id=org, user_id="u", conv_id="c", status="pending", created_at=now, updated_at=now,
              params={})
    event = Event(id=new_event_id(), org_id=org, user_id="u", conv_id="c", role="user", kind="user_message",
                  content="turn", occurred_at=now, received_at=now)
    store.accept(org, [NewJob(job, [event])], dedup_since=None)
    while True:  # a failed draw may have left its job behind: end it
        lease = store.lease("filter-test", now, 30, 5)
        assert lease is not None
        if lease.job.id == job.id:
            break
        store.fail(lease, JobError("ingest_failed", "left behind by an earlier draw"))
    rng = np.random.default_rng(len(rows))
    made, vectors = [], []
    for n, row in enumerate(rows):
        vector = rng.standard_normal(DIM).astype(np.float32)
        vectors.append(vector / np.linalg.norm(vector))
        made.append(Memory(
            # ids that order like the rows do, so that a failing draw replays
            id=f"{org}-m{n}", org_id=org, type=row["type"], text="memory", user_id=row["user_id"],
            conv_id=row["conv_id"], agent_id=row["agent_id"], app_id=row["app_id"], status=row["status"],
            metadata=row["metadata"], created_at=row["created_at"], updated_at=row["updated_at"],
            valid_at=row["valid_at"], source_event_ids=[event.id], details={}))
    assert store.complete(lease, JobOutcome(created=[NewMemory(m, v) for m, v in zip(made, vectors)],
                                            result={"object": "ingest_result", "stage_timings": {}}))
    return made


def _resolve(value: Any, ids: list[str]) -> Any:
    """Replace "@rowN" by the id of the N-th memory (or an id of no memory)."""
    if isinstance(value, str) and value.startswith("@row"):
        n = int(value[4:])
        return ids[n] if n < len(ids) else "00000000-0000-0000-0000-000000000000"
    if isinstance(value, list):
        return [_resolve(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, ids) for k, v in value.items()}
    return value


def check_filters_against_oracle(store: Any, rows: list[dict[str, Any]], filters: list[Any]) -> None:
    org = f"filters-{uuid.uuid4().hex[:12]}"
    made = _write(store, org, rows)
    ids = [m.id for m in made]
    oracle_rows = [{**row, "id": m.id} for row, m in zip(rows, made)]
    query = np.zeros(DIM, dtype=np.float32)
    query[0] = 1.0
    for raw in filters:
        filters_json = _resolve(raw, ids)
        try:
            oracle.validate(filters_json)
            malformed = None
        except oracle.Invalid as why:
            malformed = str(why)
        try:
            where = parse_filter(filters_json)
        except ServiceError as err:
            assert err.code == "invalid_filter", filters_json
            assert malformed, f"the parser rejected a valid filter {filters_json!r}: {err}"
            event("malformed filter")
            continue
        assert malformed is None, f"the parser accepted a malformed filter {filters_json!r} ({malformed})"
        expected = {m.id for m, row in zip(made, oracle_rows) if oracle.admits(filters_json, row)}
        event("admits none" if not expected else "admits all" if len(expected) == len(made) else "admits some")
        listed = store.list_memories(org, where, ascending=True, after=None, limit=100).items
        assert {m.id for m in listed} == expected, ("list", filters_json)
        dense = store.dense_candidates(org, where, query, 100)
        assert {i for i, _ in dense} == expected, ("dense", filters_json)
        lexical = store.lexical_candidates(org, where, "memory", 100)
        assert {i for i, _ in lexical} == expected, ("lexical", filters_json)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=ROWS, filters=st.lists(FILTERS, min_size=1, max_size=6))
def test_stores_admit_what_the_oracle_admits(filter_store: Any, rows: list[dict[str, Any]], filters: list[Any]) -> None:
    check_filters_against_oracle(filter_store, rows, filters)


def test_the_property_test_can_fail() -> None:
    """The oracle is not vacuous: it tells memories apart, and rejects what the parser rejects."""
    row = {"user_id": "u1", "agent_id": None, "conv_id": "c1", "app_id": None, "type": "fact", "status": "active",
           "created_at": T0, "updated_at": T0, "valid_at": None, "id": "m1",
           "metadata": {"n": 1, "d": "2023-05-01T10:00:00Z", "s": "abc", "b": True, "x": [1]}}
    assert oracle.admits({"n": 1.0}, row) and not oracle.admits({"n": "1"}, row) and not oracle.admits({"b": 1}, row)
    assert oracle.admits({"d": {"$lt": "2023-05-01T12:00:00+01:00"}}, row)
    assert not oracle.admits({"d": {"$lt": "2023-05-01T10:00:00Z"}}, row)
    assert oracle.admits({"valid_at": None, "missing": {"$nin": [1]}}, row)
    assert not oracle.admits({"missing": {"$ne": 1}}, row) and not oracle.admits({"x": 1}, row)
    assert oracle.admits({"NOT": {"agent_id": {"$ne": "a1"}}}, row)
    assert oracle.admits({"created_at": "2023-05-01T14:00:00+02:00"}, row)
    for bad in ({"n": {"$regex": "a"}}, {"user_id": 1}, {"created_at": "soon"}, {"AND": []}, {"n": {"$between": [1, "2"]}}):
        with pytest.raises(oracle.Invalid):
            oracle.validate(bad)


@pytest.mark.parametrize("filters, admitted", [
    ({"n": {"$lt": float("inf")}}, {0, 1}),
    ({"n": {"$gt": float("-inf")}}, {0, 1}),
    ({"n": {"$gt": float("inf")}}, set()),
    ({"n": {"$lte": float("-inf")}}, set()),
    ({"n": {"$between": [float("-inf"), 2]}}, {0}),
    ({"n": float("inf")}, set()),
])
def test_infinite_bounds(filter_store: Any, filters: dict[str, Any], admitted: set[int], request: Any) -> None:
    """JSON requests can carry Infinity (Python's parser reads it): every number is below it."""
    rows = [{"type": "fact", "status": "active", "user_id": "u", "agent_id": None, "conv_id": "c", "app_id": None,
             "created_at": T0, "updated_at": T0, "valid_at": None, "metadata": {"n": n}} for n in (1, 2.5e300, "x")]
    made = _write(filter_store, f"filters-{uuid.uuid4().hex[:12]}", rows)
    listed = filter_store.list_memories(made[0].org_id, parse_filter(filters), ascending=True, after=None, limit=10)
    assert {m.id for m in listed.items} == {made[i].id for i in admitted}
    assert {made[i].id for i in admitted} == {m.id for m, row in zip(made, rows)
                                              if oracle.admits(filters, {**row, "id": m.id})}
