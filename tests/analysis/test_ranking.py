"""Ranking scores, top/bottom indices, ranks and chance recall against brute force."""

import itertools
import math

import numpy as np
import pytest

from infljax.analysis.ranking import (
    best_rank,
    bottom_indices,
    chance_recall,
    per_nat,
    ranking_scores,
    ranks_of,
    top_indices,
)


def test_normalised_ranking_divides_by_the_gradient_norm_and_keeps_zero_norms_at_zero():
    scores = np.array([[2.0, 3.0, 5.0], [-4.0, 1.0, 0.0]], np.float32)
    norms = np.array([2.0, 0.5, 0.0], np.float32)
    np.testing.assert_allclose(ranking_scores(scores, norms, True), [[1, 6, 0], [-2, 2, 0]])
    np.testing.assert_array_equal(ranking_scores(scores, norms, False), scores)
    np.testing.assert_allclose(per_nat(scores, np.array([2.0, 4.0])), scores / [[2.0], [4.0]])


def test_top_and_bottom_indices_are_sorted_and_match_a_full_sort():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 50))
    np.testing.assert_array_equal(top_indices(values, 7), np.argsort(-values, axis=1)[:, :7])
    np.testing.assert_array_equal(bottom_indices(values, 4), np.argsort(values, axis=1)[:, :4])
    assert top_indices(values, 500).shape == (5, 50)  # k larger than N is clipped


def test_ranks_count_strictly_higher_documents_and_ties_share_the_best_rank():
    row = np.array([0.5, 3.0, 1.0, 3.0, -2.0])
    np.testing.assert_array_equal(ranks_of(row, np.array([1, 3, 2, 0, 4])), [1, 1, 3, 4, 5])
    assert best_rank(row, np.array([False, False, True, False, True])) == 3
    assert best_rank(row, np.zeros(5, bool)) is None


@pytest.mark.parametrize("n,m,k", [(6, 1, 1), (6, 2, 3), (7, 3, 2), (5, 0, 2), (4, 2, 9)])
def test_chance_recall_equals_enumeration_over_all_rankings(n, m, k):
    relevant = set(range(m))
    hits = [bool(relevant & set(top)) for top in itertools.combinations(range(n), min(k, n))]
    assert math.isclose(chance_recall(n, m, k), np.mean(hits), rel_tol=1e-12, abs_tol=1e-12)
