"""The offline ``rules`` extractor (SPEC §6.4): facts, artifacts, episodes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engram.domain.extraction import Extraction, FactCandidate, Turn
from engram.pipeline.extract.rules import RulesExtractor

# Monday 8 May 2023, 13:56 UTC (the first LoCoMo session)
MAY8 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
FACT_TYPES = {"preference", "biographical", "relationship", "event", "plan", "opinion", "statement",
              "question"}  # "question": the rules extractor's own (a question with a topic, as asked)


def turn(content: str, *, name: str | None = "Caroline", role: str = "user", eid: str = "e1", when: datetime = MAY8) -> Turn:
    return Turn(event_id=eid, role=role, content=content, date=when, name=name)


def facts(content: str, **kw) -> list[FactCandidate]:
    artifacts = kw.pop("extract_artifacts", False)
    context = kw.pop("context", ())
    return RulesExtractor().extract([turn(content, **kw)], extract_artifacts=artifacts, context=context).facts


def one(content: str, **kw) -> FactCandidate:
    out = facts(content, **kw)
    assert len(out) == 1, [f.text for f in out]
    return out[0]


# ------------------------------------------------------------------ interface


def test_public_surface() -> None:
    x = RulesExtractor()
    assert x.name == "rules"
    result = x.extract([], extract_artifacts=True)
    assert isinstance(result, Extraction)
    assert result.facts == [] and result.artifacts == [] and result.episodes == []
    assert x.episode([]) is None


# ------------------------------------------------------------------ relative dates


def test_yesterday_is_resolved_into_text_and_valid_at() -> None:
    f = one("I went to a support group yesterday")
    assert f.text == "Caroline went to a support group on 7 May 2023."
    assert f.valid_at is not None and f.valid_at.date().isoformat() == "2023-05-07"
    assert f.valid_at.tzinfo is not None
    assert f.fact_type == "event"


@pytest.mark.parametrize(
    ("content", "in_text", "valid_on"),
    [
        ("I went to a support group yesterday.", "on 7 May 2023", "2023-05-07"),
        ("I started a pottery class last week.", "in the week of 1 May 2023", "2023-05-01"),
        ("I ran a charity race last Saturday.", "on Saturday, 6 May 2023", "2023-05-06"),
        ("I adopted a puppy two days ago.", "two days ago (6 May 2023)", "2023-05-06"),
        ("We're going camping next month.", "in June 2023", "2023-06-01"),
        ("I have an interview tomorrow.", "on 9 May 2023", "2023-05-09"),
        ("We're going hiking this weekend.", "on the weekend of 13 May 2023", "2023-05-13"),
        ("I painted that lake sunrise last year!", "in 2022", "2022-01-01"),
        ("I'll see the dentist in 2 weeks.", "in 2 weeks (the week of 22 May 2023)", "2023-05-22"),
        ("I moved from Sweden 4 years ago.", "4 years ago (2019)", "2019-01-01"),
        ("I stayed home last night.", "on the night of 7 May 2023", "2023-05-07"),
        ("I visited Rome last summer.", "in the summer of 2022", "2022-06-01"),
        ("I'm going to Japan in October.", "in October 2023", "2023-10-01"),
        ("I ran a marathon on Sunday.", "on Sunday, 7 May 2023", "2023-05-07"),
        ("My birthday is next Tuesday.", "on Tuesday, 9 May 2023", "2023-05-09"),
        ("I went to the day before yesterday's show.", "6 May 2023", "2023-05-06"),
        ("I finished the book the other day.", "the other day (a few days before 8 May 2023)", None),
    ],
)
def test_relative_dates(content: str, in_text: str, valid_on: str | None) -> None:
    f = one(content)
    assert in_text in f.text
    if valid_on is None:
        assert f.valid_at is None
    else:
        assert f.valid_at is not None and f.valid_at.date().isoformat() == valid_on


def test_dates_are_anchored_on_each_turns_own_date() -> None:
    later = MAY8 + timedelta(days=30)
    result = RulesExtractor().extract(
        [turn("I baked bread yesterday.", eid="a"), turn("I baked a cake yesterday.", eid="b", when=later)],
        extract_artifacts=False,
    )
    texts = [f.text for f in result.facts]
    assert texts == ["Caroline baked bread on 7 May 2023.", "Caroline baked a cake on 6 June 2023."]


def test_preposition_is_not_doubled() -> None:
    f = one("I've been painting since last year.")
    assert "since 2022" in f.text and "since in" not in f.text


def test_subject_use_of_a_day_gets_no_preposition() -> None:
    f = one("Yesterday was my first day at the new studio.")
    assert f.text.startswith("7 May 2023 was Caroline's first day")


def test_moved_to_a_weekday_resolves_to_the_next_one() -> None:
    f = one("The meeting moved to Friday.")
    assert f.text == "Caroline said: The meeting moved to Friday, 12 May 2023."
    assert f.valid_at is not None and f.valid_at.date().isoformat() == "2023-05-12"


def test_durations_in_past_sentences_are_not_dates() -> None:
    f = one("I read the whole trilogy in two weeks.")
    assert f.text == "Caroline read the whole trilogy in two weeks."
    assert f.valid_at is None


def test_absolute_dates_set_valid_at_without_changing_text() -> None:
    f = one("I was born in 1990.")
    assert f.text == "Caroline was born in 1990."
    assert f.valid_at is not None and f.valid_at.year == 1990


# ------------------------------------------------------------------ speakers


def test_named_speaker_first_person_rewrite() -> None:
    f = one("I moved to Lisbon")
    assert f.text == "Caroline moved to Lisbon."
    assert f.source_event_ids == ("e1",)
    assert f.source_role == "user"


@pytest.mark.parametrize(
    ("role", "label"),
    [("user", "The user"), ("assistant", "The assistant")],
)
def test_unnamed_speakers_use_their_role(role: str, label: str) -> None:
    f = one("I moved to Lisbon last year", name=None, role=role)
    assert f.text == f"{label} moved to Lisbon in 2022."
    assert f.source_role == role


def test_possessives_objects_and_verb_agreement() -> None:
    f = one("My sister visited me and I really love her new house")
    assert f.text == "Caroline's sister visited Caroline and Caroline really loves her new house."
    assert one("I don't eat meat").text == "Caroline doesn't eat meat."
    assert one("I'm a nurse").text == "Caroline is a nurse."
    assert one("I've got two cats").text == "Caroline has got two cats."
    assert one("i love sushi").text == "Caroline loves sushi."
    assert one("I try to run every day").text == "Caroline tries to run every day."
    assert "the user's sister" in one("Yesterday my sister called", name=None).text


def test_dropped_subject_is_restored() -> None:
    assert one("Went hiking with the kids yesterday!", name="Melanie").text == (
        "Melanie went hiking with the kids on 7 May 2023."
    )
    assert one("Gonna check out some career options").text == "Caroline is gonna check out some career options."


def test_non_first_person_content_is_kept_and_attributed() -> None:
    f = one("That painting is from my trip to Rome")
    assert f.text == "That painting is from Caroline's trip to Rome."
    g = one("The transgender stories were so inspiring!")
    assert g.text == "Caroline said: The transgender stories were so inspiring."


def test_second_person_is_attributed_to_the_other_speaker_from_context() -> None:
    context = [turn("I just finished a new painting of a lake!", name="Melanie", eid="c1")]
    result = RulesExtractor().extract(
        [turn("You'd be a great counselor! Your paintings are beautiful.", eid="e2")],
        extract_artifacts=False,
        context=context,
    )
    texts = [f.text for f in result.facts]
    assert "Caroline said to Melanie: You'd be a great counselor." in texts
    assert "Caroline said to Melanie: Your paintings are beautiful." in texts
    # context turns never yield memories
    assert all(f.source_event_ids == ("e2",) for f in result.facts)
    assert not any("lake" in t for t in texts)


def test_second_person_without_another_speaker_stays_plain() -> None:
    f = one("You should try the Thai place on Main Street")
    assert f.text == "Caroline said: You should try the Thai place on Main Street."


def test_shared_image_caption_becomes_a_fact() -> None:
    out = facts("Check out my latest painting! [shares: a photo of a painting of a sunset over a lake]", name="Melanie")
    texts = [f.text for f in out]
    assert "Melanie shared an image of a painting of a sunset over a lake." in texts
    assert not any("[shares" in t for t in texts)


def test_tool_turns_yield_no_facts() -> None:
    assert facts('{"temperature": 21, "city": "Lisbon"}', role="tool", name=None) == []


# ------------------------------------------------------------------ dropping


@pytest.mark.parametrize(
    "content",
    [
        "Where do you live?",
        "What did you do last weekend?",
        "How are you doing",
        "Hey Mel! Good to see you! How have you been?",
        "Thanks!",
        "Thank you so much!",
        "haha",
        "Hahaha lol",
        "Sounds good",
        "sounds great, see you then",
        "bye",
        "Bye! Take care!",
        "ok cool",
        "Totally agree, Mel.",
        "Wow, that's so cool!",
        "That's really sweet.",
        "Have a great day!",
        "Hope this helps!",
        "You're welcome.",
        "Good night",
        "👍",
        "   ",
    ],
)
def test_questions_and_small_talk_are_dropped(content: str) -> None:
    context = [turn("hello", name="Melanie", eid="c1")]
    assert facts(content, context=context) == []


def test_a_question_with_a_topic_is_kept_as_asked() -> None:
    # the answer in the next turn often misses the topic's words ("My friend got me into it")
    context = [turn("I paint watercolors on weekends.", name="Evan", eid="c1")]
    f = one("Wow, that's impressive! How did you get into watercolor painting?", name="Sam", context=context)
    assert f.text == "Sam asked Evan: How did you get into watercolor painting?"
    assert (f.fact_type, f.key, f.cue, f.valid_at) == ("question", None, None, None)


def test_a_question_after_a_statement_adds_nothing_the_statement_said() -> None:
    texts = [f.text for f in facts("I went to Paris last week, have you been?", context=[turn("hi", name="Melanie", eid="c1")])]
    assert texts == ["Caroline went to Paris in the week of 1 May 2023."]


def test_an_assistant_question_is_no_memory() -> None:
    assert facts("Which watercolor brushes do you use for painting?", role="assistant", name=None,
                 context=[turn("I paint.", name=None, eid="c1")]) == []


def test_a_statement_before_a_question_is_kept() -> None:
    out = facts("I went to Paris last week, have you ever been?")
    assert [f.text for f in out] == ["Caroline went to Paris in the week of 1 May 2023."]


def test_long_turns_are_split_into_sentences() -> None:
    out = facts(
        "Hey Caroline! I ran a charity race for mental health last Saturday. It was really rewarding. "
        "My kids are so excited about summer break! What about you?",
        name="Melanie",
    )
    texts = [f.text for f in out]
    assert texts == [
        "Melanie ran a charity race for mental health on Saturday, 6 May 2023.",
        "Melanie's kids are so excited about summer break.",
    ]
    assert out[1].fact_type == "relationship"


def test_abbreviations_do_not_split_sentences() -> None:
    out = facts("I saw Dr. Smith yesterday about my knee.")
    assert [f.text for f in out] == ["Caroline saw Dr. Smith on 7 May 2023 about Caroline's knee."]


def test_a_short_month_before_its_day_or_year_does_not_end_a_sentence() -> None:
    out = facts("I started in Sept. 2022 and we met on Oct. 13, 2023. I moved in Dec. The flat had no heating.")
    assert [f.text for f in out] == [
        "Caroline started in Sept. 2022 and Caroline and others met on Oct. 13, 2023.",
        "Caroline moved in Dec.",
        "Caroline said: The flat had no heating.",
    ]
    assert out[0].valid_at is not None and out[0].valid_at.date().isoformat() == "2022-09-01"


def test_duplicate_sentences_in_one_batch_become_one_fact_citing_both() -> None:
    result = RulesExtractor().extract(
        [turn("I love hiking.", eid="a"), turn("I love hiking!", eid="b")], extract_artifacts=False
    )
    assert len(result.facts) == 1
    assert result.facts[0].source_event_ids == ("a", "b")


# ------------------------------------------------------------------ types and keys


@pytest.mark.parametrize(
    ("content", "key", "ftype"),
    [
        ("I live in Lisbon", "lives_in", "biographical"),
        ("I moved to New York last year", "lives_in", "biographical"),
        ("We just moved to Berlin!", "lives_in", "biographical"),
        ("I'm living in Porto now", "lives_in", "biographical"),
        ("I work at Google", "works_at", "biographical"),
        ("I'm a software engineer", "job_title", "biographical"),
        ("I work as a barista", "job_title", "biographical"),
        ("My husband Tom loves golf", "partner_name", "relationship"),
        ("My favorite color is green", "favorite_color", "preference"),
        ("Dune is my favourite book.", "favorite_book", "preference"),
        ("I'm vegan", "diet", "preference"),
        ("My name is Caroline", "name", "biographical"),
        ("I'm 32 years old", "age", "biographical"),
    ],
)
def test_keys_for_single_valued_attributes(content: str, key: str, ftype: str) -> None:
    f = one(content)
    assert f.key == key
    assert f.fact_type == ftype


@pytest.mark.parametrize(
    "content",
    [
        "I don't live in Lisbon anymore",
        "I used to live in Paris",
        "My sister lives in Boston",
        "I live in a small apartment",
        "I'm a big fan of jazz",
        "I moved to a new desk at work",
        "I love hiking",
    ],
)
def test_no_key_when_not_reliable(content: str) -> None:
    assert one(content).key is None


@pytest.mark.parametrize(
    ("content", "ftype"),
    [
        ("I love painting landscapes", "preference"),
        ("I don't like cheese", "preference"),
        ("My brother is a firefighter", "relationship"),
        ("I'm planning to run a marathon", "plan"),
        ("I'll visit my grandma tomorrow", "plan"),
        ("I went to a concert yesterday", "event"),
        ("I think remote work is overrated", "opinion"),
        ("I grew up in a small town", "biographical"),
        ("The meeting room has a new projector", "statement"),
    ],
)
def test_fact_types(content: str, ftype: str) -> None:
    f = one(content)
    assert f.fact_type == ftype
    assert f.fact_type in FACT_TYPES


# ------------------------------------------------------------------ artifacts

CODE_TURN = (
    "Here's the helper I wrote for the report:\n"
    "```python\n"
    "import math\n\n"
    "def compound_interest(principal, rate, years):\n"
    "    return principal * math.pow(1 + rate, years)\n"
    "```\n"
    "It handles the yearly compounding for our finance dashboard."
)


def test_code_block_becomes_artifact_only_with_the_flag() -> None:
    x = RulesExtractor()
    without = x.extract([turn(CODE_TURN, name=None, role="assistant")], extract_artifacts=False)
    with_ = x.extract([turn(CODE_TURN, name=None, role="assistant")], extract_artifacts=True)
    assert without.artifacts == []
    assert len(with_.artifacts) == 1
    art = with_.artifacts[0]
    assert art.title == "Python code: compound_interest()"
    assert "def compound_interest(principal, rate, years):" in art.content
    assert art.content.startswith("```python\n") and art.content.endswith("```")
    assert art.source_event_ids == ("e1",)
    assert art.rationale
    # the prose around the code still yields facts, the code does not
    for result in (without, with_):
        texts = [f.text for f in result.facts]
        assert "The assistant said: It handles the yearly compounding for Caroline's finance dashboard." not in texts
        assert any("yearly compounding" in t for t in texts)
        assert not any("math.pow" in t for t in texts)


def test_unlabelled_and_unclosed_code_blocks() -> None:
    x = RulesExtractor()
    res = x.extract([turn("run this:\n```\nSELECT * FROM users;\n")], extract_artifacts=True)
    assert len(res.artifacts) == 1
    assert res.artifacts[0].title == "Code: SELECT * FROM users;"
    res2 = x.extract([turn("```js\nconst add = (a, b) => a + b;\n```")], extract_artifacts=True)
    assert res2.artifacts[0].title == "JavaScript code: add()"


DOC_TURN = """# Packing list for the Banff trip

