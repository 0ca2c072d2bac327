"""Analyses A and B: Pearson correlation of query score vectors, within a model and across models.

A (STUDY.md): queries of the same reasoning task correlate strongly (≈0.9 same format), a
reasoning task with its control weakly (≈0.2), factual pairs barely (≈0.03-0.06), different tasks
≈0. B: the same query under two models correlates near zero (mean 0.02).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from infljax.analysis.families import FamilyIndex, control_family

_CHUNK = 1 << 18  # documents per accumulation step: [Q, chunk] float64 stays small


def pearson_rows(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of every row of x [Q, N] with every row of y [P, N] (default x): [Q, P].

    Two passes over column chunks (means, then centred float64 sums), so a [100, 5M] float32
    matrix is never copied whole. A constant row has correlation NaN.
    """
    y = x if y is None else y
    mx, my = _row_means(x), _row_means(y)
    sxx, syy = np.zeros(x.shape[0]), np.zeros(y.shape[0])
    sxy = np.zeros((x.shape[0], y.shape[0]))
    for start in range(0, x.shape[1], _CHUNK):
        a = np.asarray(x[:, start : start + _CHUNK], dtype=np.float64) - mx[:, None]
        b = np.asarray(y[:, start : start + _CHUNK], dtype=np.float64) - my[:, None]
        sxx += (a * a).sum(1)
        syy += (b * b).sum(1)
        sxy += a @ b.T
    var = np.outer(sxx, syy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, sxy / np.sqrt(var), np.nan)


def _row_means(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[0])
    for start in range(0, x.shape[1], _CHUNK):
        total += np.asarray(x[:, start : start + _CHUNK], dtype=np.float64).sum(1)
    return total / x.shape[1]


def paired_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Correlation of row q of x [Q, N] with row q of y [Q, N]: [Q] (chunked like
    `pearson_rows`, without the [Q, Q] cross products)."""
    mx, my = _row_means(x), _row_means(y)
    sxx, syy, sxy = np.zeros(x.shape[0]), np.zeros(x.shape[0]), np.zeros(x.shape[0])
    for start in range(0, x.shape[1], _CHUNK):
        a = np.asarray(x[:, start : start + _CHUNK], dtype=np.float64) - mx[:, None]
        b = np.asarray(y[:, start : start + _CHUNK], dtype=np.float64) - my[:, None]
        sxx += (a * a).sum(1)
        syy += (b * b).sum(1)
        sxy += (a * b).sum(1)
    var = sxx * syy
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, sxy / np.sqrt(var), np.nan)


@dataclasses.dataclass(frozen=True)
class FamilyCorrelation:
    """Analysis A summarised by family.

    Attributes:
      within: family -> mean correlation over its distinct query pairs (NaN with one query).
      within_max: family -> the largest such correlation.
      between: mean over all pairs of queries from different families.
      family_matrix: [F, F] mean correlation between (distinct) queries of two families.
      with_control: family -> mean correlation with its control family (see
        `families.control_family`), for families that have one.
      same_variant, other_variant: family -> mean correlation of its query pairs written in the
        same phrasing (``variant``) / in different phrasings, where queries record one (study:
        ≈0.9 same format, ≈0.55 different format).
    """

    within: dict[str, float]
    within_max: dict[str, float]
    between: float
    family_matrix: np.ndarray
    with_control: dict[str, float]
    same_variant: dict[str, float]
    other_variant: dict[str, float]


def family_correlation(
    corr: np.ndarray, index: FamilyIndex, variants: Sequence[str | None] = ()
) -> FamilyCorrelation:
    """Summarise a [Q, Q] correlation matrix by the families of `index` (and the queries'
    phrasing `variants`, one per row, when given)."""
    f = len(index.families)
    matrix = np.full((f, f), np.nan)
    for i, rows_i in enumerate(index.rows):
        for j, rows_j in enumerate(index.rows):
            matrix[i, j] = _block_mean(corr, rows_i, rows_j, same=i == j)
    within = {fam: float(matrix[i, i]) for i, fam in enumerate(index.families)}
    within_max = {
        fam: _block_max(corr, rows) for fam, rows in zip(index.families, index.rows, strict=True)
    }
    family_of = np.empty(corr.shape[0], dtype=np.int64)
    for i, rows in enumerate(index.rows):
        family_of[list(rows)] = i
    cross = family_of[:, None] != family_of[None, :]
    values = corr[cross]
    between = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    with_control = {}
    for i, fam in enumerate(index.families):
        control = control_family(index, fam)
        if control is not None:
            with_control[fam] = float(matrix[i, index.families.index(control)])
    same, other = _variant_means(corr, index, variants)
    return FamilyCorrelation(within, within_max, between, matrix, with_control, same, other)


def _variant_means(corr: np.ndarray, index: FamilyIndex, variants: Sequence[str | None]):
    """family -> mean correlation of same-variant pairs, and of different-variant pairs."""
    same, other = {}, {}
    for family, rows in zip(index.families, index.rows, strict=True):
        labels = [variants[r] if len(variants) else None for r in rows]
        if any(v is None for v in labels):
            continue
        pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1 :]]
        for target, keep in ((same, True), (other, False)):
            values = [corr[a, b] for a, b in pairs if (variants[a] == variants[b]) == keep]
            values = [v for v in values if np.isfinite(v)]
            if values:
                target[family] = float(np.mean(values))
    return same, other


def _block_mean(corr: np.ndarray, rows_i, rows_j, same: bool) -> float:
    block = corr[np.ix_(rows_i, rows_j)]
    if same:
        block = block[~np.eye(len(rows_i), dtype=bool)]
    block = block[np.isfinite(block)]
    return float(block.mean()) if block.size else float("nan")


def _block_max(corr: np.ndarray, rows) -> float:
    block = corr[np.ix_(rows, rows)][~np.eye(len(rows), dtype=bool)]
    block = block[np.isfinite(block)]
    return float(block.max()) if block.size else float("nan")
