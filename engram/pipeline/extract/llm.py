"""The ``llm`` extractor: any OpenAI-compatible chat model turns turns into memories (SPEC §6.4).

One job's turns are cut into chunks so that no request exceeds
``ENGRAM_LLM_MAX_PROMPT_TOKENS`` (estimated, see `engram.llm.usage.estimate_tokens`). Each
chunk is one request carrying:

- the system prompt (``prompts/extract.md``);
- a few earlier turns of the conversation, as context only;
- the user's stored memories most related to the chunk (``recall``), labelled ``M1``, ``M2`` …,
  so that the model itself says whether a fact repeats one, supersedes one, or is new;
- what the org, and the roles and teams of the chunk's turns, want remembered (``guidance``:
  their promotion prompts, engram/onboarding.py), when they have any;
- the chunk's turns, labelled ``T1``, ``T2`` … (a turn too long for one request is split
  into parts that cite the same event).

The answer is asked for as strict JSON schema output (or JSON mode, or plain text, by
``ENGRAM_LLM_STRUCTURED_OUTPUT``); artifacts are in the prompt and the schema only with
``extract_artifacts``. It is read with pydantic, leniently and item by item: a ``memory``
or ``revises`` label that was not shown degrades to "new", an unknown ``fact_type`` or
``action`` to ``statement`` / ``new``, a missing optional field to its default, and an item
that cannot be used (no text, no turn shown) is dropped alone. Each such bend is counted
(``Extraction.degraded``, and ``llm_<kind>`` on the job's meter, so in ``result.usage`` and
the org's counters) and logged. Only an answer with nothing usable in it (not JSON, no list,
every item broken) is repaired: the request is sent again with the rejected answer and the
problems. A second such answer fails the job (``ingest_failed``); nothing of it is written.

Chunks are independent of each other (they see stored memories, not each other's new
facts), so up to ``ENGRAM_LLM_CONCURRENCY`` of them are in flight at once; facts that
repeat or change across chunks of one job are reconciled by the rules afterwards.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Literal, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from engram.config import ConfigError
from engram.domain.details import ArtifactDetails
from engram.domain.extraction import ArtifactCandidate, EpisodeCandidate, Extraction, FactCandidate, Guidance, Turn
from engram.domain.records import Memory
from engram.llm.provider import Provider, StructuredOutput
from engram.llm.usage import estimate_tokens, record

__all__ = ["LLMExtractor", "ExtractionFailed", "load_prompt"]

log = logging.getLogger("engram.llm")
Recall = Callable[[Sequence[Turn]], list[Memory]]
M = TypeVar("M", bound=BaseModel)

FACT_TYPES = ("preference", "biographical", "event", "plan", "relationship", "opinion", "statement")
CONTEXT_SHARE = 0.15  # of the room left after the system prompt: earlier turns shown as context
MEMORY_SHARE = 0.30  # … and stored memories shown for reconciliation
CONTEXT_TURN_CHARS = 400
GUIDANCE_SHARE = 0.20  # … and the org's, roles' and teams' promotion prompts, at most
MEMORY_CHARS = 300
REPAIR_RESERVE = 120  # tokens kept free in every request for the repair message, should one be needed
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.S)


class ExtractionFailed(Exception):
    """The model's answer stayed unusable after the repair request. Final for the job."""

    job_code = "ingest_failed"
    retryable = False


class _Invalid(Exception):
    """An answer that cannot be used; the message is written for the model to act on."""


@lru_cache(maxsize=None)
def load_prompt(name: str) -> str:
    """A prompt file shipped in ``engram/pipeline/extract/prompts/``."""
    return (resources.files("engram.pipeline.extract") / "prompts" / f"{name}.md").read_text(encoding="utf-8")


# ====================================================================== answer schemas
# The schemas are sent strict (every property required, no others: `strict_schema`), but an
# answer is read leniently, one item at a time: what does not resolve or is missing falls
# back to a default, an item that cannot be used is dropped, and each such bend is noted
# (`_note`) so that the job's result can count it. Only an answer with nothing usable in it
# is rejected (and repaired once).
DEGRADATIONS = ("references_degraded", "items_dropped", "fields_defaulted")
ACTIONS = ("new", "repeats", "supersedes")


def _labels(info: ValidationInfo, kind: str) -> dict[str, Any]:
    return (info.context or {}).get(kind, {})


