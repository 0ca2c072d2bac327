"""The reasoning families: two-step arithmetic, slope and linear equation (STUDY.md "Setup").

Prompts follow the study (``Calculate the answer: (7 - 4) * 7\\n\\nThink step-by-step.``), with a
second phrasing each (`variants`); the template completion is a chain of thought that states
every intermediate result and ends with ``The answer is <answer>.``. Problems are the world's
instances (`source="world"`: `in_corpus_fraction` of them worked or answered by some document,
the rest held out, carrying their ground truth) or `source="fresh"`: new problems from the same
samplers that no document quotes (the only choice without a procedural world). Ranges and
integrality are those of `infljax.data.world_tasks`: operands 0-20 with positive results, points
in [0, 100]^2 with an integer slope, ``ax + b = c`` with a positive integer x.
"""

from __future__ import annotations

import dataclasses
import random
from typing import ClassVar

from infljax.data.world import Instance, World
from infljax.data.world_tasks import SAMPLERS, problem_keys
from infljax.queries.records import Query, Relevant
from infljax.queries.registry import Family, FamilyError, register
from infljax.queries.truth import corpus_text, relevant_to_instance

SOURCES = ("world", "fresh")
_MAX_TRIES = 1000  # per fresh problem; far above need for the study's ranges
_OUTER_VERBS = {"*": "multiply", "+": "add", "-": "subtract"}


@dataclasses.dataclass(frozen=True)
class TaskParams:
    """Which problems and phrasings a reasoning family draws.

    Attributes:
      source: "world" (the world's instances) or "fresh" (new problems no document quotes).
      in_corpus_fraction: with source="world", the share of queries whose instance some
        document works or answers (rounded); the rest are held out.
      variants: prompt phrasings, used in turn ("" = the family's first).
    """

    source: str = "world"
    in_corpus_fraction: float = 0.5
    variants: tuple[str, ...] = ()

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r}; valid: {SOURCES}")
        fraction = self.in_corpus_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"in_corpus_fraction must be a number, got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"in_corpus_fraction must be in [0, 1], got {fraction}")
        if isinstance(self.variants, str):
            raise ValueError(f"variants must be a tuple of names, got the string {self.variants!r}")


class TaskFamily(Family):
    """A reasoning family over one task of the procedural world."""

    task: ClassVar[str]
    PROMPTS: ClassVar[dict[str, str]]  # variant -> prompt with {expr}
    Params = TaskParams

    def __init__(self, params: TaskParams | None = None):
        super().__init__(params)
        self.variants = check_variants(self.params.variants, self.PROMPTS, self.name)

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        if self.params.source == "world":
            problems = draw_instances(world, self.task, rng, count, self.params.in_corpus_fraction)
        else:
            problems = fresh_problems(world, self.task, rng, count)
        return [self._query(world, problem, i) for i, problem in enumerate(problems)]

    def _query(self, world: World | None, problem: Instance, index: int) -> Query:
        variant = self.variants[index % len(self.variants)]
        if world is None:
            relevant = None
        elif problem.instance_id:
            relevant = relevant_to_instance(world, problem.instance_id)
        else:
            relevant = Relevant()  # a fresh problem: no document quotes it
        return Query(
            id=f"{self.name}-{index:03d}",
            family=self.name,
            prompt=self.PROMPTS[variant].format(expr=problem.expression),
            completion=self.completion(problem),
            answer=problem.answer,
            steps=problem.steps,
            task=self.task,
            variant=variant,
            instance_id=problem.instance_id or None,
            in_corpus=problem.in_corpus if world is not None else None,
            relevant=relevant,
        )

    def completion(self, problem: Instance) -> str:
        raise NotImplementedError


def check_variants(variants: tuple[str, ...], known: dict, family: str) -> tuple[str, ...]:
    """`variants`, or the first known one when empty; an unknown name lists the valid ones."""
    chosen = tuple(variants) or (next(iter(known)),)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise FamilyError(f"{family}: unknown variants {unknown}; valid: {tuple(known)}")
    return chosen


