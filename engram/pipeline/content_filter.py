"""The content filter: the first pipeline stage, before any extraction (SPEC §6.3).

An event that carries a secret (a private key, a cloud or API token, a password in
clear) must never become a memory, so the worker fails it with ``content_rejected`` and
goes on with the rest of its batch. :meth:`ContentFilter.check_event` looks at
everything an event stores: its content, its ``name`` and every key and string of its
``metadata``. Operators can add their own regular expressions on top of the defaults.

Pure and deterministic: no I/O, standard library only. A :class:`Rejection` names
*which kind* of secret was found and *where* (content, name, metadata), never the
secret itself, so it is safe to log and to return to the client.

How the default scanner works (docs/content-filter.md has the full list)
1. Text is normalised first when it is not ASCII: zero-width and bidi control
   characters are dropped and NFKC folds full-width letters and colons, so
   ``ｐａｓｓｗｏｒｄ：hunter2`` and ``pass\u200bword: hunter2`` read like the plain form.
2. Provider formats: a secret with a recognisable shape is rejected wherever it is
   (PEM private keys, AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI, Anthropic,
   Hugging Face, npm, PyPI, SendGrid, Twilio, Discord, Telegram, Azure, JWTs, Basic and
   Bearer credentials, URLs with a password).
3. Key/value: a key that names a secret (``password``, ``DB_PASSWORD``, ``api_key``,
   ``"token":``, ``my wifi password is``, ``Mein Passwort ist``, ``密码是`` ...) followed by
   ``:``/``=``/"is"/"'s"/"was" (or the language's copula) and a value. What counts as a
   value depends on how strongly the key names a secret: after a password keyword any
   real word is one (a passphrase of plain words included); after ``token``,
   ``secret``, ``pass``, ``pin`` only a value that looks like a secret (letters mixed
   with digits or symbols, a run of digits for a PIN, a long random-looking string).
   The protections against ordinary talk live in the value checks: function words,
   adjectives and participles ("is too short", "is expired", "is on a sticky note"),
   lengths ("is 12 characters"), placeholders (``<your password>``, ``********``,
   ``$DB_PASSWORD``, ``YOUR_API_KEY``) and code (``getpass()``, ``os.environ[...]``,
   ``cfg.db.password``, type annotations) are never secrets.
4. Entropy: a long random-looking token (32+ characters mixing upper case, lower case
   and digits, with high Shannon entropy) is rejected even without a keyword, unless it
   is part of a URL, a hex digest, a UUID or labelled as an id.

Every pattern is linear: no nested unbounded quantifiers, bounded look-arounds, and the
keyword stages run only when a cheap substring test says a keyword may be present. The
filter runs on every turn; ``bench/content_filter_fp.py`` measures its cost.
"""

from __future__ import annotations

import base64
import functools
import binascii
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ContentFilter", "Rejection", "DEFAULT_REASONS"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was rejected. Never contains the matched text (nor a metadata key)."""

    reason: str  # short stable name, e.g. "private_key", "password_assignment", "custom"
    message: str  # human text, safe to log and return
    where: str = "content"  # "content", "name" or "metadata"

    def __str__(self) -> str:  # handy in logs and job errors
        return f"{self.reason}: {self.message}"


# ======================================================================================
# Small helpers
# ======================================================================================

_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")


def _normalize(text: str) -> str:
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))


