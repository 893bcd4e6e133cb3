"""Hostile configuration: every bad setting stops start-up with a message naming it, never a
traceback and never a value that passes here only to fail later, at run time.

Unit tests of `load_settings`, then a few end-to-end ones that run the real `engram` command
(each fails before any model loads, so the whole file takes a few seconds).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, get_args

import pytest

from engram.config import (
    ENV_SETTINGS, NOT_SETTINGS, NOT_SETTINGS_PREFIXES, ConfigError, Limits, Settings, load_settings,
    log_level_from_env,
)
from engram.domain.records import utcnow

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def load(tmp_path: Path, **env: str) -> Settings:
    """Settings from exactly this environment, on a data directory of the test's own."""
    return load_settings(env={"ENGRAM_DATA_DIR": str(tmp_path / "data"), **env})


def refused(tmp_path: Path, name: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **env)
    message = str(info.value)
    assert message.startswith(name), message
    return message


def _numeric(model: type[Any]) -> list[tuple[str, type]]:
    out = []
    for name, field in model.model_fields.items():
        kinds = {a for a in (field.annotation, *get_args(field.annotation)) if a in (int, float)}
        if kinds and field.annotation is not bool:
            out.append((name, kinds.pop()))
    return out


def _largest(name: str) -> float:
    return next(m.le for m in Settings.model_fields[name].metadata if getattr(m, "le", None) is not None)


NUMBERS = _numeric(Settings) + _numeric(Limits)
FLOATS = [name for name, kind in NUMBERS if kind is float]


# ---------------------------------------------------------------------------- log level
@pytest.mark.parametrize("value", ["debug", "Info", "WARNING", " error ", "critical"])
def test_log_level_is_a_setting_of_any_case(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, ENGRAM_LOG_LEVEL=value).log_level == value.strip().upper()
    assert log_level_from_env({"ENGRAM_LOG_LEVEL": value}) == value.strip().upper()


@pytest.mark.parametrize("value", ["abc", "", "10", "warn"])
def test_a_bad_log_level_names_the_setting(tmp_path: Path, value: str) -> None:
    message = refused(tmp_path, "ENGRAM_LOG_LEVEL", ENGRAM_LOG_LEVEL=value)
    assert "must be DEBUG, INFO, WARNING, ERROR or CRITICAL" in message
    with pytest.raises(ConfigError, match="^ENGRAM_LOG_LEVEL"):
        log_level_from_env({"ENGRAM_LOG_LEVEL": value})


def test_log_level_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "engram.toml").write_text('log_level = "warning"\n')
    assert load(tmp_path, ENGRAM_CONFIG=str(tmp_path / "engram.toml")).log_level == "WARNING"


# ---------------------------------------------------------------------------- numbers
def test_the_audit_found_the_durations() -> None:
    assert {"dedup_window_s", "idempotency_ttl_s", "lease_timeout_s", "episode_idle_s", "retry_base_s",
            "wait_budget_s", "llm_timeout_s", "llm_retry_base_s", "llm_retry_max_wait_s"} <= set(FLOATS)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e308"])
@pytest.mark.parametrize("name", FLOATS)
def test_no_float_setting_takes_a_non_finite_or_huge_value(tmp_path: Path, name: str, value: str) -> None:
    refused(tmp_path, f"ENGRAM_{name.upper()}", **{f"ENGRAM_{name.upper()}": value})


@pytest.mark.parametrize("name", [name for name, _ in NUMBERS])
def test_every_number_has_an_upper_bound(tmp_path: Path, name: str) -> None:
    message = refused(tmp_path, f"ENGRAM_{name.upper()}", **{f"ENGRAM_{name.upper()}": str(10 ** 30)})
    assert "less than or equal" in message, message


