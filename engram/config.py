"""Settings in one place: read from the environment (and an optional TOML file), validated once.

Every setting is `ENGRAM_<NAME>` in the environment, or `<name>` in the file named by
`ENGRAM_CONFIG` (environment wins). A bad value stops start-up with a message naming it:
a value of the wrong type or out of its range, an `ENGRAM_*` variable or file key that is
no setting at all (a typo must not be silently ignored), and a data directory or SQLite file
engram could not use. Every number has an upper bound as well as a lower one: a value that
passed here must never fail later, at run time, in the middle of a request or a job.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
import types
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DAY_S = 24 * 3600.0
MiB = 1024 * 1024

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_LEVEL_RULE = "must be DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case"

# `ENGRAM_*` variables that are not settings of the server, so that an unknown one can stop
# start-up (a misspelt setting is an error, as it is in the file) while these pass. Each is
# read elsewhere, by the code named beside it. A new `ENGRAM_*` name must be added here or
# be a setting: tests/test_config.py checks every one written in the repository.
NOT_SETTINGS: Mapping[str, str] = {
    "ENGRAM_CONFIG": "the TOML file of settings, read by load_settings below",
    "ENGRAM_BASE_URL": "the server of engram.Client and of `engram ingest|search|jobs|status`",
    "ENGRAM_API_KEY": "the API key of engram.Client and of the client commands",
    "ENGRAM_TEST_DATABASE_URL": "tests/conftest.py: a PostgreSQL server of your own for the test suite",
    "ENGRAM_TEST_OPEN_KEY": "tests/test_memsy_client.py: the key the memsy client sends in open mode",
    "ENGRAM_TEST_PROCESS_TIMEOUT": "tests/test_memsy_client.py: how long a client process may take",
    "ENGRAM_BENCH_CACHE": "bench/_dataset.py: where the benchmarks keep their data sets",
}
# The test suite's and the benchmarks' own variables live under these prefixes, never a setting
# (ENGRAM_FUZZ_*: tests/test_fuzz.py's examples, seed, timeout and report file).
NOT_SETTINGS_PREFIXES = ("ENGRAM_TEST_", "ENGRAM_BENCH_", "ENGRAM_FUZZ_")

# Settings that a command-line flag also sets; a message about one names both.
FLAGS = {"data_dir": "--data", "workers": "--workers"}

# The longest wait before a job's next attempt (ENGRAM_RETRY_BASE_S doubling per attempt, up
# to ENGRAM_MAX_ATTEMPTS): beyond this a job looks pending for good, and far beyond it the
# retry time no longer fits a datetime at all.
MAX_RETRY_DELAY_S = 30 * DAY_S


class ConfigError(Exception):
    """A setting has a value engram cannot run with; the message names the setting."""


def _seconds(default: float, *, le: float, gt: float | None = None, ge: float | None = None) -> Any:
    """A duration: finite (no inf or nan), bounded on both sides."""
    return Field(default, gt=gt, ge=ge, le=le, allow_inf_nan=False)


class Limits(BaseModel):
    """§7's limits. The upper bounds keep every accepted request storable and answerable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A body is read and parsed whole in memory (its JSON objects take several times its size).
    max_body_bytes: int = Field(5 * MiB, gt=0, le=100 * MiB)
    # An import's body is read a line at a time (never whole), so it may be far larger.
    max_import_bytes: int = Field(4 * 1024 * MiB, gt=0, le=1024 * 1024 * MiB)
    max_items_per_call: int = Field(1000, gt=0, le=100_000)
    # Content becomes memory text with a PostgreSQL tsvector (at most 1 MB each): 200k chars stay under it.
    max_content_chars_m: int = Field(8000, gt=0, le=200_000)
    max_content_chars_x: int = Field(32000, gt=0, le=200_000)
    # Two ids (user and conversation) share PostgreSQL B-tree index rows, at most 2704 bytes each:
    # 2 x 320 characters x 4 bytes of UTF-8 leave room for the org id beside them.
    max_id_chars: int = Field(256, gt=0, le=320)
    max_metadata_keys: int = Field(64, gt=0, le=10_000)
    max_metadata_chars: int = Field(4096, gt=0, le=1_000_000)  # copied onto every memory of the request
    max_status_ids: int = Field(500, gt=0, le=100_000)
    # A search's text (docs/design.md; the v1.0 contract's own bound is the default). At most a
    # family-X message: a query is read whole by the lexical side and the query embedder.
    max_query_chars: int = Field(4000, gt=0, le=32_000)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path("./engram-data")
    database_url: str | None = None  # default: sqlite under data_dir
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    extractor: Literal["rules", "llm"] = "rules"
    embedder: Literal["local", "static", "openai"] = "local"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    embedding_base_url: str | None = None
    embedding_model: str | None = None
    # The llm extractor and the openai embedder (docs/llm.md explains each one).
    llm_timeout_s: float = _seconds(60.0, gt=0, le=3600)  # one HTTP request to the provider
    llm_max_retries: int = Field(3, ge=0, le=10)  # per call, for timeouts, 429 and 5xx
    llm_retry_base_s: float = _seconds(1.0, ge=0, le=60)  # first backoff; doubles per retry, full jitter
    llm_retry_max_wait_s: float = _seconds(30.0, ge=0, le=3600)  # cap on one wait, Retry-After included
    llm_structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    # Chunking budget per call (estimated); the largest context windows are some 2M tokens.
    llm_max_prompt_tokens: int = Field(6000, ge=2500, le=2_000_000)
    llm_max_output_tokens: int = Field(4096, ge=256, le=1_000_000)  # sent as max_tokens
    llm_temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False)
    llm_concurrency: int = Field(1, ge=1, le=32)  # chunk calls of one job in flight at once
    llm_recall_limit: int = Field(20, ge=0, le=200)  # stored memories shown to the model per chunk
    embedding_api_key: str | None = None  # default: ENGRAM_LLM_API_KEY
    # Ask the server for this size (if it supports it); pgvector's vector type holds 16000 at most.
    embedding_dimensions: int | None = Field(None, ge=1, le=16_000)
    embedding_batch_size: int = Field(64, ge=1, le=2048)
    workers: int = Field(1, ge=0, le=64)  # worker processes beside the API
    # Workers that `engram serve` starts run at this niceness, so that the CPU-heavy pipeline
    # yields the processor to the API whenever both want it (0 = same priority as the API).
    worker_nice: int = Field(10, ge=0, le=19)
    wait_budget_s: float = _seconds(30.0, ge=0, le=300)
    # Slow clients (engram/api/connections.py): a request's line and headers must arrive within
    # this from its first byte (a new connection's, too); a body may pause at most this long.
    http_header_timeout_s: float = _seconds(10.0, ge=0.1, le=300)
    http_body_timeout_s: float = _seconds(30.0, ge=0.1, le=3600)
    # uvicorn's own: an idle kept-alive connection is closed after this.
    http_keepalive_timeout_s: float = _seconds(5.0, ge=0.1, le=300)
    # The SQLite store keeps the window in the API's memory, an entry per event accepted in it;
    # it is there for re-sent events, which come within seconds or minutes.
    dedup_window_s: float = _seconds(60.0, ge=0, le=3600)
    idempotency_ttl_s: float = _seconds(DAY_S, ge=0, le=30 * DAY_S)
    # Renewed every third of itself while a job runs: below a second renewals cannot keep up;
    # above a day a crashed worker's job waits that long to run again.
    lease_timeout_s: float = _seconds(60.0, ge=1, le=DAY_S)
    max_attempts: int = Field(5, ge=1, le=100)
    retry_base_s: float = _seconds(1.0, ge=0, le=3600)  # and see MAX_RETRY_DELAY_S
    episode_every_turns: int = Field(40, ge=1, le=1_000_000)
    episode_idle_s: float = _seconds(900.0, ge=1, le=30 * DAY_S)
    content_filter_patterns: tuple[str, ...] = ()
    embed_threads: int = Field(1, ge=1, le=64)
    # The API's query embedder: a search waits for it, so it may use every core (the
    # workers run niced, ENGRAM_WORKER_NICE). 0: the machine's cores, at most 4.
    query_embed_threads: int = Field(0, ge=0, le=64)
    # Where the local embedder keeps the graph it derives at first start (default
    # $XDG_CACHE_HOME/engram, else ~/.cache/engram); shared by every process and data directory.
    model_cache: Path | None = None
    # Searches running at once in an API process; more wait their turn on the event loop. A
    # search keeps a core busy (reading rows, ranking), so as many as there are cores leave the
    # accept path none: on 2 cores, bursts of 20 first searches at 1M memories raised the
    # accept p99 from 64 ms to 340-450 ms with 2 or 40 at once, and not at all with 1
    # (docs/benchmarks.md). 0: one less than the machine's cores, at least 1.
    search_concurrency: int = Field(0, ge=0, le=256)
    max_keys_per_org: int = Field(1000, ge=1, le=1_000_000)  # the admin API's cap (key_limit_reached)
    max_groups_per_org: int = Field(100, ge=1, le=100_000)  # active groups an org may hold (groups_quota_exceeded)
    # Token buckets (engram/ratelimit.py); 0 = off. Per key, and for a whole org.
    rate_limit_requests_per_min: int = Field(120_000, ge=0, le=1_000_000_000)
    rate_limit_events_per_min: int = Field(3_000_000, ge=0, le=1_000_000_000)
    rate_limit_org_requests_per_min: int = Field(0, ge=0, le=1_000_000_000)
    rate_limit_org_events_per_min: int = Field(0, ge=0, le=1_000_000_000)
    # API processes sharing the limits (several `engram serve` on one PostgreSQL): each enforces
    # its share, so together they admit at most the limit.
    rate_limit_processes: int = Field(1, ge=1, le=1024)
    # engram/metrics.py: a directory every engram process of this machine shares (else `serve`
    # makes a private one for itself and its workers); `json`: one JSON line per request.
    metrics: bool = True  # GET /metrics and the request histogram (false: neither)
    # engram/webhooks.py
    webhook_allow_private: bool = False
    webhook_max_attempts: int = Field(10, ge=1, le=100)
    webhook_retry_base_s: float = _seconds(2.0, gt=0, le=3600)
    webhook_timeout_s: float = _seconds(10.0, gt=0, le=300)
    metrics_dir: Path | None = None
    log_format: Literal["text", "json"] = "text"
    db_pool_size: int = Field(10, ge=2, le=200)  # PostgreSQL connections per process (at most)
    migrate_on_start: bool = False  # PostgreSQL: apply pending migrations at start (else `engram migrate`)
    limits: Limits = Limits()

    @field_validator("data_dir", "model_cache", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
            return value.strip().upper()
        if isinstance(value, str):
            raise ValueError(_LOG_LEVEL_RULE)
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        path = value[len("sqlite:///"):] if value.startswith("sqlite:///") else None
        if path is not None and (not path.strip() or path == ":memory:" or path.startswith("file:")):
            raise ValueError("sqlite:/// needs the path of a database file (sqlite:////abs/engram.db)")
        return value

    @field_validator("llm_base_url", "embedding_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(("http://", "https://")) and len(value.split("://", 1)[1]) > 0):
            raise ValueError("must be an http:// or https:// URL (e.g. http://127.0.0.1:8000/v1)")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'engram.db').resolve()}"


