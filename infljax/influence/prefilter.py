"""The TF-IDF prefilter: score with influence only each query's top-k TF-IDF candidates.

Grosse et al. (2023), "Studying Large Language Model Generalization with Influence Functions",
§3.2: when a corpus is too large to score in full, each query keeps its `k` best documents by
TF-IDF (`infljax.influence.baselines.tfidf_candidates`) and only the union of those candidates
goes through the scoring pass. It is a **biased shortcut**: a document that shares no rare
words with the query is never scored, however influential, so rankings computed on the
candidates overstate lexical overlap.

The outputs keep the full shape [Q, N] so every analysis reads them unchanged:

* `scored` [Q, N] bool marks the entries computed: exactly each query's own `k` candidates. A
  streamed document is scored for every query in the pass, but the entries of queries that did
  not choose it are discarded, so a query's row depends only on that query (not on which other
  queries share the run).
* Unscored entries of `scores` and `per_layer` are **0**, "no estimated influence": finite (the
  analyses reject NaN), neither helpful nor harmful, and the per-layer sums still equal the
  scores. Rankings put them between the candidates that help and those that hurt.
* Per-document values (`sq_norms`, `self_influence`) are computed for every streamed document
  and are 0 for documents never streamed; a zero gradient norm ranks 0 under the normalised
  ranking (`infljax.analysis.ranking.ranking_scores` guards the division).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from infljax.influence.baselines import tfidf_candidates
from infljax.influence.scoring import BatchScores


@dataclasses.dataclass(frozen=True, eq=False)
class Prefilter:
    """Each query's candidate documents.

    Attributes:
      candidates: [Q, k] int64 document indices, best TF-IDF first.
      num_documents: N, the corpus rows the indices refer to.
    """

    candidates: np.ndarray
    num_documents: int

    @property
    def k(self) -> int:
        return self.candidates.shape[1]

    @property
    def rows(self) -> np.ndarray:
        """[U] int64, the sorted union of the candidates: the rows the scoring pass streams."""
        return np.unique(self.candidates)

    @property
    def scored(self) -> np.ndarray:
        """[Q, N] bool, True where query q keeps document m's score (m among q's candidates)."""
        mask = np.zeros((self.candidates.shape[0], self.num_documents), bool)
        np.put_along_axis(mask, self.candidates, True, axis=1)
        return mask


def make_prefilter(
    query_texts: Sequence[str], doc_texts: Sequence[str], k: int, sublinear_tf: bool = False
) -> Prefilter:
    """Each query's top min(k, N) documents by TF-IDF (`baselines.query_text` makes the query
    texts). k >= N keeps every document (the scores then equal an unfiltered run's)."""
    k = min(k, len(doc_texts))
    candidates = tfidf_candidates(query_texts, doc_texts, k, sublinear_tf)
    return Prefilter(candidates.astype(np.int64), len(doc_texts))


def expand(streamed: BatchScores, prefilter: Prefilter) -> BatchScores:
    """Place the scores of the streamed rows (`prefilter.rows`, host arrays with U columns) into
    [.., N] arrays: scores [Q, N] and per_layer [L, Q, N] kept where `prefilter.scored`, 0
    elsewhere; sq_norms and self_influence [N], 0 for rows never streamed."""
    rows, scored = prefilter.rows, prefilter.scored
    if streamed.sq_norms.shape != rows.shape:
        raise ValueError(
            f"expand: {streamed.sq_norms.shape[0]} streamed documents, but the prefilter has "
            f"{len(rows)} candidate rows"
        )

    def columns(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros((*x.shape[:-1], prefilter.num_documents), x.dtype)
        out[..., rows] = x
        return out if mask is None else np.where(mask, out, 0).astype(x.dtype)

    return BatchScores(
        scores=columns(np.asarray(streamed.scores), scored),
        per_layer=columns(np.asarray(streamed.per_layer), scored[None]),
        sq_norms=columns(np.asarray(streamed.sq_norms)),
        self_influence=columns(np.asarray(streamed.self_influence)),
    )
