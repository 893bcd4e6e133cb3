"""The content filter: the first pipeline stage, before any extraction (SPEC §6.3).

A turn that carries a secret (a private key, a cloud or API token, a password in
clear) must never become a memory, so the worker fails that event with
``content_rejected`` and goes on with the rest of its batch. Operators can add their
own regular expressions on top of the defaults.

Pure and deterministic: no I/O, standard library only. A :class:`Rejection` names
*which kind* of secret was found and never echoes the secret itself, so it is safe to
log and to return to the client.

Design notes
- Every default rule is a compiled regex plus, where needed, a validator that looks at
  the captured value. The validators are what keep ordinary talk ("I forgot my
  password", "the password policy requires 8 chars", "an sk-ii trip") from being
  rejected: a password keyword alone is not a secret, a secret-looking value is.
- All patterns avoid nested unbounded quantifiers, so the filter stays linear-ish on
  the largest allowed turns (32 000 chars).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ContentFilter", "Rejection", "DEFAULT_REASONS"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a turn was rejected. Never contains the matched text."""

    reason: str  # short stable name, e.g. "private_key", "password_assignment", "custom"
    message: str  # human text, safe to log and return

    def __str__(self) -> str:  # handy in logs and job errors
        return f"{self.reason}: {self.message}"


# A validator gets the match and says whether it really is a secret.
_Validator = Callable[[re.Match[str]], bool]


@dataclass(frozen=True, slots=True)
class _Rule:
    reason: str
    description: str  # goes into Rejection.message
    pattern: re.Pattern[str]
    validate: _Validator | None = None


# --------------------------------------------------------------------------------------
# Password heuristics
# --------------------------------------------------------------------------------------

# Values that stand for "a password goes here" rather than being one.
_PLACEHOLDER_WORDS = frozenset(
    """
    password passwd pass pwd pw secret none null nil empty blank redacted hidden masked
    removed omitted required optional unset undefined todo tbd n/a na xxx xxxx
    your_password yourpassword your-password mypassword my_password <password>
    true false yes no changeit example sample placeholder
    """.split()
)

# Words that follow "my password is …" / "password: …" in ordinary talk.
_DESCRIPTIVE_WORDS = frozenset(
    """
    wrong right correct incorrect invalid valid expired old new same different weak strong
    long short simple easy hard complicated complex secure insecure safe unsafe
    compromised leaked stolen hacked locked blocked reset changed saved stored written
    broken stuck
    forgotten lost gone missing there here it this that too not still also really very
    so just case-sensitive sensitive ok okay fine good bad terrible great required
    below above attached encrypted hashed protected shared personal private obvious
    something nothing everything unknown different random memorable
    """.split()
)

# "my password is 12 characters long" is a description, not a password.
_LENGTH_UNITS = re.compile(r"\s*(?:characters?|chars?|letters?|digits?|symbols?|long)\b", re.I)

_CODEISH_VALUE = re.compile(
    r"""
    [(\[{]                                   # call, subscript, dict/object literal
    | ^[$%@]                                  # $VAR, %(x)s, @param
    | ^(?:os|env|process|config|settings|self|this|args|params|request|getpass)\b
    | ^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$       # dotted attribute path: cfg.db.password
    """,
    re.X,
)

_WORDLIKE = re.compile(r"^[A-Za-z]+(?:[-'][A-Za-z]+)*$")
_CLAUSE_END = re.compile(r"^\s*(?:$|[.!?;,)\]\n]|\s-\s|\s—)")


def _is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    if v in _PLACEHOLDER_WORDS:
        return True
    if re.fullmatch(r"[*•x#.\-_?]+", v):  # masked: ******** / •••• / xxxx
        return True
    if v and v[0] in "<{[$%":  # <your password>, {pw}, [redacted], $PW, %(pw)s
        return True
    return False


