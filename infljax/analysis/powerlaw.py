"""Analysis D: the power law of a query's top scores, and factual vs reasoning slopes compared.

For each query, fit log(score) = intercept + slope · log(rank) by least squares over its top k
positive scores (ranks 1..k). STUDY.md compares the slopes of factual and reasoning queries with a
t-test (a steeper, more negative slope means influence concentrated in fewer documents).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats

from infljax.analysis.ranking import top_indices

MIN_POINTS = 3  # a line through fewer positive scores says nothing


@dataclasses.dataclass(frozen=True, eq=False)
class PowerLawFits:
    """Per-query fits: slope, intercept, r2 and points used ([Q] each; NaN where < MIN_POINTS)."""

    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    points: np.ndarray


def fit_power_law(top_scores: np.ndarray) -> tuple[float, float, float, int]:
    """(slope, intercept, r2, points) of log(score) vs log(rank) for one query's scores in
    descending order; non-positive scores are left out (their log is undefined)."""
    values = np.asarray(top_scores, dtype=np.float64)
    ranks = np.arange(1, len(values) + 1, dtype=np.float64)
    keep = values > 0
    if keep.sum() < MIN_POINTS:
        return float("nan"), float("nan"), float("nan"), int(keep.sum())
    x, y = np.log(ranks[keep]), np.log(values[keep])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    spread = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / spread if spread > 0 else 1.0
    return float(slope), float(intercept), float(r2), int(keep.sum())


def power_law_fits(scores: np.ndarray, k: int) -> PowerLawFits:
    """Fits over each row's top `k` scores of a [Q, N] matrix."""
    scores = np.asarray(scores)
    top = np.take_along_axis(scores, top_indices(scores, k), axis=1)
    fits = np.array([fit_power_law(row) for row in top])
    return PowerLawFits(fits[:, 0], fits[:, 1], fits[:, 2], fits[:, 3].astype(np.int64))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


@dataclasses.dataclass(frozen=True)
class SlopeComparison:
    """Welch's t-test of two groups of slopes (NaN fits dropped)."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    t: float
    p_value: float


def compare_slopes(a: Sequence[float], b: Sequence[float]) -> SlopeComparison:
    """Welch's two-sided t-test (unequal variances) of slopes `a` vs `b`; NaN with < 2 each."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    mean = _mean
    if len(a) < 2 or len(b) < 2:
        return SlopeComparison(mean(a), mean(b), len(a), len(b), float("nan"), float("nan"))
    result = stats.ttest_ind(a, b, equal_var=False)
    return SlopeComparison(
        mean(a), mean(b), len(a), len(b), float(result.statistic), float(result.pvalue)
    )
