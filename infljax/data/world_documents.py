"""Drafting the procedural world's documents (see `world.py`): which document states which
facts or works which instance, with the ground truth recorded as each is written.

Drafts have an empty `doc_id`; `generate_world` shuffles them and numbers them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from itertools import cycle
from typing import TYPE_CHECKING

from infljax.data import world_procedures, world_text
from infljax.data.world_records import TASKS, TOPICS, Document, Entity, Fact, Instance, Topic
from infljax.data.world_tasks import SAMPLERS, problem_keys

if TYPE_CHECKING:
    from infljax.data.world import WorldArgs

PROCEDURE_SOURCES = ("code", "math", "stackexchange")
# Redraws before giving up; far above what valid arguments need, low enough to fail fast.
_MAX_TRIES = 200


def draft_documents(
    rng: random.Random,
    args: WorldArgs,
    entities: Sequence[Entity],
    facts: Sequence[Fact],
    instances: Sequence[Instance],
) -> list[Document]:
    """Fact documents, procedure documents, planted answer documents and web filler, in that
    order (the caller shuffles)."""
    return [
        *_fact_drafts(rng, args, entities, facts),
        *_procedure_drafts(rng, args, instances),
        *_planted_drafts(rng, args, instances),
        *_web_drafts(rng, args, entities),
    ]


def _fact_drafts(
    rng: random.Random, args: WorldArgs, entities: Sequence[Entity], facts: Sequence[Fact]
) -> Iterator[Document]:
    """`fact_docs_per_fact` rounds per entity; each round states every topic once, in chunks of
    one topic (trivia or a short wiki paragraph) or two (a wiki paragraph)."""
    for entity in entities:
        own = [fact for fact in facts if fact.entity == entity.name]
        values = {fact.attribute: fact.value for fact in own}
        ids = {fact.attribute: fact.fact_id for fact in own}
        for _ in range(args.fact_docs_per_fact):
            for chunk in _chunks(rng, list(TOPICS)):
                states = tuple(ids[attribute] for topic in chunk for attribute in topic)
                if len(chunk) == 1 and rng.random() < args.trivia_fraction:
                    text, source = world_text.render_trivia(rng, entity, values, chunk[0]), "trivia"
                else:
                    text, source = world_text.render_wiki(rng, entity, values, chunk), "wiki"
                yield Document("", source, text, states=tuple(sorted(states)))


def _chunks(rng: random.Random, topics: list[Topic]) -> Iterator[list[Topic]]:
    """`topics` shuffled and cut into runs of one or two."""
    rng.shuffle(topics)
    while topics:
        size = min(len(topics), rng.choice((1, 2)))
        yield topics[:size]
        topics = topics[size:]


def _procedure_drafts(
    rng: random.Random, args: WorldArgs, instances: Sequence[Instance]
) -> Iterator[Document]:
    """Code, math and StackExchange documents, tasks in equal shares. Per source and task,
    `worked_fraction` of them work the next in-corpus instance of a shuffled cycle shared by the
    three sources; the others work random problems that are no instance."""
    reserved = {key for instance in instances for key in problem_keys(instance)}
    queues = {task: _instance_cycle(rng, instances, task) for task in TASKS}
    for source in PROCEDURE_SOURCES:
        total = getattr(args, f"{source}_docs")
        for t, task in enumerate(TASKS):
            count = len(range(t, total, len(TASKS)))
            worked = round(count * args.worked_fraction) if queues[task] else 0
            for i in range(count):
                problem = next(queues[task]) if i < worked else None
                yield _procedure_document(rng, source, task, problem, instances, reserved)


def _instance_cycle(
    rng: random.Random, instances: Sequence[Instance], task: str
) -> Iterator[Instance] | None:
    """The in-corpus instances of `task` in a shuffled endless cycle (None when there are none)."""
    pool = [i for i in instances if i.task == task and i.in_corpus]
    rng.shuffle(pool)
    return cycle(pool) if pool else None


def _procedure_document(
    rng: random.Random,
    source: str,
    task: str,
    instance: Instance | None,
    instances: Sequence[Instance],
    reserved: set[str],
) -> Document:
    """A `source` document working `instance`, or a random problem of `task` when None."""

    def draft() -> Document:
        problem = instance or _random_problem(rng, task, reserved)
        text = world_procedures.render_procedure(rng, source, problem)
        works = (instance.instance_id,) if instance else ()
        return Document("", source, text, works=works, procedure=task)

    return _clean(draft, instances)


def _random_problem(rng: random.Random, task: str, reserved: set[str]) -> Instance:
    """A random `task` problem that is no instance (nor a slope instance's reversed points)."""
    for _ in range(_MAX_TRIES):
        problem = SAMPLERS[task](rng)
        if not reserved.intersection(problem_keys(problem)):
            return problem
    raise ValueError(f"every sampled {task} problem is an instance; lower WorldArgs.num_{task}")


def _planted_drafts(
    rng: random.Random, args: WorldArgs, instances: Sequence[Instance]
) -> Iterator[Document]:
    """`planted_answers_per_instance` answer-only documents (trivia or web) for a random
    `planted_fraction` of each task's in-corpus instances."""
    for task in TASKS:
        pool = [i for i in instances if i.task == task and i.in_corpus]
        for instance in rng.sample(pool, round(len(pool) * args.planted_fraction)):
            for _ in range(args.planted_answers_per_instance):
                yield _planted_document(rng, rng.choice(("trivia", "web")), instance, instances)


def _planted_document(
    rng: random.Random, source: str, instance: Instance, instances: Sequence[Instance]
) -> Document:
    def draft() -> Document:
        text = world_procedures.render_planted(rng, source, instance)
        return Document("", source, text, answers=(instance.instance_id,))

    return _clean(draft, instances)


def _web_drafts(
    rng: random.Random, args: WorldArgs, entities: Sequence[Entity]
) -> Iterator[Document]:
    """Filler; `web_mention_fraction` of it names a random entity."""
    for _ in range(args.web_docs):
        mention = rng.random() < args.web_mention_fraction
        place = rng.choice(entities).name if mention else None
        yield Document("", "web", world_text.render_web(rng, place))


def _clean(draft: Callable[[], Document], instances: Sequence[Instance]) -> Document:
    """Redraw until the text quotes no instance's expression except those it lists."""
    for _ in range(_MAX_TRIES):
        doc = draft()
        listed = set(doc.works + doc.answers)
        others = (i for i in instances if i.instance_id not in listed)
        if not any(key in doc.text for i in others for key in problem_keys(i)):
            return doc
    raise RuntimeError(f"could not render a {doc.source} document free of other instances")
