"""Does a sentence say that something the speaker said before no longer holds, or that it
adds to it? ("I moved to Denver" / "I also speak Italian").

The answer is a cue on the fact (`FactCandidate.cue`); reconciliation decides which stored
fact, if any, the change is about (pipeline/reconcile.py). Three cues:

* ``change`` — the speaker says outright that a state of theirs ended or was replaced: a
  verb of ending or replacing with the speaker as its subject ("I quit…", "we sold…",
  "I switched to…", "Marco and I divorced", "I moved to…", "I left the choir"), a negated
  state ("I'm not vegan anymore", "I no longer…"), "instead", "from X to Y", "the old one",
  the old thing as the subject of its own end ("the Dell broke", "Pepper ran away", "Max
  passed away"), or a change of how one looks ("I dyed my hair", "I shaved off my beard");
  not in a clause that dates another ("since I moved here…").
* ``shift`` — the speaker states a present value in words that imply an earlier one was
  different, but does not say so ("I … now", "these days", "nowadays", "I've become…",
  "I got a new…", "X is my Y now"; not "my new…", which mentions more often than replaces). Weaker: reconciliation asks for more evidence.
* ``addition`` — the sentence adds to what holds ("also", "too", "as well", "another",
  "my other …", "in addition", "a second …", "one more"). It never supersedes, not even by
  key; and a fact that was itself said as an addition ("I've also started piano") names one
  of several values, so only an explicit change supersedes it, not a shift.

Only what the speaker says of their own life carries a cue (the extractor asks no cue of a
sentence addressed to someone); a shift needs the first person. Verbs that begin
something ("started", "joined", "took up", "bought") are no cue on their own — they add
as often as they replace — and neither is a negated verb of ending ("never give up").
An addition word wins over a change word ("I now also teach piano" adds). A sentence the
tables miss is simply new: the old fact stays active beside it.
"""

from __future__ import annotations

import re

CHANGE, SHIFT, ADDITION = "change", "shift", "addition"

_ADDITION = re.compile(
    r"\balso\b|\btoo\b(?!\s+(?:much|many|late|early|long|far|old|young|big|small|hard|busy|tired|expensive))"
    r"|\bas well\b|\banother\b|\b(?:my|our|his|her|their) other\b|\bin addition\b"
    r"|\badditionally\b|\bone more\b|\bbesides\b|\bon top of\b|\ba second\b|\bsecond (?:one|job|home|house|car|dog|cat|kid|child)\b",
    re.I,
)

