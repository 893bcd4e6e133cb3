"""Promotion prompts: the guidance an org, role or team gives the llm extractor (docs/design.md,
"Onboarding records").

With a model configured (ENGRAM_LLM_BASE_URL and ENGRAM_LLM_MODEL) the prompt is asked of it,
from the record's `focus` (prompts/promotion.md). Without one — or when the model fails — it is
built from `focus` by a fixed template, and `prompt_meta` says so: `{"generator": "template",
"llm": false, …}`. A prompt is never said to come from a model that did not write it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from engram.config import Settings
from engram.domain.records import iso, utcnow
from engram.llm.usage import metering

log = logging.getLogger("engram.onboarding")

TEMPLATE_VERSION = "focus-v1"
MAX_PROMPT_CHARS = 8000
_AUDIENCE = {"org": "the organisation {name}", "role": "people in the role {name}", "team": "the team {name}"}


def template_prompt(kind: str, name: str, focus: str) -> str:
    """The prompt built from `focus` without a model (TEMPLATE_VERSION names this wording)."""
    audience = _AUDIENCE[kind].format(name=name)
    return (f"What matters to {audience}: {' '.join(focus.split()).rstrip('.')}. "
            f"When the conversation touches on this, remember those facts in particular, with the details that "
            f"make them useful later (names, numbers, dates, decisions). Facts outside this focus are still "
            f"remembered when they matter to the person speaking. Never record what the conversation does not say.")


@dataclass(frozen=True, slots=True)
class WrittenPrompt:
    text: str
    meta: dict[str, Any]
    usage: dict[str, int]  # provider requests and tokens spent on it (none for the template)


def manual_meta() -> dict[str, Any]:
    """`prompt_meta` of a prompt a caller set by hand."""
    return {"generator": "manual", "llm": False, "generated_at": iso(utcnow())}


class PromptWriter:
    """Writes a record's promotion prompt from its focus: by the model when one is configured."""

    def __init__(self, settings: Settings, provider: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.model = settings.llm_model if settings.llm_base_url and settings.llm_model else None
        self._provider_factory = provider or self._default_provider
        self._provider: Any = None

    def _default_provider(self) -> Any:
        from engram.runtime import build_llm_provider  # assembling parts is the runtime's

        return build_llm_provider(self.settings)

    def write(self, kind: str, name: str, focus: str) -> WrittenPrompt:
        at = iso(utcnow())
        base = {"template": TEMPLATE_VERSION, "focus_chars": len(focus), "generated_at": at}
        if self.model is None:
            return WrittenPrompt(template_prompt(kind, name, focus),
                                 {"generator": "template", "llm": False, "reason": "no model is configured", **base},
                                 {})
        with metering() as usage:
            try:
                text = self._ask(kind, name, focus)
            except Exception as exc:  # the model failed: say so, and build it the other way
                log.warning("the model could not write the %s prompt of %r (%s); using the template", kind, name, exc)
                return WrittenPrompt(template_prompt(kind, name, focus),
                                     {"generator": "template", "llm": False, "reason": "the model failed",
                                      "llm_error": str(exc)[:300], **base}, usage.snapshot())
        return WrittenPrompt(text, {"generator": "llm", "llm": True, "model": self.model, "generated_at": at,
                                    "focus_chars": len(focus)}, usage.snapshot())

    def _ask(self, kind: str, name: str, focus: str) -> str:
        from engram.pipeline.extract.llm import load_prompt

        if self._provider is None:
            self._provider = self._provider_factory()
        s = self.settings
        schema = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"],
                  "additionalProperties": False}
        user = f"Who it is for: {_AUDIENCE[kind].format(name=name)}\nTheir focus: {focus.strip()}"
        answer = self._provider.chat(self.model, [{"role": "system", "content": load_prompt("promotion")},
                                                  {"role": "user", "content": user}],
                                     mode=s.llm_structured_output, schema=schema, schema_name="promotion_prompt",
                                     max_tokens=min(1024, s.llm_max_output_tokens), temperature=s.llm_temperature)
        text = answer.content.strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        try:
            parsed = json.loads(text)
            text = parsed["prompt"] if isinstance(parsed, dict) else text
        except (ValueError, KeyError):
            pass  # plain text is a prompt too
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the model's answer holds no prompt")
        return text.strip()[:MAX_PROMPT_CHARS]
