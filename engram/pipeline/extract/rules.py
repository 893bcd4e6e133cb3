"""The ``rules`` extractor: offline, deterministic, standard library only (SPEC §6.4).

What it does, turn by turn:

* **Facts.** Each turn is split into sentences. Questions and small talk are dropped;
  every other sentence becomes one self-contained fact about its speaker:

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
    "3 years ago" -> "3 years ago (2020)") and the first one sets ``valid_at``;
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
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from engram.domain.extraction import (
    ArtifactCandidate,
    EpisodeCandidate,
    Extraction,
    FactCandidate,
    Turn,
)

__all__ = ["RulesExtractor"]


# ======================================================================================
# Vocabulary tables
# ======================================================================================

def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


STOPWORDS = _words(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves i'm i've i'd i'll it's that's what's there's don't didn't
    doesn't can't won't isn't wasn't aren't weren't you're you've you'll you'd we're we've
    they're they've let's he's she's here's who's how's where's couldn't wouldn't shouldn't
    haven't hasn't hadn't gonna wanna gotta got get gets getting really also still even much
    many lot lots thing things something anything everything nothing stuff kind kinda sort
    sorta bit way like one ones maybe actually definitely totally pretty quite always never
    ever already yet though although just well oh yeah yes ok okay lol u ur im ive id ill
    dont didnt cant wont isnt thats whats since until upon via per either neither else
    every another may might must shall us whose whatever whenever yep nope cause 'cause
    """
)

# Words that carry no content in chat: greetings, thanks, reactions, acknowledgements.
# A sentence made only of these (plus stopwords and names) is small talk.
SMALL_TALK_WORDS = _words(
    """
    hi hey hello hiya heya howdy yo morning evening afternoon night good great nice cool
    awesome amazing wonderful fantastic lovely sweet neat wow woah whoa omg ah aw aww awww
    ooh yay thanks thank thx ty tysm much sure alright right yup yea nah bye goodbye cya
    see seeing seen ya later soon talk talking chat chatting care cheers welcome np problem
    problems agreed agree agrees totally absolutely exactly indeed true same haha hahaha
    lol lmao rofl hehe sounds sound seems looks look fun glad happy hear hearing hope hoping
    done congrats congratulations love loved loving awesome excited proud sorry gotcha
    understood noted makes sense interesting course enjoy day keep hang luck wish wishes
    incredible beautiful cute impressive brilliant perfect super fab fabulous stunning
    inspiring powerful touching exciting thrilled stoked pumped happens happened guess
    know knew tell told say said hugs hug xoxo xo miss missed thinking means meant mean
    glad hopefully least best whoops oops ugh hmm hmmm um umm uh yikes geez gosh jeez
    absolutely certainly appreciate appreciated appreciating
    wonder wondering definitely sounding feel feeling feels felt touched kind brave
    thoughtful caring generous lucky rock rocks
    supportive awesome totally rad dope lit epic wild crazy insane unreal
    """
)

# Assistant and chat boilerplate that is never worth remembering.
_BOILERPLATE = re.compile(
    r"""^(?:
        (?:i\ )?hope\ (?:this|that)\ helps.*
      | let\ me\ know\ if\ .*
      | feel\ free\ to\ .*
      | (?:i'?m\ |i\ am\ )?(?:happy|glad)\ to\ help.*
      | (?:i'?d\ be\ )?happy\ to\ help.*
      | you'?re\ (?:very\ |so\ |most\ )?welcome.*
      | no\ (?:problem|worries)
      | (?:it'?s\ )?my\ pleasure
      | great\ question.*
      | is\ there\ anything\ else.*
      | talk\ (?:to\ you\ )?(?:soon|later).*
      | (?:see|catch)\ (?:you|ya)(?:\ (?:soon|later|then|around|tomorrow|next\ time|there|all|guys))?
      | have\ a\ (?:good|great|nice|wonderful|lovely|fantastic)\ .*
      | take\ care.*
      | (?:it\ was\ )?(?:nice|good|great)\ (?:to\ )?(?:meet|see|hear\ from|chat\ with|talk\ to|talking\ to|chatting\ with)\ you.*
      | how\ (?:are|have)\ you.*
      | long\ time\ no\ see.*
      | here(?:'s|s|\ is|\ are)\ (?:the|a|an|my|your|some)\ .{0,40}:
    )$""",
    re.X | re.I,
)

MODALS = _words("can could will would shall should may might must ought")

# Past-tense forms that do not end in -ed; they never take a third-person -s.
IRREGULAR_PAST = _words(
    """
    was were went got saw had did made took came gave found told thought felt left kept met
    began bought brought caught taught ran sat stood wrote read put cut hit let set quit hurt
    spent sent built lost won heard held knew grew drew flew threw drove rode rose ate drank
    swam sang spoke broke chose forgot wore woke slept fell fed led paid said sold shot shut
    understood became meant lent bent dealt dug fought fled hung hid bit lit slid spun stuck
    struck swept swung tore withdrew forgave overcame undertook stole sang shook
    """
)

# Words that may sit between "I" and its verb.
ADVERBS = _words(
    """
    just really also still never always finally recently actually usually often sometimes
    totally definitely already even only truly honestly seriously absolutely mostly kinda
    sorta literally certainly probably currently now then once barely hardly rarely
    generally personally especially slowly gradually officially newly first again too
    nearly almost mainly simply secretly sorely desperately genuinely
    """
)

# Tokens after "I" that are not verbs: leave them alone.
_NOT_A_VERB = _words("and or but too myself alone both either neither nor as at in on to for with from of the a an so if then")

# Chat drops the subject ("Went hiking yesterday", "Gonna check out careers"): these
# openers get an "I" back so the sentence can be rewritten about its speaker.
_SUBJECT_DROP: dict[str, str] = {
    **{w: "I'm" for w in _words(
        "gonna going planning thinking hoping heading trying loving working looking getting "
        "starting learning"
    )},
    "been": "I've",
    **{w: "I" for w in _words(
        "went got had started finished finally bought visited took spent made saw met tried "
        "moved joined learned learnt signed booked picked painted ran did love loved hope "
        "wish gotta need want feel felt miss missed adopted attended enjoyed decided "
        "received watched read baked cooked"
    )},
}

# Adjectives ending in -ed that are not past-tense events.
_ED_ADJECTIVES = _words(
    """
    excited interested tired scared worried bored married stressed pleased amazed relaxed
    supposed used inspired motivated obsessed thrilled overwhelmed surprised confused
    determined dedicated talented related based detailed advanced experienced
    """
)

# Leading discourse markers stripped before a sentence becomes a fact.
_LEADING_MARKERS = [
    # "Hey Mel, ..." / "Thanks, Caroline! ..." / "Wow Melanie, ..."
    re.compile(
        r"^(?i:hey|hi|hello|thanks|thank you|wow|oh|yeah|yes|aw+|haha+|omg|congrats)"
        r"(?:,?\s+[A-Z][\w'-]{1,30})?\s*[,!.:…—–-]+\s*"
    ),
    # "Oh, ...", "Well - ...", "Haha! ..."
    re.compile(
        r"^(?i:oh|ah|aw+|ooh|wow|whoa|yeah|yes|yep|yup|yay|no|nope|nah|ok|okay|sure|well|so|"
        r"hey|hi|hello|haha+|hehe|lol|omg|um+|uh+|hmm+|btw|anyway|anyways|honestly|actually|"
        r"also|and|but|plus|thanks|thank you|cool|great|awesome|nice|totally|absolutely|"
        r"definitely|exactly|right|true|indeed|gosh|man|dude|ugh|oof|phew|whew|oh well|oh man|by the way)"
        r"\s*(?:[,!.…:]+|\s-\s|\s—\s?|—)\s*"
    ),
    # "So I ...", "And then we ...": bare markers, only before a pronoun or determiner
    re.compile(
        r"^(?i:oh|so|well|and|but|also|btw|anyway|actually|honestly|plus|yeah|lol|haha+|"
        r"by the way)\s+(?=(?:I|i|I'm|I've|we|We|my|My|our|Our|me|it|It|that|That|this|This|"
        r"there|There|the|The|then)\b)"
    ),
]

_QUESTION_OPENERS = _words(
    """
    how what why where when who which whose do did does are is was were have has had can
    could would will should shall may might any anything right isn't aren't don't didn't
    doesn't huh eh or wanna want care mind
    """
)

