"""Analyses B and E: shared queries, per-query correlation and magnitude ratios."""

import numpy as np
import pytest

from infljax.analysis.cross_model import analyse_pair, shared_rows
from infljax.analysis.inputs import ModelScores, QueryRecord


def _model(name, ids, scores, nats=None, norms=None) -> ModelScores:
    q, n = scores.shape
    return ModelScores(
        name=name,
        scores=scores.astype(np.float32),
        query_nats=np.ones(q) if nats is None else nats,
        doc_grad_norms=np.ones(n) if norms is None else norms,
        queries=tuple(QueryRecord(i, "factual", "", "", "x") for i in ids),
    )


def test_shared_queries_are_matched_by_id_in_the_first_models_order():
    a = _model("a", ["q1", "q2", "q3"], np.zeros((3, 4)))
    b = _model("b", ["q3", "q9", "q1"], np.zeros((3, 4)))
    ids, rows_a, rows_b = shared_rows(a, b)
    assert ids == ["q1", "q3"] and rows_a.tolist() == [0, 2] and rows_b.tolist() == [2, 0]


def test_identical_patterns_correlate_one_and_independent_ones_near_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 5000))
    a = _model("a", ["same", "other"], base)
    b_scores = np.stack([4.0 * base[0], rng.normal(size=5000)])
    b = _model("b", ["same", "other"], b_scores, nats=np.array([2.0, 1.0]))
    pair = analyse_pair(a, b, normalise=True, k=100)
    assert pair.correlation[0] == pytest.approx(1.0)
    assert abs(pair.correlation[1]) < 0.05
    # per nat, b's scores on "same" are 4 / 2 = 2x a's: the ratio over top and bottom k is 2
    assert pair.ratio_top[0] == pytest.approx(2.0, rel=1e-6)
    assert pair.ratio_bottom[0] == pytest.approx(2.0, rel=1e-6)


def test_models_scored_on_different_corpora_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        analyse_pair(
            _model("a", ["q"], np.zeros((1, 3))), _model("b", ["q"], np.zeros((1, 4))), True, 2
        )
