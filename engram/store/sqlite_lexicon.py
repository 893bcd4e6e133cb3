"""BM25 over a small scope, computed in process from each memory's cached terms.

Why: SQLite's FTS5 index covers every memory in the file. A query word's match list is
as long as the word is frequent in the *file* — every org, every user — so a search in
one user's thousand memories at a million memories in the file walks hundreds of
thousands of matches to keep a few hundred (60 ms at 100k memories, growing linearly).
Reading the scope's own terms instead costs what the scope costs: well under a
millisecond for a thousand memories once their terms are cached.

What it computes is FTS5's `bm25()` (k1 1.2, b 0.75, the same idf with its floor),
with two deliberate differences. A stem the query names twice ("painting", "painted")
counts once, where FTS5 sums each quoted word. And the statistics — how many memories, how many contain
each word, their mean length — are the scope's, not the file's. The scope is the
collection the user asked about; a word common in this user's memories says little
here however rare it is elsewhere (and another tenant's words no longer move scores).

Words are read as FTS5's `porter unicode61` tokenizer reads them: runs of letters and
digits, case-folded, stemmed by the Porter algorithm (the snowball project's
implementation), so a query matches here what it matches through the FTS index.

Consistency across processes, as for the vector cache: a memory's text is written once
with its row and never changed (an edit supersedes the row with a new one), and row ids
are never reused, so cached terms are either right or belong to a row no filter admits.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from array import array
from typing import Iterable, Sequence

import numpy as np
import snowballstemmer

from engram.domain.stopwords import ENGLISH_STOPWORDS
from engram.store.sql import load

_QUERIES = load("sqlite_only.sql")

K1, B = 1.2, 0.75  # FTS5's bm25() constants
_TOKEN = re.compile(r"\w+")


class Analyzer:
    """Text -> term ids: case-folded word tokens, Porter-stemmed, each word stemmed once."""

    def __init__(self) -> None:
        self._stemmer = snowballstemmer.stemmer("porter")
        self._ids: dict[str, int] = {}  # lower-cased word -> id of its stem
        self._stems: dict[str, int] = {}  # stem -> id
        self._lock = threading.Lock()

    def term_id(self, word: str) -> int:
        found = self._ids.get(word)
        if found is None:
            with self._lock:
                stem = self._stemmer.stemWord(word)
                found = self._ids[word] = self._stems.setdefault(stem, len(self._stems))
        return found

    def document(self, text: str) -> bytes:
        """Every token of the text but stop words (its length counts in BM25, as in
        PostgreSQL's index, which drops them too), as packed int32 ids."""
        ids = self._ids
        return array("i", [ids[w] if w in ids else self.term_id(w) for w in _TOKEN.findall(text.lower())
                           if w not in ENGLISH_STOPWORDS]).tobytes()

    def query(self, words: Iterable[str]) -> list[int]:
        """Distinct term ids of the words a query is matched by (see search/query.py terms)."""
        return list(dict.fromkeys(self.term_id(w.lower()) for w in words))


ANALYZER = Analyzer()  # for callers that score texts of their own (tests); the index's caches have their own


class RowCache:
    """Each memory's org, id and term ids by row id, read from the memories table on first use.

    Search turns row ids into memory ids and back many times per query (scope, candidates,
    the exact cosine of lexical candidates); all three never change for a row. Bounded like
    the vector cache: past `max_rows` it starts over (~200 bytes a row).
    """

    def __init__(self, max_rows: int = 200_000, analyzer: Analyzer | None = None) -> None:
        self.max_rows = max_rows
        # The terms are this analyzer's ids: a cache dropped after an erasure drops its
        # vocabulary with it (the words of every memory it read).
        self.analyzer = analyzer or Analyzer()
        self._rows: dict[int, tuple[str, str, bytes]] = {}  # rid -> (org_id, id, terms)
        self._rid_of: dict[str, int] = {}  # id -> rid
        self._lock = threading.Lock()

    def _load(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, tuple[str, str, bytes]]:
        """The cached rows, after reading those of `rids` that are missing. Holds the lock."""
        rows = self._rows
        missing = [r for r in rids if r not in rows]
        if missing and len(rows) + len(missing) > self.max_rows:
            rows.clear()
            self._rid_of.clear()
            missing = list(dict.fromkeys(rids))
        for start in range(0, len(missing), 500):  # in pieces: a whole org's rows at once is a large peak
            chunk = json.dumps(missing[start:start + 500])
            for rid, org_id, memory_id, text in conn.execute(_QUERIES.get("terms_of_rows"), {"rids": chunk}):
                rows[rid] = (org_id, memory_id, self.analyzer.document(text))
                self._rid_of[memory_id] = rid
        return rows

    def documents(self, conn: sqlite3.Connection, rids: Sequence[int]) -> list[bytes]:
        with self._lock:
            rows = self._load(conn, rids)
            return [rows[r][2] if r in rows else b"" for r in rids]

    def ids(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, str]:
        with self._lock:
            rows = self._load(conn, rids)
            return {r: rows[r][1] for r in rids if r in rows}

    def rids(self, org_id: str, ids: Sequence[str]) -> list[int] | None:
        """The row ids of these memories of the org, when every one is cached; else None."""
        with self._lock:
            found = [self._rid_of.get(i) for i in ids]
            if any(r is None or self._rows[r][0] != org_id for r in found):
                return None
            return found  # type: ignore[return-value]


class ScopeStatistics:
    """The term counts of one scope for a set of query terms: enough for BM25 and df."""

    def __init__(self, rids: np.ndarray, docs: list[bytes], terms: list[int]) -> None:
        self.rids = rids
        self.size = len(docs)
        self.terms = terms
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs)) // 4
        self.lengths = lengths
        flat = np.frombuffer(b"".join(docs), dtype=np.int32)
        owner = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        wanted = np.asarray(terms, dtype=np.int32)
        order = np.argsort(wanted)
        hit = np.isin(flat, wanted)
        column = order[np.searchsorted(wanted[order], flat[hit])]
        # tf[i, j]: occurrences of query term j in document i
        self.tf = np.bincount(owner[hit] * len(terms) + column,
                              minlength=len(docs) * len(terms)).reshape(len(docs), len(terms))

    def same(self, rids: np.ndarray, terms: list[int]) -> bool:
        """Whether these are the statistics of that scope and those terms."""
        return terms == self.terms and rids.shape == self.rids.shape and bool((rids == self.rids).all())

    def document_frequency(self) -> np.ndarray:
        """Per query term, in how many documents of the scope it occurs."""
        return (self.tf > 0).sum(axis=0)

    def document_frequencies(self) -> dict[int, int]:
        return dict(zip(self.terms, self.document_frequency().tolist()))

    def bm25(self) -> np.ndarray:
        """FTS5's score for every document of the scope (0 where no query term occurs)."""
        if not self.size or not self.terms:
            return np.zeros(self.size)
        n = self.document_frequency()
        idf = np.log((self.size - n + 0.5) / (n + 0.5))
        idf[idf <= 0] = 1e-6  # FTS5's floor: a word in most documents still counts a little
        hit = (self.tf > 0).any(axis=1)
        mean_length = max(float(self.lengths[hit].mean()) if hit.any() else 0.0, 1e-9)
        norm = K1 * (1 - B + B * self.lengths / mean_length)
        tf = self.tf.astype(np.float64)
        return ((tf * (K1 + 1)) / (tf + norm[:, None]) * idf).sum(axis=1)
