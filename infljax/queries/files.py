"""`jsonl`: queries read from a file (DESIGN.md §3), alone or next to generated families.

Each line is a query record with at least ``id``, ``prompt`` and ``completion``; ``family``
defaults to the `family` parameter, ``answer`` to "", ``steps`` to [], ``control`` to false;
every other field is kept. The records keep their own ids. ``count=0`` takes every record,
a positive count the first `count`.
"""

from __future__ import annotations

import dataclasses
import random

from infljax.data.world import World
from infljax.queries.records import Query, read_queries_jsonl
from infljax.queries.registry import Family, FamilyError, register


@dataclasses.dataclass(frozen=True)
class JsonlParams:
    """Attributes:
    path: the JSONL file (relative paths are from the working directory).
    family: the family of records that name none.
    """

    path: str = ""
    family: str = "custom"

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("`path` must name a JSONL file of query records")
        if not isinstance(self.family, str) or not self.family:
            raise ValueError("`family` must be a non-empty string")


@register
class JsonlFile(Family):
    """Query records from a JSONL file, ids kept."""

    name = "jsonl"
    Params = JsonlParams
    keep_ids = True

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        del world, rng  # the file is the queries
        queries = read_queries_jsonl(self.params.path, default_family=self.params.family)
        if not queries:
            raise FamilyError(f"jsonl: {self.params.path} holds no query records")
        if count > len(queries):
            raise FamilyError(
                f"jsonl: {count} queries asked for but {self.params.path} holds {len(queries)}"
            )
        return queries[:count] if count else queries
