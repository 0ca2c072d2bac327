"""The procedural world's ground truth for a query: which documents bear on it."""

from __future__ import annotations

from collections.abc import Iterable

from infljax.data.world import World
from infljax.queries.records import Relevant


def relevant_to_facts(world: World, fact_ids: Iterable[str]) -> Relevant:
    """Documents stating any of `fact_ids` (a mountain's name and height are stated together)."""
    wanted = set(fact_ids)
    return Relevant(states=tuple(d.doc_id for d in world.documents if wanted & set(d.states)))


def relevant_to_instance(world: World, instance_id: str) -> Relevant:
    """Planted documents stating the instance's answer, and documents working it."""
    return Relevant(
        answers=tuple(d.doc_id for d in world.documents if instance_id in d.answers),
        works=tuple(d.doc_id for d in world.documents if instance_id in d.works),
    )


def corpus_text(world: World) -> str:
    """Every document's text, lower-cased and joined: to check that invented names and fresh
    problems appear nowhere in the corpus."""
    return "\n".join(d.text for d in world.documents).lower()
