"""The `engram` command: serve, worker, migrate, keys; users erase, export, import, compact
(engram/cli_lifecycle.py); and (engram/cli_client.py) ingest, search, jobs, status."""

from __future__ import annotations

import argparse
import gc
import json
import ipaddress
import logging
import os
import signal
import sys
import threading
from typing import Any, Sequence

from engram import __version__
from engram.config import ConfigError, Settings, load_settings, log_level_from_env

log = logging.getLogger("engram")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Every setting, checked (a bad one raises ConfigError naming it), and logging at its level.
    The commands that touch the store call this before anything heavy is imported or started."""
    data = getattr(args, "data", None)
    settings = load_settings(data_dir=data, **extra)  # "" is refused, not taken for "unset"
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    if settings.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())
    return settings


class JsonLines(logging.Formatter):
    """ENGRAM_LOG_FORMAT=json: each record one JSON object on one line — time, level, logger,
    process, message, and a record's own `fields` (an access-log line's request id, org, route,
    status and latency)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                                "level": record.levelname, "logger": record.name, "pid": record.process,
                                "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _port(text: str) -> int:
    """--port: 1-65535. Not 0: the kernel would pick a port this process never reports."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args, workers=0 if args.no_workers else args.workers)
    from engram.metrics_dir import remove_private, use_directory

    # Before prometheus-client is imported (by the app): it picks its multiprocess mode then.
    metrics_path = use_directory(settings.metrics_dir, private=True) if settings.metrics else None
    try:
        return _serve(args, settings)
    finally:
        remove_private(metrics_path, settings.metrics_dir)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from engram.api.app import create_app
    from engram.api.connections import GuardedHttpProtocol
    from engram.auth import DEFAULT_ORG, Authenticator
    from engram.runtime import (
        DataDirLock, WorkerSupervisor, build_content_filter, build_extractor, embedder_name, lazy_embedder, open_store,
        redact_url,
    )
    from engram.pipeline import vector_space
    from engram.service import Service

    # The event loop shares the GIL with the group-commit thread; by default a thread that
    # wants it may wait up to 5 ms for the holder to yield, which shows up in the accept
    # path's tail latency. Requests here are short, so hand the GIL over sooner.
    sys.setswitchinterval(0.0005)
    build_content_filter(settings)  # a bad pattern stops start-up, not the first job
    if settings.extractor == "llm":
        build_extractor(settings)  # e.g. a prompt budget too small: here, not in every worker that restarts
    lock = DataDirLock.of(settings)
    if lock is not None:
        lock.acquire()
    store = open_store(settings)
    if lock is not None:
        recovered = store.recover_abandoned_leases()
        if recovered:
            log.warning("handed back %d job(s) left running by a previous server", recovered)
    store.ensure_org(DEFAULT_ORG)
    # Another embedder's vectors: the server serves, but not search, until `engram reindex`.
    other = vector_space.other_embedder(store, embedder_name(settings))
    if other is not None:
        log.warning("search is unavailable and jobs wait: %s", vector_space.mismatch(other, embedder_name(settings)))

    env = dict(os.environ)
    env["ENGRAM_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["ENGRAM_DATABASE_URL"] = settings.database_url
    supervisor = WorkerSupervisor(settings.workers, env)
    supervisor.start()
    service = Service(store, settings, lazy_embedder(settings), on_accept=supervisor.notify,
                      worker_health=supervisor.health)
    authenticator = Authenticator(store, open_mode_allowed=_is_loopback(args.host))
    app = create_app(service, authenticator)
    from engram.mcp.http import mount as mount_mcp

    mount_mcp(app, authenticator, args.host)  # the MCP tools at /mcp, behind the same keys
    # Everything built so far lives as long as the process: move it out of the cyclic
    # collector's sight, so that its full passes walk only what requests create.
    gc.collect()
    gc.freeze()
    if args.warm:
        threading.Thread(target=service.warm_up, daemon=True).start()
    from engram.webhooks import Dispatcher

    dispatcher = Dispatcher(store, settings).start()  # the outbox's deliveries, off every request's path
    log.info("engram %s serving on http://%s:%d (data: %s, workers: %d)", __version__, args.host, args.port,
             redact_url(settings.resolved_database_url), settings.workers)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for whoever
    # handled it before. With the default action there, the process would die on the spot and
    # none of the clean-up below would run (workers not waited for, the store not closed, the
    # metrics directory left behind). Here it ends the process as a normal exit, after them.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                    http=GuardedHttpProtocol.configured(header_timeout_s=settings.http_header_timeout_s,
                                                        body_timeout_s=settings.http_body_timeout_s),
                    timeout_keep_alive=settings.http_keepalive_timeout_s)
    finally:
        dispatcher.close()
        supervisor.stop()
        store.close()
        if lock is not None:
            lock.release()
    return 0


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from engram.metrics_dir import use_directory

    if settings.metrics:
        use_directory(settings.metrics_dir, private=False)  # its server's directory, or the machine's shared one

    from engram.pipeline import vector_space
    from engram.pipeline.worker import Worker
    from engram.runtime import build_pipeline, embedder_name, open_store
    from engram.store.base import WORK_READY

    store = open_store(settings)
    other = vector_space.other_embedder(store, embedder_name(settings))
    if other is not None:  # it waits, and starts on its own once `engram reindex` is done
        log.warning("jobs wait: %s", vector_space.mismatch(other, embedder_name(settings)))
    worker = Worker(store, build_pipeline(settings, store), settings)
    stop = threading.Event()
    # Where the store can say so (PostgreSQL's NOTIFY), work accepted by any API process on
    # any machine wakes this worker at once; otherwise it polls (and a supervising server
    # wakes it through stdin).
    store.subscribe(lambda kind, _payload: worker.wake.set() if kind == WORK_READY else None)
    if args.supervised and settings.worker_nice and hasattr(os, "nice"):
        os.nice(settings.worker_nice)
    if args.supervised:
        threading.Thread(target=_follow_parent, args=(worker, stop), name="parent-pipe", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stop.set(), worker.wake.set()))
    worker.run(stop)
    store.close()
    return 0


def _follow_parent(worker: Any, stop: threading.Event) -> None:
    """A byte on stdin wakes the worker; end-of-file (the server is gone) stops it."""
    stdin = sys.stdin.buffer
    while True:
        data = os.read(stdin.fileno(), 4096)
        if not data:
            stop.set()
            worker.wake.set()
            return
        worker.wake.set()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)

    from engram.pipeline import vector_space
    from engram.runtime import embedder_name, open_store, redact_url

    url = settings.resolved_database_url
    store = open_store(settings, migrate=True)
    try:
        other = vector_space.other_embedder(store, embedder_name(settings))
    finally:
        store.close()
    print(f"migrated {redact_url(url)}: the schema is up to date")
    if other is not None:
        print(f"note: {vector_space.mismatch(other, embedder_name(settings))}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings(args)

    from engram.admin import Admin
    from engram.auth import OPERATOR
    from engram.domain.records import parse_iso
    from engram.errors import ServiceError
    from engram.runtime import open_store

    store = open_store(settings)
    admin = Admin(store, settings)  # the admin API's core: the CLI is the server's operator
    try:
        if args.keys_command == "create":
            scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
            try:
                expires = parse_iso(args.expires) if args.expires else None
                org = store.ensure_org(args.org)
                key, secret = admin.create_key(OPERATOR, scopes, name=args.name or org.name, expires_at=expires,
                                               org_id=org.id)
            except (ValueError, ServiceError) as exc:
                print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
                return 2
            print(f"created key {key.id} for org {key.org_id} with scopes {','.join(key.scopes)}")
            print("store it now; it is shown only once:")
            print(secret)
        elif args.keys_command == "list":
            keys = store.list_keys(None)
            orgs = {o.id: o.name for o in store.list_orgs()}
            if args.org:
                keys = [k for k in keys if orgs.get(k.org_id) == args.org or k.org_id == args.org]
            print(f"{'id':<22} {'org':<16} {'prefix':<12} {'scopes':<18} {'created':<20} {'expires':<20} revoked")
            for k in keys:
                expires = "" if k.expires_at is None else f"{k.expires_at:%Y-%m-%d %H:%M:%S}"
                print(f"{k.id:<22} {orgs.get(k.org_id, k.org_id):<16} {k.prefix:<12} {','.join(k.scopes):<18} "
                      f"{k.created_at:%Y-%m-%d %H:%M:%S}  {expires:<20} "
                      f"{'' if k.revoked_at is None else f'{k.revoked_at:%Y-%m-%d %H:%M:%S}'}")
        elif args.keys_command == "revoke":
            try:
                admin.revoke_key(OPERATOR, args.key_id)
            except ServiceError:
                print(f"error: no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        store.close()
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from engram.cli_lifecycle import run_lifecycle

    return run_lifecycle(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engram", description="engram: long-term memory for AI agents")
    parser.add_argument("--version", action="version", version=f"engram {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="data directory of the embedded store (default ./engram-data, "
                                      "or ENGRAM_DATA_DIR; ENGRAM_DATABASE_URL overrides it)")

    serve = sub.add_parser("serve", help="run the API server with its worker processes")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8420, help="1-65535 (default 8420)")
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes, 0-64 (default ENGRAM_WORKERS or 1)")
    serve.add_argument("--no-workers", action="store_true",
                       help="API only: no pipeline workers here (run `engram worker` elsewhere on the same database)")
    serve.add_argument("--no-warm", dest="warm", action="store_false", help="load the query embedder on first search")
    data_arg(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one pipeline worker process")
    worker.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    data_arg(worker)
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="create or upgrade the store's schema")
    data_arg(migrate)
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it once, alone on the last line")
    create.add_argument("--org", required=True)
    create.add_argument("--scopes", default="read,write")
    create.add_argument("--name")
    create.add_argument("--expires", help="ISO-8601 time after which the key authenticates no one")
    data_arg(create)
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--org")
    data_arg(listing)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    data_arg(revoke)
    keys.set_defaults(func=cmd_keys)

    from engram.cli_lifecycle import add_lifecycle_commands  # users erase, export, import, compact: on the store

    add_lifecycle_commands(sub, data_arg, cmd_lifecycle)

    from engram.cli_client import add_client_commands  # ingest, search, jobs, status: talk to a server over HTTP

    add_client_commands(sub)

    from engram.mcp.stdio import add_command as add_mcp_command  # MCP over stdio, against a running server

    add_mcp_command(sub)
    return parser


STORE_COMMANDS = {"serve", "worker", "migrate", "keys", "users", "export", "import", "reindex", "compact"}  # read every setting


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in STORE_COMMANDS:
            # The client commands (engram/cli_client.py) talk HTTP: of the server's settings they
            # use only the log level. ENGRAM_BASE_URL and ENGRAM_API_KEY are theirs.
            logging.basicConfig(level=log_level_from_env(), format=LOG_FORMAT)
        return args.func(args)
    except ConfigError as exc:
        print(f"engram: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