_LIMIT_FIELDS = set(Limits.model_fields)
_LIST_FIELDS = {"content_filter_patterns"}
# The names an `ENGRAM_*` variable may have: every setting, and every limit (not `limits` itself).
ENV_SETTINGS = frozenset(f"ENGRAM_{name.upper()}" for name in (set(Settings.model_fields) - {"limits"}) | _LIMIT_FIELDS)


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from file < environment < explicit overrides (e.g. CLI flags)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}  # setting -> "file" | "env" | "flag", for messages
    config_file = env.get("ENGRAM_CONFIG")
    if config_file:
        for name, value in _read_file(config_file).items():
            raw[name] = value
            sources.update(dict.fromkeys([name, *(value if name == "limits" else ())], "file"))
    unknown = []
    for key, value in env.items():
        if not key.startswith("ENGRAM_") or key in NOT_SETTINGS or key.startswith(NOT_SETTINGS_PREFIXES):
            continue
        if key not in ENV_SETTINGS:
            unknown.append(key)
            continue
        name = key[len("ENGRAM_"):].lower()
        raw[name] = value
        sources[name] = "env"
    if unknown:
        raise ConfigError("; ".join(_unknown(key, sorted(ENV_SETTINGS | set(NOT_SETTINGS))) for key in sorted(unknown)))
    for name, value in overrides.items():
        if value is not None:
            raw[name] = value
            sources[name] = "flag"

    def label(name: str) -> str:
        return _label(name, sources.get(name), config_file)

    limits = {k: raw.pop(k) for k in list(raw) if k in _LIMIT_FIELDS}
    if limits:
        raw["limits"] = {**dict(raw.get("limits", {})), **limits}
    for name in _LIST_FIELDS & raw.keys():
        if isinstance(raw[name], str):
            raw[name] = tuple(p for p in raw[name].split("\n") if p.strip())
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        # ("workers",), ("limits", "max_body_bytes"), ("content_filter_patterns", 0): the setting's name
        name = next((str(p) for p in reversed(first["loc"]) if isinstance(p, str)), "settings")
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{label(name)}: {message} (got {_shown(name, first['input'])})") from exc
    _check_cross_field(settings)
    _check_storage(settings, label("database_url" if settings.database_url else "data_dir"))
    return settings


