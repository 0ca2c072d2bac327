"""The linear datamodeling score (LDS; Park et al. 2023, TRAK): do scores predict retraining?

Sample M random subsets of the training documents, retrain on each, measure every query, and
correlate (Spearman, per query, across the M subsets) what the scores predict with what the
retrained models measure. Pure numpy/scipy; the retraining lives in
`infljax.validation.retrain`, the experiment in `infljax.stages.validate`.

Sign convention. Influence scores are effects on the completion's **log-probability** (positive:
adding the document raises it, DESIGN §2); the measurement is the completion **NLL** (nats). A
linear datamodel predicts ``nats(S) ≈ c - Σ_{m ∈ S} score(q, m)``, so `subset_predictions`
returns ``-Σ_{m ∈ S} scores`` — predicted nats up to a per-query constant, which Spearman
ignores. `lds(subset_predictions(scores, masks), measured_nats)` is then +1 for perfect scores,
-1 for scores with the wrong sign, and near 0 for uninformative ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats


def sample_subsets(num_documents: int, num_subsets: int, fraction: float, seed: int) -> np.ndarray:
    """[M, N] bool: M seeded subsets, each exactly `round(fraction * N)` documents kept.

    Column n is document n of whatever list the caller indexes (e.g. the training rows).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"subset fraction must be in (0, 1), got {fraction}")
    if num_documents <= 0 or num_subsets <= 0:
        raise ValueError(f"need documents and subsets, got N={num_documents}, M={num_subsets}")
    size = int(round(fraction * num_documents))
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_subsets, num_documents), bool)
    for mask in masks:
        mask[rng.choice(num_documents, size, replace=False)] = True
    return masks


def subset_predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """scores [Q, N] (log-prob effects), masks [M, N] bool -> predicted nats [Q, M].

    ``-Σ_{m in subset} score(q, m)``: the predicted completion NLL of a model trained on the
    subset, up to a per-query constant (see the module docstring for the sign).
    """
    scores, masks = np.asarray(scores, np.float64), np.asarray(masks, bool)
    if scores.ndim != 2 or masks.ndim != 2 or scores.shape[1] != masks.shape[1]:
        raise ValueError(f"need scores [Q, N] and masks [M, N]; got {scores.shape}, {masks.shape}")
    return -(scores @ masks.T.astype(np.float64))


def lds(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """predicted, actual [Q, M] (both nats) -> per-query Spearman correlation [Q].

    NaN for a query whose predictions or measurements are constant across subsets.
    """
    predicted, actual = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if predicted.shape != actual.shape or predicted.ndim != 2 or predicted.shape[1] < 3:
        raise ValueError(
            f"need [Q, M>=3] predicted and actual; got {predicted.shape}, {actual.shape}"
        )
    rank_p = stats.rankdata(predicted, axis=1)
    rank_a = stats.rankdata(actual, axis=1)
    rank_p -= rank_p.mean(axis=1, keepdims=True)
    rank_a -= rank_a.mean(axis=1, keepdims=True)
    denom = np.sqrt((rank_p**2).sum(axis=1) * (rank_a**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rank_p * rank_a).sum(axis=1) / denom, np.nan)


def slopes(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """predicted, actual [Q, M] (nats) -> per-query least-squares slope [Q] of the actual on the
    predicted across the M subsets (with an intercept): 1 where the predictions have the right
    size, whatever their offset; NaN for constant predictions."""
    predicted, actual = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if predicted.shape != actual.shape or predicted.ndim != 2:
        raise ValueError(f"need [Q, M] predicted and actual; got {predicted.shape}, {actual.shape}")
    p = predicted - predicted.mean(axis=1, keepdims=True)
    a = actual - actual.mean(axis=1, keepdims=True)
    var = (p**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, (p * a).sum(axis=1) / var, np.nan)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean ± standard error of per-query values over the `count` finite ones."""

    mean: float
    stderr: float
    count: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.stderr:.3f} (n={self.count})"


def summarize(values: np.ndarray) -> Summary:
    """Mean and standard error (sample std / sqrt(n)) of the finite entries of `values`."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0)
    stderr = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Summary(float(values.mean()), stderr, n)


def seed_mean_lds(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """predicted [Q, M], measured [Q, M, S] (S seeds per subset) -> per-query LDS [Q] against
    the seeds' mean: what the subset does to a query, with the training noise averaged."""
    return lds(predicted, np.asarray(measured, np.float64).mean(axis=2))


def split_half(measured: np.ndarray) -> np.ndarray:
    """measured [Q, M, S>=2] -> per-query Spearman [Q] between the mean of the first half of the
    seeds and the mean of the second half, across the M subsets: how well one half of the
    retrainings predicts the other (the **ceiling** of the LDS protocol)."""
    measured = np.asarray(measured, np.float64)
    if measured.ndim != 3 or measured.shape[2] < 2:
        raise ValueError(f"need [Q, M, S>=2] measurements, got {measured.shape}")
    half = measured.shape[2] // 2
    return lds(measured[:, :, :half].mean(axis=2), measured[:, :, half : 2 * half].mean(axis=2))


def attainable(split: float) -> float:
    """The LDS a perfect datamodel (the expected measurement of every subset) would reach
    against the mean of all the seeds, from the split-half correlation r: the full mean's
    reliability is 2r / (1 + r) (Spearman–Brown) and a perfect predictor correlates with it by
    its square root. Pearson algebra applied to rank correlations: a guide, not a bound."""
    r = min(max(float(split), 0.0), 1.0)
    return float(np.sqrt(2 * r / (1 + r)))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over queries with a bootstrap 95% interval (queries and subsets resampled)."""

    mean: float
    low: float
    high: float
    count: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.count})"


def bootstrap_lds(
    predicted: np.ndarray,
    measured: np.ndarray,
    queries: np.ndarray | None = None,
    samples: int = 1000,
    seed: int = 0,
) -> Interval:
    """Mean LDS over `queries` (rows; default all) of `predicted` [Q, M] against the seed means
    of `measured` [Q, M, S], with a 95% percentile interval from `samples` bootstrap replicates
    that resample both the queries and the M retrained subsets (the two sources of error: which
    queries were asked, which subsets were drawn). Queries with undefined LDS are left out."""
    predicted = np.asarray(predicted, np.float64)
    actual = np.asarray(measured, np.float64).mean(axis=2)
    rows = np.arange(len(predicted)) if queries is None else np.asarray(queries)
    if not len(rows):
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    predicted, actual = predicted[rows], actual[rows]
    point = lds(predicted, actual)
    rng = np.random.default_rng(seed)
    num_q, num_m = predicted.shape
    means = np.empty(samples)
    for b in range(samples):
        cols = rng.integers(0, num_m, num_m)
        picked = rng.integers(0, num_q, num_q)
        values = lds(predicted[picked][:, cols], actual[picked][:, cols])
        means[b] = values[np.isfinite(values)].mean() if np.isfinite(values).any() else np.nan
    finite = means[np.isfinite(means)]
    low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    return Interval(
        float(np.nanmean(point)), float(low), float(high), int(np.isfinite(point).sum())
    )
