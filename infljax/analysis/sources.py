"""Analysis I: which sources are over-represented among a query's top (and bottom) documents.

ratio(s, k) = (share of source s among the top-k documents) ÷ (share of s in the whole corpus),
averaged over a family's queries; 1 means "as often as in the corpus". STUDY.md: StackExchange
over 10× for reasoning queries, code and arxiv/markdown ≥ 2×, wiki and trivia for factual ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def log_grid(num_documents: int, ks: Sequence[int]) -> tuple[int, ...]:
    """The requested ks that are smaller than the corpus (k = N gives ratio 1 everywhere)."""
    return tuple(sorted({int(k) for k in ks if 0 < int(k) < num_documents}))


@dataclasses.dataclass(frozen=True, eq=False)
class SourceRatios:
    """Per-query over-representation.

    Attributes:
      sources: the corpus's source labels (sorted).
      corpus_share: [S] share of each source in the corpus.
      ks: the k grid.
      top, bottom: [K, Q, S] ratio for each k, query and source.
    """

    sources: tuple[str, ...]
    corpus_share: np.ndarray
    ks: tuple[int, ...]
    top: np.ndarray
    bottom: np.ndarray

    def family_mean(self, direction: str, rows: Sequence[int]) -> np.ndarray:
        """[K, S] mean ratio over the family's query rows; direction "top" or "bottom"."""
        return getattr(self, direction)[:, list(rows), :].mean(axis=1)


def source_ratios(
    order_top: np.ndarray, order_bottom: np.ndarray, sources: np.ndarray, ks: Sequence[int]
) -> SourceRatios:
    """Ratios for the top-k and bottom-k of every query.

    order_top / order_bottom: [Q, >= max(ks)] column indices, best (resp. most negative) first.
    sources: [N] source label of each document.
    """
    names, codes = np.unique(np.asarray(sources), return_inverse=True)
    corpus_share = np.bincount(codes, minlength=len(names)) / len(codes)
    ks = tuple(ks)

    def ratios(order: np.ndarray) -> np.ndarray:
        per_k = [_shares(codes[order[:, :k]], len(names)) / corpus_share for k in ks]
        return np.stack(per_k) if per_k else np.zeros((0, order.shape[0], len(names)))

    top, bottom = ratios(order_top), ratios(order_bottom)
    return SourceRatios(tuple(str(n) for n in names), corpus_share, ks, top, bottom)


def _shares(codes: np.ndarray, num_sources: int) -> np.ndarray:
    """[Q, S] share of each source code among each row of codes [Q, k]."""
    counts = np.stack([np.bincount(row, minlength=num_sources) for row in codes])
    return counts / codes.shape[1]
