"""A fact's type, and the key of a single-valued attribute the speaker states about themself."""

from __future__ import annotations

import re

from engram.domain.dates import WEEKDAYS
from engram.pipeline.extract.rules.dates import Dated
from engram.pipeline.extract.rules.person import ADVERB_ALT
from engram.pipeline.extract.rules.vocabulary import PAST_TENSE, word_set


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
_WE = r"\b(?:I|[Ww]e)(?:'ve|'re|'m|\s+have|\s+are|\s+am)?(?:\s+(?:just|recently|finally|now|currently|still|actually|usually|mostly|mainly|always|normally|started|began))*"
_HOMES = r"(?:place|apartment|flat|house|home|condo|studio|room|cottage|bungalow|townhouse)"
# the home noun ends its phrase ("a house in Leeds", not "a house plant")
_NOUN_ENDS = r"(?=\s*(?:$|[.,;:!?])|\s+(?:in|near|from|with|on|at|and|by|for|outside|of|downtown|together|now|these)\b)"

# (key, pattern) in priority order; patterns run on the original first-person sentence.
_KEY_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("name", re.compile(r"(?i:\bmy\s+name(?:'s|\s+is)\s+)" + _CAP)),
    ("age", re.compile(_I_AM + r"\s+(?P<n>\d{1,3})(?:\s+(?:years?|yrs?)\s+old|\s*y/?o\b|(?=\s*(?:[.!,;]|$)))")),
    ("age", re.compile(r"\bI\s+(?:just\s+)?turned\s+\d{1,3}\b")),
    ("age", re.compile(r"(?i:\b(?:I\s+(?:just\s+)?(?:had|celebrated)|it(?:'s| is| was))\s+my\s+)\d{1,3}(?:st|nd|rd|th)\s+birthday\b")),
    ("lives_in", re.compile(
        r"\b(?:I|[Ww]e)(?:'ve|\s+have)?(?:\s+(?:just|recently|finally|now|currently|also|still|actually))*"
        r"\s+(?:live|moved|relocated)\s+(?:to|in)\s+(?:the\s+)?" + _CAP)),
    ("lives_in", re.compile(_I_AM + r"\s+(?:living|based|settled)\s+in\s+(?:the\s+)?" + _CAP)),
    # "we live in a small flat in Lyon", "I moved into my own place in Portland"
    ("lives_in", re.compile(
        r"\b(?:I|[Ww]e)(?:'ve|\s+have)?(?:\s+(?:just|recently|finally|now|currently|still|actually))*"
        r"\s+(?:live|moved|relocated)\s+(?:in|into|to)\s+(?:a|an|the|my|our)\s+(?:[\w-]+\s+){0,3}?"
        r"(?:place|apartment|flat|house|home|condo|studio|room|cottage|bungalow)\s+in\s+(?:the\s+)?" + _CAP)),
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
    # being single is this attribute's other value: "I'm single" is replaced by "I'm engaged to Leo"
    ("partner_name", re.compile(r"(?i:" + _I_AM + r"\s+(?:(?:still|happily|completely)\s+)?single)\b")),
    # renting or owning where one lives: "we rent a flat", "I finally bought my own condo"
    ("home_tenure", re.compile(
        _WE + r"\s+(?:rent|renting|lease|leasing|bought|own|purchased)\s+(?:a|an|the|my|our)\s+(?:own\s+)?"
        r"(?:[\w-]+\s+){0,3}?" + _HOMES + _NOUN_ENDS)),
    # how one gets to work: "I commute by train", "I take the bus to work", "I started driving to work"
    ("commute", re.compile(_WE + r"\s+commute\b")),
    ("commute", re.compile(
        _WE + r"\s+(?:drive|driving|cycle|cycling|bike|biking|walk|walking|ride|riding|take|taking)"
        r"(?:\s+(?:the|a|my)\s+[\w-]+)?\s+(?:to|into)\s+(?:work|the office|school|campus)\b")),
    # the language one mainly programs in: "I program mainly in Java", "I mostly code in Go now"
    ("programming_language", re.compile(
        _WE + r"\s+(?:program|code|develop|write\s+(?:code|software))\s+(?:(?:mainly|mostly|primarily|usually)\s+)?in\s+" + _CAP)),
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
        r"(?i:(?:\s+(?:these days|nowadays|right now|now|at the moment))?\s+(?:is|are|has\s+to\s+be|would\s+be|must\s+be)\b)"
    ),
    # "Dune is my favorite book"
    re.compile(
        r"(?i:\b(?:is|are)\s+my\s+(?:all[- ]time\s+|absolute\s+|new\s+)?favou?rite\s+)"
        r"(?P<thing>[A-Za-z][A-Za-z-]*(?:\s+(?!(?:of|ever)\b)[A-Za-z][A-Za-z-]*)?)"
        r"(?i:\s+(?:of\s+all\s+time|ever))?\s*(?:[.!,;]|$)"
    ),
]
_KEEP_PLURAL = word_set("series species glasses clothes news sports arts")


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
              "diet": "preference"}  # any other key is biographical (home_tenure, commute, …)

_PLAN_CUES = re.compile(
    r"\b(?:will|shall|going to|gonna|plan(?:s|ned)?\s+(?:to|on)|planning|intend(?:s|ing)? to|want(?:s)? to|"
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
    r"|\b(?:I|we)(?:'ve| have)?\s+(?:(?:" + ADVERB_ALT + r")\s+)*(?:moved|relocated|live|lived|work|worked)\s+(?:to|from|in|at|for|as|here|back)\b"
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
    r"\b(?:I|we)\s+(?:(?:" + ADVERB_ALT + r")\s+)*" + PAST_TENSE, re.I
)


def fact_type(sentence: str, key: str | None, dated: Dated) -> str:
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