ROLE_LABELS = {"user": "The user", "assistant": "The assistant"}
# Roles whose turns are not statements by a person (tool output, system prompts).
_SILENT_ROLES = frozenset({"tool", "system", "function"})


# ======================================================================================
# Text helpers
# ======================================================================================

_WORD_RE = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_DROP_CODEPOINTS = {0xFE0F, 0xFE0E, 0x200D, 0x200B, 0x2060}
_EMOTICON = re.compile(r"(?<!\w)(?::-?[)(DPp/|]|;-?\)|<3|xD|XD|:'\()(?!\w)")
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


def _normalize(text: str) -> str:
    """Straight quotes, no emoji or control characters, single spaces."""
    text = (
        text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
        .replace("\u2026", "...").replace("\r\n", "\n").replace("\r", "\n")
    )
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ord(ch) in _DROP_CODEPOINTS or cat in ("So", "Cs", "Co", "Cn") or 0x1F3FB <= ord(ch) <= 0x1F3FF:
            continue
        if cat == "Cc" and ch not in "\n\t":
            out.append(" ")
            continue
        out.append(ch)
    text = _EMOTICON.sub("", "".join(out))
    return _SPACES.sub(" ", text)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def _is_name(w: str, names: frozenset[str]) -> bool:
    # "Mel" is Melanie: a known speaker's name or a nickname prefix of it
    return w in names or (len(w) >= 3 and any(n.startswith(w) for n in names))


def _content_words(text: str, names: frozenset[str]) -> list[str]:
    return [
        w for w in words(text)
        if w not in STOPWORDS and w not in SMALL_TALK_WORDS and not _is_name(w, names)
        and not re.fullmatch(r"(?:h[ae])+h?|l+o+l+|lma+o+|x+o+x*|a+w+|o+h+|u+m+|h+m+", w)
    ]


def _proper_nouns(text: str, names: frozenset[str]) -> int:
    """Capitalised words after the first one ("The Hobbit is great"): strong content."""
    tokens = _WORD_RE.findall(text)[1:]
    return sum(
        1 for t in tokens
        if t[:1].isupper() and t != "I" and not t.startswith("I'") and not _is_name(t.lower(), names)
        and t.lower() not in STOPWORDS and t.lower() not in SMALL_TALK_WORDS
    )


_ABBREVIATIONS = _words(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e approx no fig inc ltd co mt ft vol dept est "
    "a.m p.m u.s u.k"
)
_SENTENCE_END = re.compile(r"(?:[.!?]+|\.\.\.)[\"')\]]*\s+")


def _split_sentences(text: str) -> list[str]:
    """Lines, then sentence ends, minding abbreviations and initials ("J. K. Rowling")."""
    out: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in _SENTENCE_END.finditer(line):
            before = re.search(r"([\w.]+)[.!?\"')\]]*$", line[max(start, m.start() - 20) : m.start() + 1])
            token = (before.group(1) if before else "").lower().rstrip(".")
            if line[m.start()] == "." and (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())):
                continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if s]


def _chunk_long(sentence: str, limit: int = 500) -> list[str]:
    """Very long run-on "sentences" are cut at clause, then word, boundaries."""
    if len(sentence) <= limit:
        return [sentence]
    pieces: list[str] = []
    rest = sentence
    while len(rest) > limit:
        cut = max(rest.rfind(sep, 0, limit) for sep in (", ", "; ", " - ", " "))
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut].strip(" ,;-"))
        rest = rest[cut:].strip(" ,;-")
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def _cap_first(s: str) -> str:
    return s[:1].upper() + s[1:] if s and s[0].islower() else s


def _finish(s: str) -> str:
    """Collapse spaces, tidy punctuation, end with exactly one full stop."""
    s = _SPACES.sub(" ", s).strip()
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    s = re.sub(r"[\s,;:\-–—]+$", "", s)
    s = re.sub(r"[!?.]+$", "", s) if not s.endswith("...") else s
    return _cap_first(s) + ("" if s.endswith("...") else ".")


# ======================================================================================
# Speakers
# ======================================================================================

@dataclass(frozen=True, slots=True)
class _Speaker:
    label: str  # as it appears mid-sentence: "Caroline" / "the user"
    named: bool

    @classmethod
    def of(cls, turn: Turn) -> _Speaker:
        name = _SPACES.sub(" ", _normalize(turn.name or "")).strip()[:60]
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
        return _cap_first(self.label)

    @property
    def short(self) -> str:  # episode summary prefix: "Caroline" / "User"
        return self.label if self.named else _cap_first(self.label.removeprefix("the "))


def _identity(turn: Turn) -> tuple[str, str]:
    return ((turn.name or "").strip().lower(), (turn.role or "").strip().lower())


def _other_speaker(timeline: Sequence[Turn], index: int) -> _Speaker | None:
    """Who "you" most likely is: the nearest turn, earlier first, by someone else."""
    me = _identity(timeline[index])
    for j in list(range(index - 1, -1, -1)) + list(range(index + 1, len(timeline))):
        t = timeline[j]
        if t.role not in _SILENT_ROLES and _identity(t) != me:
            return _Speaker.of(t)
    return None


class _Lazy:
    """Computes a value on first use (the other speaker is only needed for "you")."""

    __slots__ = ("_fn", "_done", "_value")

    def __init__(self, fn: Callable[[], _Speaker | None]) -> None:
        self._fn, self._done, self._value = fn, False, None

    def get(self) -> _Speaker | None:
        if not self._done:
            self._value, self._done = self._fn(), True
        return self._value


def _name_tokens(turns: Iterable[Turn]) -> frozenset[str]:
    out: set[str] = set()
    for t in turns:
        if t.name:
            out.update(words(t.name))
    return frozenset(out)


# ======================================================================================
# Relative dates
# ======================================================================================

MONTHS = ("January February March April May June July August September October November December").split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "a couple of": 2, "a couple": 2, "couple of": 2, "a pair of": 2,
}
_VAGUE_NUMBERS = ("a few", "few", "several", "some", "many")
_NUM = r"(?P<num>a couple of|a couple|couple of|a pair of|a few|few|several|some|many|an|a|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|\d{1,3})"
_UNIT = r"(?P<unit>day|week|month|year)s?"
_WD = r"(?P<wd>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_PART = r"(?:\s+(?P<part>morning|afternoon|evening|night))?"
_SEASON = r"(?P<season>spring|summer|fall|autumn|winter)"

# Prepositions that already introduce a time expression ("since last week").
_TIME_PREPS = _words("on in since until till by from before after during of at for to around through over within about")
# "Yesterday was fun": the phrase is the subject, so no "on" in front of the date.
_SUBJECT_FOLLOWS = re.compile(r"^(?:\s+(?:was|is|will|has|had|were|felt|seemed|seems|looks|looked)\b|'s\b)", re.I)

_FUTURE_CUES = re.compile(
    r"\b(?:will|shall|going to|gonna|plan|plans|planning|planned to|scheduled|upcoming|"
    r"can't wait|cannot wait|looking forward|hope to|hoping to|want to|wanna|intend|intends|"
    r"about to|until|till|moved to|postponed|rescheduled|tomorrow|next)\b|'ll\b",
    re.I,
)
_PAST_VERB = re.compile(r"\b(?:[a-z]{2,}ed|" + "|".join(sorted(IRREGULAR_PAST)) + r")\b|\bago\b|\byesterday\b", re.I)


def _tense(sentence: str) -> str | None:
    if _FUTURE_CUES.search(sentence):
        return "future"
    for m in _PAST_VERB.finditer(sentence):
        if m.group(0).lower() not in _ED_ADJECTIVES:
            return "past"
    return None


def fmt_day(d: date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def _fmt_weekday(d: date) -> str:
    return f"{WEEKDAYS[d.weekday()].capitalize()}, {fmt_day(d)}"


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.year * 12 + d.month - 1 + n, 12)
    return date(y, m + 1, 1)


@dataclass(frozen=True, slots=True)
class _When:
    """A resolved time expression."""

    phrase: str  # "7 May 2023", "the week of 1 May 2023", "June 2023"
    start: date | None  # -> valid_at; None when vague
    prep: str = ""  # "on" / "in": dropped when the text already has a preposition
    append: bool = False  # keep the original words and add "(phrase)" after them
    keep_original: bool = False  # the match is kept as written with phrase already merged in


def _day(d: date, part: str | None = None, *, weekday: bool = False) -> _When:
    text = _fmt_weekday(d) if weekday else fmt_day(d)
    if part:
        return _When(f"the {part.lower()} of {text}", d, "on")
    return _When(text, d, "on")


