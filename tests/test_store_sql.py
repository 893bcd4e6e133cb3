"""The store's SQL as data: one set of rule statements for both dialects, fragments that
each dialect defines, and migrations that bring any database up to date."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engram.store import migrations
from engram.store.sql import RUNTIME_SLOTS, Queries, parse, rules, to_pyformat, _read
from engram.store.sqlite import SQLiteStore

DIALECTS = ("sqlite", "postgres")


def test_both_dialects_resolve_the_same_rule_statements() -> None:
    names = {d: rules(d).names() for d in DIALECTS}
    assert names["sqlite"] == names["postgres"] and len(names["sqlite"]) > 50


def test_the_dialect_files_define_the_same_fragments_and_no_statements() -> None:
    common, common_fragments = parse(_read("common.sql"))
    used = {m.group(1) for sql in [*common.values(), *common_fragments.values()]
            for m in re.finditer(r"\{\{(\w+)(?::\w+)?\}\}", sql)}
    fragments = {}
    for dialect in DIALECTS:
        statements, fragments[dialect] = parse(_read(f"{dialect}.sql"))
        assert not statements, f"{dialect}.sql: statements belong in common.sql or {dialect}_only.sql"
    assert fragments["sqlite"].keys() == fragments["postgres"].keys()
    assert used - RUNTIME_SLOTS == set(fragments["sqlite"]) | set(common_fragments), "every fragment used, defined"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_statement_resolves_to_its_dialect(dialect: str) -> None:
    queries = rules(dialect)
    for name in queries.names():
        sql = queries._sql[name]  # noqa: SLF001 - the resolved text, before run-time slots
        leftover = {m.group(1) for m in re.finditer(r"\{\{(\w+)", sql)} - RUNTIME_SLOTS
        assert not leftover, (name, leftover)
        if dialect == "postgres":
            assert not re.search(r"(?<![:\w]):[a-z_]+", re.sub(r"'[^']*'", "", sql)), (name, sql)
            assert "json_each" not in sql and "+org_id" not in sql, name
        else:
            assert "%(" not in sql and "FOR UPDATE" not in sql and "= ANY(" not in sql, name


def test_named_parameters_in_pyformat() -> None:
    assert to_pyformat("SELECT x::text FROM t WHERE a = :a AND b = ':b' AND c LIKE 'p%'") == \
        "SELECT x::text FROM t WHERE a = %(a)s AND b = ':b' AND c LIKE 'p%%'"
    assert to_pyformat("WHERE id {{in:ids}} AND t = :t") == "WHERE id {{in:ids}} AND t = %(t)s"


def test_run_time_slots_must_all_be_filled() -> None:
    queries = Queries({"q": "SELECT 1 WHERE {{where}} {{after}}"}, "<test>")
    assert queries.get("q", where="TRUE", after="") == "SELECT 1 WHERE TRUE "
    with pytest.raises(KeyError):
        queries.get("q", where="TRUE")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_are_numbered_from_one_without_gaps(dialect: str) -> None:
    versions = [m.version for m in migrations.migrations(dialect)]
    assert versions == list(range(1, len(versions) + 1))


def test_an_embedded_store_made_before_numbered_migrations_upgrades_in_place(tmp_path: Path) -> None:
    """A data directory written by an engram that created its schema from a string (no
    `engram_migrations` table, a `meta` row) opens with its rows intact and gains what came since."""
    db = tmp_path / "engram.db"
    first = migrations.migrations("sqlite")[0]
    conn = sqlite3.connect(db)
    conn.executescript(first.sql)
    conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO orgs(id, name, created_at) VALUES ('acme', 'acme', '2026-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()
    store = SQLiteStore(db)
    try:
        applied = store.migrate()
        assert applied == [m.label for m in migrations.migrations("sqlite")]
        assert store.get_org("acme") is not None and len(store.server_secret()) == 32
        assert store.migrate() == [], "a second run has nothing to do"
    finally:
        store.close()
    again = SQLiteStore(db)
    try:
        assert again.migrate() == [] and again.get_org("acme") is not None
    finally:
        again.close()


def test_two_processes_opening_one_new_file_migrate_it_once(tmp_path: Path) -> None:
    db = tmp_path / "engram.db"
    stores = [SQLiteStore(db), SQLiteStore(db)]
    try:
        results = [s.migrate() for s in stores]
        assert results[0] and results[1] == []
        assert stores[1].server_secret() == stores[0].server_secret()
    finally:
        for s in stores:
            s.close()


def test_the_lease_walks_the_queue_in_order_on_sqlite(tmp_path: Path) -> None:
    """`next_ready_job` runs under the write lock the accept path shares: it reads the ready
    queue in `seq` order and stops at the first ready job, never reading and sorting every
    unfinished job (60-220 ms per lease with 100,000 pending, issue 15)."""
    store = SQLiteStore(tmp_path / "engram.db")
    try:
        store.migrate()
        sql = store.dialect.queries.get("next_ready_job")
        plan = " | ".join(r[3] for r in store.dialect.connection().execute(
            f"EXPLAIN QUERY PLAN {sql}", {"now": "2026-01-01T00:00:00.000000Z"}))
        assert "jobs_ready" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        store.close()


def test_turn_context_seeks_each_candidates_rows_and_builds_no_index_on_sqlite(tmp_path: Path) -> None:
    """Search's context step (Store.turn_context) runs on every search over its best 100
    candidates: each one's row, sources, events and the turn before are index seeks. A derived
    table of the sources joined back was planned as an automatic index built anew for every
    search (issue 15: 3.5 -> 1.8 ms at 1M memories, with the episodes' turns no longer read)."""
    store = SQLiteStore(tmp_path / "engram.db")
    try:
        store.migrate()
        sql = store.dialect.queries.get("turn_context")
        plan = " | ".join(r[3] for r in store.dialect.connection().execute(
            f"EXPLAIN QUERY PLAN {sql}", {"org_id": "o", "ids": '["m1", "m2"]'}))
        assert "AUTOMATIC" not in plan and "SCAN" not in plan.replace("SCAN json_each", ""), plan
        assert "events_turn_order" in plan and "memory_sources" in plan, plan
    finally:
        store.close()


def test_the_lease_walks_the_queue_in_order_on_postgres_whatever_the_statistics(postgres: Any) -> None:
    """The same rule on PostgreSQL, with the statistics a burst leaves: the jobs table analysed
    while nearly empty, then filled with 5,000 unfinished jobs over 500 conversations. Planned
    on those statistics PostgreSQL read every unfinished job in a bitmap scan and sorted them
    (50-80 ms per lease at 20,000); inside the lease's transaction the plan must walk
    `jobs_ready` and sort nothing."""
    import psycopg

    from engram.domain.records import utcnow
    from engram.store.postgres import PostgresStore
    from tests.test_store_conformance import new_job

    url = postgres.create_database("engram_queue_plan")
    store = PostgresStore(url, pool_size=2)
    try:
        store.migrate()
        store.ensure_org("o")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")  # the burst outruns it
            conn.execute("ANALYZE jobs")
        for n in range(100):
            store.accept("o", [new_job("o", f"u{(n * 50 + i) % 500}", f"c{(n * 50 + i) % 500}", ["turn"])
                               for i in range(50)], dedup_since=None)
        sql = store.dialect.queries.get("next_ready_job")
        with store.dialect.transaction() as tx:
            with store.dialect.walking_the_queue(tx):
                plan = "\n".join(r["QUERY PLAN"] for r in tx.target.execute(f"EXPLAIN {sql}", {"now": utcnow()}))
            events = "\n".join(r["QUERY PLAN"] for r in tx.target.execute(
                "EXPLAIN " + store.dialect.queries.get("job_events"), {"job_id": "job_x"}))
        assert "jobs_ready" in plan and "Sort" not in plan and "Bitmap" not in plan, plan
        assert "events_job" in events and "Seq Scan" not in events, events
        assert [l.job.conv_id for l in store.lease_many("w", utcnow(), 30, 5, 3)] == ["c0", "c1", "c2"]
    finally:
        store.close()
        postgres.drop_database(url)