def _trie_regex(words: Iterable[str]) -> str:
    """One alternation for many literal words, factored by prefix (much cheaper to scan
    than a flat ``a|b|c``). A space in a word matches any run of whitespace or a hyphen."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict[str, Any]) -> str:
        end = "" in node
        kids = [
            (r"[\s\-]{1,3}" if ch == " " else re.escape(ch)) + build(sub)
            for ch, sub in sorted(node.items())
            if ch != ""
        ]
        if not kids:
            return ""
        if len(kids) == 1 and not end:
            return kids[0]
        body = "(?:" + "|".join(kids) + ")"
        return body + "?" if end else body

    return build(trie)


def _entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _class_of(ch: str) -> int:
    return 0 if ch.islower() else 1 if ch.isupper() else 2 if ch.isdigit() else 3


def _transition_rate(s: str) -> float:
    """Share of neighbouring characters of different classes (lower/upper/digit/other):
    about 0.6 for random base62, 0.2-0.3 for camelCase words."""
    if len(s) < 2:
        return 0.0
    changes = sum(1 for a, b in zip(s, s[1:]) if _class_of(a) != _class_of(b))
    return changes / (len(s) - 1)


def _looks_random(s: str, *, min_len: int = 16) -> bool:
    """A long string that reads like generated key material, not like words."""
    alnum = "".join(ch for ch in s if ch.isalnum())
    if len(alnum) < min_len or not alnum.isascii():
        return False
    upper = sum(ch.isupper() for ch in alnum)
    lower = sum(ch.islower() for ch in alnum)
    digits = sum(ch.isdigit() for ch in alnum)
    classes = (upper >= 2) + (lower >= 2) + (digits >= 2)
    if classes < 2:
        return False
    if _entropy(alnum) < min(4.0, math.log2(len(alnum)) - 0.6):
        return False
    return _transition_rate(alnum) >= (0.3 if classes == 3 else 0.4)


# ======================================================================================
# Word lists for the value checks
# ======================================================================================

# Values that stand for "a secret goes here" rather than being one.
_PLACEHOLDER_WORDS = frozenset(
    """
    password passwd pass pwd pw passphrase passcode secret token key apikey api_key pin
    none null nil empty blank redacted hidden masked removed omitted required optional
    unset undefined todo tbd n/a na xxx xxxx changeit example sample placeholder dummy
    your_password yourpassword your-password mypassword my_password <password> true false
    yes no on off env environment vault keyring prompt stdin ask interactive generated
    random auto default same unknown foo bar baz foobar test value string str secretstr
    passwort kennwort contraseña contrasena senha wachtwoord lösenord passord adgangskode
    hasło haslo пароль şifre sifre mdp
    """.split()
)

# Words that follow "my password is …" / "password: …" in ordinary talk: function words,
# pronouns, adverbs, common verbs (an instruction: "Password: keep it safe"), in the
# languages whose password words are recognised.
_STOP_WORDS = frozenset(
    """
    a an the this that these those it its it's itself my your yours his her hers our ours
    their theirs mine me you him them us i we they he she one ones someone somebody
    something anything nothing everything whatever whichever what which who whom whose
    when where why how if then than so too very really quite rather pretty not no never
    always still just only even also now already yet again soon later here there is are
    was were be been being am do does did done have has had having will would shall
    should can could may might must need needs needed to of in on at by for from with
    without about into onto over under as like and or but nor because since though
    although while until unless whereas each every all any some many much more most less
    least few several both either neither same such other another else enough ok okay
    yeah yes yep nope nah lol haha please thanks thank via per vs etc see keep use enter
    type typed check ask change reset choose pick make create set click press follow send
    contact call write remember store save share provide update confirm verify request
    try go read look find get give put let tell know think want got gonna wanna case
    somewhere anywhere everywhere nowhere probably maybe perhaps actually basically
    literally definitely exactly almost mostly usually supposedly gone back up down out
    off away around between behind after before during against within through toward
    towards upon across along among beside besides beyond near next till sent kept lost
    forgotten written given shown known hidden chosen stolen broken made told found held
    left put read spent thought easily happily luckily temporarily necessarily primarily
    heavily readily arbitrarily sadly apparently unfortunately fortunately hopefully
    whats what's that's it's there's here's don't doesn't didn't isn't wasn't won't can't
    couldn't shouldn't wouldn't
    zu nicht sehr ganz der die das den dem des ein eine einen einem einer mein meine dein
    deine sein seine ihr ihre unser unsere auf im bei mit für von vom zum zur noch jetzt
    auch schon immer was wie wo und oder aber ja nein doch mir dir es er sie wir nur
    trop pas très le la les l un une des mon ma mes ton ta tes son sa ses notre votre
    leur dans sur sous avec pour par de du en encore aussi déjà toujours jamais quoi ce
    cet cette ça et ou mais oui non
    muy demasiado el los las lo unos unas mi mis tu tus su sus nuestro nuestra con para
    por del también ya todavía siempre nunca que qué y o pero sí
    muito não o as os um uma uns umas minha meu teu tua seu sua nossa na no com da do
    ainda sempre nunca e mas sim
    troppo non molto il gli uno mia mio tuo sua suo nostra di della da anche già ancora
    mai che ma
    te niet erg heel zeer het een mijn jouw je zijn haar ons onze op met voor van ook al
    nog altijd nooit wat en of maar nee
    för for inte ikke ej mycket veldig meget ett et den det min mitt mina din ditt vår
    vårt på med till til av också også redan allerede fortfarande fortsatt alltid aldri
    aldrig vad hva hvad och og eller men nej nei
    za nie bardzo jest to ten ta moje mój moja twoje w z dla też już jeszcze zawsze
    nigdy takie samo i lub ale tak
    çok değil ve ile için bu şu bir hep hâlâ hala artık gibi daha
    """.split()
)

# Adjectives and participles people use *about* a password ("it is expired").
_DESCRIPTIVE_WORDS = frozenset(
    """
    wrong right correct incorrect invalid valid expired old new same different weak strong
    long short simple easy hard difficult complicated complex secure insecure safe unsafe
    compromised leaked stolen hacked locked blocked reset changed saved stored written
    broken stuck forgotten lost missing sensitive case-sensitive fine good bad terrible
    awful great nice cool required mandatory optional below above attached encrypted
    hashed protected shared personal private public obvious unique random memorable
    predictable guessable common generic default temporary temp permanent strict basic
    standard numeric alphanumeric lowercase uppercase weird funny silly stupid dumb crazy
    insane huge tiny massive enormous empty full blank useless pointless confidential
    classified secret ancient outdated longer shorter stronger weaker better worse easier
    harder safer simpler newer older bigger smaller same identical similar unchanged
    unbreakable uncrackable impossible possible visible obvious plain clear fun cute ugly pretty lovely
    amazing awesome fantastic horrible weird odd strange clever smart lame cheesy hilarious epic iconic
    perfect brilliant excellent boring nice sweet lame cringe silly goofy legendary infamous famous
    popular classic gibberish nonsense garbage rubbish trash embarrassing ridiculous obvious
    falsch richtig korrekt abgelaufen geändert neu alt sicher unsicher lang kurz schwach
    stark gleich gleiche leer einfach kompliziert ungültig gültig erforderlich
    faux fausse correcte incorrecte expiré expirée oublié oubliée changé changée nouveau
    nouvelle vieux vieille sécurisé sécurisée longue court courte faible fort forte même
    obligatoire requis requise vide
    incorrecta incorrecto correcta correcto segura seguro débil fuerte larga largo corta
    corto nueva nuevo vieja viejo misma mismo obligatoria obligatorio vacía vacío
    errada errado correta correto fraca fraco longa longo curta curto nova novo antiga
    antigo mesma mesmo obrigatória vazia
    sbagliata sbagliato corretta corretto debole lunga lungo nuova nuovo vecchia vecchio
    scaduta scaduto sicura sicuro obbligatoria stessa stesso vuota
    fout verkeerd juist goed zwak sterk nieuw oud verlopen veilig onveilig hetzelfde
    dezelfde verplicht leeg
    fel feil forkert rätt riktig rigtig svagt svakt svag svak stærk starkt sterkt sterk
    stærkt långt langt nytt nyt ny gammalt gammelt gammel samma samme utgånget utløpt
    udløbet säkert sikkert sikker tomt tom
    złe zły błędne poprawne dobre słabe silne długie krótkie nowe stare puste wymagane
    yanlış doğru kısa uzun zayıf güçlü yeni eski
    """.split()
)

# "if not password: raise …": code after a colon is not a value.
_CODE_WORDS = frozenset(
    """
    raise return print yield throw pass break continue elif else try except finally def class import
    lambda await async del assert global nonlocal echo exit die fi then done esac
    """.split()
)

_DESCRIPTIVE_SUFFIXES = (
    "able", "ible", "ous", "ful", "less", "ive", "ical", "ary", "ory", "ed", "ing", "ent", "ant",
)

# "my password is 12 characters long" is a description, not a password.
_LENGTH_UNITS = re.compile(
    r"[ \t]*(?:\+|or more|or so)?[ \t]*(?:characters?|chars?|letters?|digits?|symbols?|numbers?|"
    r"words?|long|min|max|minimum|maximum|zeichen|stellen|caractères|caracteres|caratteri|"
    r"tekens|tecken|tegn|znaków|знаков|символов|karakter|文字|位|字符|자리|글자)",
    re.I,
)

_CODEISH_VALUE = re.compile(
    r"""
    [(\[{)\]}]                                # call, subscript, dict/object literal
    | ^[$%@&*\\]                               # $VAR, %(x)s, @param, &ref, *ptr
    | ^(?:os|env|process|config|cfg|conf|settings|self|this|args|opts|options|params|request
         |req|ctx|context|getpass|input|prompt|secrets|vault|keyring|environ|import|require
         |new|await|lambda|function|def|none|null|nil|undefined|true|false)\b
    | ^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$        # dotted attribute path: cfg.db.password
    | ^(?:str|string|int|integer|bool|boolean|bytes|text|varchar|char|secretstr|optional
         |any|number|object|float|unicode|charfield|textfield)[;,]?$
    """,
    re.X | re.I,
)

_NUMERICISH = re.compile(r"[+\-±~]?[$€£¥]?\d[\d.,:/\-]*(?:[A-Za-z%°]{1,3}|'s)?")  # 3000m 12A 1990s 12:30pm
_URLISH = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,20}://|www\.", re.I)
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[A-Za-z]{2,24}")
_WORDLIKE = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")  # YOUR_API_KEY, DB_PASSWORD
_MASKED = re.compile(r"[*•·●x#.\-_?…]+")
_STRONG_SYMBOL = frozenset("!@#$%^&*+=?~|\\<>;[]{}()")
_TRAILING_PUNCT = ".,;:!?)]}>\"'’”»」』】）"
_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "”": "”", "‘": "’", "’": "’", "«": "»", "„": "“", "「": "」", "『": "』"}
_PLACEHOLDER_SUBSTRINGS = (
    "example", "placeholder", "changeme", "change_me", "change-me", "your_", "your-", "yourkey", "yourtoken",
    "xxxx", "****", "...", "…", "redacted", "dummy", "<", ">", "{{", "}}", "replace_me", "replace-me", "insert_",
)


def _is_placeholder(value: str) -> bool:
    v = value.strip()
    low = v.lower()
    if not low or low in _PLACEHOLDER_WORDS or _MASKED.fullmatch(low):
        return True
    if v[0] in "<{[$%(?:" or v.endswith(">"):  # <your password>, {pw}, [redacted], $PW, %(pw)s, (hidden)
        return True
    if _ENV_NAME.fullmatch(v):
        return True
    if any(s in low for s in _PLACEHOLDER_SUBSTRINGS) and not _looks_random(v, min_len=20):
        return True
    return len(low) >= 4 and len(set(low)) <= 2 and not any(ch.isdigit() for ch in low)  # aaaa, abab (not 0808)


def _names_a_secret_itself(value: str) -> bool:
    """``password = user_password``, ``token: GITHUB_TOKEN``: a variable, not a value."""
    if any(ch.isdigit() for ch in value) or not re.fullmatch(r"[A-Za-z_][A-Za-z_.\-]*", value):
        return False
    return _key_family(value) is not None


def _is_codeish(value: str) -> bool:
    return bool(_CODEISH_VALUE.search(value))


def _is_not_a_value(value: str) -> bool:
    """Shapes that are never a secret, whatever key they follow."""
    return (
        _is_placeholder(value)
        or _is_codeish(value)
        or _names_a_secret_itself(value)
        or bool(_URLISH.match(value))
        or bool(_EMAIL.fullmatch(value))
        or value.startswith(("/", "~/", "./", "../", "\\\\"))
        or bool(re.match(r"[A-Za-z]:\\", value))
    )


def _is_descriptive(word: str) -> bool:
    w = word.lower().strip("'’")
    if w in _DESCRIPTIVE_WORDS or w in _STOP_WORDS:
        return True
    head = re.split(r"['’\-]", w, maxsplit=1)[0]
    if head in _STOP_WORDS or head in _DESCRIPTIVE_WORDS:  # one-time, auto-generated, self-made
        return True
    if w.endswith(("'s", "’s")):  # "is Bob's birthday"
        return True
    if len(w) >= 5 and w.endswith(_DESCRIPTIVE_SUFFIXES):
        return True
    return len(w) >= 6 and w.endswith("ly") and not w.endswith(("fly", "ily"))


_WORD_AT = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_GAP_AT = re.compile(r"[ \t]{1,3}")


def _word_run(text: str, pos: int, limit: int = 8) -> list[str]:
    """The plain words from ``pos`` up to the first function word, punctuation or digit."""
    words: list[str] = []
    while len(words) < limit:
        m = _WORD_AT.match(text, pos)
        if not m:
            break
        w = m.group(0).lower()
        if words and w in _STOP_WORDS:
            break
        words.append(w)
        g = _GAP_AT.match(text, m.end())
        if not g:
            break
        pos = g.end()
    return words


def _secretlike(value: str, min_len: int) -> bool:
    """Looks like a secret on its own: letters mixed with digits or symbols, or random."""
    if len(value) < min_len or _is_not_a_value(value):
        return False
    if _NUMERICISH.fullmatch(value) or _WORDLIKE.fullmatch(value) and not _looks_random(value):
        return False
    has_letter = any(ch.isalpha() for ch in value)
    has_digit = any(ch.isdigit() for ch in value)
    has_symbol = any(ch in _STRONG_SYMBOL for ch in value)
    if has_letter and (has_digit or has_symbol):
        return True
    return _looks_random(value)


# ======================================================================================
# Key names: which keys name a secret, and how strongly
# ======================================================================================

# Families, from the strongest: "password" (any real value), "passphrase" (plain words
# too, even after an adjective), "pin" (digits), "secret" (token/secret/api key: a
# secret-looking value), "cred" (user/password pairs), "auth" (credentials schemes),
# "pass" (the English noun "pass" is mostly a ticket), "key" (only random values).

_PASSWORD_PARTS = frozenset(
    """
    password passwd pwd pw pword pswd passwrd pass passw passwort kennwort contraseña contrasena
    senha wachtwoord lösenord lösenordet losenord passord passordet adgangskode adgangskoden
    kodeord hasło haslo salasana пароль şifre sifre parola motdepasse mdp passcode
    """.split()
)
_PASS_NOUN_MODIFIERS = frozenset(
    """
    boarding bus season day hall ski backstage mountain free press guest visitor vip weekly monthly
    annual museum park train rail metro transit gym festival event concert fast forward no a first
    second third hail hallway all-access access travel parking camping fishing hunting beach golf
    pool zoo theme ferry flight airport lounge entry exit overtaking forward-pass back-pass
    bypass compass
    """.split()
)
_PIN_CODE_PREFIXES = frozenset(
    "pin door gate alarm garage safe lock locker keypad entry access security unlock backup recovery wifi".split()
)
_NON_SECRET_TOKEN_PREFIXES = frozenset(
    """
    next page pagination continuation cursor sync cancel cancellation max num min end start stop eos bos
    pad unk sep mask special input output prompt completion total count sos cls
    """.split()
)
_SECRET_KEY_PREFIXES = frozenset(
    """
    api access secret private client signing encryption master account shared app service subscription
    admin deploy auth license licence product recovery storage consumer webhook ssh gpg pgp hmac jwt
    session cookie
    """.split()
)
_TRANSPARENT_SUFFIXES = frozenset(
    "confirm confirmation again repeat repeated plain plaintext clear cleartext value val raw text b64 base64".split()
)
_COMPOUND_ENDINGS: tuple[tuple[str, str], ...] = (
    ("password", "password"), ("passwd", "password"), ("passphrase", "passphrase"), ("passcode", "password"),
    ("apikey", "secret"), ("accesskey", "secret"), ("secretkey", "secret"), ("privatekey", "secret"),
    ("clientsecret", "secret"), ("authtoken", "secret"), ("accesstoken", "secret"), ("refreshtoken", "secret"),
    ("sessiontoken", "secret"), ("bearertoken", "secret"), ("apisecret", "secret"), ("appsecret", "secret"),
    ("consumersecret", "secret"), ("webhooksecret", "secret"), ("signingsecret", "secret"),
    ("accountkey", "secret"), ("sharedaccesskey", "secret"), ("masterkey", "secret"), ("encryptionkey", "secret"),
    ("signingkey", "secret"), ("secretaccesskey", "secret"), ("apitoken", "secret"), ("seedphrase", "passphrase"),
    ("recoveryphrase", "passphrase"), ("mnemonicphrase", "passphrase"), ("pincode", "pin"),
)
_CAMEL_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_KEY_SPLIT = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=4096)
def _key_family(name: str) -> str | None:
    """Which kind of secret a key (an identifier, a metadata key, a JSON key) names."""
    if len(name) > 80:
        return None
    parts = [re.sub(r"\d+$", "", p) for p in _KEY_SPLIT.split(_CAMEL_SPLIT.sub("_", name).lower())]
    parts = [p for p in parts if p]
    while len(parts) > 1 and parts[-1] in _TRANSPARENT_SUFFIXES:
        parts.pop()
    if not parts:
        return None
    last, prev = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if last in _PASSWORD_PARTS:
        if last == "pass" and prev in _PASS_NOUN_MODIFIERS:
            return None
        if last == "parola" and prev:  # Italian "parola" is "word"
            return None
        return "password"
    if last in ("passphrase", "mnemonic"):
        return "passphrase"
    if last in ("pin", "pincode") or (last == "code" and prev in _PIN_CODE_PREFIXES):
        return "pin"
    if last == "secret":
        return None if prev in ("is", "has", "no", "top", "little") else "secret"
    if last == "token":
        return None if prev in _NON_SECRET_TOKEN_PREFIXES else "secret"
    if last in ("credential", "credentials", "creds", "cred"):
        return "cred"
    if last in ("auth", "authorization", "authorisation"):
        return "auth"
    if last == "key":
        return "secret" if prev in _SECRET_KEY_PREFIXES else "key"
    joined = "".join(parts)
    for ending, family in _COMPOUND_ENDINGS:
        if joined.endswith(ending):
            return family
    return None


# ======================================================================================
# Value extraction and judgement
# ======================================================================================


@dataclass(slots=True)
class _Value:
    text: str
    quoted: bool
    start: int  # where the value starts in the scanned text
    end: int


_TOKEN_AT = re.compile(r"[^\s\"`“”«»„「」『』]{1,200}")
_ASCII_TOKEN_AT = re.compile(r"[!-~]{1,200}")
_SPACE_AT = re.compile(r"[ \t]*(?:\r?\n[ \t]*)?")


def _read_value(text: str, pos: int, *, ascii_only: bool = False, cut: str = "") -> _Value | None:
    """The value that starts at ``pos``: a quoted string, or one token."""
    if pos >= len(text):
        return None
    ch = text[pos]
    close = _QUOTES.get(ch)
    if close is not None:
        end = text.find(close, pos + 1, pos + 202)
        nl = text.find("\n", pos + 1, end if end >= 0 else pos + 202)
        if end > pos + 1 and nl < 0:
            return _Value(text[pos + 1 : end], True, pos + 1, end)
        pos += 1  # an unpaired quote: read what follows as a bare token
    m = (_ASCII_TOKEN_AT if ascii_only else _TOKEN_AT).match(text, pos)
    if not m:
        return None
    raw = m.group(0)
    for c in cut:
        i = raw.find(c)
        if i > 0:
            raw = raw[:i]
    raw = raw.rstrip(_TRAILING_PUNCT)
    if not raw:
        return None
    return _Value(raw, False, pos, pos + len(raw))


def _judge_password(v: _Value, text: str, *, run_min: int = 3, form: str = "talk", plain: bool = True) -> bool:
    """Is ``v`` (what follows a password keyword) a real password?

    ``plain=False``: a bare dictionary word does not count (after a keyword in a language
    whose adjectives the word lists cannot cover: "hasło jest nieprawidłowe")."""
    value = v.text.strip()
    if len(value) < 3 or _is_not_a_value(value):
        return False
    if v.quoted:
        # "'correct horse battery'" is a passphrase; "a password in clear" is a sentence
        # (but after "passphrase", "'the quick brown fox'" is the passphrase).
        return run_min <= 2 or " " not in value or not any(w.lower() in _STOP_WORDS for w in value.split())
    tail = text[v.end : v.end + 40]
    if any(ch.isdigit() for ch in value):
        if re.fullmatch(r"\d{1,3}\+?", value) and _LENGTH_UNITS.match(tail):
            return False  # "my password is 12 characters long"
        if re.fullmatch(r"\d{1,2}(?:st|nd|rd|th)?", value):
            return False
        return True
    if not _WORDLIKE.fullmatch(value):
        return True  # symbols mixed in: p@ss!, S3cr3t!, correct-horse+battery
    # Plain words: a password unless it is how people *describe* a password.
    words = _word_run(text, v.start) or [value.lower()]
    first = value.lower()
    if first in _STOP_WORDS or first in _PLACEHOLDER_WORDS or first in _CODE_WORDS:
        return False
    if not plain:
        return False
    if _is_descriptive(first):
        return len(words) >= run_min  # "correct horse battery staple"
    if form == "noop":
        return False  # "password manager", "password reset link"
    return True


def _judge_pin(v: _Value, text: str) -> bool:
    value = v.text.strip()
    if _is_not_a_value(value):
        return False
    if re.fullmatch(r"[#*]?\d{4,12}[#*]?", value):  # 4821, 4821# (a keypad code)
        return not _LENGTH_UNITS.match(text[v.end : v.end + 30])
    return _secretlike(value, 4)


def _judge_pair(v: _Value, text: str) -> bool:
    """``credentials are bob/hunter2``, ``creds: bob / hunter2``."""
    value = v.text
    for sep in (":", "/", "|"):
        if sep in value:
            user, _, pw = value.partition(sep)
            if user and len(pw) >= 3 and not _is_not_a_value(pw):
                return True
    m = re.match(r"[ \t]*[/:|][ \t]*", text[v.end : v.end + 8])
    if m:
        second = _read_value(text, v.end + m.end())
        if second is not None and _judge_password(second, text, form="colon"):
            return True
    return _secretlike(value, 8)


_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|token|basic|digest|apikey)\s+")


def _judge_family(family: str, v: _Value, text: str, *, form: str, plain: bool = True) -> bool:
    if family == "password":
        return _judge_password(v, text, form=form, plain=plain)
    if family == "passphrase":
        return _judge_password(v, text, run_min=2, form=form, plain=plain)
    if family == "pin":
        return _judge_pin(v, text)
    if family == "pass":  # the noun "pass" is a ticket: only a secret-looking value counts
        return _secretlike(v.text, 4)
    if family == "cred":
        return _judge_pair(v, text)
    if family == "auth":
        m = _AUTH_SCHEME.match(text, v.start)
        if m:
            nxt = _read_value(text, m.end())
            return nxt is not None and _secretlike(nxt.text, 12)
        return _secretlike(v.text, 12)
    if family == "key":
        return _secretlike(v.text, 16) and _looks_random(v.text)
    return _secretlike(v.text, 8)  # "secret"


def _judge_metadata(family: str, value: str, key: str = "") -> bool:
    """A metadata key that names a secret, and its value: structured data, not talk."""
    v = value.strip()
    if not v or _is_not_a_value(v):
        return False
    low = v.lower()
    if family == "secret" and key.lower().endswith("token"):
        # A credential token is long; short "tokens" in metadata are correlation or trace
        # markers (a test run's uuid4().hex[:8]), and rejecting the event for one loses it.
        return _secretlike(v, 10)
    if family in ("password", "passphrase"):
        return len(v) >= 3 and low not in _DESCRIPTIVE_WORDS and low not in _STOP_WORDS
    if family == "pin":
        return bool(re.fullmatch(r"\d{4,12}", v)) or _secretlike(v, 4)
    if family == "pass":
        return _secretlike(v, 4)
    if family in ("secret", "cred"):
        return (len(v) >= 6 and not any(ch.isspace() for ch in v)) or _secretlike(v, 8)
    if family == "auth":
        m = _AUTH_SCHEME.match(v)
        return _secretlike(v[m.end() :] if m else v, 12)
    return _secretlike(v, 16) and _looks_random(v)  # "key"


# ======================================================================================
# Rules
# ======================================================================================

# A validator gets the match and says whether it really is a secret: True/False, or, for
# the key/value rules, the family of the key (see _FAMILY_REASONS) or None.
_Validator = Callable[[re.Match[str]], "bool | str | None"]


@dataclass(frozen=True, slots=True)
class _Rule:
    reason: str
    description: str  # goes into Rejection.message
    pattern: re.Pattern[str]
    validate: _Validator | None = None
    hints: tuple[str, ...] = ()  # lower-case substrings; the rule runs only if one occurs
    # Characters that must not come right before a match (a token boundary). Checked in
    # Python rather than with a look-behind, which would stop the regex engine from
    # jumping straight to the pattern's literal prefix. "alnum": any letter or digit.
    left: frozenset[str] | str = frozenset()
    gate: Callable[[str], bool] | None = None  # on the lower-cased text: worth scanning?
    min_token: int = 0  # the shortest whitespace-free run a match needs
    # For case-insensitive patterns: the same pattern without re.I, run over the
    # lower-cased text (several times faster); each hit is re-matched on the real text.
    lower: re.Pattern[str] | None = None


def _not_placeholder_group(group: str) -> _Validator:
    def check(m: re.Match[str]) -> bool:
        return not _is_placeholder(m.group(group))

    return check


def _filled(body: str) -> bool:
    """A token body that is real, not filler: ``xxxxxxxx``, ``...``, ``YOUR_KEY_HERE``."""
    low = body.lower()
    return len(set(low)) >= 3 and not any(s in low for s in ("xxxx", "****", "...", "your", "here", "placeholder"))


def _varied(group: str = "body", *, min_distinct: int = 3) -> _Validator:
    """A token body that is not ``xxxxxxxx`` or ``YOUR_TOKEN_HERE``."""

    def check(m: re.Match[str]) -> bool:
        body = m.group(group)
        if len(set(body.lower())) < min_distinct or not _filled(body):
            return False
        return any(ch.isdigit() for ch in body) or (
            any(ch.isupper() for ch in body) and any(ch.islower() for ch in body)
        )

    return check


def _validate_openai(m: re.Match[str]) -> bool:
    """``sk-`` keys: the typed prefixes (proj/svcacct/admin) are specific enough; a bare
    ``sk-`` needs one long segment that is not prose (``sk-ii``, ``sk-something-long``)."""
    prefix, body = m.group("prefix"), m.group("body")
    if prefix:
        return len(body) >= 20 and _filled(body)
    if "T3BlbkFJ" in body:  # "OpenAI" in base64, inside every legacy user key
        return True
    for seg in re.split(r"[-_]", body):
        if len(seg) < 20 or len(set(seg.lower())) < 8 or _is_placeholder(seg):
            continue
        if any(ch.isdigit() for ch in seg) and any(ch.isalpha() for ch in seg):
            return True
        if any(ch.isupper() for ch in seg) and any(ch.islower() for ch in seg):
            return True  # letters only, mixed case: sk-abcdefghijklmnopqrstuvwxyzABCDEFGH
        if len(seg) >= 32:
            return True
    return False


def _validate_basic(m: re.Match[str]) -> bool:
    raw = m.group("val")
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    if not decoded.isprintable() or ":" not in decoded:
        return False
    user, _, pw = decoded.partition(":")
    return bool(user) and len(pw) >= 3 and not _is_placeholder(pw)


def _validate_bearer(m: re.Match[str]) -> bool:
    val = m.group("val")
    return _secretlike(val, 16) or bool(re.fullmatch(r"eyJ[\w\-]+\.[\w\-]+\.[\w\-]+", val))


def _validate_discord(m: re.Match[str]) -> bool:
    first = m.group("id")
    try:
        if base64.b64decode(first + "=" * (-len(first) % 4), validate=False).decode("ascii").isdigit():
            return True
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    return _looks_random(first, min_len=16) and _looks_random(m.group("hmac"), min_len=20)


def _validate_hex_sid(m: re.Match[str]) -> bool:
    body = m.group("body")
    return any(ch.isdigit() for ch in body) and any(ch.isalpha() for ch in body) and len(set(body)) >= 8


_MEDIA_URL = re.compile(
    r"[\"'(<\[]?https?://[^\s?#]{1,2000}\.(?:jpe?g|png|gif|webp|avif|bmp|svg|ico|tiff?|heic|mp4|webm|mov|m4v|mp3|m4a"
    r"|wav|ogg|flac|pdf)\?",
    re.I,
)


def _in_signed_media_url(text: str, pos: int) -> bool:
    """``pos`` is in the query string of a link to a media file (``….jpg?token=…``): a
    signed CDN URL grants a look at one picture, it is not an account credential."""
    ws = max(text.rfind(" ", 0, pos), text.rfind("\n", 0, pos), text.rfind("\t", 0, pos))
    return bool(_MEDIA_URL.match(text, ws + 1, pos))


# --- provider formats ------------------------------------------------------------------

_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ALNUM_ASCII = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_UPPER_DIGITS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_R = r"(?![A-Za-z0-9_\-])"  # token end (a look-ahead costs nothing before the match)

_PROVIDER_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        "a private key block",
        # RSA / EC / DSA / OPENSSH / ENCRYPTED / PGP ... PRIVATE KEY (BLOCK); PuTTY .ppk
        re.compile(r"-----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-\d+: "),
        hints=("private key", "putty"),
    ),
    _Rule(
        "aws_access_key",
        "an AWS access key id",
        re.compile(r"A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|PKA|BIA|CCA)(?P<body>[A-Z0-9]{16})(?![A-Z0-9])"),
        lambda m: len(set(m.group("body"))) >= 2,
        left=_UPPER_DIGITS,
        min_token=20,
    ),
    _Rule(
        "aws_secret_key",
        "an AWS secret access key",
        # Only in assignment context: a bare 40-char base64 string is too common.
        re.compile(
            r"(?i:aws[\w \-]{0,30}?secret|secret[_ \-]?access[_ \-]?key)[\w \-]{0,30}?[\"']?\s*[:=]\s*[\"']?"
            r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
        hints=("secret",),
        min_token=40,
    ),
    _Rule(
        "github_token",
        "a GitHub token",
        re.compile(rf"(?:gh[pousr]_(?P<body>[A-Za-z0-9]{{30,}})|github_pat_(?P<pat>[A-Za-z0-9_]{{22,}})){_R}"),
        lambda m: _filled(m.group("body") or m.group("pat")),
        hints=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        left=_TOKEN_CHARS,
        min_token=34,
    ),
    _Rule(
        "gitlab_token",
        "a GitLab token",
        re.compile(
            rf"(?:gl(?:pat|dt|rt|ptt|ft|imt|oas|soat|cbt|agent)-(?P<body>[A-Za-z0-9_\-]{{20,}})"
            rf"|GR1348941(?P<runner>[A-Za-z0-9_\-]{{20,}})){_R}"
        ),
        lambda m: _filled(m.group("body") or m.group("runner")),
        hints=("gl", "gr1348941"),
        left=_TOKEN_CHARS,
        min_token=26,
    ),
    _Rule(
        "slack_token",
        "a Slack token",
        re.compile(
            r"xox[abposre]-(?P<body>[A-Za-z0-9\-]{10,})"
            r"|xapp-\d-[A-Z0-9]{8,}-\d{6,}-[a-f0-9]{20,}"
            r"|https://hooks\.slack\.com/(?:services|workflows)/T[A-Za-z0-9_]+/[A-Za-z0-9_]+/[A-Za-z0-9_]+"
        ),
        lambda m: m.group("body") is None or any(ch.isdigit() for ch in m.group("body")),
        hints=("xox", "xapp-", "hooks.slack.com"),
        left=_TOKEN_CHARS,
        min_token=15,
    ),
    _Rule(
        "stripe_key",
        "a Stripe secret key",
        re.compile(rf"(?:(?:sk|rk)_(?:live|test)_|whsec_)(?P<body>[A-Za-z0-9]{{16,}}){_R}"),
        _varied(),
        hints=("sk_", "rk_", "whsec_"),
        left=_TOKEN_CHARS,
        min_token=24,
    ),
    _Rule(
        "google_api_key",
        "a Google API key or OAuth secret",
        re.compile(
            rf"(?:AIza(?P<body>[0-9A-Za-z_\-]{{35}})|GOCSPX-(?P<oauth>[A-Za-z0-9_\-]{{28}})"
            rf"|ya29\.(?P<access>[0-9A-Za-z_\-]{{20,}})){_R}"
        ),
        lambda m: _filled(m.group("body") or m.group("oauth") or m.group("access")),
        hints=("aiza", "gocspx-", "ya29."),
        left=_TOKEN_CHARS,
        min_token=25,
    ),
    _Rule(
        "anthropic_key",
        "an Anthropic API key",
        re.compile(r"sk-ant-(?P<body>[A-Za-z0-9_\-]{20,})"),
        lambda m: _filled(m.group("body")),
        hints=("sk-ant-",),
        left=_TOKEN_CHARS,
        min_token=27,
    ),
    _Rule(
        "openai_key",
        "an OpenAI-style API key",
        re.compile(r"sk-(?!ant-)(?P<prefix>proj-|svcacct-|admin-|None-)?(?P<body>[A-Za-z0-9_\-]{20,})"),
        _validate_openai,
        hints=("sk-",),
        left=_TOKEN_CHARS,
        min_token=23,
    ),
    _Rule(
        "huggingface_token",
        "a Hugging Face token",
        re.compile(rf"(?:hf_|api_org_)(?P<body>[A-Za-z0-9]{{30,}}){_R}"),
        _varied(),
        hints=("hf_", "api_org_"),
        left=_TOKEN_CHARS,
        min_token=33,
    ),
    _Rule(
        "npm_token",
        "an npm access token",
        re.compile(rf"npm_(?P<body>[A-Za-z0-9]{{36}}){_R}"),
        _varied(),
        hints=("npm_",),
        left=_TOKEN_CHARS,
        min_token=40,
    ),
    _Rule(
        "pypi_token",
        "a PyPI API token",
        re.compile(r"pypi-Ag[A-Za-z0-9_\-]{40,}"),
        hints=("pypi-ag",),
        left=_TOKEN_CHARS,
        min_token=47,
    ),
    _Rule(
        "sendgrid_key",
        "a SendGrid API key",
        re.compile(rf"SG\.(?P<body>[A-Za-z0-9_\-]{{16,32}})\.[A-Za-z0-9_\-]{{30,50}}{_R}"),
        _varied(),
        hints=("sg.",),
        left=_TOKEN_CHARS,
        min_token=50,
    ),
    _Rule(
        "twilio_key",
        "a Twilio API key or account SID",
        re.compile(r"(?:SK|AC)(?P<body>[0-9a-f]{32})(?![A-Za-z0-9])"),
        _validate_hex_sid,
        left=_ALNUM_ASCII,
        min_token=34,
    ),
    _Rule(
        "discord_token",
        "a Discord bot token or webhook",
        re.compile(
            rf"(?P<id>[MNO][A-Za-z0-9_\-]{{23,27}})\.[A-Za-z0-9_\-]{{6,7}}\.(?P<hmac>[A-Za-z0-9_\-]{{27,40}}){_R}"
            r"|discord(?:app)?\.com/api/webhooks/\d{5,}/[A-Za-z0-9_\-]{40,}"
        ),
        lambda m: m.group("id") is None or _validate_discord(m),
        hints=(".", "discord"),
        left=_TOKEN_CHARS,
        min_token=59,
    ),
    _Rule(
        "telegram_bot_token",
        "a Telegram bot token",
        re.compile(r"(?<![0-9])\d{8,10}:AA[A-Za-z0-9_\-]{33}(?![A-Za-z0-9_\-])"),
        hints=(":aa",),
        min_token=45,
    ),
    _Rule(
        "azure_storage_key",
        "an Azure storage or service bus key",
        re.compile(
            r"(?i:AccountKey|SharedAccessKey|SharedAccessSignature)\s*=\s*(?P<val>[A-Za-z0-9+/%]{20,}={0,2})"
            r"|[?&]sig=(?P<sig>[A-Za-z0-9%+/]{30,}={0,2})"
        ),
        lambda m: not _is_placeholder(m.group("val") or m.group("sig")),
        hints=("accountkey", "sharedaccess", "sig="),
        min_token=30,
    ),
    _Rule(
        "jwt",
        "a JSON Web Token",
        # header.payload.signature, base64url; a JSON header always starts "eyJ" ('{"').
        re.compile(r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),
        lambda m: not _in_signed_media_url(m.string, m.start()),
        hints=("eyj",),
        left=_TOKEN_CHARS,
        min_token=37,
    ),
    _Rule(
        "auth_header",
        "HTTP Basic credentials",
        re.compile(r"(?i:\bbasic)\s+(?P<val>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"),
        _validate_basic,
        hints=("basic",),
        min_token=8,
    ),
    _Rule(
        "auth_header",
        "a Bearer token",
        re.compile(r"(?i:\bbearer|authorization:\s*token)\s+(?P<val>[A-Za-z0-9\-._~+/]{16,}=*)"),
        _validate_bearer,
        hints=("bearer", "token"),
        min_token=16,
    ),
    _Rule(
        "connection_string",
        "a password in a connection string",
        # scheme://user:pass@host
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@]{0,100}:(?P<val>[^\s@/]{1,200})@[^\s@]"),
        _not_placeholder_group("val"),
        hints=("://",),
    ),
)


# --- key/value -----------------------------------------------------------------------------

# 1. Identifiers in code and config: DB_PASSWORD=…, "api_key": "…", dbPassword = '…',
#    --password=…, os.environ["PASSWORD"] = "…", Password=…; (connection strings)
_ASSIGN = re.compile(r"(?P<op>[:=][=>]?)[ \t]*")
_CLI_FLAG = re.compile(r"--?(?P<key>[A-Za-z][\w\-]{1,40})[ \t]+(?=[^\s\-])")


def _key_before(text: str, end: int) -> tuple[str, bool, int] | None:
    """The identifier that ends right before ``end`` (spaces, a closing quote and a
    ``]`` allowed in between): (key, quoted, start) or None."""
    j = end
    stop = max(0, end - 8)
    while j > stop and text[j - 1] in " \t":
        j -= 1
    quoted = False
    if j > 0 and text[j - 1] == "]":
        j -= 1
    if j > 0 and text[j - 1] in "\"'`":
        j -= 1
        quoted = True
    k = j
    stop = max(0, j - 64)
    while k > stop and (text[k - 1].isalnum() or text[k - 1] in "_.-"):
        k -= 1
    if k > 0 and (text[k - 1].isalnum() or text[k - 1] in "_."):
        return None  # longer than any key we read
    while k < j and not text[k].isalpha():  # --password, .env, 2fa_…: start at a letter
        k += 1
    if k >= j:
        return None
    return text[k:j], quoted, k


def _validate_assign(m: re.Match[str]) -> str | None:
    text, op = m.string, m.group("op")
    if op not in (":", "=", ":=", "=>"):
        return None  # ==, ::, =<
    start = m.start()
    if op == "=" and start > 0 and text[start - 1] in "!<>=+-*/%&|^~":
        return None  # comparisons and augmented assignments
    found = _key_before(text, start)
    if found is None:
        return None
    key, quoted, ks = found
    family = _key_family(key)
    if family is None:
        return None
    if not quoted and op == ":" and key.isalpha():
        return None  # "Password: …", "boarding pass: 12A": the talk rule reads prose
    if _in_signed_media_url(text, ks):
        return None
    v = _read_value(text, m.end(), cut=";&,")
    return family if v is not None and _judge_family(family, v, text, form="assign") else None


def _validate_cli(m: re.Match[str]) -> str | None:
    family = _key_family(m.group("key"))
    if family is None or family == "key":
        return None
    v = _read_value(m.string, m.end())
    return family if v is not None and _judge_family(family, v, m.string, form="assign") else None


# 2. Talk: "my password is hunter2", "Mein Passwort ist …", "le mot de passe : …",
#    "the wifi password for the cabin is …", "パスワードは …", "密码是…", "비밀번호는 …".

# keyword -> (family, ascii_only). ascii_only: the value must be ASCII (scripts where an
# ASCII token after the keyword is the password and the language's own words are talk).
_TALK_KEYWORDS: dict[str, tuple[str, bool]] = {}


def _kw(family: str, words: str, *, ascii_only: bool = False) -> None:
    for w in words.split(","):
        w = w.strip()
        if w:
            _TALK_KEYWORDS[w] = (family, ascii_only)


_kw("password", "password, passwd, pwd, pw, pword, p/w, pswd, passwrd, app password, passcode, pass code")
_kw("passphrase", "passphrase, pass phrase, seed phrase, recovery phrase, secret phrase, mnemonic phrase, seed words")
_kw("passphrase", "wallet seed, recovery words, secret recovery phrase")
_kw("pin", "pin, pin code, pin number, pin-nummer, pin nummer, pincode, pin-code, door code, gate code, alarm code")
_kw("pin", "garage code, safe code, lock code, locker code, keypad code, entry code, access code, security code")
_kw("pin", "unlock code, backup code, recovery code, geheimzahl, code pin, code secret, clave, pinkod, pinkode")
_kw("pass", "pass, parola, heslo")
_kw("secret", "secret, secret key, api key, api token, access key, access token, auth token, bearer token")
_kw("secret", "refresh token, private key, client secret, app secret, signing key, encryption key, master key")
_kw("secret", "license key, licence key, product key, recovery key, token, auth")
_kw("cred", "credentials, credential, creds, login credentials")
# German, French, Spanish, Portuguese, Italian, Dutch, Swedish/Norwegian/Danish, Polish,
# Finnish, Turkish, Indonesian, Vietnamese
_kw("password", "passwort, kennwort, mot de passe, mdp, contraseña, contrasena, senha, parola d'ordine")
_kw("password", "parola d’ordine, wachtwoord, lösenord, lösenordet, losenord, passord, passordet, adgangskode")
_kw("password", "adgangskoden, kodeord, kodeordet, hasło, haslo, salasana, salasanani, salasanasi")
_kw("password", "şifre, şifrem, şifreniz, şifresi, şifremiz, sifre, sifrem, parolam, parolanız, parolası")
_kw("password", "kata sandi, mật khẩu")
# Cyrillic, Greek, Arabic, Hebrew, Hindi, Thai: the password is an ASCII token.
_kw("password", "пароль, пароля, κωδικός, συνθηματικό, كلمة المرور, كلمة السر, סיסמה, סיסמא", ascii_only=True)
_kw("password", "पासवर्ड, रहस्य शब्द", ascii_only=True)
_kw("pin", "пин, пин-код, пин код, пинкод", ascii_only=True)

# Japanese, Chinese, Korean, Thai: no spaces, particles attach to the keyword.
_CJK_KEYWORDS: dict[str, str] = {
    "パスワード": "password", "暗証番号": "pin", "密码": "password", "密碼": "password", "口令": "password",
    "비밀번호": "password", "비번": "password", "암호": "password", "パスコード": "password", "비밀 번호": "password",
    "รหัสผ่าน": "password",
}

_TALK_HINTS = (
    "pass", "pw", "pwd", "p/w", "pin", "secret", "token", "key", "cred", "auth", "code", "phrase", "mnemonic", "seed",
    "mdp", "senha", "clave", "wacht", "lösen", "losen", "adgang", "kodeord", "hasł", "hasl", "salasana", "şifre",
    "sifre", "parol", "heslo", "kata sandi", "mật khẩu", "geheimzahl", "kennwort", "contrase",
    "парол", "пин", "κωδικ", "συνθηματ", "كلمة", "סיסמ", "पासवर्ड", "रहस्य", "รหัส",
) + tuple(_CJK_KEYWORDS)

_TALK_KEYWORD = re.compile(r"(?i)(?P<kw>" + _trie_regex(_TALK_KEYWORDS) + r")(?![^\W_])")
_TALK_KEYWORD_LOWER = re.compile(r"(?P<kw>" + _trie_regex(_TALK_KEYWORDS) + r")(?![^\W_])")
_CJK_KEYWORD = re.compile("(?P<kw>" + _trie_regex(_CJK_KEYWORDS) + ")")

_PREPOSITIONS = (
    r"for|on|to|of|at|in|from|into|für|vom|von|zum|zur|de|du|des|del|della|dello|do|da|dos|das|di|per|"
    r"para|pour|voor|van|för|till|til|dla|от|для|na"
)
_ADVERBS = r"now|still|just|literally|actually|always|simply|currently|basically|also|probably|obviously|really"
_COPULAS = (  # longest first: "is set to" before "is"
    r"has\s+been\s+changed\s+to|has\s+been\s+set\s+to|is\s+set\s+to|was\s+set\s+to|is\s+changed\s+to|"
    r"was\s+changed\s+to|will\s+be|would\s+be|should\s+be|must\s+be|has\s+been|had\s+been|is|was|are|were|"
    r"ist|war|lautet|lautete|heißt|heisst|est|était|c'est|es|era|será|é|è|sarà|är|var|er|jest|brzmi|это|был|была|"
    r"будет|olarak|adalah|ialah|là|on"
)
_AFTER_KEYWORD = re.compile(
    r"[\"'`”’]?"                                               # closing quote of "password"
    r"(?:[ \t]+(?:mitt|min|ditt|din|vårt|sitt|mi|mio|mia|saya|ku|kamu|anda|của[ \t]+tôi))?"  # "passordet mitt"
    r"(?:[ \t]*\([^()\n]{1,40}\))?"                            # password (gmail) is …
    r"(?:"
    r"(?:[ \t]+(?:" + _PREPOSITIONS + r")(?:[ \t]+[^\s:=,.;!?()\"]{1,40}){1,3}?)?"  # for the cabin
    r"(?:[ \t]*(?P<sym>:=|=>|->|[:=]|[—–]|-(?=[ \t])|(?<=[ \t])\|(?=[ \t]))"
    r"|,?[ \t]+(?P<cop>" + _COPULAS + r")(?=[\s:\"'“‘«])(?:[ \t]+(?:" + _ADVERBS + r"))?(?:[ \t]*:)?)"
    r"|(?P<poss>['’]s)(?=[ \t])"                                 # password's hunter2 (not "for Sarah's")
    r"|(?P<noop>[ \t]+)(?=[^\s])"                               # password hunter2
    r")",
    re.I,
)
_CJK_AFTER = re.compile(
    r"(?:[ \t]*(?:ของฉัน|ของผม|ของคุณ))?[ \t]*(?:は|が|も|:|=|是|为|為|：|는|은|이|가|คือ)[ \t]*(?:「|『|\"|')?"
)
_POLISH_TO = re.compile(r"[ \t]+to[ \t]+")
# "password everywhere: dolphin88", "password for now - x": one or two words, then ":"/"="
_LOOSE_QUALIFIER = re.compile(r"(?:[ \t]+[^\W\d_][\w'’\-]{1,20}){1,2}[ \t]*(?::|=|[—–])[ \t]*")


def _previous_word(text: str, start: int) -> str:
    m = re.search(r"([^\W\d_][\w\-]*)[ \t]*$", text[max(0, start - 40) : start])
    return m.group(1).lower() if m else ""


def _validate_talk(m: re.Match[str]) -> str | None:
    entry = _TALK_KEYWORDS.get(re.sub(r"[\s\-]+", " ", m.group("kw").lower()))
    if entry is None:
        return None
    return entry[0] if _talk_value_is_secret(m, *entry) else None


def _talk_value_is_secret(m: re.Match[str], family: str, ascii_only: bool) -> bool:
    text = m.string
    kw = re.sub(r"[\s\-]+", " ", m.group("kw").lower())
    prev = _previous_word(text, m.start())
    if family == "pass" and prev in _PASS_NOUN_MODIFIERS:
        return False
    if prev in ("if", "not", "elif", "while", "unless", "until", "def", "class"):
        return False  # "if not password: raise …" is code
    if kw == "pin" and prev and prev not in _PIN_OWNERS and not m.group("kw").isupper():
        return False
    a = _POLISH_TO.match(text, m.end()) if kw in ("hasło", "haslo") else None  # "hasło to …"
    a = a or _AFTER_KEYWORD.match(text, m.end())
    if a is None:
        return False
    pos = a.end()
    if a.groupdict().get("sym"):
        sp = _SPACE_AT.match(text, pos)
        pos = sp.end() if sp else pos
    elif a.groupdict().get("cop") or a.groupdict().get("poss"):
        pos = _SPACE_AT.match(text, pos).end()  # type: ignore[union-attr]
    noop = bool(a.groupdict().get("noop"))
    v = _read_value(text, pos, ascii_only=ascii_only)
    if v is None:
        return False
    if ascii_only and not v.text.isascii():
        return False
    if noop and family in ("password", "passphrase"):
        loose = _LOOSE_QUALIFIER.match(text, m.end())
        if loose is not None:
            # "the same password everywhere: dolphin88": a word or two between the keyword
            # and the colon ("password policy: strict") is a heading unless the value looks
            # like a secret by itself (and is not the name of a product: "1Password").
            lv = _read_value(text, loose.end(), ascii_only=ascii_only)
            if lv is not None and _secretlike(lv.text, 6) and "pass" not in lv.text.lower():
                return True
    if noop:
        # "password hunter2", "мой пароль qwerty123", "şifrem 1234": no operator, so the
        # value must look like a secret on its own.
        if family == "secret":
            return _secretlike(v.text, 16)  # "my api key 3f9a7c2e…": a long token right after the name
        if family not in ("password", "pin"):
            return False
        if re.fullmatch(r"\d{4,12}", v.text):
            return not _LENGTH_UNITS.match(text[v.end : v.end + 30])
        return _secretlike(v.text, 6) and not _is_descriptive(v.text)
    if ascii_only:
        return len(v.text) >= 3 and not _is_not_a_value(v.text) and v.text.lower() not in _STOP_WORDS and (
            _judge_family(family, v, text, form="talk")
        )
    return _judge_family(
        family, v, text, form="talk" if not a.groupdict().get("sym") else "colon", plain=kw in _ENGLISH_KEYWORDS
    )


_ENGLISH_KEYWORDS = frozenset(
    """password passwd pwd pw pword p/w pswd passwrd passcode passphrase mnemonic secret token pass pin auth
    creds credential credentials""".split()
) | frozenset(k for k in _TALK_KEYWORDS if " " in k and k.isascii() and k not in ("mot de passe", "kata sandi"))


_PIN_OWNERS = frozenset(
    "my your his her our their the a new atm bank card debit credit sim phone iphone account voicemail".split()
)


def _validate_cjk(m: re.Match[str]) -> str | None:
    text = m.string
    family = _CJK_KEYWORDS[m.group("kw")]
    a = _CJK_AFTER.match(text, m.end())
    if a is None:
        gap = re.compile(r"[ \t]+").match(text, m.end())  # 密码 88888888: no particle, so a secret-looking value
        v = _read_value(text, gap.end(), ascii_only=True) if gap else None
        if v is not None and (re.fullmatch(r"\d{6,12}", v.text) or _secretlike(v.text, 6)):
            return family
        return None
    v = _read_value(text, a.end(), ascii_only=True)
    if v is None or len(v.text) < 3 or _is_not_a_value(v.text) or v.text.lower() in _STOP_WORDS:
        return None
    return family if _judge_family(family, v, text, form="colon") else None


# 3. Other word orders: "hunter2 is my password", "use swordfish as the password",
#    "I changed my password to Tr0ub4dor&3", "user bob pass hunter2".
_REVERSE = re.compile(
    r"(?<![ \t])[ \t]+(?:is|was|=)[ \t]+(?:my|the|our|your|his|her|their)[ \t]+(?:[\w\-]+[ \t]+){0,2}?"
    r"(?P<kw>password|passwd|passphrase|passcode|pin|pw)(?![^\W_])"
    r"(?=[ \t]*(?:$|[.!?,;:)\n]|[ \t](?:and|but|so|lol|haha|btw|now|too|though|for|on)\b))",
    re.I,
)
_AS_THE = re.compile(
    r"\b(?P<verb>use|used|using|with|try|tried|set|chose|choose|picked|pick)[ \t]+(?P<val>[^\n]{1,60}?)[ \t]+"
    r"as[ \t]+(?:the|my|a|your|our|his|her|their)[ \t]+(?:new[ \t]+)?(?P<kw>password|passphrase|passcode|pin|pw)"
    r"(?![^\W_])",
    re.I,
)
_CHANGED_TO = re.compile(
    r"\b(?:set|sets|setting|change|changed|changes|changing|reset|update|updated|switch|switched)[ \t]+"
    r"(?:(?:my|the|your|our|his|her|their|a)[ \t]+)?(?:[\w\-]+[ \t]+)?"
    r"(?P<kw>password|passwd|passphrase|passcode|pin|pw)[ \t]+(?:to|as|into)[ \t]+",
    re.I,
)
_USER_PASS = re.compile(
    r"\b(?:user(?:name)?|login|usr|u)(?![^\W_])(?:[ \t]*[:=])?[ \t]*[^\s:=]{1,64}(?:[ \t]*[,;/|])?[ \t]+"
    r"(?:pass(?:word)?|pwd|pw|p)(?![^\W_])(?:[ \t]*[:=])?[ \t]*(?=\S)",
    re.I,
)


def _family_of(kw: str) -> str:
    kw = kw.lower()
    return "pin" if kw == "pin" else "passphrase" if kw == "passphrase" else "password"


def _validate_reverse(m: re.Match[str]) -> bool:
    text = m.string
    before = text[max(0, m.start() - 202) : m.start()]
    tok = re.search(r"(?P<q>[\"'`“‘]?)(?P<val>[^\s\"'`“”‘’]{1,200})(?P<cq>[\"'`”’]?)$", before)
    if not tok:
        return False
    value = tok.group("val").rstrip(_TRAILING_PUNCT)
    quoted = bool(tok.group("q")) and bool(tok.group("cq"))
    if len(value) < 3 or _is_not_a_value(value) or value.lower() in _STOP_WORDS:
        return False
    if _family_of(m.group("kw")) == "pin":
        return bool(re.fullmatch(r"\d{4,12}", value)) or _secretlike(value, 4)
    if quoted:
        return True
    # A plain word before "is my password" is too often a name ("Lisa is my password
    # manager"): only a secret-looking token counts.
    return not _WORDLIKE.fullmatch(value) and not _NUMERICISH.fullmatch(value) or value.isdigit() and len(value) >= 4


def _validate_as_the(m: re.Match[str]) -> bool:
    raw = m.group("val").strip()
    v = _read_value(m.string, m.start("val"))
    if v is None:
        return False
    family = _family_of(m.group("kw"))
    if family == "pin":
        return _judge_pin(v, m.string)
    if not v.quoted and " " in raw:
        first = raw.split()[0]
        if first.lower() in _STOP_WORDS:
            return False
    return _judge_family(family, v, m.string, form="talk")


def _validate_changed_to(m: re.Match[str]) -> bool:
    v = _read_value(m.string, m.end())
    return v is not None and _judge_family(_family_of(m.group("kw")), v, m.string, form="talk")


def _validate_user_pass(m: re.Match[str]) -> bool:
    v = _read_value(m.string, m.end())
    return v is not None and _secretlike(v.text, 4) and not _is_descriptive(v.text)



def _lowered(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """``pattern`` without re.I, for lower-cased text (its literals are lower case)."""
    return re.compile(pattern.pattern, pattern.flags & ~re.I)


_PW = "a password in clear"
_PASSWORD_WORD = re.compile(r"pass(?:word|wd|phrase|code)|\bpin\b|\bpw\b")


def _has_password_word(low: str) -> bool:
    return _PASSWORD_WORD.search(low) is not None

_KEYWORD_RULES: tuple[_Rule, ...] = (
    _Rule("password_assignment", _PW, _ASSIGN, _validate_assign, hints=_TALK_HINTS),
    _Rule("password_assignment", _PW, _CLI_FLAG, _validate_cli, hints=_TALK_HINTS, left=_TOKEN_CHARS,
          gate=lambda low: "-" in low),
    _Rule("password_assignment", _PW, _TALK_KEYWORD, _validate_talk, hints=_TALK_HINTS, left="alnum",
          lower=_TALK_KEYWORD_LOWER),
    _Rule("password_assignment", _PW, _CJK_KEYWORD, _validate_cjk, hints=tuple(_CJK_KEYWORDS)),
    _Rule("password_assignment", _PW, _REVERSE, _validate_reverse, gate=_has_password_word, lower=_lowered(_REVERSE)),
    _Rule("password_assignment", _PW, _AS_THE, _validate_as_the, gate=_has_password_word, lower=_lowered(_AS_THE)),
    _Rule("password_assignment", _PW, _CHANGED_TO, _validate_changed_to, gate=_has_password_word,
          lower=_lowered(_CHANGED_TO)),
    _Rule("password_assignment", _PW, _USER_PASS, _validate_user_pass, hints=("user", "login", "usr"),
          lower=_lowered(_USER_PASS)),
)

# A keyword rule's validator names the family of the key it found; the family decides
# the reason: passwords (and PINs, passphrases) or other secrets (tokens, API keys ...).
_FAMILY_REASONS: dict[str, tuple[str, str]] = {
    "password": ("password_assignment", "a password in clear"),
    "passphrase": ("password_assignment", "a password in clear"),
    "pin": ("password_assignment", "a password in clear"),
    "pass": ("password_assignment", "a password in clear"),
    "secret": ("secret_assignment", "a secret or token in clear"),
    "cred": ("secret_assignment", "a secret or token in clear"),
    "auth": ("secret_assignment", "a secret or token in clear"),
    "key": ("secret_assignment", "a secret or token in clear"),
}


# --- entropy ---------------------------------------------------------------------------------

_HIGH_ENTROPY = re.compile(r"[A-Za-z0-9+/_\-]{32,}={0,2}")
_ID_LABEL = re.compile(
    r"(?i)(?:\b(?:ids?|uuid|guid|hash|sha\d*|md5|checksum|digest|commit|etag|tx|txid|transaction|order|tracking|"
    r"reference|ref|invoice|booking|confirmation|serial|cid|trace|span|request|session|message|msg|run|thread)\b"
    r"|_id)\W{0,4}$"
)
_HEXISH = re.compile(r"[0-9a-fA-F\-]+")
_TYPED_ID = re.compile(r"[a-z][a-z0-9]{1,15}[_\-][A-Za-z0-9]")


def _validate_entropy(m: re.Match[str]) -> bool:
    if _in_signed_media_url(m.string, m.start()):
        return False
    tok = m.group(0).rstrip("=")
    if len(tok) < 32 or _HEXISH.fullmatch(tok) or _TYPED_ID.match(tok):
        return False  # digests, UUIDs, typed ids (chatcmpl-…, msg_…): not secrets by shape
    segments = [s for s in re.split(r"[/_\-+]", tok) if s]
    alnum = "".join(segments)
    if len(alnum) < 32 or len(segments) > max(2, len(alnum) // 10):
        return False  # paths, slugs, snake_case
    if _ID_LABEL.search(m.string[max(0, m.start() - 30) : m.start()]):
        return False
    return _looks_random(alnum, min_len=32)


_ENTROPY_RULES: tuple[_Rule, ...] = (
    _Rule("high_entropy_token", "a long random-looking token (a key or secret)", _HIGH_ENTROPY, _validate_entropy,
          left=frozenset(".:@?#&%=~\\$"), min_token=32),
)

DEFAULT_RULES: tuple[_Rule, ...] = _PROVIDER_RULES + _KEYWORD_RULES + _ENTROPY_RULES

DEFAULT_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys([r.reason for r in DEFAULT_RULES] + [reason for reason, _ in _FAMILY_REASONS.values()])
) + ("custom",)


class ContentFilter:
    """Rejects events that carry secrets.

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

    # ------------------------------------------------------------------ text
    def _scan(self, text: str) -> tuple[str, str] | None:
        """(reason, description) of the first default rule that finds a secret."""
        if len(text) < 6:
            return None  # "D1:3", "en", "pw:x": too short to hold a key and a value
        norm = _normalize(text)
        low = norm.lower()
        same_len = len(low) == len(norm)  # str.lower() can lengthen a few letters (İ)
        longest = max(map(len, norm.split()), default=0)
        gates: dict[Callable[[str], bool], bool] = {}
        for rule in self._rules:
            if rule.hints and not any(h in low for h in rule.hints):
                continue
            if rule.gate is not None:
                passed = gates.get(rule.gate)
                if passed is None:
                    passed = gates[rule.gate] = rule.gate(low)
                if not passed:
                    continue
            if rule.min_token and longest < rule.min_token:
                continue
            left = rule.left
            if rule.lower is not None and same_len:
                matches: Iterable[re.Match[str] | None] = (
                    rule.pattern.match(norm, h.start()) for h in rule.lower.finditer(low)
                )
            else:
                matches = rule.pattern.finditer(norm)
            for m in matches:
                if m is None:
                    continue
                if left and m.start() > 0:
                    before = norm[m.start() - 1]
                    if before.isalnum() if left == "alnum" else before in left:
                        continue
                verdict = True if rule.validate is None else rule.validate(m)
                if isinstance(verdict, str):
                    return _FAMILY_REASONS[verdict]
                if verdict:
                    return rule.reason, rule.description
        return None

    def _check_text(self, text: str, where: str) -> Rejection | None:
        if not text:
            return None
        found = self._scan(text)
        if found is not None:
            return Rejection(found[0], f"{where} carries {found[1]}", where)
        for i, pattern in enumerate(self._extra):
            if pattern.search(text):
                return Rejection("custom", f"{where} matches operator filter pattern #{i + 1}", where)
        return None

    def check(self, text: str) -> Rejection | None:
        """Return why ``text`` (a turn's content) must be rejected, or ``None``."""
        return self._check_text(text, "content")

    def is_allowed(self, text: str) -> bool:
        return self.check(text) is None

    # ------------------------------------------------------------------ whole events
    def check_event(
        self,
        content: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Rejection | None:
        """Return why an event must be rejected, or ``None`` when it may be processed.

        Looks at the content, the message's ``name`` and every string of ``metadata``:
        keys and values, through nested objects and lists. A metadata key that names a
        secret (``password``, ``api_key``, ``OPENAI_API_KEY``, ``auth.token`` …) with a
        non-placeholder value is a secret by itself, whatever the value looks like.
        """
        rejection = self._check_text(content, "content")
        if rejection is None and name:
            rejection = self._check_text(name, "name")
        if rejection is None and metadata:
            rejection = self._check_metadata(metadata)
        return rejection

    def _check_metadata(self, metadata: Mapping[str, Any]) -> Rejection | None:
        for kind, key, value in _walk(metadata):
            if kind == "text":
                rejection = self._check_text(value, "metadata")
                if rejection is not None:
                    return rejection
                continue
            family = _key_family(key)
            if family is not None and _judge_metadata(family, value, key):
                reason, desc = _FAMILY_REASONS[family]
                return Rejection(reason, f"metadata carries {desc} (under a key that names a secret)", "metadata")
        return None


def _walk(metadata: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Every string of a JSON-like tree, in document order: ("text", "", s) for each key
    and string value, and ("pair", key, value) for each scalar under a key (list items
    inherit their list's key). Iterative, so deep nesting cannot overflow the stack."""
    stack: list[tuple[str | None, Any]] = [(None, metadata)]
    while stack:
        key, obj = stack.pop()
        if isinstance(obj, Mapping):
            items = list(obj.items())
            for k, v in reversed(items):
                stack.append((str(k), v))
            for k, _ in items:
                yield "text", "", str(k)
        elif isinstance(obj, (list, tuple)):
            for v in reversed(obj):
                stack.append((key, v))
        elif isinstance(obj, str):
            yield "text", "", obj
            if key is not None:
                yield "pair", key, obj
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and key is not None:
            yield "pair", key, str(obj)
