"""Text helpers: normalisation, words, content words, sentence splitting, tidying a fact's text."""

from __future__ import annotations

import re
import unicodedata

from engram.domain.dates import MONTH_ABBREVIATIONS
from engram.pipeline.extract.rules.vocabulary import SMALL_TALK_WORDS, STOPWORDS, word_set


WORD_RE = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_DROP_CODEPOINTS = {0xFE0F, 0xFE0E, 0x200D, 0x200B, 0x2060}
_EMOTICON = re.compile(r"(?<!\w)(?::-?[)(DPp/|]|;-?\)|<3|xD|XD|:'\()(?!\w)")
SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


def normalize(text: str) -> str:
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
    return SPACES.sub(" ", text)


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD_RE.findall(text)]


def _is_name(w: str, names: frozenset[str]) -> bool:
    # "Mel" is Melanie: a known speaker's name or a nickname prefix of it
    return w in names or (len(w) >= 3 and any(n.startswith(w) for n in names))


def singular(word: str) -> str:
    """A plural or third-person form cut back for comparing words ("stories" -> "story",
    "runs" -> "run"); crude on purpose: both sides of a comparison go through it."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str, names: frozenset[str]) -> list[str]:
    return [
        w for w in words(text)
        if w not in STOPWORDS and w not in SMALL_TALK_WORDS and not _is_name(w, names)
        and not re.fullmatch(r"(?:h[ae])+h?|l+o+l+|lma+o+|x+o+x*|a+w+|o+h+|u+m+|h+m+", w)
    ]


def proper_nouns(text: str, names: frozenset[str]) -> int:
    """Capitalised words after the first one ("The Hobbit is great"): strong content."""
    tokens = WORD_RE.findall(text)[1:]
    return sum(
        1 for t in tokens
        if t[:1].isupper() and t != "I" and not t.startswith("I'") and not _is_name(t.lower(), names)
        and t.lower() not in STOPWORDS and t.lower() not in SMALL_TALK_WORDS
    )


_ABBREVIATIONS = word_set(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e approx no fig inc ltd co mt ft vol dept est "
    "a.m p.m u.s u.k"
)
_SENTENCE_END = re.compile(r"(?:[.!?]+|\.\.\.)[\"')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Lines, then sentence ends, minding abbreviations, initials ("J. K. Rowling") and a
    month's short form before its day or year ("Sept. 2022", "Oct. 13")."""
    out: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in _SENTENCE_END.finditer(line):
            before = re.search(r"([\w.]+)[.!?\"')\]]*$", line[max(start, m.start() - 20) : m.start() + 1])
            token = (before.group(1) if before else "").lower().rstrip(".")
            if line[m.start()] == "." and (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())):
                continue
            if line[m.start()] == "." and token in MONTH_ABBREVIATIONS and line[m.end() : m.end() + 1].isdigit():
                continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if s]


def chunk_long(sentence: str, limit: int = 500) -> list[str]:
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


def cap_first(s: str) -> str:
    return s[:1].upper() + s[1:] if s and s[0].islower() else s


def finish(s: str, stop: str = ".") -> str:
    """Collapse spaces, tidy punctuation, end with exactly one `stop` (a full stop, or "?")."""
    s = SPACES.sub(" ", s).strip()
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    s = re.sub(r"[\s,;:\-–—]+$", "", s)
    s = re.sub(r"[!?.]+$", "", s) if not s.endswith("...") else s
    return cap_first(s) + ("" if s.endswith("...") else stop)


def truncate(s: str, limit: int) -> str:
    s = " ".join(s.split())
    if len(s) <= limit:
        return s
    cut = s.rfind(" ", 0, limit - 1)
    return s[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"
