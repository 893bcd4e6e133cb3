"""Which sentences of an assistant's turn are worth remembering.

An assistant's acknowledgement ("Noted — Thai food."), pleasantry ("Great choice!") or echo
of what the user just said ("I'll remember that your favourite food is pad see ew") is not
a memory: the user's own statement already is. What the assistant *contributes* is kept,
attributed to the assistant: a recommendation, a plan, an answer, a commitment. So a
sentence of an assistant turn is dropped when, after its acknowledgement opener, it

* is nothing but an acknowledgement or a short label ("Noted — Thai food.", "Got it: Denver");
* talks about remembering what was said ("I'll remember that…", "I've made a note…");
* mostly repeats the words of the turn it answers (three in five of its content words).
"""

from __future__ import annotations

import re

from engram.pipeline.extract.rules.text import content_words, singular

_ACK = re.compile(
    r"^(?:noted|got it|gotcha|understood|sure(?: thing)?|okay|ok|alright|all right|great|perfect|of course|absolutely|"
    r"certainly|will do|sounds (?:good|great|lovely|delicious)|good to know|thanks|thank you|i see|right|awesome|lovely|"
    r"nice|wonderful|excellent|fantastic|(?:good|great|excellent) (?:choice|pick|idea)|yum(?:my)?|delicious|"
    r"how (?:nice|lovely|wonderful|exciting)|that's (?:great|nice|wonderful|lovely|awesome|good to (?:know|hear))|"
    r"thanks for (?:sharing|letting me know|telling me)(?: that)?|thank you for (?:sharing|letting me know|telling me)(?: that)?)"
    r"\b[\s,.!:;…—–-]*",
    re.I,
)
_MEMORY_TALK = re.compile(
    r"^(?:i(?:'ll| will)|i(?:'ve| have)|let me)\s+(?:remember|note|make a note|keep (?:that|this|it) in mind|save)\b"
    r"|^(?:i(?:'ve| have))\s+(?:noted|saved|remembered|made a note)\b|^noted that\b",
    re.I,
)
LABEL_WORDS = 4  # an acknowledged remainder this short is a label, not a statement
ECHO_SHARE = 0.6


def contribution(sentence: str, answered: str, names: frozenset[str]) -> str | None:
    """What a sentence of an assistant turn says of its own, without its acknowledgement
    opener ("Sounds good, I'll book…" -> "I'll book…"); None when nothing. `answered` is
    the text of the turn it answers (the nearest earlier turn by someone else)."""
    rest, acknowledged = sentence.strip(), False
    for _ in range(3):
        stripped = _ACK.sub("", rest, count=1)
        if stripped == rest:
            break
        rest, acknowledged = stripped.strip(), True
    if not re.search(r"[^\W_]", rest):
        return None
    if acknowledged and len(rest.split()) < LABEL_WORDS:
        return None
    if _MEMORY_TALK.search(rest):
        return None
    mine = set(map(singular, content_words(rest, names)))
    if mine and answered:
        heard = set(map(singular, content_words(answered, names)))
        if len(mine & heard) >= ECHO_SHARE * len(mine):
            return None
    return rest[:1].upper() + rest[1:]