def _note(info: ValidationInfo, kind: str, what: str) -> None:
    notes = (info.context or {}).get("notes")
    if notes is not None:
        notes.append((kind, what))


def _shown(value: Any, info: ValidationInfo, kind: str, prefix: str) -> str | None:
    """The label `value` names (``"M2"``, ``"2"`` and ``2`` all name M2), if it was shown."""
    label = str(value).strip().upper() if value is not None else ""
    label = prefix + label if label.isdigit() else label
    return label if label in _labels(info, kind) else None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _missing(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            for name, spec in cls.model_fields.items():
                if name not in data and not spec.is_required():
                    _note(info, "fields_defaulted", f"{cls.__name__}.{name} missing")
        return data


def _check_turns(value: Any, info: ValidationInfo) -> list[int]:
    """The shown turns a list names (``3``, ``"3"`` and ``"T3"`` all name T3); the others are
    dropped. None left is an error: the item cannot be traced to a turn."""
    numbers, unknown = [], []
    for item in value if isinstance(value, list) else [value]:
        label = _shown(item, info, "turns", "T")
        if label is None:
            unknown.append(f"T{item}" if isinstance(item, int) else _brief(item))
        else:
            numbers.append(int(label[1:]))
    if not numbers:
        raise ValueError(f"there is no turn {', '.join(unknown) or 'named'}; "
                         f"the turns to extract from are T1 to T{len(_labels(info, 'turns'))}")
    for label in unknown:
        _note(info, "fields_defaulted", f"turn {label} was not shown, left out")
    return list(dict.fromkeys(numbers))


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


class FactOut(_Lenient):
    text: str = Field(min_length=1)
    fact_type: Literal["preference", "biographical", "event", "plan", "relationship", "opinion",
                       "statement"] = "statement"
    key: str | None = None
    turns: list[int] = Field(min_length=1)
    valid_at: str | None = None
    action: Literal["new", "repeats", "supersedes"] = "new"
    memory: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # a label copied from the prompt ("[C1]", "[T3] —") is no statement
        if not re.search(r"[^\W\d_]{2,}", re.sub(r"\[[^\]]*\]", " ", value)):
            raise ValueError("must state something, not be blank or a label")
        return value.strip()

    @field_validator("fact_type", "action", mode="before")
    @classmethod
    def _known(cls, value: Any, info: ValidationInfo) -> str:
        known, fallback = (FACT_TYPES, "statement") if info.field_name == "fact_type" else (ACTIONS, "new")
        name = str(value).strip().lower() if value is not None else ""
        for candidate in (name, name + "s"):  # "repeat" → "repeats"
            if candidate in known:
                return candidate
        _note(info, "fields_defaulted", f"{info.field_name} {_brief(value)} → {fallback}")
        return fallback

    @field_validator("key", "memory", mode="before")
    @classmethod
    def _a_string(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None or isinstance(value, str):
            return value.strip() or None if value else None
        if isinstance(value, int) and info.field_name == "memory":
            return f"M{value}"
        _note(info, "fields_defaulted", f"{info.field_name} {_brief(value)} → null")
        return None

    @field_validator("valid_at", mode="before")
    @classmethod
    def _a_date(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        day = str(value).strip()[:10]
        try:
            if _DATE.match(day):
                date.fromisoformat(day)
                return day
        except ValueError:
            pass
        _note(info, "fields_defaulted", f"valid_at {_brief(value)} is not a date → null")
        return None

    @field_validator("turns", mode="before")
    @classmethod
    def _shown_turns(cls, value: Any, info: ValidationInfo) -> list[int]:
        return _check_turns(value, info)

    @model_validator(mode="after")
    def _shown_memory(self, info: ValidationInfo) -> "FactOut":
        if self.action == "new":
            self.memory = None
            return self
        label = _shown(self.memory, info, "facts", "M")
        if label is None:
            _note(info, "references_degraded", f"{self.action} {_brief(self.memory)}: not a stored fact shown → new")
            self.action = "new"
        self.memory = label
        return self


class ArtifactOut(_Lenient):
    title: str = Field(min_length=1)
    rationale: str = ""
    content: str = Field(min_length=1)
    turns: list[int] = Field(min_length=1)
    revises: str | None = None

    @field_validator("turns", mode="before")
    @classmethod
    def _shown_turns(cls, value: Any, info: ValidationInfo) -> list[int]:
        return _check_turns(value, info)

    @field_validator("revises", mode="before")
    @classmethod
    def _shown_artifact(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        label = _shown(value, info, "artifacts", "M")
        if label is None:
            _note(info, "references_degraded", f"revises {_brief(value)}: not a stored artifact shown → new")
        return label


def _each(value: Any, model: type[BaseModel], info: ValidationInfo) -> list[Any]:
    """The usable items of a list; each broken one is dropped and noted. An item's own notes
    count only if it is kept."""
    if not isinstance(value, list):
        raise ValueError("must be a list")
    notes = (info.context or {}).get("notes")
    kept = []
    for i, item in enumerate(value):
        mine: list[tuple[str, str]] = []
        try:
            kept.append(model.model_validate(item, context={**(info.context or {}), "notes": mine}))
        except ValidationError as exc:
            _note(info, "items_dropped", f"{info.field_name}.{i}: {_summarise(exc)}")
        else:
            if notes is not None:
                notes.extend(mine)
    return kept


class ExtractionOut(_Lenient):
    """The answer without artifacts (the request did not ask for them)."""

    facts: list[FactOut] = []

    @model_validator(mode="before")
    @classmethod
    def _an_object_of_lists(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, list):  # a bare list of facts
            _note(info, "fields_defaulted", "the answer is a bare list, read as `facts`")
            data = {"facts": data}
        lists = ", ".join(f"`{name}`" for name in cls.model_fields)
        if not isinstance(data, dict) or not any(isinstance(data.get(n), list) for n in cls.model_fields):
            raise ValueError(f"the answer must be a JSON object with the lists {lists}")
        return data

    @field_validator("facts", mode="before")
    @classmethod
    def _each_fact(cls, value: Any, info: ValidationInfo) -> list[Any]:
        return _each(value, FactOut, info)

    @model_validator(mode="after")
    def _something_usable(self, info: ValidationInfo) -> "ExtractionOut":
        dropped = [what for kind, what in (info.context or {}).get("notes", []) if kind == "items_dropped"]
        if dropped and not any(getattr(self, name) for name in type(self).model_fields):
            raise ValueError("no item of the answer is usable: " + "; ".join(dropped[:4]))
        return self


class ExtractionWithArtifactsOut(ExtractionOut):
    """The answer when the request asks for artifacts too (`extract_artifacts`)."""

    artifacts: list[ArtifactOut] = []

    @field_validator("artifacts", mode="before")
    @classmethod
    def _each_artifact(cls, value: Any, info: ValidationInfo) -> list[Any]:
        return _each(value, ArtifactOut, info)


class EpisodeOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    summary: str = Field(min_length=1)


_UNSENT_KEYWORDS = frozenset({"title", "default", "minLength", "maxLength", "minItems", "maxItems", "pattern",
                              "format", "description"})


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form strict structured output accepts: every property
    required, no additional properties, and only keywords every server knows (the
    validators check the rest)."""

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: v for k, v in node.items() if k not in _UNSENT_KEYWORDS}
        if "properties" in out:
            out["properties"] = {name: fix(sub) for name, sub in out["properties"].items()}
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        if "$defs" in out:
            out["$defs"] = {name: fix(sub) for name, sub in out["$defs"].items()}
        for key in ("items", "anyOf"):
            if key in out:
                out[key] = fix(out[key])
        return out

    return fix(model.model_json_schema())


# ====================================================================== prompt pieces
@dataclass(frozen=True, slots=True)
class _Piece:
    """A turn, or a part of a turn too long for one request."""

    turn: Turn
    text: str
    part: int = 1
    parts: int = 1


@dataclass(slots=True)
class _Chunk:
    pieces: list[_Piece]
    memories: list[Memory] = field(default_factory=list)
    guidance: str = ""  # the rendered guidance block (empty: none)


def _speaker(turn: Turn) -> str:
    who = f"{turn.name} ({turn.role})" if turn.name else f"the {turn.role or 'user'}"
    scopes = [f"{kind} {value}" for kind, value in (("role", turn.role_id), ("team", turn.team_id)) if value]
    return f"{who} [{', '.join(scopes)}]" if scopes else who


_GUIDANCE_HEAD = ("## What matters here\n"
                  "What the organisation, and the roles and teams of the speakers, most want remembered: let it "
                  "decide which facts to keep and how to word them, never what the turns say.")


def _render_guidance(guidance: Guidance | None, chunk_turns: Sequence[Turn], budget: int) -> str:
    """The guidance block for a chunk: the org's prompt, and those of the roles and teams its
    turns name, cut to `budget` tokens (estimated)."""
    if not guidance:
        return ""
    lines = []
    if guidance.org:
        lines.append(f"- The organisation {guidance.org_name or ''}: {guidance.org}".replace("  ", " "))
    for kind, known in (("role", guidance.roles), ("team", guidance.teams)):
        for unit_id in dict.fromkeys(getattr(t, f"{kind}_id") for t in chunk_turns):
            if unit_id in known:
                name, prompt = known[unit_id]
                lines.append(f"- The {kind} {unit_id} ({name}): {prompt}")
    if not lines:
        return ""
    block = _GUIDANCE_HEAD + "\n" + "\n".join(" ".join(line.split()) for line in lines)
    if estimate_tokens(block) > budget:
        block = block.encode()[: max(0, budget * 3 - 3)].decode("utf-8", "ignore").rstrip() + "…"
    return block


def _when(turn: Turn) -> str:
    return turn.date.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _render_piece(label: str, piece: _Piece) -> str:
    part = f" (part {piece.part} of {piece.parts})" if piece.parts > 1 else ""
    return f"[{label}] {_when(piece.turn)} — {_speaker(piece.turn)}{part}: {piece.text}"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _render_memory(label: str, memory: Memory) -> str:
    if memory.type == "artifact":
        version = ArtifactDetails.of(memory).version or 1
        return f"[{label}] artifact, version {version} — {_short(memory.text, MEMORY_CHARS)}"
    bits = ["fact"]
    if memory.key:
        bits.append(f"key {memory.key.split(':', 1)[-1]}")
    if memory.valid_at:
        bits.append(memory.valid_at.date().isoformat())
    return f"[{label}] {', '.join(bits)} — {_short(memory.text, MEMORY_CHARS)}"


def _split_text(text: str, max_tokens: int) -> list[str]:
    """Cut a long text into pieces of at most `max_tokens` (estimated), at paragraph, then
    line, then sentence boundaries where possible."""
    if estimate_tokens(text) <= max_tokens:
        return [text]
    limit = max(1, max_tokens * 3)  # bytes, matching estimate_tokens
    pieces: list[str] = []
    current = ""
    for unit in re.split(r"(?<=\n\n)|(?<=\n)|(?<=[.!?] )", text):
        while len(unit.encode()) > limit:  # one unit alone is too long: hard cut
            head = unit.encode()[:limit].decode("utf-8", "ignore") or unit[0]
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
            unit = unit[len(head):]
        if len((current + unit).encode()) > limit:
            pieces.append(current)
            current = unit
        else:
            current += unit
    if current:
        pieces.append(current)
    return [p for p in pieces if p]


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def _summarise(error: ValidationError) -> str:
    parts = []
    for entry in error.errors()[:6]:
        where = ".".join(str(p) for p in entry["loc"]) or "the answer"
        parts.append(f"{where}: {entry['msg']}")
    more = f" (and {error.error_count() - 6} more problems)" if error.error_count() > 6 else ""
    return "; ".join(parts) + more


def _normal_key(key: str | None) -> str | None:
    if not key:
        return None
    key = re.sub(r"[^a-z0-9]+", "_", key.split(":")[-1].lower()).strip("_")
    return key or None


# ====================================================================== the extractor
@dataclass(frozen=True, slots=True)
class _Request:
    """One kind of request: its system prompt, answer model, and the tokens it always costs."""

    system: str
    model: type[BaseModel]
    fixed: int
    name: str


class LLMExtractor:
    name = "llm"
    sees_memories = True  # the pipeline passes `recall` (the user's related stored memories)
    sees_guidance = True  # … and `guidance` (the org's, roles' and teams' promotion prompts)

    def __init__(self, provider: Provider, model: str, *, mode: StructuredOutput = "json_schema",
                 max_prompt_tokens: int = 6000, max_output_tokens: int = 4096, temperature: float = 0.0,
                 concurrency: int = 1, recall_limit: int = 20) -> None:
        self.provider = provider
        self.model = model
        self.mode = mode
        self.max_prompt_tokens = max_prompt_tokens
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        self.recall_limit = recall_limit
        # Artifacts cost prompt and schema tokens: they are asked for only with `extract_artifacts`.
        self._extract = {False: self._request(("extract",), ExtractionOut, "memories"),
                         True: self._request(("extract", "artifacts"), ExtractionWithArtifactsOut, "memories")}
        self._episode = self._request(("episode",), EpisodeOut, "episode")
        least = max_prompt_tokens - max(self._extract[True].fixed, self._episode.fixed)
        if least < 300:
            raise ConfigError(f"ENGRAM_LLM_MAX_PROMPT_TOKENS: {max_prompt_tokens} leaves no room for turns next to "
                              f"the extraction prompt; use at least {max_prompt_tokens - least + 300}")

    def _request(self, prompts: tuple[str, ...], model: type[BaseModel], name: str) -> _Request:
        system = "\n".join(load_prompt(p) for p in prompts)  # each ends with a newline: a blank line between
        if self.mode != "json_schema":  # the schema is not sent as response_format: show it
            system += "\n\nThe JSON schema of the answer:\n\n" + json.dumps(strict_schema(model), separators=(",", ":"))
        schema = estimate_tokens(json.dumps(strict_schema(model))) if self.mode == "json_schema" else 0
        # + the framing of the user message, and room for a repair request's extra message
        return _Request(system, model, estimate_tokens(system) + schema + 40 + REPAIR_RESERVE, name)

    # ------------------------------------------------------------------ facts and artifacts
    def extract(self, turns: Sequence[Turn], *, extract_artifacts: bool, context: Sequence[Turn] = (),
                recall: Recall | None = None, guidance: Guidance | None = None) -> Extraction:
        if not turns:
            return Extraction()
        request = self._extract[bool(extract_artifacts)]
        room = self.max_prompt_tokens - request.fixed
        context_block = self._context_block(context, room)
        memory_reserve = min(int(room * MEMORY_SHARE), self.recall_limit * (MEMORY_CHARS // 3 + 15)) \
            if recall is not None and self.recall_limit else 0
        guidance_budget = int(room * GUIDANCE_SHARE)
        # the whole job's guidance bounds every chunk's (a chunk shows the part its turns name)
        guidance_reserve = estimate_tokens(_render_guidance(guidance, turns, guidance_budget))
        turn_room = room - estimate_tokens(context_block) - memory_reserve - guidance_reserve
        chunks = [_Chunk(pieces) for pieces in self._pack(turns, turn_room)]
        for chunk in chunks:
            chunk.guidance = _render_guidance(guidance, [p.turn for p in chunk.pieces], guidance_budget)
            if recall is not None and self.recall_limit:
                found = recall([p.turn for p in chunk.pieces])[: self.recall_limit]
                chunk.memories = self._fit_memories(found, chunk, context_block, request)
        answers = self._map(lambda c: self._extract_chunk(c, context_block, request), chunks)
        result = Extraction()
        notes: list[tuple[str, str]] = []
        for out, labels, chunk_notes in answers:
            self._collect(result, out, labels)
            notes.extend(chunk_notes)
        if notes:
            counts = {kind: sum(1 for k, _ in notes if k == kind) for kind in DEGRADATIONS}
            result.degraded = {kind: n for kind, n in counts.items() if n}
            record(**{f"llm_{kind}": n for kind, n in result.degraded.items()})
            log.warning("llm answer bent to fit (%s): %s", ", ".join(f"{k} {n}" for k, n in result.degraded.items()),
                        "; ".join(what for _, what in notes[:8]) + (" …" if len(notes) > 8 else ""))
        return result

    def _context_block(self, context: Sequence[Turn], room: int) -> str:
        budget = int(room * CONTEXT_SHARE)
        lines: list[str] = []
        for turn in reversed(list(context)):
            line = _render_piece("C", _Piece(turn, _short(turn.content, CONTEXT_TURN_CHARS)))
            if estimate_tokens("\n".join([line, *lines])) > budget:
                break
            lines.insert(0, line)
        return "\n".join(line.replace("[C]", f"[C{i}]", 1) for i, line in enumerate(lines, 1))

    def _pack(self, turns: Sequence[Turn], room: int) -> list[list[_Piece]]:
        """Greedy: consecutive turns go in one chunk while their rendering fits `room`."""
        overhead = estimate_tokens(_render_piece("T999", _Piece(turns[0], "", 9, 9)))
        pieces: list[_Piece] = []
        for turn in turns:
            texts = _split_text(turn.content, max(1, room - overhead))
            pieces.extend(_Piece(turn, text, i, len(texts)) for i, text in enumerate(texts, 1))
        chunks: list[list[_Piece]] = []
        used = 0
        for piece in pieces:
            cost = estimate_tokens(_render_piece("T999", piece)) + 1
            if chunks and used + cost <= room:
                chunks[-1].append(piece)
                used += cost
            else:
                chunks.append([piece])
                used = cost
        return chunks

    def _fit_memories(self, found: list[Memory], chunk: _Chunk, context_block: str, request: _Request) -> list[Memory]:
        kept: list[Memory] = []
        for memory in found:
            if memory.type == "artifact" and request.model is not ExtractionWithArtifactsOut:
                continue
            message, _ = self._user_message(_Chunk(chunk.pieces, [*kept, memory], chunk.guidance), context_block)
            if request.fixed + estimate_tokens(message) > self.max_prompt_tokens:
                break
            kept.append(memory)
        return kept

    def _user_message(self, chunk: _Chunk, context_block: str) -> tuple[str, dict[str, Any]]:
        """The request's user message, and what its labels stand for."""
        labels: dict[str, Any] = {"turns": {}, "facts": {}, "artifacts": {}}
        memory_lines = []
        for i, memory in enumerate(chunk.memories, 1):
            label = f"M{i}"
            labels["artifacts" if memory.type == "artifact" else "facts"][label] = memory
            memory_lines.append(_render_memory(label, memory))
        turn_lines = []
        for i, piece in enumerate(chunk.pieces, 1):
            labels["turns"][f"T{i}"] = piece.turn
            turn_lines.append(_render_piece(f"T{i}", piece))
        parts = []
        if context_block:
            parts.append("## Earlier turns (context only)\n" + context_block)
        if chunk.guidance:
            parts.append(chunk.guidance)
        parts.append("## Stored memories\n" + ("\n".join(memory_lines) if memory_lines else "(none)"))
        parts.append("## Turns to extract from\n" + "\n".join(turn_lines))
        return "\n\n".join(parts), labels

    def _extract_chunk(self, chunk: _Chunk, context_block: str, request: _Request) -> tuple[Any, dict, list]:
        user, labels = self._user_message(chunk, context_block)
        out, notes = self._ask(request, user, labels)
        return out, labels, notes

    def _collect(self, result: Extraction, out: ExtractionOut, labels: dict[str, Any]) -> None:
        turns: dict[str, Turn] = labels["turns"]

        def sources(numbers: list[int]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(turns[f"T{n}"].event_id for n in numbers))

        for fact in out.facts:
            first = turns[f"T{fact.turns[0]}"]
            target = labels["facts"][fact.memory].id if fact.memory else None
            valid_at = None
            if fact.valid_at:
                day = date.fromisoformat(fact.valid_at)
                valid_at = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            result.facts.append(FactCandidate(
                text=fact.text, fact_type=fact.fact_type, source_event_ids=sources(fact.turns),
                source_role=first.role, valid_at=valid_at, key=_normal_key(fact.key),
                repeats=target if fact.action == "repeats" else None,
                supersedes=target if fact.action == "supersedes" else None,
            ))
        for art in getattr(out, "artifacts", ()):
            result.artifacts.append(ArtifactCandidate(
                title=art.title.strip(), rationale=art.rationale.strip(), content=art.content,
                source_event_ids=sources(art.turns),
                revises=labels["artifacts"][art.revises].id if art.revises else None,
            ))

    # ------------------------------------------------------------------ episodes
    def episode(self, turns: Sequence[Turn]) -> EpisodeCandidate | None:
        """A title and summary of a stretch of turns: one request, or one per chunk and then
        requests that combine the partial summaries until one is left."""
        if not turns:
            return None
        room = self.max_prompt_tokens - self._episode.fixed
        lines = [_render_piece("T", p) for chunk in self._pack(turns, room) for p in chunk]
        while True:
            groups = self._group_lines(lines, room)
            outs = [out for out, _ in self._map(lambda g: self._ask(self._episode, "\n".join(g), {}), groups)]
            if len(outs) == 1:
                out = outs[0]
                break
            lines = [f"[Part {i}] {o.title}: {o.summary}" for i, o in enumerate(outs, 1)]
        start = min(t.date for t in turns)
        end = max(t.date for t in turns)
        return EpisodeCandidate(title=out.title.strip(), summary=out.summary.strip(), started_at=start,
                                ended_at=end, source_event_ids=tuple(dict.fromkeys(t.event_id for t in turns)))

    @staticmethod
    def _group_lines(lines: list[str], room: int) -> list[list[str]]:
        groups: list[list[str]] = []
        used = 0
        for line in lines:
            cost = estimate_tokens(line) + 1
            if groups and used + cost <= room:
                groups[-1].append(line)
                used += cost
            else:
                groups.append([line])
                used = cost
        if len(groups) > 1 and all(len(g) == 1 for g in groups):
            # Every line fills a request alone: cut the lines so that pairs fit and the loop shrinks.
            half = max(1, room * 3 // 2 - 10)
            return LLMExtractor._group_lines([line.encode()[:half].decode("utf-8", "ignore") for line in lines],
                                             room)
        return groups

    # ------------------------------------------------------------------ one request, repaired once
    def _ask(self, request: _Request, user: str, labels: dict[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
        """The validated answer to one request, and the notes of what in it was bent to fit."""
        messages = [{"role": "system", "content": request.system}, {"role": "user", "content": user}]
        schema = strict_schema(request.model) if self.mode == "json_schema" else None
        name, model = request.name, request.model
        answer = self.provider.chat(self.model, messages, mode=self.mode, schema=schema, schema_name=name,
                                    max_tokens=self.max_output_tokens, temperature=self.temperature)
        try:
            return self._parse(answer.content, answer.finish_reason, model, labels)
        except _Invalid as first:
            # The repair request must fit the budget too: the error is cut to the reserve if
            # need be, and the rejected answer is shown as far as the rest of the room allows.
            spent = sum(estimate_tokens(m["content"]) for m in messages) + \
                (estimate_tokens(json.dumps(schema)) if schema else 0)
            room = self.max_prompt_tokens - spent
            template = load_prompt("repair")
            error = str(first).encode()[: max(0, room - estimate_tokens(template) - 5) * 3].decode("utf-8", "ignore")
            repair = template.replace("{{error}}", error)
            room -= estimate_tokens(repair) + 5
            rejected = answer.content.encode()[: max(0, room) * 3].decode("utf-8", "ignore")
            if rejected:
                messages.append({"role": "assistant", "content": rejected})
            messages.append({"role": "user", "content": repair})
            record(llm_repairs=1)
            again = self.provider.chat(self.model, messages, mode=self.mode, schema=schema, schema_name=name,
                                       max_tokens=self.max_output_tokens, temperature=self.temperature)
            try:
                return self._parse(again.content, again.finish_reason, model, labels)
            except _Invalid as second:
                raise ExtractionFailed(f"the model's answer was unusable twice (asked to repair it once): "
                                       f"{second}") from None

    def _parse(self, content: str, finish_reason: str | None, model: type[M],
               labels: dict[str, Any]) -> tuple[M, list[tuple[str, str]]]:
        cut = (f" (the answer was cut off at the output limit, ENGRAM_LLM_MAX_OUTPUT_TOKENS="
               f"{self.max_output_tokens}; be more concise)") if finish_reason == "length" else ""
        text = _strip_fence(content.strip())
        if not text:
            raise _Invalid("the answer was empty" + cut)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _Invalid(f"the answer is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                           + cut) from None
        notes: list[tuple[str, str]] = []
        try:
            return model.model_validate(data, context={**labels, "notes": notes}), notes
        except ValidationError as exc:
            raise _Invalid(f"the answer does not match the schema: {_summarise(exc)}" + cut) from None

    # ------------------------------------------------------------------ fan-out
    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """Run `fn` over items, up to `concurrency` at once, each in a copy of the caller's
        context (so the job's usage meter sees every request)."""
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)),
                                thread_name_prefix="llm-chunk") as pool:
            futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
            return [f.result() for f in futures]