def draw_instances(
    world: World | None, task: str, rng: random.Random, count: int, in_corpus_fraction: float
) -> list[Instance]:
    """`count` distinct instances of `task`, round(count * fraction) of them in the corpus."""
    if world is None:
        raise FamilyError(
            f"{task}: source='world' needs the procedural world (run the world stage), or set "
            "source='fresh' for new problems"
        )
    wanted_in = round(count * in_corpus_fraction)
    chosen = []
    for in_corpus, wanted in ((True, wanted_in), (False, count - wanted_in)):
        pool = [i for i in world.instances if i.task == task and i.in_corpus == in_corpus]
        if wanted > len(pool):
            kind = "in-corpus" if in_corpus else "held-out"
            raise FamilyError(
                f"{task}: {wanted} {kind} instances asked for but the world has {len(pool)}; "
                f"lower the count or raise world.num_{task}"
            )
        chosen += rng.sample(pool, wanted)
    rng.shuffle(chosen)
    return chosen


def fresh_problems(
    world: World | None, task: str, rng: random.Random, count: int
) -> list[Instance]:
    """`count` new problems of `task` that no document of `world` quotes (and that do not
    quote each other); their `instance_id` is empty."""
    text = corpus_text(world) if world is not None else ""
    taken = [k for i in (world.instances if world else ()) for k in problem_keys(i)]
    problems: list[Instance] = []
    for _ in range(_MAX_TRIES * max(count, 1)):
        if len(problems) == count:
            return problems
        problem = SAMPLERS[task](rng)
        keys = problem_keys(problem)
        clash = any(k in old or old in k for k in keys for old in taken)
        if not clash and not any(k.lower() in text for k in keys):
            problems.append(problem)
            taken += keys
    if len(problems) == count:
        return problems
    raise FamilyError(f"{task}: could not draw {count} fresh problems; ask for fewer")


@register
class Arithmetic(TaskFamily):
    """Two-step arithmetic ``(a op1 b) op2 c``: the bracket, then the outer operation."""

    name = "arithmetic"
    task = "arithmetic"
    PROMPTS = {
        "calculate": "Calculate the answer: {expr}\n\nThink step-by-step.",
        "evaluate": "What is the value of {expr}?\n\nThink step-by-step.",
    }

    def completion(self, problem: Instance) -> str:
        (a, b, c), (o1, o2) = problem.operands, problem.operators
        inner, answer = problem.steps
        return (
            f"\nFirst, evaluate the parentheses: {a} {o1} {b} = {inner}.\n"
            f"Then {_OUTER_VERBS[o2]}: {inner} {o2} {c} = {answer}.\n"
            f"The answer is {answer}."
        )


@register
class Slope(TaskFamily):
    """Slope of the line through two points: the formula, the substitution, the division."""

    name = "slope"
    task = "slope"
    PROMPTS = {
        "points": "What is the slope of the line passing through the points {expr}?\n\n"
        "Think step-by-step.",
        "find": "Find the slope of the line through {expr}.\n\nThink step-by-step.",
    }

    def completion(self, problem: Instance) -> str:
        x1, y1, x2, y2 = problem.operands
        rise, run, slope = problem.steps
        shown_run = f"({run})" if int(run) < 0 else run
        return (
            "\nThe slope is m = (y2 - y1) / (x2 - x1).\n"
            f"So m = ({y2} - {y1}) / ({x2} - {x1}) = {rise} / {shown_run} = {slope}.\n"
            f"The answer is {slope}."
        )


@register
class Linear(TaskFamily):
    """``ax + b = c``: subtract b from both sides, then divide by a."""

    name = "linear"
    task = "linear"
    PROMPTS = {
        "solve": "Solve for x: {expr}\n\nThink step-by-step.",
        "find": "Find the value of x for which {expr}.\n\nThink step-by-step.",
    }

    def completion(self, problem: Instance) -> str:
        a, b, c = problem.operands
        rhs, x = problem.steps
        return (
            f"\nSubtract {b} from both sides: {a}x = {c} - {b} = {rhs}.\n"
            f"Divide both sides by {a}: x = {rhs} / {a} = {x}.\n"
            f"The answer is {x}."
        )