I made this list so we don't forget anything this time.

- Hiking boots, broken in, with spare laces and blister plasters
- Two warm layers: a fleece and a down jacket for the cold evenings
- Rain shell and waterproof trousers, because the forecast is unreliable
- Headlamp with fresh batteries and a small first aid kit
- Bear spray (buy it in town, you cannot fly with it)
- Reusable water bottles and a filter for the longer day hikes
"""


def test_long_structured_document_becomes_artifact() -> None:
    res = RulesExtractor().extract([turn(DOC_TURN)], extract_artifacts=True)
    assert len(res.artifacts) == 1
    art = res.artifacts[0]
    assert art.title == "Packing list for the Banff trip"
    assert art.content == DOC_TURN
    assert "6 list items" in art.rationale
    # surrounding prose still yields facts
    assert any("Caroline made this list" in f.text for f in res.facts)
    assert RulesExtractor().extract([turn(DOC_TURN)], extract_artifacts=False).artifacts == []


def test_short_lists_are_not_documents() -> None:
    res = RulesExtractor().extract([turn("Shopping:\n- milk\n- eggs\n- bread")], extract_artifacts=True)
    assert res.artifacts == []


# ------------------------------------------------------------------ episodes


def conversation() -> list[Turn]:
    rows = [
        ("Caroline", "Hey Mel! Good to see you! How have you been?"),
        ("Melanie", "Hey Caroline! I'm swamped with the kids & work. What's up with you?"),
        ("Caroline", "I went to a LGBTQ support group yesterday and it was so powerful."),
        ("Melanie", "Wow, that's cool! Did you hear any inspiring stories?"),
        ("Caroline", "The support group stories were so inspiring! The group made me feel accepted."),
        ("Melanie", "I painted a lake sunrise last year! Painting is how I relax after a long day."),
        ("Caroline", "Thanks, Melanie! Bye!"),
    ]
    return [
        Turn(f"e{i}", "user", text, MAY8 + timedelta(minutes=i), name)
        for i, (name, text) in enumerate(rows)
    ]


def test_episode_is_extractive_with_title_and_range() -> None:
    turns = conversation()
    ep = RulesExtractor().episode(turns)
    assert ep is not None
    assert "group" in ep.title.lower()
    assert ep.title.endswith("(8 May 2023)")
    assert len(ep.summary) <= 600
    # extractive: every summary sentence is attributed to its speaker
    assert "Caroline: I went to a LGBTQ support group on 7 May 2023 and it was so powerful." in ep.summary
    assert "Thanks" not in ep.summary and "Bye" not in ep.summary
    assert ep.started_at == turns[0].date and ep.ended_at == turns[-1].date
    assert ep.source_event_ids == tuple(t.event_id for t in turns)


def test_episode_over_several_days_has_a_date_range() -> None:
    turns = [
        Turn("a", "user", "I adopted a dog named Biscuit from the shelter.", MAY8, "Sam"),
        Turn("b", "user", "Biscuit loves the beach and chasing the dog next door.", MAY8 + timedelta(days=3), "Sam"),
    ]
    ep = RulesExtractor().episode(turns)
    assert ep is not None
    assert ep.title.startswith("Biscuit") or "dog" in ep.title.lower()
    assert ep.title.endswith("(8–11 May 2023)")


def test_episode_of_only_small_talk_is_none() -> None:
    turns = [turn("Hi!", eid="a"), turn("Thanks, bye!", eid="b", name="Melanie")]
    assert RulesExtractor().episode(turns) is None


def test_episode_summary_is_capped() -> None:
    long_turns = [
        Turn(f"e{i}", "user", f"I visited museum number {i} in Florence and studied the Renaissance frescoes there for hours. " * 3, MAY8, "Ana")
        for i in range(20)
    ]
    ep = RulesExtractor().episode(long_turns)
    assert ep is not None and len(ep.summary) <= 600
    assert ep.summary.startswith("Ana: ")


# ------------------------------------------------------------------ determinism and robustness


def test_extraction_is_deterministic() -> None:
    turns = conversation()
    a = RulesExtractor().extract(turns, extract_artifacts=True)
    b = RulesExtractor().extract(list(turns), extract_artifacts=True)
    assert a == b
    assert RulesExtractor().episode(turns) == RulesExtractor().episode(turns)


_FRAGMENTS = st.sampled_from(
    [
        "I", "my", "me", "we", "you", "yesterday", "last week", "next month", "two days ago",
        "in 3 weeks", "this weekend", "on Friday", "last Saturday", "in June", "last summer",
        "moved to", "Lisbon", "live in", "favorite", "is", "?", "!", ".", "\n", "- ", "# ",
        "```python\n", "```", "[shares: a photo of a cat]", "haha", "thanks", "I'm", "I've",
        "I'd", "don't", "😀", "—", "::", "sk-ii", "1999", "May", "Dr.", ",", "'", '"', "ago",
    ]
)
_TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=40).map(" ".join),
)
_DATES = st.one_of(
    st.just(MAY8),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.datetimes(min_value=datetime(9999, 12, 1), timezones=st.just(timezone.utc)),
    st.datetimes(max_value=datetime(1, 1, 31)),
)
_TURNS = st.lists(
    st.builds(
        Turn,
        event_id=st.uuids().map(str),
        role=st.sampled_from(["user", "assistant", "tool", "app", ""]),
        content=_TEXTS,
        date=_DATES,
        name=st.one_of(st.none(), st.text(max_size=12)),
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns=_TURNS, context=_TURNS, artifacts=st.booleans())
def test_extract_never_raises_and_cites_only_input_turns(turns: list[Turn], context: list[Turn], artifacts: bool) -> None:
    result = RulesExtractor().extract(turns, extract_artifacts=artifacts, context=context)
    ids = {t.event_id for t in turns}
    for f in result.facts:
        assert f.source_event_ids and set(f.source_event_ids) <= ids
        assert f.text.strip()
        assert f.fact_type in FACT_TYPES
        assert f.source_role in {t.role for t in turns}
    for a in result.artifacts:
        assert set(a.source_event_ids) <= ids
        assert a.content and a.title
    if not artifacts:
        assert result.artifacts == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns=_TURNS)
def test_episode_never_raises(turns: list[Turn]) -> None:
    ep = RulesExtractor().episode(turns)
    if ep is not None:
        assert set(ep.source_event_ids) == {t.event_id for t in turns}
        assert len(ep.summary) <= 600
        assert ep.title


def test_huge_turn_is_handled_quickly() -> None:
    import time

    blob = ("I moved to Lisbon yesterday and my sister " * 800) + ("x" * 20000) + " ." * 2000
    start = time.perf_counter()
    RulesExtractor().extract([turn(blob)], extract_artifacts=True)
    RulesExtractor().episode([turn(blob)])
    assert time.perf_counter() - start < 5.0