@pytest.mark.parametrize("name, largest, too_large, too_small", [
    ("ENGRAM_DEDUP_WINDOW_S", "3600", "3600.5", "-1"),
    ("ENGRAM_IDEMPOTENCY_TTL_S", "2592000", "2592001", "-1"),
    ("ENGRAM_LEASE_TIMEOUT_S", "86400", "86401", "0.5"),
    ("ENGRAM_EPISODE_IDLE_S", "2592000", "2592001", "0.5"),
    ("ENGRAM_WAIT_BUDGET_S", "300", "301", "-1"),
    ("ENGRAM_RETRY_BASE_S", "3600", "3601", "-1"),
    ("ENGRAM_LLM_TIMEOUT_S", "3600", "3601", "0"),
    ("ENGRAM_LLM_RETRY_BASE_S", "60", "61", "-1"),
    ("ENGRAM_LLM_RETRY_MAX_WAIT_S", "3600", "3601", "-1"),
    ("ENGRAM_EPISODE_EVERY_TURNS", "1000000", "1000001", "0"),
    ("ENGRAM_EMBEDDING_DIMENSIONS", "16000", "16001", "0"),
    ("ENGRAM_LLM_MAX_OUTPUT_TOKENS", "1000000", "1000001", "255"),
    ("ENGRAM_MAX_BODY_BYTES", str(100 * 1024 * 1024), str(100 * 1024 * 1024 + 1), "0"),
    ("ENGRAM_MAX_ID_CHARS", "320", "321", "0"),
    ("ENGRAM_MAX_CONTENT_CHARS_X", "200000", "200001", "0"),
    ("ENGRAM_WORKERS", "64", "65", "-1"),
    ("ENGRAM_WORKER_NICE", "19", "20", "-1"),
    ("ENGRAM_DB_POOL_SIZE", "200", "201", "1"),
])
def test_bounds(tmp_path: Path, name: str, largest: str, too_large: str, too_small: str) -> None:
    load(tmp_path, **{name: largest})
    assert f"(got '{too_large}')" in refused(tmp_path, name, **{name: too_large})
    refused(tmp_path, name, **{name: too_small})


def test_the_largest_durations_still_make_datetimes(tmp_path: Path) -> None:
    """What the service and the worker compute from each duration, at its largest."""
    env = {f"ENGRAM_{name.upper()}": str(_largest(name)) for name in FLOATS}
    env["ENGRAM_MAX_ATTEMPTS"] = "3"
    settings = load(tmp_path, **env)
    now = utcnow()
    for seconds in (settings.dedup_window_s, settings.idempotency_ttl_s, settings.episode_idle_s,
                    settings.lease_timeout_s, settings.retry_base_s * 2 ** (settings.max_attempts - 2) * 1.5):
        now - timedelta(seconds=seconds)
        now + timedelta(seconds=seconds)


def test_retries_cannot_back_off_past_a_datetime(tmp_path: Path) -> None:
    # 2^98 s before the last attempt: worker.py's utcnow() + timedelta(...) would overflow.
    message = refused(tmp_path, "ENGRAM_MAX_ATTEMPTS", ENGRAM_MAX_ATTEMPTS="100")
    assert "ENGRAM_RETRY_BASE_S" in message
    assert load(tmp_path, ENGRAM_MAX_ATTEMPTS="100", ENGRAM_RETRY_BASE_S="0").max_attempts == 100
    assert load(tmp_path, ENGRAM_MAX_ATTEMPTS="22").max_attempts == 22  # 2^20 s x 1.5: some 18 days
    refused(tmp_path, "ENGRAM_MAX_ATTEMPTS", ENGRAM_MAX_ATTEMPTS="23")


def test_workers_from_the_flag_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ENGRAM_WORKERS \(--workers\): .*\(got -1\)"):
        load_settings(env={}, data_dir=str(tmp_path / "d"), workers=-1)
    refused(tmp_path, "ENGRAM_WORKERS", ENGRAM_WORKERS="1.5")


def test_base_urls_must_be_http(tmp_path: Path) -> None:
    for name in ("ENGRAM_LLM_BASE_URL", "ENGRAM_EMBEDDING_BASE_URL"):
        refused(tmp_path, name, **{name: "localhost:8000/v1"})
        refused(tmp_path, name, **{name: "http://"})
        load(tmp_path, **{name: "https://api.example.com/v1"})