def _looks_like_password(value: str, *, quoted: bool, tail: str, assignment: bool) -> bool:
    """Decide whether ``value`` (what follows a password keyword) is a real password.

    ``tail`` is the text right after the value; ``assignment`` says the keyword was
    followed by ``=`` (code or config) rather than talk.
    """
    if not quoted:
        value = value.rstrip(".,;:!?)]}'\"")
    if len(value) < 3 or _is_placeholder(value):
        return False
    if not quoted and assignment and _CODEISH_VALUE.search(value):
        return False  # password = getpass() / os.environ["PW"]: code, not a secret
    if value.isdigit() and _LENGTH_UNITS.match(tail):
        return False  # "my password is 12 characters long"
    if quoted:
        return True
    if not _WORDLIKE.match(value):
        return True  # digits or symbols mixed in: hunter2, p@ss, S3cr3t!
    # A plain word: it is a password only if it ends the clause ("password: swordfish")
    # and is not one of the adjectives people use about passwords.
    low = value.lower()
    if low in _DESCRIPTIVE_WORDS or low.endswith(("ed", "ly", "ing")):
        return False
    return bool(_CLAUSE_END.match(tail)) or assignment


def _validate_keyword_value(m: re.Match[str]) -> bool:
    quote = m.group("q") or ""
    value = m.group("val")
    tail = m.string[m.end() : m.end() + 40]
    return _looks_like_password(
        value, quoted=bool(quote), tail=tail, assignment=m.group("op") == "="
    )


def _validate_said_password(m: re.Match[str]) -> bool:
    quote = m.group("q") or ""
    tail = m.string[m.end() : m.end() + 40]
    return _looks_like_password(m.group("val"), quoted=bool(quote), tail=tail, assignment=False)


def _validate_url_password(m: re.Match[str]) -> bool:
    return not _is_placeholder(m.group("val"))


def _validate_openai(m: re.Match[str]) -> bool:
    # Real keys mix letters and digits; "sk-something-long-and-wordy" is not a key.
    body = m.group(0)
    return bool(re.search(r"\d", body)) and bool(re.search(r"[A-Za-z]", body[3:]))


# --------------------------------------------------------------------------------------
# Default rules, most specific first (the first match decides the reason).
# --------------------------------------------------------------------------------------

_PW_KEYWORD = r"(?:password|passwd|passphrase|passcode)"

