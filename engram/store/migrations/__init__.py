"""Numbered schema migrations. `postgres/NNNN_name.sql` files are applied in order, each once,
by `engram migrate` (or at start with ENGRAM_MIGRATE_ON_START=true); see store/postgres.py.
The embedded SQLite store keeps its schema in store/sqlite.py and upgrades itself at open."""
