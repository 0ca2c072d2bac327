"""Analyses B and E: the same queries under two models.

B: Pearson correlation of the two models' score vectors for each shared query (STUDY.md: near
zero, mean 0.02, max 0.19). E: ratio of score magnitudes (per nat) of the second model to the
first over each query's top-k and bottom-k documents (each model ranked by its own scores).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from infljax.analysis.correlation import paired_pearson
from infljax.analysis.inputs import ModelScores
from infljax.analysis.ranking import per_nat, ranking_scores


@dataclasses.dataclass(frozen=True, eq=False)
class PairAnalysis:
    """Models `a` and `b` on their shared queries (in `a`'s row order).

    Attributes:
      query_ids: the S shared query ids; rows_a, rows_b: their score rows in each model.
      correlation: [S] Pearson correlation of the two score vectors (ranking scores).
      ratio_top, ratio_bottom: [S] mean |score per nat| of b over a, over each model's own top
        (most positive) / bottom (most negative) k documents by raw score.
      k: documents per query in the magnitude ratio.
    """

    a: str
    b: str
    query_ids: tuple[str, ...]
    rows_a: np.ndarray
    rows_b: np.ndarray
    correlation: np.ndarray
    ratio_top: np.ndarray
    ratio_bottom: np.ndarray
    k: int


def shared_rows(a: ModelScores, b: ModelScores) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Query ids the two models share (a's order) and their row indices in a and in b."""
    where_b = {qid: i for i, qid in enumerate(b.query_ids)}
    ids = [qid for qid in a.query_ids if qid in where_b]
    rows_a = np.array([a.query_ids.index(qid) for qid in ids], dtype=np.int64)
    return ids, rows_a, np.array([where_b[qid] for qid in ids], dtype=np.int64)


def top_magnitude(values: np.ndarray, k: int) -> np.ndarray:
    """[Q] mean |value| over each row's k largest values (a partition, no sort)."""
    k = min(k, values.shape[1])
    top = np.partition(values, values.shape[1] - k, axis=1)[:, -k:]
    return np.abs(top.astype(np.float64)).mean(1)


def analyse_pair(a: ModelScores, b: ModelScores, normalise: bool, k: int) -> PairAnalysis:
    """B and E for two models scored on the same corpus; raises when the corpora differ."""
    if a.scores.shape[1] != b.scores.shape[1]:
        raise ValueError(
            f"models {a.name!r} and {b.name!r} were scored on corpora of different sizes "
            f"({a.scores.shape[1]} vs {b.scores.shape[1]} documents); cannot compare them"
        )
    ids, rows_a, rows_b = shared_rows(a, b)
    ranked_a = ranking_scores(a.scores[rows_a], a.doc_grad_norms, normalise)
    ranked_b = ranking_scores(b.scores[rows_b], b.doc_grad_norms, normalise)
    mag_a = per_nat(a.scores[rows_a], a.query_nats[rows_a])
    mag_b = per_nat(b.scores[rows_b], b.query_nats[rows_b])
    # Top: the k most positive scores; bottom: the k most negative, as magnitudes.
    top = _safe_ratio(top_magnitude(mag_b, k), top_magnitude(mag_a, k))
    bottom = _safe_ratio(top_magnitude(-mag_b, k), top_magnitude(-mag_a, k))
    return PairAnalysis(
        a=a.name,
        b=b.name,
        query_ids=tuple(ids),
        rows_a=rows_a,
        rows_b=rows_b,
        correlation=paired_pearson(ranked_a, ranked_b) if ids else np.zeros(0),
        ratio_top=top if ids else np.zeros(0),
        ratio_bottom=bottom if ids else np.zeros(0),
        k=min(k, a.scores.shape[1]),
    )


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def analyse_pairs(models: list[ModelScores], normalise: bool, k: int) -> list[PairAnalysis]:
    """B and E for every pair of `models` (in the given order) that shares query ids."""
    pairs = []
    for a, b in itertools.combinations(models, 2):
        pair = analyse_pair(a, b, normalise, k)
        if pair.query_ids:
            pairs.append(pair)
    return pairs
