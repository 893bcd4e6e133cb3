"""Settings in one place: read from the environment (and an optional TOML file), validated once.

Every setting is `ENGRAM_<NAME>` in the environment, or `<name>` in the file named by
`ENGRAM_CONFIG` (environment wins). A bad value stops start-up with a message naming it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """A setting has a value engram cannot run with; the message names the setting."""


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(5 * 1024 * 1024, gt=0)
    max_items_per_call: int = Field(1000, gt=0)
    max_content_chars_m: int = Field(8000, gt=0)
    max_content_chars_x: int = Field(32000, gt=0)
    max_id_chars: int = Field(256, gt=0)
    max_metadata_keys: int = Field(64, gt=0)
    max_metadata_chars: int = Field(4096, gt=0)
    max_status_ids: int = Field(500, gt=0)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path("./engram-data")
    database_url: str | None = None  # default: sqlite under data_dir
    extractor: Literal["rules", "llm"] = "rules"
    embedder: Literal["local", "openai"] = "local"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    embedding_base_url: str | None = None
    embedding_model: str | None = None
    # The llm extractor and the openai embedder (docs/llm.md explains each one).
    llm_timeout_s: float = Field(60.0, gt=0)  # one HTTP request to the provider
    llm_max_retries: int = Field(3, ge=0, le=10)  # per call, for timeouts, 429 and 5xx
    llm_retry_base_s: float = Field(1.0, ge=0)  # first backoff; doubles per retry, full jitter
    llm_retry_max_wait_s: float = Field(30.0, ge=0)  # cap on one wait, Retry-After included
    llm_structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    llm_max_prompt_tokens: int = Field(6000, ge=2500)  # chunking budget per call (estimated)
    llm_max_output_tokens: int = Field(4096, ge=256)
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_concurrency: int = Field(1, ge=1, le=32)  # chunk calls of one job in flight at once
    llm_recall_limit: int = Field(20, ge=0, le=200)  # stored memories shown to the model per chunk
    embedding_api_key: str | None = None  # default: ENGRAM_LLM_API_KEY
    embedding_dimensions: int | None = Field(None, ge=1)  # ask the server for this size (if it supports it)
    embedding_batch_size: int = Field(64, ge=1, le=2048)
    workers: int = Field(1, ge=0, le=64)  # worker processes beside the API
    # Workers that `engram serve` starts run at this niceness, so that the CPU-heavy pipeline
    # yields the processor to the API whenever both want it (0 = same priority as the API).
    worker_nice: int = Field(10, ge=0, le=19)
    wait_budget_s: float = Field(30.0, ge=0, le=300)
    dedup_window_s: float = Field(60.0, ge=0)
    idempotency_ttl_s: float = Field(24 * 3600.0, ge=0)
    lease_timeout_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=100)
    retry_base_s: float = Field(1.0, ge=0)
    episode_every_turns: int = Field(40, ge=1)
    episode_idle_s: float = Field(900.0, gt=0)
    content_filter_patterns: tuple[str, ...] = ()
    embed_threads: int = Field(1, ge=1, le=64)
    # The API's query embedder: a search waits for it, so it may use every core (the
    # workers run niced, ENGRAM_WORKER_NICE). 0: the machine's cores, at most 4.
    query_embed_threads: int = Field(0, ge=0, le=64)
    db_pool_size: int = Field(10, ge=2, le=200)  # PostgreSQL connections per process (at most)
    migrate_on_start: bool = False  # PostgreSQL: apply pending migrations at start (else `engram migrate`)
    limits: Limits = Limits()

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'engram.db').resolve()}"


_LIMIT_FIELDS = set(Limits.model_fields)
_LIST_FIELDS = {"content_filter_patterns"}


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from file < environment < explicit overrides (e.g. CLI flags)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    config_file = env.get("ENGRAM_CONFIG")
    if config_file:
        try:
            raw.update(tomllib.loads(Path(config_file).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"ENGRAM_CONFIG: cannot read {config_file}: {exc}") from exc
    for key, value in env.items():
        if key.startswith("ENGRAM_") and key != "ENGRAM_CONFIG":
            name = key[len("ENGRAM_"):].lower()
            if name in Settings.model_fields or name in _LIMIT_FIELDS:
                raw[name] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})

    limits = {k: raw.pop(k) for k in list(raw) if k in _LIMIT_FIELDS}
    if limits:
        raw["limits"] = {**dict(raw.get("limits", {})), **limits}
    for name in _LIST_FIELDS & raw.keys():
        if isinstance(raw[name], str):
            raw[name] = tuple(p for p in raw[name].split("\n") if p.strip())
    unknown = set(raw) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"ENGRAM_{where.split('.')[-1].upper()}: {first['msg']}") from exc
    _check_cross_field(settings)
    return settings


def _check_cross_field(settings: Settings) -> None:
    if settings.extractor == "llm":
        for name in ("llm_base_url", "llm_model"):
            if not getattr(settings, name):
                raise ConfigError(f"ENGRAM_{name.upper()}: required when ENGRAM_EXTRACTOR=llm")
    if settings.embedder == "openai":
        for name in ("embedding_base_url", "embedding_model"):
            if not getattr(settings, name):
                raise ConfigError(f"ENGRAM_{name.upper()}: required when ENGRAM_EMBEDDER=openai")
