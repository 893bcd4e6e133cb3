"""docs/quickstart.md runs as written: its ```python blocks, in order, in one namespace,
against a real server whose URL reaches them only through ENGRAM_BASE_URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

QUICKSTART = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of every ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_the_extractor_finds_blocks_and_their_lines() -> None:
    text = "intro\n```python\nx = 1\n```\n\n```sh\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = 2\nz = 3\n")]


def test_quickstart_runs_as_written(server: ServerProcess, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENGRAM_BASE_URL", server.url)
    monkeypatch.delenv("ENGRAM_API_KEY", raising=False)
    text = QUICKSTART.read_text()
    blocks = python_blocks(text)
    assert len(blocks) >= 12, "the quickstart lost its examples"

    namespace: dict[str, Any] = {"__name__": "quickstart"}
    after: dict[str, dict[str, Any]] = {}  # a snapshot of the namespace after each block, by its source
    for line, source in blocks:
        # Pad with blank lines so that a traceback points at the line in the markdown file.
        code = compile("\n" * (line - 1) + source, str(QUICKSTART), "exec")
        exec(code, namespace)
        after[source] = dict(namespace)
    out = capsys.readouterr().out

    def state(marker: str) -> dict[str, Any]:
        matches = [ns for source, ns in after.items() if marker in source]
        assert len(matches) == 1, f"no single block contains {marker!r}"
        return matches[0]

    assert state("remote = engram.Client(")["remote"].base_url == "https://memory.example.com"

    first = state("poll_until_done handles exponential backoff")
    assert first["done"].status == "succeeded"
    assert any("pad see ew" in ref.text for ref in first["done"].result.memories_created)
    assert re.search(r"^Created [1-9]\d* memories$", out, re.MULTILINE)

    synced = state("wait=True,")["job"]
    assert synced.status == "succeeded" and "Inline result:" in out

    filtered = state('filters={"user_id": "alice", "project": "atlas"}')["results"]
    assert filtered.data, "the metadata filter found nothing"
    assert all(m.user_id == "alice" and m.metadata.get("project") == "atlas" for m in filtered.data)
    assert any("curry" in m.text for m in filtered.data)

    included = state('include=["source_events", "context_prompt"]')["results"]
    assert included.extras.context_prompt and included.data[0].details.source_events is not None

    family_m = state("status = client.status(event_ids=result.event_ids)")
    assert sorted(family_m["status"].completed_ids) == sorted(family_m["result"].event_ids)
    assert not family_m["status"].pending_ids and not family_m["status"].failed_ids
    assert any("Lisbon" in hit.content for hit in state("include_source_events=True")["response"].results)
    assert re.search(r"^    from: I moved to Lisbon last month\.$", out, re.MULTILINE)

    done_async = namespace["done_async"]
    assert done_async.status == "succeeded"
    assert any("cello" in m.text for m in namespace["found_async"].data)
    assert any("cello" in text for text in namespace["listed_async"])
    assert namespace["status_async"].completed_ids == state("async def main")["status_async"].completed_ids != []
    assert "404 memory_not_found" in out

    updated = state("client.memories.update(fact.id")
    assert updated["newer"].details.supersedes == updated["fact"].id
    assert re.search(r"^True$", out, re.MULTILINE)
