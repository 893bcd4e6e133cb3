"""The ``rules`` extractor: offline, deterministic, standard library only (SPEC §6.4).

What it does, turn by turn:

* **Facts.** Each turn is split into sentences. Small talk is dropped; a question with a
  topic ("How did you get into watercolor painting?") becomes "<Speaker> asked <other
  speaker>: <question>?" (``fact_type`` "question": the next turn often answers it in words
  that miss the topic, and search's turn context lifts the answer by it), other questions
  are dropped; every other sentence becomes one self-contained fact about its speaker:

  - first person is rewritten to the third person naming the speaker
    ("I moved to Lisbon" by Caroline -> "Caroline moved to Lisbon",
    "my sister" -> "Caroline's sister"); the speaker is ``turn.name`` when given,
    else "The user" / "The assistant";
  - sentences addressed to someone ("you", "your") are kept verbatim, attributed as
    "<Speaker> said to <other speaker>: ..." (the other speaker is looked up in the
    surrounding turns; guessing who "you" is inside the sentence is not safe);
  - other contentful sentences are kept verbatim as "<Speaker> said: ...", because in
    conversational memory almost every contentful turn matters;
  - relative dates are resolved against the turn's date and written into the text
    ("yesterday" -> "on 7 May 2023"; "last week" -> "in the week of 1 May 2023";
    "3 years ago" -> "3 years ago (2020)") and the first one sets ``valid_at``; without
    one, the first explicit date ("13 October 2023", "in May 2023", "in 2022", read by
    :mod:`engram.domain.dates`, the grammar search reads queries by) sets it;
  - ``fact_type`` and, for a few reliably recognisable single-valued attributes,
    ``key`` are picked by cue tables;
  - an image shared in chat (`` [shares: <caption>]``) becomes
    "<Speaker> shared an image of <caption>".

* **Artifacts** (only with ``extract_artifacts``): fenced code blocks, and long
  structured documents (lists / headings), kept verbatim.

* **Episodes** (:meth:`RulesExtractor.episode`, called by the worker when a
  conversation went idle or grew by N turns): a title from the dominant topic words
  and the date range, and an extractive summary of the most informative sentences.

Everything here is a pure function of its input: no clock, no randomness, no I/O.

The modules, one job each: ``vocabulary`` (the word tables), ``text`` (normalising,
splitting and tidying text), ``speakers`` (who said a turn, who "you" is), ``turns`` (a
turn's prose, captions and code), ``sentences`` (which sentences are worth a fact),
``person`` (first person to third), ``dates`` (relative dates resolved, explicit ones read
by :mod:`engram.domain.dates`), ``keys`` (fact types and attribute keys), ``facts`` (one
fact from one sentence), ``artifacts``, ``episodes``, and ``extractor`` (the facade).
"""

from __future__ import annotations

from engram.pipeline.extract.rules.extractor import RulesExtractor

__all__ = ["RulesExtractor"]