DEFAULT_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        "a private key block",
        # RSA / EC / DSA / OPENSSH / ENCRYPTED / PGP ... PRIVATE KEY (BLOCK)
        re.compile(r"-----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----"),
    ),
    _Rule(
        "aws_access_key",
        "an AWS access key id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ),
    _Rule(
        "aws_secret_key",
        "an AWS secret access key",
        # Only in assignment context: a bare 40-char base64 string is too common.
        re.compile(
            r"(?i:aws[\w \-]{0,30}?secret|secret[_ \-]?access[_ \-]?key)[\w \-]{0,30}?[\"']?\s*[:=]\s*[\"']?"
            r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
    ),
    _Rule(
        "github_token",
        "a GitHub token",
        re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ),
    _Rule(
        "anthropic_key",
        "an Anthropic API key",
        re.compile(r"(?<![A-Za-z0-9_\-])sk-ant-[A-Za-z0-9_\-]{20,}"),
    ),
    _Rule(
        "openai_key",
        "an OpenAI-style API key",
        re.compile(r"(?<![A-Za-z0-9_\-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
        _validate_openai,
    ),
    _Rule(
        "slack_token",
        "a Slack token",
        re.compile(
            r"(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9\-]{10,}"
            r"|https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"
        ),
    ),
    _Rule(
        "stripe_key",
        "a Stripe secret key",
        re.compile(r"(?<![A-Za-z0-9])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    ),
    _Rule(
        "google_api_key",
        "a Google API key",
        re.compile(r"(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
    ),
    _Rule(
        "jwt",
        "a JSON Web Token",
        # header.payload.signature, base64url; a JSON header always starts "eyJ" ('{"').
        re.compile(r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),
    ),
    _Rule(
        "password_assignment",
        "a password in clear (connection string)",
        # scheme://user:pass@host
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@]{1,100}:(?P<val>[^\s@/]{1,200})@[^\s@]"),
        _validate_url_password,
    ),
    _Rule(
        "password_assignment",
        "a password in clear",
        # password: hunter2 / DB_PASSWORD=hunter2 / "password": "hunter2" / dbPassword = 'x'
        # (the keyword may end an identifier, but must be directly followed by : or =)
        re.compile(
            rf"(?i:{_PW_KEYWORD})[\"']?[ \t]*(?P<op>[:=])(?!=)[ \t]*(?P<q>[\"'`]?)(?P<val>[^\s\"'`]{{1,200}})"
        ),
        _validate_keyword_value,
    ),
    _Rule(
        "password_assignment",
        "a password in clear",
        # pwd=… / pass=… / pw=… : short keywords only count with '=' (e.g. query strings),
        # because "boarding pass: 12A" or "pwd: /home/me" are ordinary text.
        re.compile(
            r"(?<![A-Za-z])(?i:pwd|pass|pw)[ \t]*(?P<op>=)(?!=)[ \t]*(?P<q>[\"'`]?)(?P<val>[^\s\"'`&]{1,200})"
        ),
        _validate_keyword_value,
    ),
    _Rule(
        "password_assignment",
        "a password in clear",
        # "my password is hunter2", "the wifi password for the cabin is 'abc123'",
        # "my bank pin is 4821"
        re.compile(
            r"(?i:\b(?:my|our|the|his|her|their)\s+(?:[\w\-]+\s+){0,3}?"
            r"(?:password|passwd|passphrase|passcode|pin|pwd)"
            r"(?:\s+(?:for|on|to|of|at)(?:\s+(?:the|my|our|a|an))?\s+[\w.\-]+){0,2}\s+(?:is|was|=|:)\s+)"
            r"(?P<q>[\"'`]?)(?P<val>[^\s\"'`]{1,200})"
        ),
        _validate_said_password,
    ),
)

DEFAULT_REASONS: tuple[str, ...] = tuple(dict.fromkeys(r.reason for r in DEFAULT_RULES)) + ("custom",)


class ContentFilter:
    """Rejects turns that carry secrets.

    ``ContentFilter(extra_patterns=[...])`` adds operator regexes (Python syntax) to the
    defaults; a match on one of them is reported with reason ``"custom"``. A pattern that
    does not compile raises ``ValueError`` naming it, so config validation can refuse to
    start with a broken filter.
    """

    def __init__(self, extra_patterns: Sequence[str] = ()) -> None:
        if isinstance(extra_patterns, str):  # a lone string is a config mistake, not 1-char patterns
            extra_patterns = (extra_patterns,)
        compiled: list[re.Pattern[str]] = []
        for i, pattern in enumerate(extra_patterns):
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"content filter pattern #{i + 1} must be a non-empty string: {pattern!r}")
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(f"invalid content filter pattern {pattern!r}: {exc}") from None
        self._rules = DEFAULT_RULES
        self._extra = tuple(compiled)

    @property
    def extra_patterns(self) -> tuple[str, ...]:
        return tuple(p.pattern for p in self._extra)

    def check(self, text: str) -> Rejection | None:
        """Return why ``text`` must be rejected, or ``None`` when it may be processed."""
        if not text:
            return None
        for rule in self._rules:
            for m in rule.pattern.finditer(text):
                if rule.validate is None or rule.validate(m):
                    return Rejection(rule.reason, f"content carries {rule.description}")
        for i, pattern in enumerate(self._extra):
            if pattern.search(text):
                return Rejection("custom", f"content matches operator filter pattern #{i + 1}")
        return None

    def is_allowed(self, text: str) -> bool:
        return self.check(text) is None
