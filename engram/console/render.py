"""What the templates are given besides their data: formatting filters and a query-string
builder. Jinja2 escapes every value it prints (autoescape), so nothing stored is ever markup."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment

from engram.search.fusion import BM25_HALF_POINT, DENSE_WEIGHT, LEXICAL_WEIGHT


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"


def score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def short(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def query(path: str, **params: Any) -> str:
    """`path?a=1&b=2`, leaving out empty parameters."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def install(env: Environment) -> None:
    env.filters.update(when=when, pretty=pretty, ms=ms, score=score, short=short)
    # the fusion's constants, so the score columns' explanations say what the ranker does
    env.globals.update(query=query, dense_weight=DENSE_WEIGHT, lexical_weight=round(LEXICAL_WEIGHT, 3),
                       bm25_half_point=BM25_HALF_POINT)