def log_level_from_env(env: Mapping[str, str] | None = None) -> str:
    """ENGRAM_LOG_LEVEL alone, checked as load_settings checks it: for the client commands,
    which read no other setting (the server's settings are no business of theirs)."""
    env = os.environ if env is None else env
    value = env.get("ENGRAM_LOG_LEVEL", "INFO")
    if value.strip().upper() not in LOG_LEVELS:
        raise ConfigError(f"ENGRAM_LOG_LEVEL: {_LOG_LEVEL_RULE} (got {value!r})")
    return value.strip().upper()


def storage_setting(settings: Settings) -> str:
    """The setting that names the embedded store's place, for messages about it."""
    return "ENGRAM_DATABASE_URL" if settings.database_url else f"ENGRAM_DATA_DIR ({FLAGS['data_dir']})"


# ------------------------------------------------------------------------------------ helpers
_FILE_NAMES = (set(Settings.model_fields) | _LIMIT_FIELDS)


def _label(name: str, source: str | None, config_file: str | None) -> str:
    env_name = f"ENGRAM_{name.upper()}"
    if source == "file":
        return f"{env_name} ({name} in {config_file})"
    return f"{env_name} ({FLAGS[name]})" if name in FLAGS else env_name


def _unknown(name: str, known: list[str]) -> str:
    """`name: unknown setting`, with the nearest known name (compared without the shared
    ENGRAM_ prefix, which would make every pair look alike)."""
    prefix = "ENGRAM_" if name.startswith("ENGRAM_") else ""
    stems = {k[len(prefix):]: k for k in known if k.startswith(prefix)}
    close: list[str] = []
    for spelling in dict.fromkeys((name, name.upper(), name.lower())):
        close = close or difflib.get_close_matches(spelling[len(prefix):], list(stems), n=1, cutoff=0.6)
    hint = f"; did you mean {stems[close[0]]}?" if close else ""
    return f"{name}: unknown setting{hint}"


