"""The ``RulesExtractor`` facade: a batch of turns in, facts, artifacts and episodes out."""

from __future__ import annotations

from collections.abc import Sequence

from engram.domain.extraction import EpisodeCandidate, Extraction, Turn
from engram.pipeline.extract.rules import episodes
from engram.pipeline.extract.rules.artifacts import code_artifact, document_artifact
from engram.pipeline.extract.rules.assistant import contribution
from engram.pipeline.extract.rules.facts import add_fact, caption_fact, question_fact, sentence_fact
from engram.pipeline.extract.rules.speakers import Lazy, Speaker, answered_turn, name_tokens, other_speaker
from engram.pipeline.extract.rules.turns import parse_turn, prose_sentences
from engram.pipeline.extract.rules.vocabulary import SILENT_ROLES


class RulesExtractor:
    """Offline, deterministic extractor. See the package docstring for the rules."""

    name = "rules"

    def __init__(self, *, summary_chars: int = 600, summary_sentences: int = 5) -> None:
        self.summary_chars = summary_chars
        self.summary_sentences = summary_sentences

    def extract(
        self,
        turns: Sequence[Turn],
        *,
        extract_artifacts: bool,
        context: Sequence[Turn] = (),
    ) -> Extraction:
        """Facts (always) and artifacts (with ``extract_artifacts``) from ``turns``.

        ``context`` holds earlier turns of the same conversation; it only helps to know
        who the other speaker is and which words are names. It never yields memories.
        """
        result = Extraction()
        timeline = list(context) + list(turns)
        names = name_tokens(timeline)
        seen: dict[str, int] = {}  # fact text (casefolded) -> index in result.facts

        for offset, turn in enumerate(turns):
            index = len(context) + offset
            speaker = Speaker.of(turn)
            parsed = parse_turn(turn.content)

            if extract_artifacts:
                for block in parsed.code:
                    art = code_artifact(turn, block, speaker)
                    if art:
                        result.artifacts.append(art)
                doc = document_artifact(turn, parsed.prose, speaker)
                if doc:
                    result.artifacts.append(doc)

            if (turn.role or "").lower() in SILENT_ROLES:
                continue
            other = Lazy(lambda i=index: other_speaker(timeline, i))  # only needed for "you"
            sentences = prose_sentences(parsed.prose)
            from_assistant = (turn.role or "").lower() == "assistant"
            if from_assistant:  # its acknowledgements and echoes are no memory
                answered = answered_turn(timeline, index)
                sentences = [c for c in (contribution(s, answered, names) for s in sentences) if c]
            facts = [sentence_fact(s, turn, speaker, other, names) for s in sentences]
            if not from_assistant:  # what an assistant asks back is no memory
                facts += [question_fact(s, turn, speaker, other, names) for s in sentences]
            facts += [caption_fact(c, turn, speaker) for c in parsed.captions]
            for fact in facts:
                if fact is not None:
                    add_fact(result.facts, seen, fact)
        return result

    def episode(self, turns: Sequence[Turn]) -> EpisodeCandidate | None:
        """An extractive summary of a stretch of turns; None when nothing was said."""
        return episodes.episode(turns, summary_chars=self.summary_chars, summary_sentences=self.summary_sentences)
