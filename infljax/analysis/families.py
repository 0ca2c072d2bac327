"""Grouping queries by family and kind (factual / reasoning / control).

The built-in families are `factual`, `arithmetic`, `slope`, `linear`, `factual_control` and
`reasoning_control`; a user family is treated generically: a control when its records say
``control``, reasoning when it has intermediate steps (and is not called factual), else factual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from infljax.analysis.inputs import QueryRecord

KINDS = ("factual", "reasoning", "control")
# Display order of the built-in families; others follow in order of first appearance.
KNOWN_ORDER = ("factual", "arithmetic", "slope", "linear", "factual_control", "reasoning_control")


def query_kind(query: QueryRecord) -> str:
    """ "control", "factual" or "reasoning" (see the module docstring)."""
    if query.control:
        return "control"
    if query.family == "factual" or not query.steps:
        return "factual"
    return "reasoning"


def query_task(query: QueryRecord) -> str | None:
    """The reasoning task a query exercises (its ``task`` field, else its family), or None for
    factual queries. Matched against documents' ``procedure`` labels."""
    if query_kind(query) == "factual":
        return None
    return str(query.extra.get("task") or query.family)


@dataclasses.dataclass(frozen=True)
class FamilyIndex:
    """Query rows grouped by family, in display order.

    Attributes:
      families: family names (display order).
      rows: per family, the score-row indices of its queries.
      kinds: per family, its kind (the kind of its first query).
    """

    families: tuple[str, ...]
    rows: tuple[tuple[int, ...], ...]
    kinds: tuple[str, ...]

    @classmethod
    def of(cls, queries: Sequence[QueryRecord]) -> FamilyIndex:
        seen = list(dict.fromkeys(q.family for q in queries))
        known = [f for f in KNOWN_ORDER if f in seen]
        families = tuple(known + [f for f in seen if f not in known])
        rows = tuple(tuple(i for i, q in enumerate(queries) if q.family == f) for f in families)
        kinds = tuple(query_kind(queries[r[0]]) for r in rows)
        return cls(families, rows, kinds)

    def rows_of(self, family: str) -> tuple[int, ...]:
        return self.rows[self.families.index(family)]

    def of_kind(self, kind: str) -> list[str]:
        return [f for f, k in zip(self.families, self.kinds, strict=True) if k == kind]

    def kind_rows(self, kind: str) -> list[int]:
        return [r for f in self.of_kind(kind) for r in self.rows_of(f)]

    def display_order(self) -> list[int]:
        """Score rows sorted by family (for grouped heatmaps)."""
        return [r for rows in self.rows for r in rows]


def control_family(index: FamilyIndex, family: str) -> str | None:
    """The control family a (non-control) family is compared with: ``<family>_control`` when
    present, else ``reasoning_control`` for reasoning families, else None."""
    if index.kinds[index.families.index(family)] == "control":
        return None
    own = f"{family}_control"
    if own in index.families:
        return own
    kind = index.kinds[index.families.index(family)]
    if kind == "reasoning" and "reasoning_control" in index.families:
        return "reasoning_control"
    return None