def redact_url(url: str) -> str:
    """The database URL without its password, for logs and messages."""
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)


def _shown(name: str, value: Any) -> str:
    """A bad value, quoted in a message: never a key, never a database password."""
    if name.endswith("api_key"):
        return "a value not shown here"
    if name == "database_url" and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


def _read_file(config_file: str) -> dict[str, Any]:
    """The TOML file's settings, each of the TOML type its setting has (`workers = true` is no number)."""
    where = f"ENGRAM_CONFIG ({config_file})"
    try:
        text = Path(config_file).read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"ENGRAM_CONFIG: cannot read {config_file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - _FILE_NAMES)
    if unknown:
        raise ConfigError(f"{where}: " + "; ".join(_unknown(k, sorted(_FILE_NAMES)) for k in unknown))
    for name, value in data.items():
        fields = Limits.model_fields if name in _LIMIT_FIELDS else Settings.model_fields
        if name == "limits":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: limits must be a table ([limits]), got {value!r}")
            extra = sorted(set(value) - _LIMIT_FIELDS)
            if extra:
                raise ConfigError(f"{where}: [limits] " + "; ".join(_unknown(k, sorted(_LIMIT_FIELDS)) for k in extra))
            for key, item in value.items():
                _check_type(key, item, Limits.model_fields[key].annotation, f"ENGRAM_{key.upper()} ({key} in {config_file})")
            continue
        _check_type(name, value, fields[name].annotation, f"ENGRAM_{name.upper()} ({name} in {config_file})")
    return data