def test_a_bad_value_never_shows_a_secret(tmp_path: Path) -> None:
    message = refused(tmp_path, "ENGRAM_DATABASE_URL", ENGRAM_DATABASE_URL="mysql://me:hunter2@db/engram")
    assert "hunter2" not in message and "mysql://me:***@db/engram" in message


# ---------------------------------------------------------------------------- names
@pytest.mark.parametrize("name, value, suggestion", [
    ("ENGRAM_WORKER", "2", "ENGRAM_WORKERS"),
    ("ENGRAM_EXTRACTER", "llm", "ENGRAM_EXTRACTOR"),
    ("ENGRAM_DEDUP_WINDOW", "60", "ENGRAM_DEDUP_WINDOW_S"),
    ("ENGRAM_Workers", "2", "ENGRAM_WORKERS"),
    ("ENGRAM_BASE_URI", "http://x", "ENGRAM_BASE_URL"),
    ("ENGRAM_LIMITS", "{}", None),  # the file's [limits] table; in the environment each limit has its own name
    ("ENGRAM_ZZZ_QQQ", "1", None),
])
def test_an_unknown_engram_variable_stops_start_up(tmp_path: Path, name: str, value: str, suggestion: str | None) -> None:
    message = refused(tmp_path, name, **{name: value})
    assert "unknown setting" in message
    if suggestion:
        assert message.endswith(f"did you mean {suggestion}?"), message
    else:
        assert "did you mean" not in message


def test_every_unknown_variable_is_named_at_once(tmp_path: Path) -> None:
    message = refused(tmp_path, "ENGRAM_EXTRACTER", ENGRAM_WORKER="2", ENGRAM_EXTRACTER="llm")
    assert "ENGRAM_WORKER: unknown setting; did you mean ENGRAM_WORKERS?" in message


def test_variables_that_are_not_settings_pass(tmp_path: Path) -> None:
    (tmp_path / "engram.toml").write_text("")
    env = {name: "x" for name in NOT_SETTINGS}
    env.update(ENGRAM_CONFIG=str(tmp_path / "engram.toml"), ENGRAM_BASE_URL="http://127.0.0.1:8420",
               ENGRAM_TEST_SOMETHING_NEW="1", ENGRAM_BENCH_SOMETHING_NEW="1", ENGRAM_FUZZ_SEED="1")
    assert load(tmp_path, **env).workers == 1


def test_every_engram_name_in_the_repository_is_a_setting_or_allowed() -> None:
    """A name written anywhere here (code, tests, benchmarks, docs) that is neither a setting
    nor on config.NOT_SETTINGS would stop the server that finds it in its environment."""
    names: dict[str, str] = {}
    files = [REPO / "README.md", *(p for d in ("engram", "tests", "bench", "scripts", "docs")
                                   for p in (REPO / d).rglob("*") if p.is_file())]
    for path in files:
        if path.suffix not in ("", ".py", ".md", ".toml", ".sh", ".txt", ".yml", ".yaml", ".json") \
                or path.name == Path(__file__).name or "__pycache__" in path.parts:
            continue
        for name in re.findall(r"(?<![A-Za-z0-9_])ENGRAM_[A-Z0-9_]+", path.read_text(errors="replace")):
            if not name.endswith("_"):  # a prefix (ENGRAM_TEST_), or a table's `ENGRAM_X` / `_Y` shorthand
                names.setdefault(name, str(path.relative_to(REPO)))
    stray = {n: where for n, where in names.items()
             if n not in ENV_SETTINGS and n not in NOT_SETTINGS and not n.startswith(NOT_SETTINGS_PREFIXES)}
    assert not stray, f"add these to engram/config.py NOT_SETTINGS, or fix their spelling: {stray}"
    assert {"ENGRAM_BASE_URL", "ENGRAM_API_KEY", "ENGRAM_TEST_DATABASE_URL", "ENGRAM_CONFIG"} <= set(names)


