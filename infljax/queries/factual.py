"""The factual families: questions about the world's facts, and their controls.

`factual` asks about a fact of the procedural world in a plain question, as the study did ("What
is the tallest mountain in the world and how tall is it?"; a mountain's name and height are
asked together), or in the quiz style of the corpus's trivia documents (variant "quiz"); or it
asks a user-given list of question/answer pairs. `factual_control` invents a context that
contains the answer, then asks the question it answers, as the study's "The planet Zog has
multiple mountains, of which the tallest one is called Wirtu which is 29,029 feet tall.\\nWhat is
the largest mountain on the planet Zog called and how tall is it?" (shortened, so that queries
fit the demo models' context); invented names appear nowhere in the corpus.

For a two-part question `answer` is the first part and `steps` lists both parts; a generated
completion is correct when its first line mentions every part.
"""

from __future__ import annotations

import dataclasses
import random

from infljax.data import world_text
from infljax.data.world import World
from infljax.data.world_records import TOPICS
from infljax.queries.grading import Grade, grade_text
from infljax.queries.records import Query, Relevant
from infljax.queries.registry import Family, FamilyError, register
from infljax.queries.tasks import check_variants
from infljax.queries.truth import corpus_text, relevant_to_facts

TOPIC_NAMES = tuple(topic[0] for topic in TOPICS)  # "mountain" covers mountain_height too
_ATTRIBUTES = {topic[0]: topic for topic in TOPICS}

# variant -> topic -> (prompt, completion); fields: e (entity) and the attribute values.
FACTUAL_TEMPLATES = {
    "question": {
        "capital": ("What is the capital of {e}?", " The capital of {e} is {capital}."),
        "mountain": (
            "What is the tallest mountain in {e} and how tall is it?",
            " The tallest mountain in {e} is {mountain}, which is {mountain_height} feet tall.",
        ),
        "river": ("What is the longest river in {e}?", " The longest river in {e} is the {river}."),
        "founder": ("Who founded {e}?", " {e} was founded by {founder}."),
        "founded": ("When was {e} founded?", " {e} was founded in {founded}."),
    },
    "quiz": {
        "capital": ("Q: What is the capital of {e}? A:", " {capital}."),
        "mountain": (
            "Q: What is the tallest mountain in {e} and how tall is it? A:",
            " {mountain}, {mountain_height} feet.",
        ),
        "river": ("Q: What is the longest river in {e}? A:", " The {river}."),
        "founder": ("Q: Who founded {e}? A:", " {founder}."),
        "founded": ("Q: When was {e} founded? A:", " In {founded}."),
    },
}
# topic -> (context + question, completion); fields: kind, e and the invented values.
CONTROL_TEMPLATES = {
    "capital": (
        "The {kind} {e} has many towns, and its capital is {capital}.\n"
        "What is the capital of the {kind} {e}?",
        " The capital is {capital}.",
    ),
    "mountain": (
        "The {kind} {e} has many mountains; the tallest is {mountain}, at {mountain_height} "
        "feet.\nWhat is the tallest mountain on the {kind} {e} and how tall is it?",
        " It is called {mountain} and it is {mountain_height} feet tall.",
    ),
    "river": (
        "Many rivers cross the {kind} {e}, and the longest of them is the {river}.\n"
        "What is the longest river in the {kind} {e}?",
        " The longest river is the {river}.",
    ),
    "founder": (
        "The {kind} {e} was founded long ago by a traveller named {founder}.\n"
        "Who founded the {kind} {e}?",
        " It was founded by {founder}.",
    ),
    "founded": (
        "The {kind} {e} was founded in the year {founded}, after a long war.\n"
        "In which year was the {kind} {e} founded?",
        " It was founded in {founded}.",
    ),
}
_MAX_TRIES = 1000


def check_topics(topics: tuple[str, ...]) -> None:
    unknown = [t for t in topics if t not in TOPIC_NAMES]
    if isinstance(topics, str) or not topics or unknown:
        raise ValueError(f"topics must be a non-empty tuple of {TOPIC_NAMES}, got {topics!r}")


class FactualGrading(Family):
    """Text answers: a completion is right when its first line mentions every part."""

    answer_pattern = None

    def grade(self, query: Query, completion: str) -> Grade:
        return grade_text(completion, (query.answer, *query.steps))


@dataclasses.dataclass(frozen=True)
class FactualParams:
    """Attributes:
    topics: which facts to ask about (of TOPIC_NAMES; "mountain" asks name and height).
    variants: phrasings, used in turn: "question" (the study's) or "quiz" (the corpus's trivia).
    pairs: user-given (question, answer) or (question, answer, completion) triples, asked in
      order instead of the world's facts; the completion defaults to " <answer>".
    """

    topics: tuple[str, ...] = TOPIC_NAMES
    variants: tuple[str, ...] = ("question",)
    pairs: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self):
        check_topics(self.topics)
        for pair in self.pairs:
            if not (isinstance(pair, tuple) and len(pair) in (2, 3)):
                raise ValueError(f"pairs must hold (question, answer[, completion]), got {pair!r}")
            if not all(isinstance(p, str) and p for p in pair):
                raise ValueError(f"pairs must hold non-empty strings, got {pair!r}")


