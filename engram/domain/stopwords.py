"""The English stop words both stores' lexical sides leave out.

PostgreSQL's `english` text search configuration drops these words from documents and
queries (its `english.stop` file, which is the Snowball project's English stop word list).
The SQLite dialect scores BM25 itself (store/sqlite_lexicon.py); leaving out the same words,
in the query and in a document's length, makes both stores score a query alike, so a user
moved from one to the other (export, import) finds the same memories in the same order.
A stop word says nothing about which memory a query means ("where does the user live").
"""

from __future__ import annotations

ENGLISH_STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom
this that these those am is are was were be been being have has had having do does did
doing a an the and but if or because as until while of at by for with about against between
into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some
such no nor not only own same so than too very s t can will just don should now
""".split())
