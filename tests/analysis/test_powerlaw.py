"""Analysis D: a planted power law is recovered; the slope t-test matches Welch's formula."""

import numpy as np
import pytest

from infljax.analysis.powerlaw import compare_slopes, fit_power_law, power_law_fits


def test_known_exponent_is_recovered_exactly_from_shuffled_scores():
    rng = np.random.default_rng(0)
    ranks = np.arange(1, 201)
    rows = np.stack([3.0 * ranks**-0.7, 0.5 * ranks**-1.6])
    shuffled = np.stack([rng.permutation(r) for r in rows])
    negatives = -rng.uniform(size=(2, 300))  # never among the top scores
    fits = power_law_fits(np.concatenate([shuffled, negatives], axis=1), k=200)
    np.testing.assert_allclose(fits.slope, [-0.7, -1.6], atol=1e-10)
    np.testing.assert_allclose(np.exp(fits.intercept), [3.0, 0.5], rtol=1e-10)
    np.testing.assert_allclose(fits.r2, [1.0, 1.0], atol=1e-12)
    assert fits.points.tolist() == [200, 200]


def test_fit_skips_non_positive_scores_and_needs_three_points():
    slope, _, _, points = fit_power_law(np.array([8.0, 4.0, 0.0, -1.0]))
    assert np.isnan(slope) and points == 2
    slope, _, _, points = fit_power_law(np.array([1.0, 0.5, 1 / 3, 0.0]))
    assert slope == pytest.approx(-1.0) and points == 3


def test_welch_t_test_matches_the_formula():
    a, b = np.array([-1.2, -1.0, -1.1, -0.9]), np.array([-0.5, -0.6, -0.4, np.nan, -0.55])
    result = compare_slopes(a, b)
    b = b[np.isfinite(b)]
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    assert result.t == pytest.approx((a.mean() - b.mean()) / np.sqrt(va + vb))
    assert 0 < result.p_value < 0.01 and (result.n_a, result.n_b) == (4, 4)
    assert np.isnan(compare_slopes([1.0], [2.0, 3.0]).p_value)
