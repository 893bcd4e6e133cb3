"""Artifacts: fenced code blocks and long structured documents, kept verbatim."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engram.domain.extraction import ArtifactCandidate, Turn
from engram.pipeline.extract.rules.speakers import Speaker
from engram.pipeline.extract.rules.text import cap_first, normalize, truncate


_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^\n]*$", re.M)
_LANGUAGES = {
    "py": "Python", "python": "Python", "python3": "Python", "js": "JavaScript", "javascript": "JavaScript",
    "jsx": "JavaScript", "mjs": "JavaScript", "ts": "TypeScript", "typescript": "TypeScript", "tsx": "TypeScript",
    "sh": "Shell", "bash": "Shell", "shell": "Shell", "zsh": "Shell", "console": "Shell", "ps1": "PowerShell",
    "powershell": "PowerShell", "sql": "SQL", "json": "JSON", "yaml": "YAML", "yml": "YAML", "toml": "TOML",
    "html": "HTML", "xml": "XML", "css": "CSS", "scss": "SCSS", "go": "Go", "golang": "Go", "rust": "Rust",
    "rs": "Rust", "java": "Java", "kotlin": "Kotlin", "kt": "Kotlin", "swift": "Swift", "c": "C", "h": "C",
    "cpp": "C++", "c++": "C++", "cc": "C++", "hpp": "C++", "cs": "C#", "csharp": "C#", "rb": "Ruby",
    "ruby": "Ruby", "php": "PHP", "r": "R", "scala": "Scala", "lua": "Lua", "dockerfile": "Dockerfile",
    "docker": "Dockerfile", "makefile": "Makefile", "make": "Makefile", "md": "Markdown",
    "markdown": "Markdown", "ini": "INI", "diff": "Diff", "graphql": "GraphQL", "proto": "Protobuf",
    "text": "Text", "txt": "Text", "csv": "CSV", "hcl": "HCL", "terraform": "Terraform", "tf": "Terraform",
}
_DEFINITIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)"), "{}()"),
    (re.compile(r"^\s*class\s+([A-Za-z_]\w*)"), "class {}"),
    (re.compile(r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)"), "{}()"),
    (re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+([A-Za-z_]\w*)"), "{}()"),
    (re.compile(r"^\s*func\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)"), "{}()"),
    (re.compile(r"^\s*(?:export\s+)?(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?(?:function\b|\([^)]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)"), "{}()"),
    (re.compile(r"^\s*(?:export\s+)?(?:interface|struct|enum|trait|type|record)\s+([A-Za-z_]\w*)"), "{}"),
    (re.compile(r"^\s*(?i:create\s+(?:or\s+replace\s+)?(?:table|view|index|function|procedure))\s+(?i:if\s+not\s+exists\s+)?([\w.\"`]+)"), "{}"),
    (re.compile(r"^\s*(?:public|private|protected|static|final|abstract|\s)+[\w<>\[\],]+\s+([A-Za-z_]\w*)\s*\("), "{}()"),
]
_COMMENT_PREFIX = re.compile(r"^\s*(?:#!.*|#+|//+|--+|/\*+|\*+|<!--|;+|%+|\")\s*")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    start: int
    end: int
    lang: str
    body: str
    verbatim: str


def find_code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks (``` or ~~~); an unclosed fence runs to the end of the text."""
    blocks: list[CodeBlock] = []
    pos = 0
    while True:
        m = _FENCE_OPEN.search(text, pos)
        if not m:
            return blocks
        fence = m.group("fence")
        close = re.compile(r"^[ \t]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$", re.M)
        body_start = min(m.end() + 1, len(text))
        c = close.search(text, body_start)
        end = c.end() if c else len(text)
        body = text[body_start : c.start() if c else len(text)].rstrip("\n")
        blocks.append(CodeBlock(m.start(), end, m.group("lang").strip().lower(), body, text[m.start() : end]))
        pos = max(end, m.end() + 1)


def _code_title(block: CodeBlock) -> str:
    lang = _LANGUAGES.get(block.lang, block.lang.capitalize() if block.lang else "")
    label = f"{lang} code" if lang else "Code"
    lines = block.body.split("\n")
    for line in lines:
        for rx, fmt in _DEFINITIONS:
            m = rx.match(line)
            if m:
                return f"{label}: {fmt.format(m.group(1).strip(chr(34) + '`'))}"
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#!"):
            continue
        meaningful = _COMMENT_PREFIX.sub("", line).strip().rstrip("*/->").strip()
        if meaningful:
            return f"{label}: {truncate(meaningful, 60)}"
    return label


HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_LIST_LINE = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S")
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")


def document_artifact(turn: Turn, prose: str, speaker: Speaker) -> ArtifactCandidate | None:
    """A long structured turn (lists, headings, tables) is worth keeping whole."""
    lines = prose.split("\n")
    items = sum(1 for line in lines if _LIST_LINE.match(line))
    headings = [line for line in lines if HEADING.match(line)]
    rows = sum(1 for line in lines if _TABLE_LINE.match(line))
    structure = items + len(headings) + (rows if rows >= 3 else 0)
    if structure < 3 or len(prose.strip()) <= 400:
        return None
    if headings:
        title = headings[0].strip().lstrip("#").strip()
    else:
        intro = next((ln for ln in lines if ln.strip() and not _LIST_LINE.match(ln) and not _TABLE_LINE.match(ln)), "")
        title = intro.strip().rstrip(":").strip()
    title = truncate(re.sub(r"[*_`]+", "", normalize(title)), 80) or f"Document from {speaker.label}"
    what = ", ".join(
        p for p in (
            f"{items} list items" if items else "",
            f"{len(headings)} headings" if headings else "",
            f"{rows} table rows" if rows >= 3 else "",
        ) if p
    )
    return ArtifactCandidate(
        title=cap_first(title),
        rationale=f"Structured document ({what}) shared by {speaker.label}; kept whole so it can be reused.",
        content=turn.content,
        source_event_ids=(turn.event_id,),
    )


def code_artifact(turn: Turn, block: CodeBlock, speaker: Speaker) -> ArtifactCandidate | None:
    if not block.body.strip():
        return None
    lang = _LANGUAGES.get(block.lang, block.lang or "unlabelled")
    n = block.body.count("\n") + 1
    return ArtifactCandidate(
        title=_code_title(block),
        rationale=f"Code block ({lang}, {n} line{'s' if n != 1 else ''}) shared by {speaker.label}; kept verbatim so it can be reused.",
        content=block.verbatim,
        source_event_ids=(turn.event_id,),
    )