# ---------------------------------------------------------------------------- the file
def write_config(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "engram.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_a_well_formed_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'workers = 2\ndedup_window_s = 5\nlease_timeout_s = 2.5\nmigrate_on_start = true\n'
                                  'content_filter_patterns = ["secret-[0-9]+"]\nmax_id_chars = 100\n'
                                  '[limits]\nmax_status_ids = 50\n')
    settings = load(tmp_path, ENGRAM_CONFIG=path, ENGRAM_WORKERS="3")
    assert (settings.workers, settings.dedup_window_s, settings.lease_timeout_s) == (3, 5.0, 2.5)
    assert settings.content_filter_patterns == ("secret-[0-9]+",)
    assert (settings.limits.max_id_chars, settings.limits.max_status_ids) == (100, 50)


@pytest.mark.parametrize("text, expected", [
    ("worker = 2\n", "worker: unknown setting; did you mean workers?"),
    ("WORKERS = 2\n", "WORKERS: unknown setting; did you mean workers?"),
    ("[limits]\nmax_body = 10\n", "[limits] max_body: unknown setting; did you mean max_body_bytes?"),
    ("limits = 5\n", "limits must be a table"),
    ("workers = true\n", "ENGRAM_WORKERS (workers in "),
    ("workers = 2.5\n", "must be an integer"),
    ('dedup_window_s = "60"\n', "ENGRAM_DEDUP_WINDOW_S (dedup_window_s in "),
    ('migrate_on_start = "yes"\n', "must be true or false"),
    ("log_level = 10\n", "ENGRAM_LOG_LEVEL (log_level in "),
    ("content_filter_patterns = [1]\n", "must be a list of strings"),
    ("[limits]\nmax_body_bytes = true\n", "ENGRAM_MAX_BODY_BYTES (max_body_bytes in "),
    ("[limits]\nmax_id_chars = 1000\n", "ENGRAM_MAX_ID_CHARS (max_id_chars in "),
    ("data_dir = 5\n", "ENGRAM_DATA_DIR (data_dir in "),
    ("dedup_window_s = inf\n", "ENGRAM_DEDUP_WINDOW_S (dedup_window_s in "),
    ("workers = 1000\n", "ENGRAM_WORKERS (workers in "),
    ("llm_api_key = 12345\n", "a value not shown here"),
])
def test_a_bad_file_names_the_setting(tmp_path: Path, text: str, expected: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ENGRAM_CONFIG=path)
    assert expected in str(info.value)
    assert "12345" not in str(info.value)


@pytest.mark.parametrize("make", ["directory", "missing", "not utf-8", "not toml"])
def test_an_unreadable_config_file_names_engram_config(tmp_path: Path, make: str) -> None:
    path = {"directory": str(tmp_path), "missing": str(tmp_path / "nope.toml"),
            "not utf-8": write_config(tmp_path, b"\xff\xfeworkers = 1\n"),
            "not toml": write_config(tmp_path, "workers = = 1\n")}[make]
    refused(tmp_path, "ENGRAM_CONFIG", ENGRAM_CONFIG=path)


# ---------------------------------------------------------------------------- the data directory
def _data_dir_refused(data: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, data_dir=data)
    assert str(info.value).startswith("ENGRAM_DATA_DIR (--data): cannot"), str(info.value)
    assert reason in str(info.value)


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    _data_dir_refused(str(tmp_path / "passwd"), "it is a file, not a directory")
    with pytest.raises(ConfigError, match=r"^ENGRAM_DATA_DIR \(--data\): cannot use"):
        load_settings(env={"ENGRAM_DATA_DIR": str(tmp_path / "passwd")})


def test_a_data_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    _data_dir_refused(str(tmp_path / "file" / "data"), "is a file, not a directory")
    _data_dir_refused(str(tmp_path / "file" / "a" / "b"), "cannot create")


