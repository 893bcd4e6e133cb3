"""The data lifecycle from the command line, on the store itself (like `engram keys`):
`engram users erase`, `engram export`, `engram import`, `engram reindex`, `engram compact`. Each does what its
HTTP endpoint does, through the same operations (engram/lifecycle/); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from engram.errors import ServiceError


def add_lifecycle_commands(sub: Any, data_arg: Callable[[argparse.ArgumentParser], None],
                           run: Callable[[argparse.Namespace], int]) -> None:
    users = sub.add_parser("users", help="a user's data: erase it")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    erase = users_sub.add_parser("erase", help="erase everything of a user in an org (right to erasure)")
    erase.add_argument("user_id")
    erase.add_argument("--org", default="default", help="the org's id or name (default: default)")
    erase.add_argument("--compact", action="store_true",
                       help="then purge the files of what the delete left behind (engram compact)")
    data_arg(erase)
    users.set_defaults(func=run, lifecycle="erase")

    export = sub.add_parser("export", help="write a user's (or a conversation's) events and memories as JSON Lines")
    export.add_argument("--user", required=True, dest="user_id")
    export.add_argument("--conversation", dest="conv_id", help="only this conversation of the user")
    export.add_argument("--org", default="default", help="the org's id or name (default: default)")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    data_arg(export)
    export.set_defaults(func=run, lifecycle="export")

    imports = sub.add_parser("import", help="take an export back (ids kept; importing twice writes nothing twice)")
    imports.add_argument("file", help="an export (JSON Lines), or - for standard input")
    imports.add_argument("--org", default="default",
                         help="the org to import into: id or name, created if new (default: default)")
    data_arg(imports)
    imports.set_defaults(func=run, lifecycle="import")

    reindex = sub.add_parser("reindex", help="embed every memory again with the configured embedder (ENGRAM_EMBEDDER),"
                                             " beside the vectors in use; resumable; then switch")
    data_arg(reindex)
    reindex.set_defaults(func=run, lifecycle="reindex")

    compact = sub.add_parser("compact", help="purge deleted data from the store's files (VACUUM)")
    data_arg(compact)
    compact.set_defaults(func=run, lifecycle="compact")


def run_lifecycle(args: argparse.Namespace, settings: Any) -> int:
    from engram.lifecycle import Lifecycle
    from engram.runtime import embedder_name, lazy_embedder, open_store

    store = open_store(settings)
    try:
        lifecycle = Lifecycle(store, settings, lazy_embedder(settings), lambda: embedder_name(settings))
        try:
            if args.lifecycle == "compact":
                print(_fields(lifecycle.compact()))
                return 0
            if args.lifecycle == "reindex":
                return _reindex(store, settings)
            org_id = _org_id(store, args.org)
            if org_id is None and args.lifecycle == "import":  # as `engram keys create` does
                org_id = store.ensure_org(args.org).id
            if org_id is None:
                print(f"error: no org {args.org!r}", file=sys.stderr)
                return 1
            if args.lifecycle == "erase":
                erased = lifecycle.erase_user(org_id, args.user_id)
                print(f"erased user {args.user_id!r} of org {org_id}: {erased.events} events, "
                      f"{sum(erased.memories.values())} memories ({_fields(erased.memories) or 'none'}), "
                      f"{erased.jobs_deleted} jobs deleted, {erased.jobs_failed} unfinished jobs failed")
                if args.compact:
                    print(f"compacted: {_fields(lifecycle.compact())}")
            elif args.lifecycle == "export":
                return _export(lifecycle, org_id, args)
            else:
                return _import(lifecycle, org_id, args.file)
        except ServiceError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    finally:
        store.close()
    return 0


def _reindex(store: Any, settings: Any) -> int:
    from tqdm import tqdm

    from engram.pipeline import vector_space
    from engram.runtime import build_embedder, embedder_name

    name = embedder_name(settings)
    with tqdm(unit=" memories", desc=f"reindex ({name})", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        done = vector_space.reindex(store, name, lambda: build_embedder(settings, for_queries=True), progress)
    if not done.switched:
        print(f"nothing to do: the stored vectors are {name!r}'s")
        return 0
    resumed = f" (resumed after {done.resumed_after})" if done.resumed_after else ""
    print(f"reindexed: {done.embedded} memories embedded with {name!r} in {done.seconds:.1f} s{resumed}; "
          "the store now serves them (restart servers and workers configured with another embedder)")
    return 0


def _org_id(store: Any, name_or_id: str) -> str | None:
    org = store.get_org(name_or_id)
    if org is None:
        org = next((o for o in store.list_orgs() if o.name == name_or_id), None)
    return org.id if org else None


def _export(lifecycle: Any, org_id: str, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    records = 0
    with _output(args.output) as out, tqdm(unit=" records", desc="export", file=sys.stderr,
                                           disable=None) as bar:
        for chunk in lifecycle.export(org_id, args.user_id, args.conv_id):
            out.write(chunk)
            lines = chunk.count(b"\n")
            records += lines
            bar.update(lines)
    print(f"exported {records - 2} records", file=sys.stderr)  # without the header and end lines
    return 0


def _import(lifecycle: Any, org_id: str, file: str) -> int:
    from tqdm import tqdm

    source = sys.stdin.buffer if file == "-" else open(file, "rb")
    total = None if file == "-" else Path(file).stat().st_size
    importer = lifecycle.importer(org_id)
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="import", file=sys.stderr, disable=None) as bar:
            for line in source:
                importer.add(line)
                if importer.ready:
                    importer.flush()
                bar.update(len(line))
            report = importer.finish()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    print(f"imported: {report.events_created} events and {report.memories_created} memories created; "
          f"{report.events_existing} events and {report.memories_existing} memories were already here"
          + (f"; {report.memories_embedded} vectors made again" if report.memories_embedded else ""))
    if not report.complete:
        print("warning: the export has no end line: it may have been cut short", file=sys.stderr)
        return 3
    return 0


@contextmanager
def _output(path: str | None) -> Iterator[Any]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        yield f


def _fields(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())
