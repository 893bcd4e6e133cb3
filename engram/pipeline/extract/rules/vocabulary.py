"""Word tables the rules read text by: stopwords, small talk, boilerplate, verbs, markers."""

from __future__ import annotations

import re


def word_set(s: str) -> frozenset[str]:
    return frozenset(s.split())


STOPWORDS = word_set(
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
SMALL_TALK_WORDS = word_set(
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
BOILERPLATE = re.compile(
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

MODALS = word_set("can could will would shall should may might must ought")

# Past-tense forms that do not end in -ed; they never take a third-person -s.
IRREGULAR_PAST = word_set(
    """
    was were went got saw had did made took came gave found told thought felt left kept met
    began bought brought caught taught ran sat stood wrote read put cut hit let set quit hurt
    spent sent built lost won heard held knew grew drew flew threw drove rode rose ate drank
    swam sang spoke broke chose forgot wore woke slept fell fed led paid said sold shot shut
    understood became meant lent bent dealt dug fought fled hung hid bit lit slid spun stuck
    struck swept swung tore withdrew forgave overcame undertook stole sang shook
    """
)

# A verb in the past tense: a regular "-ed" form or one of the irregular ones.
PAST_TENSE = r"(?:[a-z]{2,}ed|" + "|".join(sorted(IRREGULAR_PAST)) + r")\b"

# Words that may sit between "I" and its verb.
ADVERBS = word_set(
    """
    just really also still never always finally recently actually usually often sometimes
    totally definitely already even only truly honestly seriously absolutely mostly kinda
    sorta literally certainly probably currently now then once barely hardly rarely
    generally personally especially slowly gradually officially newly first again too
    nearly almost mainly simply secretly sorely desperately genuinely
    """
)

# Tokens after "I" that are not verbs: leave them alone.
NOT_A_VERB = word_set("and or but too myself alone both either neither nor as at in on to for with from of the a an so if then")

# Chat drops the subject ("Went hiking yesterday", "Gonna check out careers"): these
# openers get an "I" back so the sentence can be rewritten about its speaker.
SUBJECT_DROP: dict[str, str] = {
    **{w: "I'm" for w in word_set(
        "gonna going planning thinking hoping heading trying loving working looking getting "
        "starting learning"
    )},
    "been": "I've",
    **{w: "I" for w in word_set(
        "went got had started finished finally bought visited took spent made saw met tried "
        "moved joined learned learnt signed booked picked painted ran did love loved hope "
        "wish gotta need want feel felt miss missed adopted attended enjoyed decided "
        "received watched read baked cooked"
    )},
}

# Adjectives ending in -ed that are not past-tense events.
ED_ADJECTIVES = word_set(
    """
    excited interested tired scared worried bored married stressed pleased amazed relaxed
    supposed used inspired motivated obsessed thrilled overwhelmed surprised confused
    determined dedicated talented related based detailed advanced experienced
    """
)

# Leading discourse markers stripped before a sentence becomes a fact.
LEADING_MARKERS = [
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

QUESTION_OPENERS = word_set(
    """
    how what why where when who which whose do did does are is was were have has had can
    could would will should shall may might any anything right isn't aren't don't didn't
    doesn't huh eh or wanna want care mind
    """
)

ROLE_LABELS = {"user": "The user", "assistant": "The assistant"}
# Roles whose turns are not statements by a person (tool output, system prompts).
SILENT_ROLES = frozenset({"tool", "system", "function"})
