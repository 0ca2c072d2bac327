"""Baselines with the influence scores' interface: [Q, N] matrices, larger = more related.

An influence ranking means something only next to these (DESIGN §8): on the procedural world a
TF-IDF ranking already finds the document stating a queried fact, because invented names are rare
words. Every function here is pure (numpy and scipy.sparse; no disk).

* `tfidf_scores`: cosine similarity of TF-IDF vectors, query text = prompt + completion.
* `gradient_cosine`: identity-strategy scores (plain gradient dot products) ÷ (‖∇q‖ ‖∇m‖).
* `random_scores`: seeded Gaussian noise, the floor every method must beat.
* `tfidf_candidates`: each query's top-k documents by TF-IDF, a prefilter for corpora too large
  to score in full (Grosse et al. 2023, "Studying Large Language Model Generalization with
  Influence Functions", §3.2). It is a **biased shortcut**: a document that shares no rare words
  with the query can never be found, however influential, so rankings computed on the candidates
  overstate lexical overlap. The scores stage uses it with ``scores.prefilter_k``
  (`infljax.influence.prefilter`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from infljax.influence.measurement import QueryText
from infljax.influence.query_grads import DenseQueries, LayerQueries

# Lowercased words and numbers (a decimal point kept inside a number): "x=3.5" -> x, 3.5.
TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")


def tokenize(text: str) -> list[str]:
    """The TF-IDF terms of `text`: lowercased runs of letters, and numbers (kept as tokens)."""
    return TOKEN.findall(text.lower())


def query_text(query: QueryText) -> str:
    """What TF-IDF compares with the documents: the prompt followed by the completion."""
    return query.prompt + query.completion


def _counts(texts: Sequence[str], vocabulary: dict[str, int]) -> sp.csr_matrix:
    """[len(texts), len(vocabulary)] term counts; terms outside `vocabulary` are dropped."""
    rows, cols = [], []
    for i, text in enumerate(texts):
        ids = [vocabulary[t] for t in tokenize(text) if t in vocabulary]
        rows.extend([i] * len(ids))
        cols.extend(ids)
    data = np.ones(len(rows), np.float64)
    shape = (len(texts), len(vocabulary))
    counts = sp.csr_matrix((data, (rows, cols)), shape=shape)
    counts.sum_duplicates()
    return counts


def _tfidf(counts: sp.csr_matrix, idf: np.ndarray, sublinear_tf: bool) -> sp.csr_matrix:
    """Rows of tf · idf, each scaled to unit l2 norm (an all-zero row stays zero)."""
    tf = counts.copy()
    if sublinear_tf:
        tf.data = 1.0 + np.log(tf.data)
    weighted = sp.csr_matrix(tf.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ weighted)


def tfidf_scores(
    query_texts: Sequence[str], doc_texts: Sequence[str], sublinear_tf: bool = False
) -> np.ndarray:
    """Cosine similarity of TF-IDF vectors: [Q, N] float64 in [0, 1].

    The vocabulary and document frequencies come from `doc_texts` (query terms absent from every
    document are ignored). tf is the raw count (1 + log count with `sublinear_tf`); the smooth
    idf is ``ln((1 + N) / (1 + df)) + 1``, as in scikit-learn's default; rows are l2-normalised
    before the dot product, so a query with no corpus term scores 0 against every document.
    """
    vocabulary: dict[str, int] = {}
    for text in doc_texts:
        for term in tokenize(text):
            vocabulary.setdefault(term, len(vocabulary))
    docs = _counts(doc_texts, vocabulary)
    df = np.bincount(docs.indices, minlength=len(vocabulary))
    idf = np.log((1.0 + len(doc_texts)) / (1.0 + df)) + 1.0
    d = _tfidf(docs, idf, sublinear_tf)
    q = _tfidf(_counts(query_texts, vocabulary), idf, sublinear_tf)
    return np.asarray((q @ d.T).todense(), np.float64)


def tfidf_candidates(
    query_texts: Sequence[str], doc_texts: Sequence[str], k: int, sublinear_tf: bool = False
) -> np.ndarray:
    """Each query's `k` best documents by `tfidf_scores`: [Q, k] int64, best first (ties: lower
    index first).

    A prefilter (Grosse et al. 2023) for scoring only a candidate set with influence. Biased by
    construction: documents without shared terms are never candidates (see the module docstring).
    """
    n = len(doc_texts)
    if not 1 <= k <= n:
        raise ValueError(f"tfidf_candidates: k={k} must be in [1, {n}] (the number of documents)")
    scores = tfidf_scores(query_texts, doc_texts, sublinear_tf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def query_grad_norms(queries: dict[str, LayerQueries]) -> np.ndarray:
    """‖∇q‖ over the tracked layers: [Q] float64, from (identity-strategy) query gradients.

    A low-rank query stores ``left @ rightᵀ`` with orthonormal `right` columns, so its Frobenius
    norm is ‖left‖ — the norm of exactly the matrix the scores were computed with.
    """
    total = 0.0
    for q in queries.values():
        m = np.asarray(q.grads if isinstance(q, DenseQueries) else q.left, np.float64)
        total = total + np.square(m).reshape(m.shape[0], -1).sum(axis=1)
    return np.sqrt(total)


def gradient_cosine(
    scores: np.ndarray, query_norms: np.ndarray, doc_grad_norms: np.ndarray
) -> np.ndarray:
    """Cosine of query and document gradients: [Q, N] = scores ÷ (‖∇q‖ ‖∇m‖), float64.

    `scores`: [Q, N] identity-strategy scores ⟨∇q, ∇m⟩; `query_norms`: [Q]; `doc_grad_norms`:
    [N]. A pair with a zero-norm gradient has cosine 0 (no direction to compare).
    """
    scores = np.asarray(scores, np.float64)
    q, n = scores.shape
    if np.shape(query_norms) != (q,) or np.shape(doc_grad_norms) != (n,):
        raise ValueError(
            f"gradient_cosine: scores {scores.shape} need query_norms ({q},) and doc_grad_norms "
            f"({n},); got {np.shape(query_norms)} and {np.shape(doc_grad_norms)}"
        )
    outer = np.outer(np.asarray(query_norms, np.float64), np.asarray(doc_grad_norms, np.float64))
    return np.divide(scores, outer, out=np.zeros_like(scores), where=outer > 0)


def random_scores(num_queries: int, num_documents: int, seed: int) -> np.ndarray:
    """Standard normal scores [Q, N] float32, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_queries, num_documents), dtype=np.float32)
