"""Ground-truth retrieval in the procedural world: does the ranking find the documents that are
known to hold what a query needs?

Factual queries (with ``fact_id``/``fact_ids``): the rank of the best document stating the fact,
recall@1 / @10 and the median rank. Reasoning queries (with ``instance_id``): the ranks of the
planted answer documents (the answer without the procedure) and of the documents working the
very instance step by step. Every recall is shown next to what a random ranking would give
(DESIGN.md §8: retrieval numbers mean something only next to a baseline).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from infljax.analysis.categories import query_fact_ids, query_instance_id, relevant_ids
from infljax.analysis.inputs import DocumentTable, QueryRecord
from infljax.analysis.ranking import chance_recall, ranks_of

RECALL_KS = (1, 10)


@dataclasses.dataclass(frozen=True, eq=False)
class Retrieval:
    """Per query ([Q] each; rank 0 = the query has no such documents).

    Attributes:
      fact_rank, fact_docs: best rank of a document stating the query's fact; how many do.
      answer_rank, answer_docs: the same for planted answer documents of its instance.
      worked_rank, worked_docs: the same for documents working its instance step by step.
      answer_ranks, worked_ranks: every such document's rank, per query.
    """

    num_documents: int
    fact_rank: np.ndarray
    fact_docs: np.ndarray
    answer_rank: np.ndarray
    answer_docs: np.ndarray
    worked_rank: np.ndarray
    worked_docs: np.ndarray
    answer_ranks: tuple[np.ndarray, ...]
    worked_ranks: tuple[np.ndarray, ...]


def ground_truth_retrieval(
    queries: Sequence[QueryRecord], ranking: np.ndarray, table: DocumentTable
) -> Retrieval:
    """Ranks of the ground-truth documents of each query under `ranking` ([Q, N], higher first)."""
    states, answers, works = (_inverted(c) for c in (table.states, table.answers, table.works))
    column = {doc_id: d for d, doc_id in enumerate(table.doc_ids)}

    def listed(query: QueryRecord, kind: str) -> set[int]:
        return {column[i] for i in relevant_ids(query, kind) if i in column}

    fact, answer, worked = [], [], []
    for q, query in enumerate(queries):
        instance = query_instance_id(query)
        stating = {d for f in query_fact_ids(query) for d in states.get(f, ())}
        fact.append(_ranks(ranking[q], stating | listed(query, "states")))
        answer.append(_ranks(ranking[q], set(answers.get(instance, ())) | listed(query, "answers")))
        worked.append(_ranks(ranking[q], set(works.get(instance, ())) | listed(query, "works")))
    return Retrieval(
        num_documents=ranking.shape[1],
        fact_rank=_best(fact),
        fact_docs=_count(fact),
        answer_rank=_best(answer),
        answer_docs=_count(answer),
        worked_rank=_best(worked),
        worked_docs=_count(worked),
        answer_ranks=tuple(answer),
        worked_ranks=tuple(worked),
    )


def _best(ranks: list[np.ndarray]) -> np.ndarray:
    return np.array([r.min() if len(r) else 0 for r in ranks], dtype=np.int64)


def _count(ranks: list[np.ndarray]) -> np.ndarray:
    return np.array([len(r) for r in ranks], dtype=np.int64)


def _inverted(column: Sequence[frozenset[str]]) -> dict[str, list[int]]:
    """id -> the documents whose label set holds it."""
    index: dict[str, list[int]] = {}
    for d, ids in enumerate(column):
        for i in ids:
            index.setdefault(i, []).append(d)
    return index


def _ranks(row: np.ndarray, columns: set[int]) -> np.ndarray:
    return np.sort(ranks_of(np.asarray(row), np.asarray(sorted(columns), dtype=np.int64)))


def rank_summary(
    best: np.ndarray, counts: np.ndarray, rows: Sequence[int], num_documents: int
) -> dict | None:
    """recall@k, chance recall@k, median best rank and query count over the `rows` that have
    ground-truth documents (None when none has)."""
    rows = [r for r in rows if counts[r] > 0]
    if not rows:
        return None
    ranks, n_rel = best[rows], counts[rows]
    out = {"num_queries": len(rows), "median_rank": float(np.median(ranks))}
    for k in RECALL_KS:
        out[f"recall_at_{k}"] = float(np.mean(ranks <= k))
        out[f"chance_recall_at_{k}"] = float(
            np.mean([chance_recall(num_documents, int(m), k) for m in n_rel])
        )
    return out
