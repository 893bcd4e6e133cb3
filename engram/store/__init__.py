"""Where engram keeps everything: one set of store rules over two SQL dialects.

- base.py        the store protocol every backend implements, and the small rules shared as code
- relational.py  the rules, written once: accept, the queue, commit, deletes, revisions, usage
- dialect.py     what a dialect gives the rules (binding, locks, notifications, memory rows, index)
- sql.py         named queries: queries/<dialect>.sql (the rules' statements, same names in both)
                 and queries/<dialect>_only.sql (what only that dialect has)
- codec.py       rows to records, for both dialects
- sqlite*.py     the embedded dialect: group commit, dedup window, vector cache, lexicon, filters
- postgres*.py   the scale-out dialect: advisory locks, LISTEN/NOTIFY, pgvector, full text, filters
- migrations/    numbered schema files per dialect, applied by `engram migrate`
"""