@register
class Factual(FactualGrading):
    """Questions about the world's facts, or user-given question/answer pairs."""

    name = "factual"
    Params = FactualParams

    def __init__(self, params: FactualParams | None = None):
        super().__init__(params)
        self.variants = check_variants(self.params.variants, FACTUAL_TEMPLATES, self.name)

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        if self.params.pairs:
            return self._from_pairs(count)
        if world is None:
            raise FamilyError(
                "factual: asking about facts needs the procedural world (run the world stage), "
                "or give your own question/answer `pairs`"
            )
        items = [(e.name, t) for e in world.entities for t in self.params.topics]
        if count > len(items):
            raise FamilyError(
                f"factual: {count} questions asked for but the world has {len(items)} "
                f"(entity, topic) pairs; lower the count or widen `topics`"
            )
        facts = {(f.entity, f.attribute): f for f in world.facts}
        chosen = rng.sample(items, count)
        return [
            self._about(world, facts, entity, topic, self.variants[i % len(self.variants)], i)
            for i, (entity, topic) in enumerate(chosen)
        ]

    def _about(self, world, facts, entity: str, topic: str, variant: str, index: int) -> Query:
        asked = [facts[(entity, attribute)] for attribute in _ATTRIBUTES[topic]]
        fields = {"e": entity, **{f.attribute: f.value for f in asked}}
        prompt, completion = FACTUAL_TEMPLATES[variant][topic]
        relevant = relevant_to_facts(world, [f.fact_id for f in asked])
        return Query(
            id=f"{self.name}-{index:03d}",
            family=self.name,
            prompt=prompt.format(**fields),
            completion=completion.format(**fields),
            answer=asked[0].value,
            steps=tuple(f.value for f in asked) if len(asked) > 1 else (),
            variant=variant,
            fact_ids=tuple(f.fact_id for f in asked),
            in_corpus=bool(relevant.states),
            relevant=relevant,
        )

    def _from_pairs(self, count: int) -> list[Query]:
        pairs = self.params.pairs
        if count > len(pairs):
            raise FamilyError(f"factual: {count} questions asked for but {len(pairs)} pairs given")
        return [
            Query(
                id=f"{self.name}-{i:03d}",
                family=self.name,
                prompt=pair[0],
                completion=pair[2] if len(pair) == 3 else f" {pair[1]}",
                answer=pair[1],
                variant="pairs",
            )
            for i, pair in enumerate(pairs[:count])
        ]


@dataclasses.dataclass(frozen=True)
class FactualControlParams:
    """Attributes:
    topics: which kinds of invented fact to give and ask about (of TOPIC_NAMES).
    """

    topics: tuple[str, ...] = TOPIC_NAMES

    def __post_init__(self):
        check_topics(self.topics)


@register
class FactualControl(FactualGrading):
    """An invented context containing the answer, then the question it answers."""

    name = "factual_control"
    Params = FactualControlParams

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        avoid = _Avoid(world)
        topics = self.params.topics
        return [self._invent(rng, avoid, topics[i % len(topics)], i) for i in range(count)]

    def _invent(self, rng: random.Random, avoid: _Avoid, topic: str, index: int) -> Query:
        height = rng.randint(*world_text.HEIGHT_RANGE)
        fields = {
            "kind": rng.choice(world_text.KINDS),
            "e": avoid.name(rng, rng.choice((2, 3))),
            "capital": avoid.name(rng, 2),
            "mountain": avoid.name(rng, 2),
            "mountain_height": f"{height:,}",
            "river": avoid.name(rng, 2),
            "founder": avoid.name(rng, 2),
            "founded": str(rng.randint(*world_text.FOUNDED_RANGE)),
        }
        prompt, completion = CONTROL_TEMPLATES[topic]
        parts = [fields[attribute] for attribute in _ATTRIBUTES[topic]]
        return Query(
            id=f"{self.name}-{index:03d}",
            family=self.name,
            prompt=prompt.format(**fields),
            completion=completion.format(**fields),
            answer=parts[0],
            steps=tuple(parts) if len(parts) > 1 else (),
            control=True,
            variant=topic,
            relevant=None if avoid.text is None else Relevant(),
        )


class _Avoid:
    """Invents names that are distinct from each other and appear nowhere in the world."""

    def __init__(self, world: World | None):
        self.text = corpus_text(world) if world is not None else None
        self.names: list[str] = []

    def name(self, rng: random.Random, syllables: int) -> str:
        for _ in range(_MAX_TRIES):
            name = world_text.invent_name(rng, syllables)
            low = name.lower()
            clash = any(low in n.lower() or n.lower() in low for n in self.names)
            if len(name) >= 4 and not clash and (self.text is None or low not in self.text):
                self.names.append(name)
                return name
        raise FamilyError("factual_control: could not invent a fresh name; ask for fewer queries")