@pytest.mark.skipif(IS_ROOT, reason="root writes to a 0555 directory regardless; the next test covers the check")
def test_a_read_only_data_dir(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        _data_dir_refused(str(ro), "not writable")
        _data_dir_refused(str(ro / "sub"), "not writable")
    finally:
        ro.chmod(0o755)


def test_a_data_dir_not_writable_by_this_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro and mode & os.W_OK else real(p, mode))
    _data_dir_refused(str(ro), f"cannot write to {ro}: not writable")
    _data_dir_refused(str(ro / "sub"), f"cannot create {ro / 'sub'}: {ro} is not writable")


def test_an_empty_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ENGRAM_DATA_DIR \(--data\): must not be empty"):
        load_settings(env={}, data_dir="")
    refused(tmp_path, "ENGRAM_DATA_DIR", ENGRAM_DATA_DIR="")


def test_a_usable_data_dir_is_not_created_by_loading(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=str(tmp_path / "a" / "b"))
    assert settings.data_dir == tmp_path / "a" / "b" and not (tmp_path / "a").exists()


def test_an_existing_store_passes(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "engram.db").execute("CREATE TABLE t(x)").connection.close()
    load_settings(env={}, data_dir=str(tmp_path / "data"))


@pytest.mark.parametrize("make, reason", [
    ("under a file", "is a file, not a directory"),
    ("a directory", "it is a directory, not a file"),
    ("not sqlite", "it is not an SQLite database"),
    ("empty path", "needs the path of a database file"),
    ("memory", "needs the path of a database file"),
])
def test_a_sqlite_url_to_an_unusable_place(tmp_path: Path, make: str, reason: str) -> None:
    (tmp_path / "file").write_text("root:x:0:0\n")
    (tmp_path / "dir").mkdir()
    path = {"under a file": tmp_path / "file" / "engram.db", "a directory": tmp_path / "dir",
            "not sqlite": tmp_path / "file", "empty path": "", "memory": ":memory:"}[make]
    message = refused(tmp_path, "ENGRAM_DATABASE_URL", ENGRAM_DATABASE_URL=f"sqlite:///{path}")
    assert reason in message


def test_a_bad_content_filter_pattern_is_a_config_error(tmp_path: Path) -> None:
    from engram.runtime import build_content_filter

    with pytest.raises(ConfigError, match="^ENGRAM_CONTENT_FILTER_PATTERNS"):
        build_content_filter(load(tmp_path, ENGRAM_CONTENT_FILTER_PATTERNS="ok\n([unclosed"))


def test_the_store_refuses_a_place_that_went_bad_after_loading(tmp_path: Path) -> None:
    """The checks above run at load time; opening the store says the same if the place changed since."""
    from engram.runtime import DataDirLock, open_store

    settings = load_settings(env={}, data_dir=str(tmp_path / "data"))
    (tmp_path / "data").write_text("now a file")
    with pytest.raises(ConfigError, match=r"^ENGRAM_DATA_DIR \(--data\): cannot"):
        open_store(settings)
    with pytest.raises(ConfigError, match=r"^ENGRAM_DATA_DIR \(--data\): cannot"):
        DataDirLock(tmp_path / "data").acquire()


# ---------------------------------------------------------------------------- the real command
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    return {**env, **extra}


def run_all(commands: list[tuple[list[str], dict[str, str]]]) -> list[subprocess.CompletedProcess[str]]:
    """Run `engram …` commands side by side (each fails fast; together they take well under a second)."""
    procs = [subprocess.Popen([sys.executable, "-m", "engram", *args], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args, env in commands]
    results = []
    for (args, _), proc in zip(commands, procs):
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def assert_config_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, (result.args, result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr, (result.args, result.stderr)


def test_a_bad_log_level_stops_every_command(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path / "data")]
    env = _clean_env(ENGRAM_LOG_LEVEL="abc")
    commands = [["serve", "--port", str(_free_port()), *data], ["worker", *data], ["migrate", *data],
                ["keys", "list", *data], ["search", "anything", "--url", "http://127.0.0.1:9"]]
    for result in run_all([(c, env) for c in commands]):
        assert_config_error(result, "engram: configuration error: ENGRAM_LOG_LEVEL: ")
    assert not (tmp_path / "data").exists()


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    for result in run_all([(["serve", "--port", port, "--data", str(tmp_path / "data")], _clean_env())
                           for port in ("70000", "0")]):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "argument --port" in result.stderr and "is not a port number (1-65535)" in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("port, ok", [("1", True), ("65535", True), ("8420", True), ("0", False), ("-1", False),
                                      ("65536", False), ("70000", False), ("http", False)])
def test_port_range(port: str, ok: bool) -> None:
    from engram.cli import build_parser

    parser = build_parser()
    if ok:
        assert parser.parse_args(["serve", "--port", port]).port == int(port)
    else:
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["serve", "--port", port])
        assert info.value.code == 2


