"""The PostgreSQL dialect's search index: pgvector for dense scoring, full-text search scored
with BM25 for the lexical side.

- Dense: a filter that pins one user (or lists memory ids) is scored exactly over the rows it
  admits (a `MATERIALIZED` CTE, which the planner cannot answer from the HNSW index with
  post-filtering); org-wide queries up to k = 200 use HNSW with `ef_search = max(40, 2k)` and
  pgvector 0.8's iterative scan, so selective filters still fill k.
- Lexical: `english` full-text search, any query word matching, scored with BM25 in SQL with
  FTS5's constants. Term statistics come from the filter's scope when it names one user
  (exact, small), else from the org's matches with the table's row estimate as N.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import psycopg

from engram.domain.filters import And, Cmp, Node, conjoin, equality_value, within
from engram.domain.text import query_words
from engram.store.postgres_filters import compile_filter
from engram.store.sql import Params, load

HNSW_DIM = 384  # the dimension the migration's HNSW index covers (the default embedder)
HNSW_MAX_K = 200  # deeper org-wide queries are scored exactly (the index's ef_search would not reach)
BM25_K1, BM25_B = 1.2, 0.75  # the constants SQLite's FTS5 uses

_QUERIES = load("postgres_only.sql")


class PostgresIndex:
    def __init__(self, connection: Callable[[], ContextManager[psycopg.Connection[Any]]]) -> None:
        self._connection = connection  # a pooled connection, autocommit
        self._iterative_scan: bool | None = None

    def _rows(self, sql: str, params: Params) -> list[dict[str, Any]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def scope(self, org_id: str, where: Node) -> PostgresScope:
        return PostgresScope(self, org_id, where)

    def dense_candidates(self, org_id: str, where: Node, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Cosine similarity, best first."""
        q = np.asarray(query, dtype=np.float32)
        dim = int(q.shape[0])
        params = Params("postgres", query=vector_text(q), org_id=org_id, dim=dim, k=k)
        condition = compile_filter(where, params)
        if small_scope(where) or k > HNSW_MAX_K or dim != HNSW_DIM:
            rows = self._rows(_QUERIES.get("dense_exact", where=condition), params)
            return [(r["id"], float(r["score"])) for r in rows]
        sql = _QUERIES.get("dense_hnsw", where=condition, dim=str(HNSW_DIM))
        with self._connection() as conn, conn.transaction():
            conn.execute(_QUERIES.get("hnsw_settings"), {"ef_search": str(max(40, min(1000, 2 * k)))})
            if self._has_iterative_scan(conn):
                conn.execute(_QUERIES.get("hnsw_iterative_scan"))
            rows = conn.execute(sql, params).fetchall()
        return [(r["id"], float(r["score"])) for r in rows]

    def _has_iterative_scan(self, conn: psycopg.Connection[Any]) -> bool:
        if self._iterative_scan is None:
            row = conn.execute(_QUERIES.get("vector_extension_version")).fetchone()
            parts = tuple(int(p) for p in re.findall(r"\d+", row["extversion"] if row else "0")[:2])
            self._iterative_scan = parts >= (0, 8)
        return self._iterative_scan

    def lexical_candidates(self, org_id: str, where: Node, query: str, k: int) -> list[tuple[str, float]]:
        """Full-text matches scored with BM25: positive, higher is better."""
        tokens = query_words(query)
        if not tokens:
            return []
        params = Params("postgres", tsquery=" | ".join(f"'{t}'" for t in tokens), words=" ".join(tokens),
                        org_id=org_id, k=k, k1=BM25_K1, b=BM25_B)
        condition = compile_filter(where, params)
        if small_scope(where):
            n = _QUERIES.get("scope_count", where=compile_filter(where, params))
        else:
            n = _QUERIES.get("table_rows_estimate")
        rows = self._rows(_QUERIES.get("lexical_bm25", where=condition, n=n), params)
        return [(r["id"], float(r["score"])) for r in rows]

    def document_frequencies(self, org_id: str, where: Node, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """How many memories the filter admits, and in how many of them each term occurs
        (matched as `lexical_candidates` matches a word: english stemming; a stop word never
        matches, so it counts 0)."""
        wanted = list(dict.fromkeys(terms))
        params = Params("postgres", org_id=org_id)
        columns = ["count(*) AS total"]
        for i, term in enumerate(wanted):
            tsquery = " | ".join(f"'{t}'" for t in query_words(term))
            if tsquery:
                columns.append(f"count(*) FILTER (WHERE m.tsv @@ to_tsquery('english', {params.add(tsquery)})) AS t{i}")
        sql = _QUERIES.get("term_counts", columns=", ".join(columns), where=compile_filter(where, params))
        row = self._rows(sql, params)[0]
        return int(row["total"]), {term: int(row.get(f"t{i}", 0)) for i, term in enumerate(wanted)}


class PostgresScope:
    """One search's scope on PostgreSQL: its compiled filter, which every statement of the
    search carries (the planner answers it through the memories table's indexes each time;
    handing a user's ids from one statement to the next measured no faster)."""

    def __init__(self, index: PostgresIndex, org_id: str, where: Node) -> None:
        self.index, self.org_id, self.where = index, org_id, where

    def frequencies(self, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        return self.index.document_frequencies(self.org_id, self.where, terms)

    def dense(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self.index.dense_candidates(self.org_id, self.where, query, k)

    def lexical(self, text: str, k: int) -> list[tuple[str, float]]:
        return self.index.lexical_candidates(self.org_id, self.where, text, k)

    def narrowed(self, ranges: Sequence[tuple[datetime, datetime]]) -> "PostgresScope":
        return PostgresScope(self.index, self.org_id, conjoin(self.where, within(ranges)))

    def admits(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        params = Params("postgres", org_id=self.org_id, ids=list(ids))
        rows = self.index._rows(_QUERIES.get("admitted", where=compile_filter(self.where, params)), params)
        return {r["id"] for r in rows}

    def cosines(self, query: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        if not ids:
            return {}
        return dict(self.index.dense_candidates(self.org_id, Cmp("id", "in", tuple(ids)), query, len(ids)))


def small_scope(where: Node) -> bool:
    """Whether the filter pins one user or a list of memory ids: a scope small enough to score
    exactly (and where an approximate index with post-filtering would miss rows)."""
    if equality_value(where, "user_id") is not None:
        return True
    clauses = where.clauses if isinstance(where, And) else (where,)
    return any(isinstance(c, Cmp) and c.field == "id" and c.op in ("eq", "in") for c in clauses)


def vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"
