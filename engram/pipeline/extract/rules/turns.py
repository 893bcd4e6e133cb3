"""A turn's content taken apart: prose, image captions and code blocks; prose into sentences."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engram.pipeline.extract.rules.artifacts import HEADING, CodeBlock, find_code_blocks
from engram.pipeline.extract.rules.text import chunk_long, normalize, split_sentences


_SHARES = re.compile(r"\s*\[shares?:\s*(?P<caption>[^\]]*)\]")
_CAPTION_PREFIX = re.compile(r"^(?i:(?:a|an|the)\s+)?(?i:photo|picture|image|photograph|photography|pic|screenshot|snapshot)\s+(?i:of|showing|with)\s+")


@dataclass(frozen=True, slots=True)
class Parsed:
    prose: str  # the turn without code blocks and image captions
    captions: tuple[str, ...]
    code: tuple[CodeBlock, ...]


def parse_turn(content: str) -> Parsed:
    content = content or ""
    blocks = find_code_blocks(content)
    pieces, pos = [], 0
    for b in blocks:
        pieces.append(content[pos : b.start])
        pieces.append("\n")
        pos = b.end
    pieces.append(content[pos:])
    prose = "".join(pieces)
    captions = []
    for m in _SHARES.finditer(prose):
        cap = normalize(m.group("caption")).strip().rstrip(".")
        cap = _CAPTION_PREFIX.sub("", cap).strip()
        if cap and re.search(r"[^\W_]", cap):
            captions.append(cap)
    prose = _SHARES.sub("", prose)
    return Parsed(prose, tuple(captions), tuple(blocks))


def prose_sentences(prose: str) -> list[str]:
    out: list[str] = []
    for sentence in split_sentences(normalize(prose)):
        if HEADING.match(sentence):
            continue  # a heading names a section; it states nothing
        out.extend(chunk_long(sentence))
    return out