def test_bad_settings_stop_serve_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    data = ["--data", str(tmp_path / "data")]
    serve = ["serve", "--port", str(_free_port())]
    cases = [
        ((serve + data, _clean_env(ENGRAM_WORKER="2")), "ENGRAM_WORKER: unknown setting; did you mean ENGRAM_WORKERS?"),
        ((serve + data, _clean_env(ENGRAM_DEDUP_WINDOW_S="1e308")), "ENGRAM_DEDUP_WINDOW_S: "),
        ((serve + data, _clean_env(ENGRAM_IDEMPOTENCY_TTL_S="inf")), "ENGRAM_IDEMPOTENCY_TTL_S: "),
        ((serve + data + ["--workers", "-1"], _clean_env()), "ENGRAM_WORKERS (--workers): "),
        ((serve + data, _clean_env(ENGRAM_CONFIG=str(tmp_path))), "ENGRAM_CONFIG: cannot read"),
        ((serve + ["--data", ""], _clean_env()), "ENGRAM_DATA_DIR (--data): must not be empty"),
        ((serve + data, _clean_env(ENGRAM_DATABASE_URL=f"sqlite:///{tmp_path / 'passwd' / 'x.db'}")),
         "ENGRAM_DATABASE_URL: cannot use"),
    ]
    for result, (_, expected) in zip(run_all([c for c, _ in cases]), cases):
        assert_config_error(result, f"engram: configuration error: {expected}")
    assert not (tmp_path / "data").exists()


def test_an_unusable_data_dir_stops_every_store_command(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    env = _clean_env()
    commands = []
    for data in (str(tmp_path / "passwd"), str(tmp_path / "passwd" / "data")):
        for command in (["serve", "--port", str(_free_port())], ["worker"], ["migrate"],
                        ["keys", "create", "--org", "acme"], ["keys", "list"], ["keys", "revoke", "k1"]):
            if data.endswith("passwd") or command[0] in ("serve", "migrate"):
                commands.append(([*command, "--data", data], env))
    commands.append((["migrate"], _clean_env(ENGRAM_DATA_DIR=str(tmp_path / "passwd"))))
    for result in run_all(commands):
        assert_config_error(result, "engram: configuration error: ENGRAM_DATA_DIR (--data): cannot ")
    assert (tmp_path / "passwd").read_text() == "root:x:0:0\n"


def test_client_commands_work_with_the_client_variables_set(tmp_path: Path) -> None:
    """The client commands read ENGRAM_BASE_URL and ENGRAM_API_KEY, and no server setting: they
    reach the server those name, with that key (a stand-in that knows no job)."""
    seen: list[str | None] = []

    class NoSuchJob(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"detail": {"code": "job_not_found", "message": "no such job"}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoSuchJob)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = _clean_env(ENGRAM_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}", ENGRAM_API_KEY="ek_x",
                         ENGRAM_LOG_LEVEL="info")
        [result] = run_all([(["jobs", "j1"], env)])
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1 and "no such job" in result.stderr, result.stderr
    assert "configuration error" not in result.stderr and "Traceback" not in result.stderr
    assert seen == ["Bearer ek_x"]
    # ...and a store command accepts them beside its own settings.
    [migrate] = run_all([(["migrate", "--data", str(tmp_path / "data")], env)])
    assert migrate.returncode == 0, migrate.stderr