def _check_type(name: str, value: Any, annotation: Any, label: str) -> None:
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    expected, ok = _TOML_TYPES.get(annotation, ("a string", _is_str))
    if get_origin(annotation) is tuple:
        expected, ok = "a list of strings (or one string, a pattern per line)", _is_str_list
    if not ok(value):
        raise ConfigError(f"{label}: must be {expected} (got {_shown(name, value)})")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


_TOML_TYPES: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
}


def _check_cross_field(settings: Settings) -> None:
    if settings.extractor == "llm":
        for name in ("llm_base_url", "llm_model"):
            if not getattr(settings, name):
                raise ConfigError(f"ENGRAM_{name.upper()}: required when ENGRAM_EXTRACTOR=llm")
    if settings.embedder == "openai":
        for name in ("embedding_base_url", "embedding_model"):
            if not getattr(settings, name):
                raise ConfigError(f"ENGRAM_{name.upper()}: required when ENGRAM_EMBEDDER=openai")
    # engram/pipeline/worker.py waits retry_base_s * 2^(attempt-1) * (0.5..1.5) before the next
    # attempt; the last retry follows attempt max_attempts - 1.
    longest = settings.retry_base_s * 2.0 ** max(0, settings.max_attempts - 2) * 1.5
    if longest > MAX_RETRY_DELAY_S:
        raise ConfigError(
            f"ENGRAM_MAX_ATTEMPTS: {settings.max_attempts} attempts with ENGRAM_RETRY_BASE_S={settings.retry_base_s:g} "
            f"would wait up to {longest:.3g} s before the last one, more than {MAX_RETRY_DELAY_S:.0f} s (30 days); "
            f"lower one or the other")


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_storage(settings: Settings, setting: str) -> None:
    """The embedded store's directory and file must be usable: found now, with the setting's
    name, rather than as a traceback from the first mkdir or connect. Nothing is created here."""
    url = settings.resolved_database_url
    if not url.startswith("sqlite:///"):
        return
    problem = _storage_problem(Path(url[len("sqlite:///"):]))
    if problem:
        raise ConfigError(f"{setting}: {problem}")


def _storage_problem(db: Path) -> str | None:
    directory = db.parent
    probe = directory  # the directory, or its nearest ancestor that exists
    try:
        while True:
            try:
                info = probe.stat()
                break
            except (FileNotFoundError, NotADirectoryError):
                if probe.parent == probe:
                    return f"cannot create {directory}"
                probe = probe.parent
    except ValueError as exc:  # e.g. an embedded NUL byte
        return f"cannot use {str(directory)!r}: {exc}"
    except OSError as exc:
        return f"cannot use {directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        if probe == directory:
            return f"cannot use {directory}: it is a file, not a directory"
        return f"cannot create {directory}: {probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == directory:
            return f"cannot write to {directory}: not writable (its permissions, or a read-only file system)"
        return f"cannot create {directory}: {probe} is not writable (its permissions, or a read-only file system)"
    if probe != directory:
        return None  # created at start, empty
    for path in (db, directory / "engram.lock"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot use {path}: {exc.strerror or exc}"
        if stat.S_ISDIR(info.st_mode):
            return f"cannot use {path}: it is a directory, not a file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"cannot write to {path}: not writable (its permissions, or a read-only file system)"
        if path == db and info.st_size > 0:
            try:
                with open(path, "rb") as handle:
                    header = handle.read(len(SQLITE_HEADER))
            except OSError as exc:
                return f"cannot read {path}: {exc.strerror or exc}"
            if header != SQLITE_HEADER:
                return f"cannot use {path}: it is not an SQLite database"
    return None
