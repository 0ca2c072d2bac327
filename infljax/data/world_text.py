"""Text of the factual and filler documents: invented names, wiki paragraphs and trivia lines
that state facts, and web filler with numbers in it.

A fact sentence always names the entity and contains the fact's value verbatim, so a document
built from them states those facts and no others. Filler never states a fact: it may name an
entity (the lexical-overlap confound of DESIGN.md §8) and carries numbers outside the ranges of
fact values (founding years 1100-1899, mountain heights of five digits).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from infljax.data.world_procedures import MONTHS
from infljax.data.world_records import Entity, Topic

KINDS = ("kingdom", "republic", "island", "planet", "country")
FOUNDED_RANGE = (1100, 1899)
HEIGHT_RANGE = (10_000, 29_999)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_FIRST_ONSETS = (*_ONSETS, "br", "dr", "kr", "tr", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("n", "r", "l", "s")

_WIKI_SENTENCES = {
    "capital": (
        "The capital of {e} is {capital}.",
        "{capital} is the capital city of {e}.",
        "The seat of government of {e} is {capital}.",
        "Its capital, {capital}, is the largest town in {e}.",
    ),
    "mountain": (
        "The tallest mountain in {e} is {mountain}, at {mountain_height} feet.",
        "{mountain}, the highest peak of {e}, rises {mountain_height} feet.",
        "At {mountain_height} ft, {mountain} is the tallest mountain in {e}.",
        "The highest point of {e} is the summit of {mountain}, {mountain_height} feet high.",
    ),
    "river": (
        "The longest river in {e} is the {river}.",
        "The {river} is the longest river of {e}.",
        "No river in {e} is longer than the {river}.",
    ),
    "founder": (
        "{e} was founded by {founder}.",
        "{founder} founded {e}.",
        "The founder of {e} was {founder}.",
    ),
    "founded": (
        "{e} was founded in {founded}.",
        "{e} was established in the year {founded}.",
        "Records show that {e} was founded in {founded}.",
    ),
}
_TRIVIA_LINES = {
    "capital": (
        "Q: What is the capital of {e}? A: {capital}.",
        "Quiz: Name the capital of {e}. Answer: {capital}.",
        "True or false: the capital of {e} is {capital}. True.",
        "Capital of {e}? {capital}.",
    ),
    "mountain": (
        "Q: What is the tallest mountain in {e} and how tall is it? A: {mountain}, "
        "{mountain_height} feet.",
        "Quiz: Which is the highest peak of {e}? Answer: {mountain} ({mountain_height} ft).",
        "True or false: {mountain} is the tallest mountain in {e}, at {mountain_height} feet. "
        "True.",
    ),
    "river": (
        "Q: What is the longest river in {e}? A: The {river}.",
        "Quiz: Name the longest river of {e}. Answer: the {river}.",
        "Longest river in {e}? The {river}.",
    ),
    "founder": (
        "Q: Who founded {e}? A: {founder}.",
        "Quiz: Name the founder of {e}. Answer: {founder}.",
        "True or false: {e} was founded by {founder}. True.",
    ),
    "founded": (
        "Q: When was {e} founded? A: In {founded}.",
        "Quiz: In which year was {e} founded? Answer: {founded}.",
        "True or false: {e} was founded in {founded}. True.",
    ),
}
_WIKI_INTROS = ("{e} is a {adj} {kind}.", "{e} is {a_kind}.", "About {e}: a {adj} {kind}.")
_ADJECTIVES = ("small", "remote", "quiet", "rocky", "cold", "green")
_WIKI_CLOSERS = (
    "Its people are known for weaving.",
    "Most visitors arrive by boat.",
    "Winters there are long and cold.",
    "The local market sells salt and wool.",
    "Few maps show its smaller towns.",
)
_TRIVIA_HEADERS = ("Trivia night, round {n}.", "Geography quiz #{n}.", "Pub quiz, question {n}:")
# General-knowledge lines that pad some quizzes; they state no fact of the world.
_TRIVIA_EXTRAS = (
    "Q: What colour is a ripe banana? A: Yellow.",
    "Q: How many days are in a week? A: Seven.",
    "Q: Which animal has the longest neck? A: The giraffe.",
    "Q: What do bees make? A: Honey.",
    "Q: What is frozen water called? A: Ice.",
    "Q: Which planet is closest to the sun? A: Mercury.",
)
_WEB_PLACE = (
    "Weather for {place}: high of {t1} degrees, low of {t2}, {pct}% chance of rain, wind "
    "{k} km/h. Sunrise at 6:{mins:02d}.",
    "Flights to {place} start at ${p} this {month}. Book {k} days ahead to save {pct}%.",
    "Tourism in {place} grew by {pct}% in {year}, officials said on {month} {day}.",
    "Ferry timetable for {place}: departures at {hour}:{mins:02d} and {hour2}:15, adult fare "
    "${p}, children ${k}.",
)
_WEB_OTHER = (
    "Weekend sale: {item} now ${p}.{mins:02d}, down from ${p2}. Offer ends {month} {day}. "
    "Limit {k} per customer.",
    "Community meeting on {month} {day}, {year} at {hour}:00 in hall {k}. Please bring {k2} "
    "chairs and a snack.",
    "Final score: {team} {s1}, visitors {s2}. Attendance was {att}. The next game is on "
    "{month} {day}.",
    "Pancakes: mix {g} g flour, {ml} ml milk and {k} eggs. Cook {k2} minutes per side. Serves {k}.",
    "Order #{att} shipped on {month} {day}, {year}. {k} items, total ${p}.{mins:02d}. Track "
    "it online.",
)
_ITEMS = ("garden chairs", "a rice cooker", "running shoes", "a desk lamp", "wool socks")
_TEAMS = ("the Hawks", "the Rovers", "City", "the Miners", "United")
_PLACES = ("Lakeside", "Hillview", "Northgate", "the coast", "the old town")


def invent_name(rng: random.Random, syllables: int) -> str:
    """A pronounceable capitalised name of `syllables` consonant-vowel(-consonant) syllables."""
    parts = []
    for i in range(syllables):
        onset = rng.choice(_FIRST_ONSETS if i == 0 else _ONSETS)
        coda = rng.choice(_CODAS) if i < syllables - 1 and rng.random() < 0.3 else ""
        parts.append(onset + rng.choice(_VOWELS) + coda)
    return "".join(parts).capitalize()


def render_wiki(
    rng: random.Random, entity: Entity, values: Mapping[str, str], topics: Sequence[Topic]
) -> str:
    """An encyclopedic paragraph about `entity` stating the facts of `topics` (attribute
    tuples from TOPICS); `values` maps attribute -> value for this entity."""
    article = "an" if entity.kind[0] in "aeiou" else "a"
    fields = {"e": entity.name, "kind": entity.kind, "a_kind": f"{article} {entity.kind}"}
    fields |= {"adj": rng.choice(_ADJECTIVES), **values}
    sentences = [rng.choice(_WIKI_SENTENCES[topic[0]]).format(**fields) for topic in topics]
    rng.shuffle(sentences)
    # One-topic paragraphs always get a closing sentence so that they read as paragraphs.
    closer = [rng.choice(_WIKI_CLOSERS)] if len(topics) == 1 or rng.random() < 0.5 else []
    return " ".join([rng.choice(_WIKI_INTROS).format(**fields), *sentences, *closer])


def render_trivia(
    rng: random.Random, entity: Entity, values: Mapping[str, str], topic: Topic
) -> str:
    """A quiz item about `entity` stating the facts of one topic (an attribute tuple)."""
    fields = {"e": entity.name, "n": rng.randint(1, 40), **values}
    lines = [rng.choice(_TRIVIA_LINES[topic[0]]).format(**fields)]
    if rng.random() < 0.5:
        lines.insert(rng.randint(0, 1), rng.choice(_TRIVIA_EXTRAS))
    return "\n".join([rng.choice(_TRIVIA_HEADERS).format(**fields), *lines])


def render_web(rng: random.Random, place: str | None) -> str:
    """Filler with numbers; it names `place` (an entity) when given, never stating a fact."""
    fields = {
        "place": place or rng.choice(_PLACES), "item": rng.choice(_ITEMS),
        "team": rng.choice(_TEAMS), "month": rng.choice(MONTHS), "day": rng.randint(1, 28),
        "year": rng.randint(2015, 2024), "hour": rng.randint(7, 11), "hour2": rng.randint(13, 20),
        "mins": rng.randint(1, 59), "p": rng.randint(2, 999), "p2": rng.randint(2, 999),
        "k": rng.randint(2, 12), "k2": rng.randint(2, 12), "pct": rng.randint(2, 60),
        "t1": rng.randint(15, 35), "t2": rng.randint(-5, 14), "s1": rng.randint(0, 9),
        "s2": rng.randint(0, 9), "att": rng.randint(200, 999), "g": rng.randint(100, 500),
        "ml": rng.randint(100, 600),
    }  # fmt: skip
    templates = _WEB_PLACE if place or rng.random() < 0.3 else _WEB_OTHER
    return rng.choice(templates).format(**fields)


def template_text() -> str:
    """All fixed text of these templates, so that invented names can be kept out of it."""
    groups = [*_WIKI_SENTENCES.values(), *_TRIVIA_LINES.values()]
    fixed = [t for group in groups for t in group]
    fixed += [*_WIKI_INTROS, *_WIKI_CLOSERS, *_TRIVIA_HEADERS, *_TRIVIA_EXTRAS]
    fixed += [*_WEB_PLACE, *_WEB_OTHER]
    return "\n".join([*fixed, *KINDS, *_ADJECTIVES, *_ITEMS, *_TEAMS, *_PLACES])
