"""Analysis C: cumulative positive/negative influence against hand computation."""

import numpy as np
import pytest

from infljax.analysis.dependency import cumulative_counts, dependency_curves, mean_and_sem


def test_cumulative_influence_matches_hand_computation():
    # 10 documents; positive scores 5, 3, 2 (total 10), negative -4, -1 (total 5).
    row = np.array([0.0, 3.0, -1.0, 5.0, 0.0, 2.0, -4.0, 0.0, 0.0, 0.0])
    curves = dependency_curves(row[None, :] / 2.0, percents=[10, 20, 50, 100])  # 2 nats
    np.testing.assert_array_equal(cumulative_counts(10, [10, 20, 50, 100]), [1, 2, 5, 10])
    np.testing.assert_allclose(curves.positive[0], [2.5, 4.0, 5.0, 5.0])
    np.testing.assert_allclose(curves.positive_share[0], [0.5, 0.8, 1.0, 1.0])
    np.testing.assert_allclose(curves.negative[0], [2.0, 2.5, 2.5, 2.5])
    np.testing.assert_allclose(curves.negative_share[0], [0.8, 1.0, 1.0, 1.0])
    assert curves.total_positive[0] == 5.0 and curves.total_negative[0] == 2.5


def test_small_percents_cover_at_least_one_document_and_all_negative_rows_have_zero_share():
    curves = dependency_curves(-np.ones((1, 1000)), percents=[0.01, 100])
    np.testing.assert_array_equal(cumulative_counts(1000, [0.01]), [1])
    np.testing.assert_array_equal(curves.positive_share, [[0.0, 0.0]])
    np.testing.assert_allclose(curves.negative[0], [1.0, 1000.0])


@pytest.mark.parametrize("bad", [[0.0], [101.0], []])
def test_percents_outside_0_100_are_refused(bad):
    with pytest.raises(ValueError, match="percents"):
        dependency_curves(np.ones((1, 4)), bad)


def test_mean_and_standard_error_over_rows():
    values = np.array([[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]])
    mean, sem = mean_and_sem(values, [0, 1])
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(sem, [1.0, 2.0])  # std (ddof=1) / sqrt(2)
    assert mean_and_sem(values, [2])[1].tolist() == [0.0, 0.0]