def _week(d: date) -> _When:
    m = _monday(d)
    return _When(f"the week of {fmt_day(m)}", m, "in")


def _month(d: date) -> _When:
    return _When(f"{MONTHS[d.month - 1]} {d.year}", date(d.year, d.month, 1), "in")


def _year(y: int) -> _When:
    return _When(str(y), date(y, 1, 1), "in")


def _count(m: re.Match[str]) -> int | None:
    raw = m.group("num").lower()
    if raw in _VAGUE_NUMBERS:
        return None
    if raw.isdigit():
        return int(raw)
    return _NUMBER_WORDS.get(raw)


def _shift(anchor: date, unit: str, n: int) -> _When:
    unit = unit.lower()
    if unit == "day":
        return _day(anchor + timedelta(days=n))
    if unit == "week":
        return _week(anchor + timedelta(weeks=n))
    if unit == "month":
        return _month(_add_months(anchor, n))
    return _year(anchor.year + n)


def _h_ago(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    n = _count(m)
    unit = m.group("unit").lower()
    if n is None:  # "a few weeks ago": anchor it, but no precise valid_at
        return _When(f"{m.group('num').lower()} {unit}s before {fmt_day(anchor)}", None, append=True)
    w = _shift(anchor, unit, -n)
    return _When(w.phrase, w.start, append=True)


def _h_in(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    n = _count(m)
    if n is None or (tense == "past" and not m.group(0).lower().endswith("now")):
        return None  # "I read it in a day" is a duration, not a date
    w = _shift(anchor, m.group("unit"), n)
    return _When(w.phrase, w.start, append=True)


def _h_relative_unit(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    step = {"last": -1, "this": 0, "next": 1, "the coming": 1, "this coming": 1}[_squash(m.group("mod"))]
    unit = m.group("unit").lower()
    return _shift(anchor, unit, step)


def _squash(s: str) -> str:
    return " ".join(s.lower().split())


def _weekday_before(anchor: date, wd: int) -> date:
    return anchor - timedelta(days=(anchor.weekday() - wd) % 7 or 7)


def _weekday_after(anchor: date, wd: int) -> date:
    return anchor + timedelta(days=(wd - anchor.weekday()) % 7 or 7)


def _h_weekday_mod(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    wd = WEEKDAYS.index(m.group("wd").lower())
    mod = _squash(m.group("mod"))
    if mod in ("last", "past", "this past"):
        d = _weekday_before(anchor, wd)
    elif mod in ("next", "coming", "this coming"):
        d = _weekday_after(anchor, wd)
    else:  # "this Saturday": the one on or after today, unless the sentence is past tense
        d = _weekday_before(anchor, wd) if tense == "past" and wd != anchor.weekday() else anchor + timedelta(days=(wd - anchor.weekday()) % 7)
    return _day(d, m.group("part"), weekday=True)


def _h_weekday_bare(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    # "on Sunday": a past-tense sentence means the last one, anything else the next one
    wd = WEEKDAYS.index(m.group("wd").lower())
    d = _weekday_before(anchor, wd) if tense == "past" else _weekday_after(anchor, wd)
    return _day(d, m.group("part"), weekday=True)


def _h_weekday_deadline(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    # "The meeting moved to Friday", "until Monday": the next one
    d = _weekday_after(anchor, WEEKDAYS.index(m.group("wd").lower()))
    return _When(f"{m.group('prep')} {_fmt_weekday(d)}", d, keep_original=True)


def _saturday_of_weekend(anchor: date) -> date:
    # the current weekend's Saturday (on a Sunday: yesterday; on a weekday: the coming one)
    return anchor + timedelta(days=5 - anchor.weekday())


def _h_weekend_mod(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    mod = _squash(m.group("mod"))
    sat = _saturday_of_weekend(anchor)
    on_weekend = anchor.weekday() >= 5
    if mod == "last" or (mod in ("the past", "this past") and not on_weekend):
        sat -= timedelta(days=7)  # "this past weekend" said on a Sunday is the current one
    elif mod == "next" or (mod in ("the coming", "this coming") and on_weekend):
        sat += timedelta(days=7)  # "next weekend": the one after this one
    return _When(f"the weekend of {fmt_day(sat)}", sat, "on")


def _h_weekend_bare(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    if tense is None:
        return None
    sat = _saturday_of_weekend(anchor)
    if tense == "past" and sat > anchor:
        sat -= timedelta(days=7)
    return _When(f"(the weekend of {fmt_day(sat)})", sat, append=True)


_SEASON_START = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}


def _season_phrase(season: str, start: date) -> str:
    if season == "winter":
        return f"the winter of {start.year}-{start.year + 1}"
    return f"the {season} of {start.year}"


def _h_season(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    season = m.group("season").lower()
    mod = _squash(m.group("mod"))
    month = _SEASON_START[season]
    # start of the season the anchor is in
    cur_month = {12: 12, 1: 12, 2: 12}.get(anchor.month, (anchor.month - 3) // 3 * 3 + 3)
    cur_start = date(anchor.year - (1 if anchor.month < 3 else 0), cur_month, 1)
    candidates = [date(y, month, 1) for y in range(anchor.year - 2, anchor.year + 3)]
    if mod in ("last", "this past"):
        start = max(c for c in candidates if c < cur_start)
    elif mod == "next":
        start = min(c for c in candidates if c > cur_start)
    else:  # "this summer": the one in this calendar year (winter: the one we are in / next)
        start = cur_start if month == cur_month else date(anchor.year, month, 1)
    return _When(_season_phrase(season, start), start, "in")


def _h_month(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
    month = MONTHS.index(m.group("month")) + 1
    mod = _squash(m.group("mod"))
    y = anchor.year
    if mod == "last":
        y = y if month < anchor.month else y - 1
    elif mod == "next":
        y = y if month > anchor.month else y + 1
    elif mod == "this":
        pass
    elif mod in ("until", "till", "by") or tense == "future":
        y = y if month >= anchor.month else y + 1
    elif tense == "past" or mod == "since":
        y = y if month <= anchor.month else y - 1
    text = f"{MONTHS[month - 1]} {y}"
    if mod in ("last", "this", "next"):
        return _When(text, date(y, month, 1), "in")
    # keep the user's own preposition or qualifier: "since June" -> "since June 2022"
    return _When(f"{m.group('mod')}{m.group('sep')}{text}", date(y, month, 1), keep_original=True)


def _fixed(days: int, part: str | None = None) -> Callable[[re.Match[str], date, str | None], _When | None]:
    def handler(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
        p = part
        if p is None and "part" in m.re.groupindex:
            p = m.group("part")
        return _day(anchor + timedelta(days=days), p)

    return handler


def _vague(phrase: str) -> Callable[[re.Match[str], date, str | None], _When | None]:
    def handler(m: re.Match[str], anchor: date, tense: str | None) -> _When | None:
        return _When(phrase.format(day=fmt_day(anchor)), None, append=True)

    return handler


_MONTH_ALT = "|".join(MONTHS)
_DATE_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str], date, str | None], _When | None]]] = [
    (re.compile(r"\bthe day before yesterday\b", re.I), _fixed(-2)),
    (re.compile(r"\bthe day after tomorrow\b", re.I), _fixed(2)),
    (re.compile(r"\byesterday" + _PART + r"\b", re.I), _fixed(-1)),
    (re.compile(r"\blast night\b", re.I), _fixed(-1, "night")),
    (re.compile(r"\btonight\b", re.I), _fixed(0, "night")),
    (re.compile(r"\bthis (?P<part>morning|afternoon|evening)\b", re.I), _fixed(0)),
    (re.compile(r"\btoday\b", re.I), _fixed(0)),
    (re.compile(r"\btomorrow" + _PART + r"\b", re.I), _fixed(1)),
    (re.compile(r"\b(?:on\s+)?(?P<mod>this\s+coming|this\s+past|coming|past|last|this|next)\s+" + _WD + _PART + r"\b", re.I), _h_weekday_mod),
    (re.compile(r"\bon\s+" + _WD + _PART + r"\b", re.I), _h_weekday_bare),
    (re.compile(r"\b(?P<prep>to|until|till|by)\s+" + _WD + r"\b(?!['’]s)", re.I), _h_weekday_deadline),
    (re.compile(r"\b(?P<mod>last|this|next|the\s+past|this\s+past|the\s+coming|this\s+coming)\s+weekend\b", re.I), _h_weekend_mod),
    (re.compile(r"\b(?:over|on|during|at)\s+the\s+weekend\b", re.I), _h_weekend_bare),
    (re.compile(r"\b(?P<mod>last|this|next|the\s+coming)\s+(?P<unit>week|month|year)\b", re.I), _h_relative_unit),
    (re.compile(r"\b" + _NUM + r"\s+" + _UNIT + r"\s+ago\b", re.I), _h_ago),
    (re.compile(r"\bin\s+" + _NUM + r"\s+" + _UNIT + r"\b(?!\s+ago)", re.I), _h_in),
    (re.compile(r"\b" + _NUM + r"\s+" + _UNIT + r"\s+from\s+now\b", re.I), _h_in),
    (re.compile(r"\b(?P<mod>last|this\s+past|this|next)\s+" + _SEASON + r"\b", re.I), _h_season),
    (
        re.compile(
            r"\b(?P<mod>(?i:last|this|next|in|since|during|until|till|by|early|late|mid|around|before|after|from|through))"
            r"(?P<sep>\s+|-)(?P<month>" + _MONTH_ALT + r")\b(?!\s*,?\s*\d)(?!-)"
        ),
        _h_month,
    ),
    (re.compile(r"\bthe other day\b", re.I), _vague("a few days before {day}")),
    (re.compile(r"\ba (?:little )?while (?:ago|back)\b", re.I), _vague("some time before {day}")),
]

# Absolute dates already in the text only set valid_at.
_MONTH_RE = r"(?P<month>" + _MONTH_ALT + r"|" + "|".join(m[:3] for m in MONTHS) + r")\.?"
_ABSOLUTE_DATES = [
    re.compile(r"\b(?P<y>(?:19|20)\d\d)-(?P<m>[01]\d)-(?P<d>[0-3]\d)\b"),
    re.compile(r"\b(?P<d>[0-3]?\d)(?:st|nd|rd|th)?(?:\s+of)?\s+" + _MONTH_RE + r",?\s+(?P<y>(?:19|20)\d\d)\b"),
    re.compile(r"\b" + _MONTH_RE + r"\s+(?P<d>[0-3]?\d)(?:st|nd|rd|th)?,?\s+(?P<y>(?:19|20)\d\d)\b"),
    re.compile(r"\b(?i:in|since|during|from|back in|by)\s+(?P<y>(?:19|20)\d\d)\b(?!\s*[-/]\d)"),
]


@dataclass(frozen=True, slots=True)
class _Dated:
    text: str
    valid_at: date | None
    future: bool | None  # the first resolved date is after the anchor day


def _render(when: _When, m: re.Match[str], text: str) -> str:
    original = m.group(0)
    if when.append:
        phrase = when.phrase if when.phrase.startswith("(") else f"({when.phrase})"
        return f"{original} {phrase}"
    if when.keep_original:
        return when.phrase
    prev = re.search(r"([A-Za-z]+)\W*$", text[: m.start()])
    has_prep = bool(prev and prev.group(1).lower() in _TIME_PREPS)
    starts_with_on = original.lower().startswith("on ")
    subject = bool(_SUBJECT_FOLLOWS.match(text[m.end():]))
    prep = "" if (has_prep or subject) else ("on" if starts_with_on else when.prep)
    out = f"{prep} {when.phrase}".strip()
    return _cap_first(out) if original[:1].isupper() else out


def resolve_dates(text: str, anchor: datetime) -> _Dated:
    """Rewrite relative time expressions in ``text`` as absolute dates anchored at ``anchor``."""
    try:
        day = anchor.date()
    except (AttributeError, ValueError):  # pragma: no cover - defensive
        return _Dated(text, None, None)
    tense = _tense(text)
    found: list[tuple[int, int, re.Match[str], Callable[..., _When | None]]] = []
    for rx, handler in _DATE_RULES:
        for m in rx.finditer(text):
            found.append((m.start(), -(m.end() - m.start()), m, handler))
    found.sort(key=lambda f: (f[0], f[1]))
    parts: list[str] = []
    pos = 0
    first: _When | None = None
    for start, _neg_len, m, handler in found:
        if start < pos:
            continue  # overlaps a longer expression already resolved
        try:
            when = handler(m, day, tense)
        except (ValueError, OverflowError):  # dates outside the calendar: leave as written
            when = None
        if when is None:
            continue
        parts.append(text[pos:start])
        parts.append(_render(when, m, text))
        pos = m.end()
        if first is None and when.start is not None:
            first = when
    parts.append(text[pos:])
    if first is None:
        return _Dated("".join(parts), _absolute_date(text), None)
    return _Dated("".join(parts), first.start, first.start > day if first.start else None)


def _absolute_date(text: str) -> date | None:
    for rx in _ABSOLUTE_DATES:
        m = rx.search(text)
        if not m:
            continue
        try:
            y = int(m.group("y"))
            if "m" in rx.groupindex and m.group("m"):
                return date(y, int(m.group("m")), int(m.group("d")))
            if "month" in rx.groupindex and m.group("month"):
                month = [x[:3] for x in MONTHS].index(m.group("month")[:3]) + 1
                return date(y, month, int(m.group("d")))
            return date(y, 1, 1)
        except ValueError:
            continue
    return None


# ======================================================================================
# First person -> third person
# ======================================================================================

_ADVERB_ALT = "|".join(sorted(ADVERBS, key=len, reverse=True))
_FIRST_PERSON_RE = re.compile(
    r"\b(?P<im>[Ii]'m|I am)\b"
    r"|\b(?P<ive>[Ii]'ve)\b"
    r"|\b(?P<id>[Ii]'d)\b(?P<id_had>(?=\s+(?:been|had|gone|done|seen|already|never|ever)\b))?"
    r"|\b(?P<ill>[Ii]'ll)\b"
    r"|\b(?P<i>I|i(?=\s+[a-z]))\b(?!['-])(?P<adv>(?:\s+(?:" + _ADVERB_ALT + r"))*)(?:\s+(?P<verb>[A-Za-z][a-z']*))?"
    r"|\b(?P<we>[Ww]e)(?P<wec>'re|'ve|'ll|'d)?\b"
    r"|\b(?P<my>[Mm]y)\b"
    r"|\b(?P<mine>[Mm]ine)\b"
    r"|\b(?P<myself>[Mm]yself)\b"
    r"|\b(?P<ourselves>[Oo]urselves)\b"
    r"|\b(?P<our>[Oo]urs?)\b"
    r"|\b(?P<me>[Mm]e)\b(?!-)"
    r"|\b(?P<us>[Uu]s)\b(?!-)"
)
_HAS_FIRST_PERSON_STRICT = re.compile(r"\b(?:I|i(?=\s+[a-z])|[Ii]'[a-z]+)(?![\w-])|\b(?:[Mm]e|[Mm]y|[Mm]ine|[Mm]yself|[Ww]e|[Uu]s|[Oo]ur|[Oo]urs|[Oo]urselves)\b")
_HAS_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself|yourselves|y'all|ya)\b", re.I)

_THIRD_PERSON = {"am": "is", "have": "has", "do": "does", "go": "goes", "don't": "doesn't",
                 "haven't": "hasn't", "dont": "doesn't", "havent": "hasn't", "be": "is", "ain't": "isn't"}
_NO_CONJUGATION = MODALS | IRREGULAR_PAST | _words(
    "was were wasn't weren't didn't can't cannot couldn't won't wouldn't shouldn't mustn't "
    "used gonna wanna gotta cost bet spread must"
)


# Present-tense verbs that merely look like past participles.
_ED_PRESENT = _words("need feed bleed breed speed succeed proceed exceed heed plead embed shred seed weed shed")


def _conjugate(verb: str) -> str:
    """Third-person singular of a verb that followed "I" ("love" -> "loves")."""
    low = verb.lower()
    if low in _THIRD_PERSON:
        return _THIRD_PERSON[low]
    looks_past = low.endswith("ed") and low not in _ED_PRESENT
    if low in _NO_CONJUGATION or low in _NOT_A_VERB or looks_past or low.endswith("ing") or not low.isalpha() or verb[0].isupper():
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 1 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def rewrite_first_person(sentence: str, speaker: _Speaker) -> str:
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

    return _FIRST_PERSON_RE.sub(sub, sentence)


# ======================================================================================
# Fact types and keys
# ======================================================================================

_NEGATED = re.compile(r"n't\b|\bnot\b|\bnever\b|\bno longer\b|\banymore\b|\bused to\b|\bwish\b|\bif\b", re.I)
_CAP = r"(?=[A-Z][\w'.-])"  # a proper noun follows (a place, a company, a person)

_JOBS = (
    "teacher|nurse|doctor|physician|surgeon|dentist|engineer|developer|programmer|designer|"
    "architect|lawyer|attorney|accountant|counselor|counsellor|therapist|psychologist|"
    "psychiatrist|social worker|pharmacist|veterinarian|vet|chef|cook|baker|barista|waiter|"
    "waitress|bartender|cashier|manager|director|consultant|analyst|scientist|researcher|"
    "professor|lecturer|student|writer|author|journalist|editor|artist|painter|photographer|"
    "musician|singer|actor|actress|dancer|firefighter|police officer|officer|pilot|driver|"
    "mechanic|electrician|plumber|carpenter|farmer|librarian|salesperson|entrepreneur|founder|"
    "ceo|cto|cfo|intern|freelancer|administrator|secretary|receptionist|paramedic|midwife|"
    "pastor|priest|rabbi|soldier|coach|trainer|tutor|translator|marketer|recruiter|banker|"
    "economist|homemaker|stay-at-home (?:mom|dad|parent)|retiree|caregiver|volunteer|"
    "technician|specialist|assistant|clerk|instructor|principal|counsellor"
)
_DIETS = r"(?P<diet>vegan|vegetarian|pescatarian|pescetarian|flexitarian|keto|paleo|gluten[- ]free|dairy[- ]free|plant[- ]based|carnivore)"
_PARTNERS = r"(?:husband|wife|partner|boyfriend|girlfriend|fianc[ée]e?|spouse)"
_I_AM = r"\bI(?:'m| am)(?:\s+(?:now|currently|still|also|actually|officially|finally))?"

# (key, pattern) in priority order; patterns run on the original first-person sentence.
_KEY_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("name", re.compile(r"(?i:\bmy\s+name(?:'s|\s+is)\s+)" + _CAP)),
    ("age", re.compile(_I_AM + r"\s+(?P<n>\d{1,3})(?:\s+(?:years?|yrs?)\s+old|\s*y/?o\b|(?=\s*(?:[.!,;]|$)))")),
    ("age", re.compile(r"\bI\s+(?:just\s+)?turned\s+\d{1,3}\b")),
    ("lives_in", re.compile(
        r"\b(?:I|[Ww]e)(?:'ve|\s+have)?(?:\s+(?:just|recently|finally|now|currently|also|still|actually))*"
        r"\s+(?:live|moved|relocated)\s+(?:to|in)\s+(?:the\s+)?" + _CAP)),
    ("lives_in", re.compile(_I_AM + r"\s+(?:living|based|settled)\s+in\s+(?:the\s+)?" + _CAP)),
    ("works_at", re.compile(
        r"\b(?:I|[Ww]e)(?:\s+(?:now|currently|still|just|recently))*\s+work\s+(?:at|for)\s+(?:the\s+)?" + _CAP)),
    ("works_at", re.compile(_I_AM + r"\s+(?:working|employed)\s+(?:at|for|by)\s+(?:the\s+)?" + _CAP)),
    ("works_at", re.compile(
        r"\bI(?:'ve|\s+have)?(?:\s+(?:just|recently|finally))*\s+(?:started\s+(?:working\s+)?at|got\s+a\s+(?:new\s+)?job\s+(?:at|with))\s+(?:the\s+)?" + _CAP)),
    ("job_title", re.compile(
        r"(?i:" + _I_AM + r"\s+(?:a|an)\s+(?:(?!(?:of|for|with|in|at|to|and|fan|big|huge)\b)[\w-]+\s+){0,3}?(?:" + _JOBS + r"))\b"
        r"(?=\s*(?:$|[.,;!]|\s(?:at|for|in|with|and|but|who|by|from|based|living|now)\b))")),
    ("job_title", re.compile(r"(?i:\bI(?:'m| am)?\s+(?:now\s+)?(?:work|working)\s+as\s+(?:a|an)\s+\w)")),
    ("job_title", re.compile(r"(?i:\bI\s+(?:just\s+|recently\s+|finally\s+)?(?:became|got\s+a\s+job\s+as)\s+(?:a|an)\s+(?:[\w-]+\s+){0,2}?(?:" + _JOBS + r"))\b")),
    ("job_title", re.compile(r"(?i:\bmy\s+(?:job|profession|occupation)\s+is\s+(?:a|an)?\s*\w)")),
    ("partner_name", re.compile(r"(?i:\bmy\s+" + _PARTNERS + r"(?:'s\s+name\s+is\s+|,\s+|\s+(?:is\s+)?(?:called|named)\s+|\s+))[A-Z][a-z]+")),
    ("partner_name", re.compile(r"(?i:" + _I_AM + r"\s+(?:married\s+to|dating|engaged\s+to)\s+)[A-Z][a-z]+")),
    ("partner_name", re.compile(r"\bI\s+(?:just\s+)?married\s+[A-Z][a-z]+")),
    ("diet", re.compile(r"(?i:" + _I_AM + r"\s+(?:a\s+|now\s+|fully\s+|strictly\s+|mostly\s+)*" + _DIETS + r")\b")),
    ("diet", re.compile(r"(?i:\bI(?:'ve|\s+have)?\s+(?:just\s+|recently\s+)?(?:went|gone|became|become|turned|go)\s+" + _DIETS + r")\b")),
    ("diet", re.compile(r"(?i:\bI\s+(?:eat|follow|keep)\s+(?:a\s+)?(?:strictly\s+|mostly\s+)?" + _DIETS + r")\b")),
    ("diet", re.compile(r"(?i:" + _I_AM + r"?\s+(?:on|following|doing)\s+(?:a|the)\s+(?P<d2>[\w-]+)\s+diet)\b")),
]
_FAVORITE_RULES = [
    # "my favorite book is Dune"
    re.compile(
        r"(?i:\bmy\s+(?:all[- ]time\s+|absolute\s+|new\s+)?favou?rite\s+)"
        r"(?P<thing>[A-Za-z][A-Za-z-]*(?:\s+(?!(?:of|to|in|and|for|at|on|is|are|was|were|has|would)\b)[A-Za-z][A-Za-z-]*)?)"
        r"(?i:\s+(?:is|are|has\s+to\s+be|would\s+be|must\s+be)\b)"
    ),
    # "Dune is my favorite book"
    re.compile(
        r"(?i:\b(?:is|are)\s+my\s+(?:all[- ]time\s+|absolute\s+|new\s+)?favou?rite\s+)"
        r"(?P<thing>[A-Za-z][A-Za-z-]*(?:\s+(?!(?:of|ever)\b)[A-Za-z][A-Za-z-]*)?)"
        r"(?i:\s+(?:of\s+all\s+time|ever))?\s*(?:[.!,;]|$)"
    ),
]
_KEEP_PLURAL = _words("series species glasses clothes news sports arts")


def _favorite_key(thing: str) -> str:
    thing = thing.lower().replace("favourite", "favorite").replace("colour", "color")
    parts = [p for p in re.split(r"[^a-z]+", thing) if p]
    if parts and parts[-1].endswith("s") and not parts[-1].endswith("ss") and parts[-1] not in _KEEP_PLURAL and len(parts[-1]) > 3:
        parts[-1] = parts[-1][:-1]
    return "favorite_" + "_".join(parts)


def detect_key(sentence: str) -> str | None:
    """A stable attribute key for single-valued facts the speaker states about themself."""
    if _NEGATED.search(sentence) or sentence.rstrip().endswith("?"):
        return None
    for key, rx in _KEY_RULES:
        if rx.search(sentence):
            return key
    for rx in _FAVORITE_RULES:
        m = rx.search(sentence)
        if m:
            return _favorite_key(m.group("thing"))
    return None


_KEY_TYPES = {"name": "biographical", "age": "biographical", "lives_in": "biographical",
              "works_at": "biographical", "job_title": "biographical", "partner_name": "relationship",
              "diet": "preference"}

_PLAN_CUES = re.compile(
    r"\b(?:will|shall|going to|gonna|plan(?:s|ning)?(?:\s+to|\s+on)?|intend(?:s|ing)? to|want(?:s)? to|"
    r"wanna|hope(?:s)? to|hoping to|about to|looking forward to|can't wait|"
    r"thinking (?:about|of)|considering|scheduled|upcoming|would love to|'d love to|"
    r"next (?:week|month|year|weekend|time|summer|winter|spring|fall|" + "|".join(WEEKDAYS) + r"))\b|'ll\b",
    re.I,
)
_PREFERENCE_CUES = re.compile(
    r"\b(?:I|we)\s+(?:(?:really|absolutely|just|also|totally|still|do|don't|do not|didn't|never|kinda|truly|always)\s+)*"
    r"(?:love|like|enjoy|prefer|hate|dislike|adore|despise)\b"
    r"|favou?rite|\bfan of\b|\bpassionate about\b|\bkeen on\b|\bobsessed with\b|\bcan't stand\b"
    r"|\bI(?:'m| am) (?:(?:really|so|very|super)\s+)?into\b|\ballergic\b",
    re.I,
)
_RELATIONSHIP_CUES = re.compile(
    r"\b(?:my|our)\s+(?:[\w-]+\s+)?(?:mom|mum|mother|dad|father|parents?|sister|brother|siblings?|"
    r"wife|husband|partner|spouse|boyfriend|girlfriend|fianc[ée]e?|sons?|daughters?|kids?|children|"
    r"child|baby|babies|grandma|grandmother|grandpa|grandfather|grandparents?|grandkids?|"
    r"grandchildren|aunt|uncle|cousins?|niece|nephew|friends?|bestie|family|in-laws?|roommates?|"
    r"neighbou?rs?|colleagues?|coworkers?|co-workers?|boss|mentor|pets?|dogs?|cats?|puppy|kitten)\b"
    r"|\b(?:married|divorced|dating|engaged|broke up|widowed|adopted|single parent)\b",
    re.I,
)
_BIOGRAPHICAL_CUES = re.compile(
    r"\b(?:was|were)\s+born\b|\bgrew up\b|\bI(?:'m| am) (?:originally )?from\b"
    r"|\b(?:I|we)(?:'ve| have)?\s+(?:(?:" + _ADVERB_ALT + r")\s+)*(?:moved|relocated|live|lived|work|worked)\s+(?:to|from|in|at|for|as|here|back)\b"
    r"|\bmy (?:job|career|degree|major|name|age|birthday|"
    r"hometown|background|identity|heritage|culture|religion)\b|\bgraduated\b|\bstudied\b|\bstudying\b|"
    r"\bmajoring\b|\b(?:I'm|I am) (?:a|an) \w+|\byears old\b|\bidentify as\b|\btransgender\b|\bnationality\b|"
    r"\bretired\b|\bpregnant\b|\bdiagnosed\b",
    re.I,
)
_OPINION_CUES = re.compile(
    r"\b(?:I|we)\s+(?:(?:really|strongly|honestly|truly|do)\s+)*(?:think|believe|feel|reckon|suppose|doubt|find)\b"
    r"|\bin my (?:opinion|view|experience)\b|\b(?:imo|imho)\b|\bshould\b|\boverrated\b|\bunderrated\b"
    r"|\bthe (?:best|worst)\b|\bis key\b|\bis (?:so |really |very )?important\b|\bmatters\b",
    re.I,
)
_FIRST_PERSON_PAST = re.compile(
    r"\b(?:I|we)\s+(?:(?:" + _ADVERB_ALT + r")\s+)*(?:[a-z]{2,}ed|" + "|".join(sorted(IRREGULAR_PAST)) + r")\b", re.I
)


def fact_type(sentence: str, key: str | None, dated: _Dated) -> str:
    """Pick one of preference, biographical, relationship, event, plan, opinion, statement."""
    if key:
        return "preference" if key.startswith("favorite_") else _KEY_TYPES.get(key, "biographical")
    if dated.future or _PLAN_CUES.search(sentence):
        return "plan"
    if dated.future is False:
        return "event"
    if _PREFERENCE_CUES.search(sentence):
        return "preference"
    if _RELATIONSHIP_CUES.search(sentence):
        return "relationship"
    if _BIOGRAPHICAL_CUES.search(sentence):
        return "biographical"
    if _OPINION_CUES.search(sentence):
        return "opinion"
    if _FIRST_PERSON_PAST.search(sentence) or dated.valid_at is not None:
        return "event"
    return "statement"


# ======================================================================================
# Sentences worth a fact
# ======================================================================================

_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_DID_YOU_KNOW = re.compile(r"^(?i:did you know|you know what|guess what|fun fact)(?:\s+that)?\s*[,:?!]?\s+(?=\S)")
_CLAUSE_SPLIT = re.compile(r"(?<=[,;:])\s+|\s+[-–—]\s+")
_INTERROGATIVE_START = re.compile(r"^(?i:how|what|why|where|when|who|which|whose|do|did|does|are|is|was|were|have|has|can|could|would|will|should)\b")


def _strip_markers(s: str) -> str:
    for _ in range(4):
        before = s
        for rx in _LEADING_MARKERS:
            s = rx.sub("", s, count=1)
        if s == before:
            break
    return s.strip()


def _is_question(s: str) -> bool:
    if s.rstrip(" \"')").endswith("?"):
        return True
    # chat often drops the "?": "how are you doing", "did you like it"
    return bool(
        _INTERROGATIVE_START.match(s)
        and _HAS_SECOND_PERSON.search(s)
        and not re.search(r"\bI\b", s)
        and len(s.split()) <= 12
    )


def _statement_before_question(s: str) -> str | None:
    """"I went to Paris last week, have you been?" -> "I went to Paris last week"."""
    clauses = _CLAUSE_SPLIT.split(s.rstrip(" ?!\"')"))
    kept: list[str] = []
    for clause in clauses:
        tokens = [t.lower().strip(",.;:!\"'") for t in clause.split()]
        if tokens and tokens[0] in ("but", "and", "so", "or", "then") and len(tokens) > 1:
            tokens = tokens[1:]  # "..., but why Starbucks?"
        first = tokens[0] if tokens else ""
        if first in _QUESTION_OPENERS or first in ("you", "your", "have", "any"):
            break
        kept.append(clause)
    if not kept or len(kept) == len(clauses):
        return None
    statement = " ".join(kept).rstrip(" ,;:-–—")
    return statement if len(statement.split()) >= 3 else None


def _fix_dropped_subject(s: str) -> str:
    """"Went hiking with the kids" -> "I went hiking with the kids"."""
    m = re.match(r"([A-Za-z']+)(\s+\S+)?", s)
    if not m:
        return s
    first = m.group(1).lower()
    prefix = _SUBJECT_DROP.get(first)
    if prefix is None:
        return s
    if first.endswith("ing") and re.search(r"\b(?:is|are|was|were)\b", s, re.I):
        return s  # a gerund subject: "Taking care of ourselves is vital"
    if first == "never" and (m.group(2) or "").strip().lower() == "been":
        return f"I've {s[0].lower()}{s[1:]}"
    if first == "just":
        nxt = (m.group(2) or "").strip().lower()
        if not (nxt.endswith("ed") or nxt in IRREGULAR_PAST):
            return s
    return f"{prefix} {s[0].lower()}{s[1:]}"


@dataclass(frozen=True, slots=True)
class _Sentence:
    text: str  # cleaned, first person kept, relative dates not yet resolved
    first_person: bool
    second_person: bool


def _prepare(raw: str, names: frozenset[str]) -> _Sentence | None:
    """Clean one sentence; None when it is a question, small talk or empty."""
    s = _LIST_MARKER.sub("", raw).strip()
    s = _strip_markers(s)
    s = _DID_YOU_KNOW.sub("", s)
    if not s or not re.search(r"[^\W_]", s):
        return None
    if _is_question(s):
        salvaged = _statement_before_question(s)
        if salvaged is None:
            return None
        s = _strip_markers(salvaged)
    s = _fix_dropped_subject(s)
    bare = re.sub(r"[^\w\s']", " ", s.lower()).strip()
    if _BOILERPLATE.match(bare) or _BOILERPLATE.match(s.lower().strip(" .!")):
        return None
    first = bool(_HAS_FIRST_PERSON_STRICT.search(s))
    second = bool(_HAS_SECOND_PERSON.search(s))
    # "I'm vegan" and "You'd be a great counselor" are facts; "That's so cool" is not
    needed = 1 if (first or second) else 2
    if len(_content_words(s, names)) + _proper_nouns(s, names) < needed:
        return None
    return _Sentence(s, first, second)


# ======================================================================================
# Artifacts
# ======================================================================================

_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^\n]*$", re.M)
_LANGUAGES = {
    "py": "Python", "python": "Python", "python3": "Python", "js": "JavaScript", "javascript": "JavaScript",
    "jsx": "JavaScript", "mjs": "JavaScript", "ts": "TypeScript", "typescript": "TypeScript", "tsx": "TypeScript",
    "sh": "Shell", "bash": "Shell", "shell": "Shell", "zsh": "Shell", "console": "Shell", "ps1": "PowerShell",
    "powershell": "PowerShell", "sql": "SQL", "json": "JSON", "yaml": "YAML", "yml": "YAML", "toml": "TOML",
    "html": "HTML", "xml": "XML", "css": "CSS", "scss": "SCSS", "go": "Go", "golang": "Go", "rust": "Rust",
    "rs": "Rust", "java": "Java", "kotlin": "Kotlin", "kt": "Kotlin", "swift": "Swift", "c": "C", "h": "C",
    "cpp": "C++", "c++": "C++", "cc": "C++", "hpp": "C++", "cs": "C#", "csharp": "C#", "rb": "Ruby",
    "ruby": "Ruby", "php": "PHP", "r": "R", "scala": "Scala", "lua": "Lua", "dockerfile": "Dockerfile",
    "docker": "Dockerfile", "makefile": "Makefile", "make": "Makefile", "md": "Markdown",
    "markdown": "Markdown", "ini": "INI", "diff": "Diff", "graphql": "GraphQL", "proto": "Protobuf",
    "text": "Text", "txt": "Text", "csv": "CSV", "hcl": "HCL", "terraform": "Terraform", "tf": "Terraform",
}
_DEFINITIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)"), "{}()"),
    (re.compile(r"^\s*class\s+([A-Za-z_]\w*)"), "class {}"),
    (re.compile(r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)"), "{}()"),
    (re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+([A-Za-z_]\w*)"), "{}()"),
    (re.compile(r"^\s*func\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)"), "{}()"),
    (re.compile(r"^\s*(?:export\s+)?(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?(?:function\b|\([^)]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)"), "{}()"),
    (re.compile(r"^\s*(?:export\s+)?(?:interface|struct|enum|trait|type|record)\s+([A-Za-z_]\w*)"), "{}"),
    (re.compile(r"^\s*(?i:create\s+(?:or\s+replace\s+)?(?:table|view|index|function|procedure))\s+(?i:if\s+not\s+exists\s+)?([\w.\"`]+)"), "{}"),
    (re.compile(r"^\s*(?:public|private|protected|static|final|abstract|\s)+[\w<>\[\],]+\s+([A-Za-z_]\w*)\s*\("), "{}()"),
]
_COMMENT_PREFIX = re.compile(r"^\s*(?:#!.*|#+|//+|--+|/\*+|\*+|<!--|;+|%+|\")\s*")


@dataclass(frozen=True, slots=True)
class _CodeBlock:
    start: int
    end: int
    lang: str
    body: str
    verbatim: str


def find_code_blocks(text: str) -> list[_CodeBlock]:
    """Fenced blocks (``` or ~~~); an unclosed fence runs to the end of the text."""
    blocks: list[_CodeBlock] = []
    pos = 0
    while True:
        m = _FENCE_OPEN.search(text, pos)
        if not m:
            return blocks
        fence = m.group("fence")
        close = re.compile(r"^[ \t]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$", re.M)
        body_start = min(m.end() + 1, len(text))
        c = close.search(text, body_start)
        end = c.end() if c else len(text)
        body = text[body_start : c.start() if c else len(text)].rstrip("\n")
        blocks.append(_CodeBlock(m.start(), end, m.group("lang").strip().lower(), body, text[m.start() : end]))
        pos = max(end, m.end() + 1)


def _code_title(block: _CodeBlock) -> str:
    lang = _LANGUAGES.get(block.lang, block.lang.capitalize() if block.lang else "")
    label = f"{lang} code" if lang else "Code"
    lines = block.body.split("\n")
    for line in lines:
        for rx, fmt in _DEFINITIONS:
            m = rx.match(line)
            if m:
                return f"{label}: {fmt.format(m.group(1).strip(chr(34) + '`'))}"
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#!"):
            continue
        meaningful = _COMMENT_PREFIX.sub("", line).strip().rstrip("*/->").strip()
        if meaningful:
            return f"{label}: {_truncate(meaningful, 60)}"
    return label


def _truncate(s: str, limit: int) -> str:
    s = " ".join(s.split())
    if len(s) <= limit:
        return s
    cut = s.rfind(" ", 0, limit - 1)
    return s[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"


_LIST_LINE = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S")
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")


def _document_artifact(turn: Turn, prose: str, speaker: _Speaker) -> ArtifactCandidate | None:
    """A long structured turn (lists, headings, tables) is worth keeping whole."""
    lines = prose.split("\n")
    items = sum(1 for line in lines if _LIST_LINE.match(line))
    headings = [line for line in lines if _HEADING.match(line)]
    rows = sum(1 for line in lines if _TABLE_LINE.match(line))
    structure = items + len(headings) + (rows if rows >= 3 else 0)
    if structure < 3 or len(prose.strip()) <= 400:
        return None
    if headings:
        title = headings[0].strip().lstrip("#").strip()
    else:
        intro = next((ln for ln in lines if ln.strip() and not _LIST_LINE.match(ln) and not _TABLE_LINE.match(ln)), "")
        title = intro.strip().rstrip(":").strip()
    title = _truncate(re.sub(r"[*_`]+", "", _normalize(title)), 80) or f"Document from {speaker.label}"
    what = ", ".join(
        p for p in (
            f"{items} list items" if items else "",
            f"{len(headings)} headings" if headings else "",
            f"{rows} table rows" if rows >= 3 else "",
        ) if p
    )
    return ArtifactCandidate(
        title=_cap_first(title),
        rationale=f"Structured document ({what}) shared by {speaker.label}; kept whole so it can be reused.",
        content=turn.content,
        source_event_ids=(turn.event_id,),
    )


def _code_artifact(turn: Turn, block: _CodeBlock, speaker: _Speaker) -> ArtifactCandidate | None:
    if not block.body.strip():
        return None
    lang = _LANGUAGES.get(block.lang, block.lang or "unlabelled")
    n = block.body.count("\n") + 1
    return ArtifactCandidate(
        title=_code_title(block),
        rationale=f"Code block ({lang}, {n} line{'s' if n != 1 else ''}) shared by {speaker.label}; kept verbatim so it can be reused.",
        content=block.verbatim,
        source_event_ids=(turn.event_id,),
    )


# ======================================================================================
# Turn -> prose pieces
# ======================================================================================

_SHARES = re.compile(r"\s*\[shares?:\s*(?P<caption>[^\]]*)\]")
_CAPTION_PREFIX = re.compile(r"^(?i:(?:a|an|the)\s+)?(?i:photo|picture|image|photograph|photography|pic|screenshot|snapshot)\s+(?i:of|showing|with)\s+")


@dataclass(frozen=True, slots=True)
class _Parsed:
    prose: str  # the turn without code blocks and image captions
    captions: tuple[str, ...]
    code: tuple[_CodeBlock, ...]


def _parse_turn(content: str) -> _Parsed:
    content = content or ""
    blocks = find_code_blocks(content)
    pieces, pos = [], 0
    for b in blocks:
        pieces.append(content[pos : b.start])
        pieces.append("\n")
        pos = b.end
    pieces.append(content[pos:])
    prose = "".join(pieces)
    captions = []
    for m in _SHARES.finditer(prose):
        cap = _normalize(m.group("caption")).strip().rstrip(".")
        cap = _CAPTION_PREFIX.sub("", cap).strip()
        if cap and re.search(r"[^\W_]", cap):
            captions.append(cap)
    prose = _SHARES.sub("", prose)
    return _Parsed(prose, tuple(captions), tuple(blocks))


def _prose_sentences(prose: str) -> list[str]:
    out: list[str] = []
    for sentence in _split_sentences(_normalize(prose)):
        if _HEADING.match(sentence):
            continue  # a heading names a section; it states nothing
        out.extend(_chunk_long(sentence))
    return out


# ======================================================================================
# Episodes
# ======================================================================================

_TOPIC_EXCLUDE = _words(
    """
    went go goes going gone get got make made take took come came give gave think thought
    know knew want wanted love loved like liked said say says see saw look looking need
    needed try tried feel felt find found tell told let put keep kept start started use
    used work worked call called help helped seem seemed leave left mean meant show
    showed able sure lot time times day days week weeks today yesterday tomorrow year
    years month months people person someone everyone guys guy yes yeah right thanks
    thank good great nice new old big little last next first other others many much
    taking making doing going getting having looking trying thinking feeling being saying
    coming giving telling seeing talking important amazing awesome really
    """
)


def _fmt_range(a: datetime, b: datetime) -> str:
    da, db = a.date(), b.date()
    if da == db:
        return fmt_day(da)
    if (da.year, da.month) == (db.year, db.month):
        return f"{da.day}–{db.day} {MONTHS[da.month - 1]} {da.year}"
    if da.year == db.year:
        return f"{da.day} {MONTHS[da.month - 1]} – {db.day} {MONTHS[db.month - 1]} {db.year}"
    return f"{fmt_day(da)} – {fmt_day(db)}"


def _utc_key(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class _Unit:
    order: int
    text: str  # "Caroline: I went to a support group on 7 May 2023."
    content: frozenset[str]
    dated: bool
    weight: float = 1.0


# ======================================================================================
# The extractor
# ======================================================================================


class RulesExtractor:
    """Offline, deterministic extractor. See the module docstring for the rules."""

    name = "rules"

    def __init__(self, *, summary_chars: int = 600, summary_sentences: int = 5) -> None:
        self.summary_chars = summary_chars
        self.summary_sentences = summary_sentences

    # ---------------------------------------------------------------- facts/artifacts

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
        names = _name_tokens(timeline)
        seen: dict[str, int] = {}  # fact text (casefolded) -> index in result.facts

        for offset, turn in enumerate(turns):
            index = len(context) + offset
            speaker = _Speaker.of(turn)
            parsed = _parse_turn(turn.content)

            if extract_artifacts:
                for block in parsed.code:
                    art = _code_artifact(turn, block, speaker)
                    if art:
                        result.artifacts.append(art)
                doc = _document_artifact(turn, parsed.prose, speaker)
                if doc:
                    result.artifacts.append(doc)

            if (turn.role or "").lower() in _SILENT_ROLES:
                continue
            other = _Lazy(lambda i=index: _other_speaker(timeline, i))  # only needed for "you"
            facts = [self._fact(s, turn, speaker, other, names) for s in _prose_sentences(parsed.prose)]
            facts += [self._caption_fact(c, turn, speaker) for c in parsed.captions]
            for fact in facts:
                if fact is not None:
                    self._add(result.facts, seen, fact)
        return result

    def _fact(
        self, raw: str, turn: Turn, speaker: _Speaker, other: _Lazy, names: frozenset[str]
    ) -> FactCandidate | None:
        sentence = _prepare(raw, names)
        if sentence is None:
            return None
        s = sentence.text
        dated = resolve_dates(s, turn.date)
        key: str | None = None
        text: str | None = None
        if sentence.first_person and not sentence.second_person:
            rewritten = rewrite_first_person(dated.text, speaker)
            if speaker.label.lower() in rewritten.lower():
                text = rewritten
                key = detect_key(s)
        if text is None:
            quoted = _cap_first(dated.text.strip())
            listener = other.get() if sentence.second_person else None
            if listener is not None:
                text = f"{speaker.display} said to {listener.label}: {quoted}"
            else:
                text = f"{speaker.display} said: {quoted}"
        return FactCandidate(
            text=_finish(text),
            fact_type=fact_type(s, key, dated),
            source_event_ids=(turn.event_id,),
            source_role=turn.role,
            valid_at=_at(dated.valid_at, turn.date),
            key=key,
        )

    @staticmethod
    def _caption_fact(caption: str, turn: Turn, speaker: _Speaker) -> FactCandidate:
        return FactCandidate(
            text=_finish(f"{speaker.display} shared an image of {caption}"),
            fact_type="statement",
            source_event_ids=(turn.event_id,),
            source_role=turn.role,
        )

    @staticmethod
    def _add(facts: list[FactCandidate], seen: dict[str, int], fact: FactCandidate) -> None:
        """The same sentence said twice in one batch is one fact citing both turns."""
        k = fact.text.casefold()
        if k not in seen:
            seen[k] = len(facts)
            facts.append(fact)
            return
        old = facts[seen[k]]
        ids = tuple(dict.fromkeys(old.source_event_ids + fact.source_event_ids))
        facts[seen[k]] = FactCandidate(
            text=old.text, fact_type=old.fact_type, source_event_ids=ids, source_role=old.source_role,
            valid_at=old.valid_at, key=old.key,
        )

    # ---------------------------------------------------------------- episodes

    def episode(self, turns: Sequence[Turn]) -> EpisodeCandidate | None:
        """An extractive summary of a stretch of turns; None when nothing was said."""
        if not turns:
            return None
        names = _name_tokens(turns)
        units: list[_Unit] = []
        surface: dict[str, str] = {}
        for turn in turns:
            if (turn.role or "").lower() in _SILENT_ROLES:
                continue
            speaker = _Speaker.of(turn)
            parsed = _parse_turn(turn.content)
            texts = [s.text for raw in _prose_sentences(parsed.prose) if (s := _prepare(raw, names))]
            for t in texts:
                dated = resolve_dates(t, turn.date)
                content = frozenset(w for w in _content_words(t, names) if len(w) > 2 and not w.isdigit())
                units.append(_Unit(len(units), _finish(f"{speaker.short}: {dated.text}"), content, dated.valid_at is not None))
                self._note_surface(t, surface)
            for c in parsed.captions:  # images count, but less than what people said
                content = frozenset(w for w in _content_words(c, names) if len(w) > 2 and not w.isdigit())
                units.append(_Unit(len(units), _finish(f"{speaker.short} shared an image of {c}"), content, False, 0.5))
        if not units:
            return None

        freq = Counter(w for u in units for w in u.content)
        start = min((t.date for t in turns), key=_utc_key)
        end = max((t.date for t in turns), key=_utc_key)
        return EpisodeCandidate(
            title=self._title(units, freq, surface, start, end),
            summary=self._summary(units, freq),
            started_at=start,
            ended_at=end,
            source_event_ids=tuple(dict.fromkeys(t.event_id for t in turns)),
        )

    @staticmethod
    def _note_surface(sentence: str, surface: dict[str, str]) -> None:
        # Remember how a word is written mid-sentence, so proper nouns keep their capital.
        for i, w in enumerate(_WORD_RE.findall(sentence)):
            low = w.lower()
            if i > 0 and w[:1].isupper() and low not in surface:
                surface[low] = w

    @staticmethod
    def _title(units: list[_Unit], freq: Counter[str], surface: dict[str, str], start: datetime, end: datetime) -> str:
        first_seen: dict[str, int] = {}
        for u in units:
            for w in sorted(u.content):
                first_seen.setdefault(w, u.order)
        candidates = [
            w for w in freq
            if w not in _TOPIC_EXCLUDE and not w.endswith(("ly", "ed")) and w.isalpha()
        ]
        candidates.sort(key=lambda w: (-freq[w], first_seen.get(w, 0), w))
        topics = [surface.get(w, w) for w in candidates[:3]]
        span = _fmt_range(start, end)
        if not topics:
            return f"Conversation ({span})"
        return f"{_cap_first(', '.join(topics))} ({span})"

    def _summary(self, units: list[_Unit], freq: Counter[str]) -> str:
        def score(u: _Unit) -> float:
            return u.weight * sum(1 + 0.5 * min(freq[w] - 1, 4) for w in u.content) + (1.5 if u.dated else 0.0)

        ranked = sorted(units, key=lambda u: (-score(u), u.order))
        chosen: list[_Unit] = []
        used = 0
        for u in ranked:
            if len(chosen) >= self.summary_sentences:
                break
            extra = len(u.text) + (1 if chosen else 0)
            if used + extra <= self.summary_chars:
                chosen.append(u)
                used += extra
        if not chosen:  # even the best sentence is too long: cut it
            return _truncate(ranked[0].text, self.summary_chars)
        return " ".join(u.text for u in sorted(chosen, key=lambda u: u.order))


def _at(d: date | None, anchor: datetime) -> datetime | None:
    if d is None:
        return None
    try:
        return datetime(d.year, d.month, d.day, tzinfo=anchor.tzinfo)
    except (ValueError, OverflowError):  # pragma: no cover - defensive
        return None
