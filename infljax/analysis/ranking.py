"""Which score ranks documents, and the top-k / rank helpers every analysis shares.

STUDY.md "Scores": rankings use a per-document normalised score (score ÷ the document's
gradient norm, the cosine-style ranking), magnitudes are compared per nat of completion NLL.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-30  # a document with a zero gradient has zero score; keep it at zero, not NaN


def ranking_scores(scores: np.ndarray, doc_grad_norms: np.ndarray, normalise: bool) -> np.ndarray:
    """The score documents are ranked by: [Q, N] float32, ``scores / doc_grad_norms`` when
    `normalise`, else the raw scores."""
    scores = np.asarray(scores, dtype=np.float32)
    if not normalise:
        return scores
    norms = np.asarray(doc_grad_norms, dtype=np.float32)
    return np.where(norms > _EPS, scores / np.maximum(norms, _EPS), 0.0).astype(np.float32)


def per_nat(scores: np.ndarray, query_nats: np.ndarray) -> np.ndarray:
    """Scores divided by each query's completion NLL: [Q, N] (magnitudes comparable across
    queries of different length)."""
    return np.asarray(scores, dtype=np.float32) / np.asarray(query_nats, np.float32)[:, None]


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] column indices of each row's k largest values, largest first (ties by index)."""
    k = min(k, values.shape[1])
    part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(values, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def bottom_indices(values: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] column indices of each row's k smallest values (most negative first)."""
    return top_indices(-values, k)


def top_overlap(top_a: np.ndarray, top_b: np.ndarray) -> float:
    """Share of the documents of `top_a` ([k] column indices) that are also in `top_b` ([k])."""
    return len(np.intersect1d(top_a, top_b)) / max(len(top_a), 1)


def ranks_of(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """1-based rank of `values[columns]` in the descending order of `values` ([N] row).

    Rank = 1 + the number of documents scoring strictly higher (ties share the best rank).
    """
    values = np.asarray(values)
    chosen = values[np.asarray(columns, dtype=np.int64)]
    ordered = np.sort(values)
    return (len(values) - np.searchsorted(ordered, chosen, side="right") + 1).astype(np.int64)


def best_rank(values: np.ndarray, mask: np.ndarray) -> int | None:
    """The best 1-based rank among the documents selected by boolean `mask`; None if none."""
    columns = np.flatnonzero(mask)
    return int(ranks_of(values, columns).min()) if len(columns) else None


def chance_recall(num_documents: int, num_relevant: int, k: int) -> float:
    """Probability that a random ranking puts at least one of `num_relevant` documents in the
    top k (the baseline a ground-truth recall@k is read against)."""
    if num_relevant <= 0:
        return 0.0
    k = min(k, num_documents)
    miss = 1.0
    for i in range(k):
        miss *= max(num_documents - num_relevant - i, 0) / (num_documents - i)
    return 1.0 - miss