# The speaker, or something of theirs, as a subject ("I", "we", "my son", "our office"),
# and what may stand between it and its verb.
_SUBJECT = r"(?:\b(?:I|[Ww]e)(?:'ve|'d|\s+have|\s+had)?|\b(?:[Mm]y|[Oo]ur)\s+[\w-]+(?:\s+[\w-]+)?)"
_BETWEEN = r"(?:\s+(?!(?:never|not|don't|didn't|won't|wouldn't|can't|couldn't|shouldn't|hardly|almost)\b)[\w']+){0,3}?"
_ENDING_VERBS = (
    r"quit|gave up|given up|sold|got rid of|dropped|ditched|cancell?ed|divorced|broke up|split up|separated|"
    r"switched|swapped|traded(?:\s+in)?|replaced|changed|migrated|transferred|upgraded|downgraded|converted|"
    r"relocated|retired(?:\s+from)?|went back to|returned to|got moved|shifted|wiped|uninstalled|"
    r"dyed|shaved(?:\s+off)?|cut\s+(?:my|our)\s+[\w-]+\s+(?:short|off)|"
    r"moved\s+(?:to|into|in\s+with|out|away|back|from|up|over|house|home|on\s+to|my|our)|"
    r"left\s+(?:the|my|our|a|an)\s+(?!house\b|home\b|office\b|room\b|door\b|car\b|keys?\b|phone\b|party\b|early\b)|"
    r"stopped\s+(?!by\b|at\b|in\b|for\b|to\b|off\b|over\b)\w+ing|left\s+\w+ing\b|"
    r"(?:finished|completed)\b[^.;!?]{1,60}\band\s+(?:started|began|moved on to)"
)
_CHANGE = re.compile(
    r"(?<!since )(?<!when )(?<!after )(?<!before )" + _SUBJECT + _BETWEEN + r"\s+(?:" + _ENDING_VERBS + r")\b"
    r"|\bno longer\b|\bnot\b[^.;!?]{0,40}\b(?:any\s?more|any longer)\b|n't\b[^.;!?]{0,40}\b(?:any\s?more|any longer)\b"
    r"|\binstead\b(?!\s+of\s+\w+ing\b)|\bthe old one\b|\bthe previous one\b"
    r"|\bnot\b[^.;!?]{1,40},\s*(?:it's|it is|it was|they're|they are)\b"  # a correction: "not X, it's Y"
    r"|\b(?:went|gone|has gone|have gone)\s+(?:up|down)\s+to\b|\b(?:increased|decreased|rose|risen|fell|fallen|raised|lowered)\s+to\b"
    r"|\b(?:ran away|passed away|died|broke down|broke\b(?=\s*(?:[,;]|and\b))|split up|closed down|shut down)"
    r"|(?-i:\bfrom\s+(?:the\s+)?[A-Z0-9][\w'.-]*(?:\s+[A-Z0-9][\w'.-]*)?\s+to\s+(?:the\s+)?[A-Z0-9])",
    re.I,
)
_SHIFT = re.compile(
    # "now" closing the speaker's clause ("I'm fully remote now", "I mostly code in Go now"),
    # not a duration ("for a month now"), a moment ("right now") or a reason ("especially now")
    _SUBJECT + r"\b(?![^.;!?]{0,60}\bfor\b[^.;!?]{0,30}\bnow\b)[^.;!?,\-–—]{0,60}?(?<!right)(?<!just)(?<!especially)(?<!even)(?<!by)(?<!until)(?<!for)\s+now\s*(?=[.;!?,]|$)"
    r"|^(?:and\s+|but\s+)?now\s+(?:I|we|my|our)\b|\b(?:I|we)\s+now\s+(?!that\b)\w+|\bthese days\b|\bnowadays\b"
    r"|" + _SUBJECT + r"\s+(?:just\s+)?(?:become|became)\b"
    r"|^new\b|\bgot\s+(?:a|an|my|our)\s+new\b|\bis\s+(?:my|our)\s+[\w -]{1,30}?\s+now\b"
    r"|\bgot\s+(?:married|engaged)\b",
    re.I,
)
_NEW = re.compile(r"^new\b", re.I)  # "New personal email: …"
_FIRST_PERSON = re.compile(r"\b(?:I|me|my|mine|we|us|our|ours)\b|\bI'", re.I)


# A thing of the speaker's named without a pronoun: "The weekly meeting moved to Wednesdays."
_DEFINITE_CHANGE = re.compile(
    r"^The\s+[\w-]+(?:\s+[\w-]+)?\s+(?:now\s+\w+|(?:was\s+|got\s+)?(?:moved|changed|switched)\s+(?:to|from)\b)")


def says_addition(text: str) -> bool:
    return bool(_ADDITION.search(text))


def cue(sentence: str) -> str | None:
    """``change``, ``shift``, ``addition`` or None for a sentence the speaker says of their
    own life, as written (a shift needs the first person: "I'm remote now")."""
    if _ADDITION.search(sentence):
        return ADDITION
    if _CHANGE.search(sentence) or _DEFINITE_CHANGE.match(sentence):
        return CHANGE
    if _SHIFT.search(sentence) and (_FIRST_PERSON.search(sentence) or _NEW.match(sentence)):
        return SHIFT
    return None
