"""`reasoning_control`: queries that look like reasoning but only repeat a number given in the
prompt (STUDY.md "Setup"), in the study's three kinds, used in turn:

* ``story``: ``Find the answer: There are 21 kids in the bus. How many kids are in the bus?
  \\n\\nThink step-by-step.`` (several things and places);
* ``slope``: ``The slope of the line is -22. What is the slope of the line?`` (an integer slope
  drawn like the slope family's answers);
* ``brackets``: ``Can you repeat the number between brackets (74)?``.
"""

from __future__ import annotations

import dataclasses
import random

from infljax.data.world import World
from infljax.data.world_tasks import sample_slope
from infljax.queries.records import Query
from infljax.queries.registry import Family, register
from infljax.queries.tasks import check_variants

NUMBER_RANGE = (1, 100)
_STORY_THINGS = (
    ("kids", "in the bus"), ("apples", "in the basket"), ("books", "on the shelf"),
    ("birds", "in the tree"), ("cars", "in the car park"), ("coins", "in the jar"),
)  # fmt: skip


def _story(rng: random.Random) -> tuple[str, str, int]:
    n = rng.randint(*NUMBER_RANGE)
    things, place = rng.choice(_STORY_THINGS)
    prompt = (
        f"Find the answer: There are {n} {things} {place}. How many {things} are {place}?"
        "\n\nThink step-by-step."
    )
    return prompt, f"\nThere are {n} {things} {place}.\nThe answer is {n}.", n


def _slope(rng: random.Random) -> tuple[str, str, int]:
    m = int(sample_slope(rng).answer)
    prompt = f"The slope of the line is {m}. What is the slope of the line?"
    return prompt, f" The slope of the line is {m}.", m


def _brackets(rng: random.Random) -> tuple[str, str, int]:
    n = rng.randint(*NUMBER_RANGE)
    prompt = f"Can you repeat the number between brackets ({n})?"
    return prompt, f" The number between the brackets is {n}.", n


KINDS = {"story": _story, "slope": _slope, "brackets": _brackets}


@dataclasses.dataclass(frozen=True)
class ReasoningControlParams:
    """Attributes:
    variants: the kinds of control, used in turn (of "story", "slope", "brackets").
    """

    variants: tuple[str, ...] = tuple(KINDS)


@register
class ReasoningControl(Family):
    """Restate a number in a story, repeat a given slope, repeat the number in brackets."""

    name = "reasoning_control"
    Params = ReasoningControlParams
    # The story ends "The answer is N."; the other two "... is N.".
    answer_pattern = r"\bis:?\s*(?P<answer>{number})"

    def __init__(self, params: ReasoningControlParams | None = None):
        super().__init__(params)
        self.variants = check_variants(self.params.variants, KINDS, self.name)

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        del world  # controls need no world: their answer is in the prompt
        queries = []
        for i in range(count):
            variant = self.variants[i % len(self.variants)]
            prompt, completion, number = KINDS[variant](rng)
            queries.append(
                Query(
                    id=f"{self.name}-{i:03d}",
                    family=self.name,
                    prompt=prompt,
                    completion=completion,
                    answer=str(number),
                    control=True,
                    variant=variant,
                )
            )
        return queries
