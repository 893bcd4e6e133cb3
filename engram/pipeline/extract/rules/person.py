"""First person rewritten to the third, naming the speaker."""

from __future__ import annotations

import re

from engram.pipeline.extract.rules.speakers import Speaker
from engram.pipeline.extract.rules.vocabulary import ADVERBS, IRREGULAR_PAST, MODALS, NOT_A_VERB, word_set


ADVERB_ALT = "|".join(["no longer", *sorted(ADVERBS, key=len, reverse=True)])
_FIRST_PERSON_RE = re.compile(
    r"\b(?P<im>[Ii]'m|I am)\b"
    r"|\b(?P<ive>[Ii]'ve)\b"
    r"|\b(?P<id>[Ii]'d)\b(?P<id_had>(?=\s+(?:been|had|gone|done|seen|already|never|ever)\b))?"
    r"|\b(?P<ill>[Ii]'ll)\b"
    r"|\b(?P<i>I|i(?=\s+[a-z]))\b(?!['-])(?P<adv>(?:\s+(?:" + ADVERB_ALT + r"))*)(?:\s+(?P<verb>[A-Za-z][a-z']*))?"
    r"|\b(?P<we>[Ww]e)(?P<wec>'re|'ve|'ll|'d)?\b"
    r"|\b(?P<my>[Mm]y)\b"
    r"|\b(?P<mine>[Mm]ine)\b"
    r"|\b(?P<myself>[Mm]yself)\b"
    r"|\b(?P<ourselves>[Oo]urselves)\b"
    r"|\b(?P<our>[Oo]urs?)\b"
    r"|\b(?P<me>[Mm]e)\b(?!-)"
    r"|\b(?P<us>[Uu]s)\b(?!-)"
)
HAS_FIRST_PERSON = re.compile(r"\b(?:I|i(?=\s+[a-z])|[Ii]'[a-z]+)(?![\w-])|\b(?:[Mm]e|[Mm]y|[Mm]ine|[Mm]yself|[Ww]e|[Uu]s|[Oo]ur|[Oo]urs|[Oo]urselves)\b")
HAS_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself|yourselves|y'all|ya)\b", re.I)

_THIRD_PERSON = {"am": "is", "have": "has", "do": "does", "go": "goes", "don't": "doesn't",
                 "haven't": "hasn't", "dont": "doesn't", "havent": "hasn't", "be": "is", "ain't": "isn't"}
_NO_CONJUGATION = MODALS | IRREGULAR_PAST | word_set(
    "was were wasn't weren't didn't can't cannot couldn't won't wouldn't shouldn't mustn't "
    "used gonna wanna gotta cost bet spread must"
)


# Verbs that merely look like a present participle.
_ING_VERBS = word_set("sing bring ring swing cling sting fling spring wring string")
# Addresses are kept as written ("jo@proton.me" keeps its "me").
_ADDRESS = re.compile(r"\S+@\S+\.\w+|https?://\S+|www\.\S+")

# Present-tense verbs that merely look like past participles.
_ED_PRESENT = word_set("need feed bleed breed speed succeed proceed exceed heed plead embed shred seed weed shed")


def _conjugate(verb: str) -> str:
    """Third-person singular of a verb that followed "I" ("love" -> "loves")."""
    low = verb.lower()
    if low in _THIRD_PERSON:
        return _THIRD_PERSON[low]
    looks_past = low.endswith("ed") and low not in _ED_PRESENT
    if low in _NO_CONJUGATION or low in NOT_A_VERB or looks_past or (low.endswith("ing") and low not in _ING_VERBS) or not low.isalpha() or verb[0].isupper():
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 1 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def rewrite_first_person(sentence: str, speaker: Speaker) -> str:
    """"I moved to Lisbon and my sister visited me" -> "Caroline moved to Lisbon and
    Caroline's sister visited Caroline"."""
    s, poss = speaker.label, speaker.possessive

    def sub(m: re.Match[str]) -> str:
        if m.group("im"):
            return f"{s} is"
        if m.group("ive"):
            return f"{s} has"
        if m.group("id"):
            return f"{s} had" if m.group("id_had") is not None else f"{s} would"
        if m.group("ill"):
            return f"{s} will"
        if m.group("i"):
            adv = m.group("adv") or ""
            verb = m.group("verb")
            if verb is None:
                return f"{s}{adv}"
            return f"{s}{adv} {_conjugate(verb)}"
        if m.group("we"):
            aux = {"'re": " are", "'ve": " have", "'ll": " will", "'d": " would"}.get(m.group("wec") or "", "")
            return f"{s} and others{aux}"
        if m.group("my") or m.group("mine") or m.group("our"):
            return poss
        if m.group("myself"):
            return "themself"
        if m.group("ourselves"):
            return "themselves"
        if m.group("me") or m.group("us"):
            return s if m.group("me") else f"{s} and others"
        return m.group(0)  # pragma: no cover - every alternative is handled above

    pieces, pos = [], 0
    for address in _ADDRESS.finditer(sentence):
        pieces += [_FIRST_PERSON_RE.sub(sub, sentence[pos:address.start()]), address.group(0)]
        pos = address.end()
    pieces.append(_FIRST_PERSON_RE.sub(sub, sentence[pos:]))
    return "".join(pieces)
