"""The procedural world (DESIGN.md §8): a seeded synthetic pretraining corpus whose ground truth
is known.

`generate_world(WorldArgs(seed=0))` invents entities with facts (capital, tallest mountain and its
height, longest river, founder, founding year) and instances of three reasoning tasks (two-step
arithmetic, slope, linear equation; ranges of STUDY.md "Setup"), then writes short documents from
six sources: `wiki` and `trivia` state facts, `code`, `math` and `stackexchange` work procedures
(mostly on random numbers, a share on in-corpus instances), `web` is filler with numbers, and
planted answer documents (`trivia` or `web`) state an instance's result without the procedure.

Every document records what it contains (`states`, `answers`, `works`, `procedure`), and the
generator keeps that record honest: a stating document contains the entity and the value, an
answering or working one contains the answer (working ones every step), and no document contains
the expression of an instance it does not list, so held-out instances appear nowhere.

Example::

    world = generate_world(WorldArgs(seed=0))
    write_corpus_jsonl(world, "runs/demo/corpus.jsonl")   # what the rest of infljax reads
    write_world_json(world, "runs/demo/world.json")       # the ground truth, for queries/reports
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Sequence

from infljax.data import world_procedures, world_text
from infljax.data.world_documents import draft_documents
from infljax.data.world_records import (
    ATTRIBUTES,
    SOURCES,
    TASKS,
    Document,
    Entity,
    Fact,
    Instance,
)
from infljax.data.world_tasks import SAMPLERS, problem_keys

__all__ = [
    "ATTRIBUTES", "SOURCES", "TASKS", "Document", "Entity", "Fact", "Instance", "World",
    "WorldArgs", "generate_world", "read_world_json", "write_corpus_jsonl", "write_world_json",
]  # fmt: skip

WORLD_FORMAT = "infljax.world/1"
MAX_ENTITIES = 500
_INSTANCE_PREFIX = {"arithmetic": "arith", "slope": "slope", "linear": "linear"}

# Rejection sampling bounds: far above what valid arguments need, low enough to fail fast.
_MAX_TRIES = 200


@dataclasses.dataclass(frozen=True)
class WorldArgs:
    """Size and seed of the procedural world.

    Defaults give ~1,700 documents of 7-50 words (mean ~25): 30 entities x 6 facts, each stated by
    `fact_docs_per_fact` wiki/trivia documents (a tiny model trained ~30 epochs then sees every
    fact 100+ times, which the feasibility run found necessary), and 40 instances per task, half
    held out. `worked_fraction` of each procedure source's documents work an in-corpus instance
    (cycling through them), the rest random problems; `web_mention_fraction` of web filler names
    an entity without stating a fact; `trivia_fraction` of single-topic fact documents are trivia,
    the rest short wiki paragraphs.
    """

    seed: int = 0
    num_entities: int = 30
    fact_docs_per_fact: int = 4
    num_arithmetic: int = 40
    num_slope: int = 40
    num_linear: int = 40
    held_out_fraction: float = 0.5
    planted_answers_per_instance: int = 2
    planted_fraction: float = 0.5
    code_docs: int = 300
    math_docs: int = 300
    stackexchange_docs: int = 300
    web_docs: int = 300
    worked_fraction: float = 0.2
    web_mention_fraction: float = 0.3
    trivia_fraction: float = 0.6

    def __post_init__(self):
        positive = ("num_entities", "fact_docs_per_fact", "num_arithmetic", "num_slope")
        positive += ("num_linear",)
        counts = ("planted_answers_per_instance", "code_docs", "math_docs")
        counts += ("stackexchange_docs", "web_docs")
        fractions = ("held_out_fraction", "planted_fraction", "worked_fraction")
        fractions += ("web_mention_fraction", "trivia_fraction")
        _check_int("seed", self.seed, None)
        for name in positive:
            _check_int(name, getattr(self, name), 1)
        for name in counts:
            _check_int(name, getattr(self, name), 0)
        for name in fractions:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"WorldArgs.{name} must be a number in [0, 1], got {value!r}")
        if self.num_entities > MAX_ENTITIES:
            raise ValueError(
                f"WorldArgs.num_entities={self.num_entities} exceeds {MAX_ENTITIES}; the name "
                "generator keeps names short and distinct, which caps the world's size"
            )

    def task_count(self, task: str) -> int:
        """Number of instances of `task` ("arithmetic", "slope" or "linear")."""
        return getattr(self, f"num_{task}")


def _check_int(name: str, value, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"WorldArgs.{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"WorldArgs.{name} must be >= {minimum}, got {value}")


@dataclasses.dataclass(frozen=True)
class World:
    """Everything generated, with its ground truth; `documents` are in corpus (shuffled) order."""

    args: WorldArgs
    facts: tuple[Fact, ...]
    instances: tuple[Instance, ...]
    documents: tuple[Document, ...]
    entities: tuple[Entity, ...] = ()

    def fact(self, fact_id: str) -> Fact:
        """The fact with this id (KeyError names it when there is none)."""
        return _lookup(self.facts, "fact_id", fact_id)

    def instance(self, instance_id: str) -> Instance:
        """The instance with this id (KeyError names it when there is none)."""
        return _lookup(self.instances, "instance_id", instance_id)

    def document(self, doc_id: str) -> Document:
        """The document with this id (KeyError names it when there is none)."""
        return _lookup(self.documents, "doc_id", doc_id)


def _lookup(items: Sequence, key: str, value: str):
    for item in items:
        if getattr(item, key) == value:
            return item
    raise KeyError(f"no {key} {value!r} in this world")


def generate_world(args: WorldArgs) -> World:
    """The world of `args`; the same args (seed included) always give the same world."""
    rng = random.Random(args.seed)
    entities, facts = _make_entities_and_facts(rng, args.num_entities)
    instances = _make_instances(rng, args)
    drafts = draft_documents(rng, args, entities, facts, instances)
    rng.shuffle(drafts)
    width = max(5, len(str(len(drafts) - 1)))
    documents = tuple(
        dataclasses.replace(doc, doc_id=f"d{i:0{width}d}") for i, doc in enumerate(drafts)
    )
    return World(args, facts, instances, documents, entities)


# ---------------------------------------------------------------------------- entities and facts


def _make_entities_and_facts(
    rng: random.Random, count: int
) -> tuple[tuple[Entity, ...], tuple[Fact, ...]]:
    """`count` entities with one fact per attribute; all names distinct and none a substring of
    another name or of any template text, so a value string identifies its fact."""
    forbidden = (world_text.template_text() + world_procedures.template_text()).lower()
    names: list[str] = []
    numbers: list[str] = []
    entities, facts = [], []
    width = max(3, len(str(count * len(ATTRIBUTES) - 1)))
    for _ in range(count):
        name = _new_name(rng, rng.choice((2, 3)), names, forbidden)
        entity = Entity(name, rng.choice(world_text.KINDS))
        values = _entity_values(rng, names, numbers, forbidden)
        entities.append(entity)
        for attribute in ATTRIBUTES:
            fact_id = f"f{len(facts):0{width}d}"
            facts.append(Fact(fact_id, entity.name, attribute, values[attribute]))
    return tuple(entities), tuple(facts)


def _entity_values(
    rng: random.Random, names: list[str], numbers: list[str], forbidden: str
) -> dict[str, str]:
    """attribute -> value for one entity; heights are written "12,345" or "12345" (per fact)."""
    height = _new_number(rng, world_text.HEIGHT_RANGE, numbers)
    return {
        "capital": _new_name(rng, 2, names, forbidden),
        "mountain": _new_name(rng, 2, names, forbidden),
        "mountain_height": f"{height:,}" if rng.random() < 0.5 else str(height),
        "river": _new_name(rng, 2, names, forbidden),
        "founder": _new_name(rng, 2, names, forbidden),
        "founded": str(_new_number(rng, world_text.FOUNDED_RANGE, numbers)),
    }


def _new_name(rng: random.Random, syllables: int, names: list[str], forbidden: str) -> str:
    """A fresh name, appended to `names`: not within nor containing any earlier name, and not
    within the template text (so "Name" or "Tall" never become entities)."""
    for _ in range(_MAX_TRIES):
        name = world_text.invent_name(rng, syllables)
        low = name.lower()
        clash = any(low in other.lower() or other.lower() in low for other in names)
        if len(name) >= 4 and not clash and low not in forbidden:
            names.append(name)
            return name
    raise ValueError(
        f"could not invent a distinct name after {_MAX_TRIES} tries; use fewer entities"
    )


def _new_number(rng: random.Random, bounds: tuple[int, int], numbers: list[str]) -> int:
    """A fresh number in `bounds` whose digits neither contain nor lie within an earlier one's
    (a height 16655 would otherwise contain the year 1665)."""
    for _ in range(_MAX_TRIES):
        value = rng.randint(*bounds)
        digits = str(value)
        if not any(digits in other or other in digits for other in numbers):
            numbers.append(digits)
            return value
    raise ValueError(f"could not draw a distinct number in {bounds}; use fewer entities")


# ---------------------------------------------------------------------------- instances


def _make_instances(rng: random.Random, args: WorldArgs) -> tuple[Instance, ...]:
    """Distinct problems per task; `held_out_fraction` of each task (chosen at random) are
    `in_corpus=False`. No expression is a substring of another ("(7 - 4) * 1" would hide in
    "(7 - 4) * 12"), so documents working one never quote another."""
    instances: list[Instance] = []
    for task in TASKS:
        count = args.task_count(task)
        problems = _distinct_problems(rng, task, count)
        held_out = set(rng.sample(range(count), round(count * args.held_out_fraction)))
        width = max(3, len(str(count - 1)))
        for i, problem in enumerate(problems):
            instance_id = f"{_INSTANCE_PREFIX[task]}-{i:0{width}d}"
            instances.append(
                dataclasses.replace(problem, instance_id=instance_id, in_corpus=i not in held_out)
            )
    return tuple(instances)


def _distinct_problems(rng: random.Random, task: str, count: int) -> list[Instance]:
    problems: list[Instance] = []
    keys: list[str] = []
    for _ in range(_MAX_TRIES * count):
        if len(problems) == count:
            break
        problem = SAMPLERS[task](rng)
        new = problem_keys(problem)
        if not any(k in old or old in k for k in new for old in keys):
            problems.append(problem)
            keys.extend(new)
    if len(problems) == count:
        return problems
    raise ValueError(f"could not draw {count} distinct {task} problems; lower WorldArgs.num_{task}")


# ---------------------------------------------------------------------------- files


def write_corpus_jsonl(world: World, path: str | os.PathLike) -> None:
    """One JSON record per document, in corpus order: {"id", "source", "text", "states",
    "answers", "works", "procedure"} (the corpus format of DESIGN.md §3; extra fields are kept)."""
    with open(path, "w", encoding="utf-8") as f:
        for doc in world.documents:
            record = {"id": doc.doc_id, **dataclasses.asdict(doc)}
            del record["doc_id"]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_world_json(world: World, path: str | os.PathLike) -> None:
    """The full ground truth (args, entities, facts, instances, documents) as one JSON file."""
    payload = {"format": WORLD_FORMAT, **dataclasses.asdict(world)}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False)


def read_world_json(path: str | os.PathLike) -> World:
    """The world written by `write_world_json`; a malformed file raises ValueError saying where."""
    with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    if not isinstance(payload, dict) or payload.get("format") != WORLD_FORMAT:
        raise ValueError(f"{path}: not a world file (expected format {WORLD_FORMAT!r})")
    try:
        args = WorldArgs(**payload["args"])
        parts = {
            name: tuple(_from_json(cls, raw, f"{name}[{i}]") for i, raw in enumerate(payload[name]))
            for name, cls in (
                ("facts", Fact),
                ("instances", Instance),
                ("documents", Document),
                ("entities", Entity),
            )
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed world file: {e}") from e
    return World(args=args, **parts)


def _from_json(cls: type, raw: dict, where: str):
    """`cls(**raw)` with JSON lists turned back into tuples (every list field is a tuple)."""
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e
