"""Analysis C: how much of a query's influence its most influential documents carry.

For each query, sort the positive scores (per nat of completion NLL) in descending order and sum
the top k percent of the corpus's documents; report that sum and its share of the query's total
positive influence. The negative tail is the same on the negated negative scores (a magnitude).
STUDY.md: reasoning queries have far less total magnitude and flatter curves than factual ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class DependencyCurves:
    """Cumulative influence of each query's top k percent of documents.

    Attributes:
      percents: [P] percent of the corpus's documents (0 < p <= 100), increasing.
      positive: [Q, P] summed positive scores per nat over the top p percent.
      positive_share: [Q, P] that sum ÷ the query's total positive influence.
      negative: [Q, P] |summed negative scores| per nat over the bottom p percent.
      negative_share: [Q, P] that ÷ the query's total negative magnitude.
      total_positive, total_negative: [Q] all positive / |negative| influence per nat.
    """

    percents: np.ndarray
    positive: np.ndarray
    positive_share: np.ndarray
    negative: np.ndarray
    negative_share: np.ndarray
    total_positive: np.ndarray
    total_negative: np.ndarray


def cumulative_counts(num_documents: int, percents: Sequence[float]) -> np.ndarray:
    """[P] how many documents each percent covers: ceil(p/100 · N), at least one."""
    counts = np.ceil(np.asarray(percents, dtype=np.float64) / 100.0 * num_documents)
    return np.clip(counts.astype(np.int64), 1, num_documents)


def dependency_curves(scores_per_nat: np.ndarray, percents: Sequence[float]) -> DependencyCurves:
    """Curves of a [Q, N] per-nat score matrix at `percents` (validated: 0 < p <= 100)."""
    percents = np.asarray(sorted(percents), dtype=np.float64)
    if not len(percents) or percents[0] <= 0 or percents[-1] > 100:
        raise ValueError(f"percents must lie in (0, 100], got {percents.tolist()}")
    counts = cumulative_counts(scores_per_nat.shape[1], percents)
    pos, neg = [], []
    for row in scores_per_nat:
        row = np.asarray(row, dtype=np.float64)
        pos.append(_cumulative(np.clip(row, 0, None), counts))
        neg.append(_cumulative(np.clip(-row, 0, None), counts))
    pos, neg = np.array(pos), np.array(neg)
    return DependencyCurves(
        percents=percents,
        positive=pos[:, :-1, 0],
        positive_share=pos[:, :-1, 1],
        negative=neg[:, :-1, 0],
        negative_share=neg[:, :-1, 1],
        total_positive=pos[:, -1, 0],
        total_negative=neg[:, -1, 0],
    )


def _cumulative(magnitudes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[P + 1, 2]: sums of the `counts` largest magnitudes and their shares of the total; the
    last row is (total, 1)."""
    ordered = np.cumsum(np.sort(magnitudes)[::-1])
    total = ordered[-1]
    sums = np.append(ordered[counts - 1], total)
    shares = sums / total if total > 0 else np.zeros_like(sums)
    return np.stack([sums, shares], axis=1)


def mean_and_sem(values: np.ndarray, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over `rows` of values [Q, ...] and its standard error (0 with one row)."""
    chosen = np.asarray(values)[list(rows)]
    mean = chosen.mean(0)
    if len(rows) < 2:
        return mean, np.zeros_like(mean)
    return mean, chosen.std(0, ddof=1) / np.sqrt(len(rows))
