"""Numbered schema migrations, one folder per dialect: `<dialect>/NNNN_name.sql`.

`engram migrate` applies, in order, every file a database has not recorded in its
`engram_migrations` table, each in one transaction with its record. PostgreSQL applies them
when asked (or at start with ENGRAM_MIGRATE_ON_START=true) and otherwise refuses to start on
an older schema; the embedded SQLite store applies them whenever a process opens it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

RECORD_TABLE = "engram_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def migrations(dialect: str) -> list[Migration]:
    """The numbered SQL files of `migrations/<dialect>/`, in order."""
    found = []
    for entry in resources.files("engram.store.migrations").joinpath(dialect).iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def pending(dialect: str, applied: set[int]) -> list[Migration]:
    return [m for m in migrations(dialect) if m.version not in applied]
