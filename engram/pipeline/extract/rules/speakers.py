"""Who says a turn, and who "you" most likely is."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from engram.domain.extraction import Turn
from engram.pipeline.extract.rules.text import SPACES, cap_first, normalize, words
from engram.pipeline.extract.rules.vocabulary import ROLE_LABELS, SILENT_ROLES


@dataclass(frozen=True, slots=True)
class Speaker:
    label: str  # as it appears mid-sentence: "Caroline" / "the user"
    named: bool

    @classmethod
    def of(cls, turn: Turn) -> Speaker:
        name = SPACES.sub(" ", normalize(turn.name or "")).strip()[:60]
        if name:
            return cls(name, True)
        role = (turn.role or "").strip().lower()
        label = ROLE_LABELS.get(role) or (f"The {role}" if re.fullmatch(r"[a-z][a-z _-]{0,30}", role) else "The speaker")
        return cls(label[0].lower() + label[1:], False)

    @property
    def possessive(self) -> str:
        return f"{self.label}'s"

    @property
    def display(self) -> str:  # sentence-initial form
        return cap_first(self.label)

    @property
    def short(self) -> str:  # episode summary prefix: "Caroline" / "User"
        return self.label if self.named else cap_first(self.label.removeprefix("the "))


def _identity(turn: Turn) -> tuple[str, str]:
    return ((turn.name or "").strip().lower(), (turn.role or "").strip().lower())


def _by_others(timeline: Sequence[Turn], index: int, positions: Iterable[int]) -> Iterator[Turn]:
    """The turns at `positions` said by someone other than the speaker of turn `index`."""
    me = _identity(timeline[index])
    return (timeline[j] for j in positions if timeline[j].role not in SILENT_ROLES and _identity(timeline[j]) != me)


def other_speaker(timeline: Sequence[Turn], index: int) -> Speaker | None:
    """Who "you" most likely is: the nearest turn, earlier first, by someone else."""
    nearest = [*range(index - 1, -1, -1), *range(index + 1, len(timeline))]
    turn = next(_by_others(timeline, index, nearest), None)
    return Speaker.of(turn) if turn is not None else None


def answered_turn(timeline: Sequence[Turn], index: int) -> str:
    """The text of the turn a turn answers: the nearest earlier one by someone else."""
    turn = next(_by_others(timeline, index, range(index - 1, -1, -1)), None)
    return turn.content if turn is not None else ""


class Lazy:
    """Computes a value on first use (the other speaker is only needed for "you")."""

    __slots__ = ("_fn", "_done", "_value")

    def __init__(self, fn: Callable[[], Speaker | None]) -> None:
        self._fn, self._done, self._value = fn, False, None

    def get(self) -> Speaker | None:
        if not self._done:
            self._value, self._done = self._fn(), True
        return self._value


def name_tokens(turns: Iterable[Turn]) -> frozenset[str]:
    out: set[str] = set()
    for t in turns:
        if t.name:
            out.update(words(t.name))
    return frozenset(out)
