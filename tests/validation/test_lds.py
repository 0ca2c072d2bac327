"""LDS on synthetic data: exact linear effects give 1, noise gives ~0, a flipped sign gives -1."""

import numpy as np
import pytest
from scipy import stats

from infljax.validation.lds import (
    attainable,
    bootstrap_lds,
    lds,
    sample_subsets,
    seed_mean_lds,
    slopes,
    split_half,
    subset_predictions,
    summarize,
)

EXACT = 1e-12  # float64 ranks of exactly monotone data; only the final division rounds


def _linear_world(q=6, n=30, m=25, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(q, n))
    masks = sample_subsets(n, m, 0.5, seed)
    # A model whose completion NLL is exactly linear in the subset: each training document m
    # raises the completion's log-probability by scores[q, m].
    nats = 5.0 + rng.normal(size=(q, 1)) - scores @ masks.T
    return scores, masks, nats


def test_subsets_have_the_requested_size_and_are_seeded():
    masks = sample_subsets(40, 7, 0.25, seed=3)
    assert masks.shape == (7, 40) and masks.dtype == bool
    np.testing.assert_array_equal(masks.sum(axis=1), 10)
    np.testing.assert_array_equal(masks, sample_subsets(40, 7, 0.25, seed=3))
    assert not np.array_equal(masks, sample_subsets(40, 7, 0.25, seed=4))
    assert len({m.tobytes() for m in masks}) == 7


def test_predictions_are_minus_the_summed_scores_of_each_subset():
    scores = np.array([[1.0, 2.0, 4.0], [0.5, -1.0, 0.0]])
    masks = np.array([[True, False, True], [False, True, True]])
    np.testing.assert_array_equal(subset_predictions(scores, masks), [[-5.0, -6.0], [-0.5, 1.0]])


def test_exact_linear_effects_give_lds_one():
    scores, masks, nats = _linear_world()
    per_query = lds(subset_predictions(scores, masks), nats)
    np.testing.assert_allclose(per_query, 1.0, rtol=0, atol=EXACT)


def test_scores_with_the_wrong_sign_give_lds_minus_one():
    scores, masks, nats = _linear_world()
    np.testing.assert_allclose(lds(subset_predictions(-scores, masks), nats), -1.0, atol=EXACT)


def test_lds_matches_scipy_spearman_row_by_row():
    rng = np.random.default_rng(1)
    predicted, actual = rng.normal(size=(4, 12)), rng.normal(size=(4, 12))
    actual[0, :3] = actual[0, 3]  # ties are ranked as scipy ranks them (average)
    expected = [stats.spearmanr(p, a).statistic for p, a in zip(predicted, actual, strict=True)]
    np.testing.assert_allclose(lds(predicted, actual), expected, rtol=1e-12)


def test_noise_gives_lds_near_zero():
    q, n, m = 50, 60, 40
    rng = np.random.default_rng(0)
    scores, masks = rng.normal(size=(q, n)), sample_subsets(n, m, 0.5, seed=0)
    summary = summarize(lds(subset_predictions(scores, masks), rng.normal(size=(q, m))))
    # Per-query Spearman over 40 subsets has sd ~1/sqrt(39) = 0.16; the mean of 50 ~0.023.
    assert abs(summary.mean) < 0.15 and summary.count == q
    assert 0.01 < summary.stderr < 0.05


def test_constant_measurements_are_nan_and_left_out_of_the_summary():
    per_query = lds(np.arange(8.0).reshape(2, 4), np.array([[1.0, 1, 1, 1], [1, 2, 3, 4]]))
    assert np.isnan(per_query[0]) and per_query[1] == pytest.approx(1.0)
    summary = summarize(per_query)
    assert summary.count == 1 and summary.mean == pytest.approx(1.0) and np.isnan(summary.stderr)


def test_summary_is_mean_and_standard_error():
    summary = summarize(np.array([0.0, 1.0, 2.0, 3.0]))
    assert summary.mean == 1.5
    assert summary.stderr == pytest.approx(np.std([0, 1, 2, 3], ddof=1) / 2)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="masks"):
        subset_predictions(np.zeros((2, 3)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="fraction"):
        sample_subsets(10, 2, 1.0, seed=0)


def _noisy_seeds(noise, seeds=4, q=5, n=40, m=60, seed=1):
    """Measurements of a linear world with independent seed noise of std `noise`."""
    scores, masks, nats = _linear_world(q, n, m, seed)
    rng = np.random.default_rng(seed + 1)
    measured = nats[:, :, None] + noise * rng.normal(size=(*nats.shape, seeds))
    return scores, masks, measured


def test_seed_averaging_recovers_what_one_seed_hides():
    scores, masks, measured = _noisy_seeds(noise=4.0, seeds=16)
    predicted = subset_predictions(scores, masks)
    one = np.mean(lds(predicted, measured[:, :, 0]))
    mean = np.mean(seed_mean_lds(predicted, measured))
    assert mean > one + 0.1, (one, mean)


def test_split_half_ceiling_is_one_without_noise_and_near_zero_with_only_noise():
    _, _, measured = _noisy_seeds(noise=0.0)
    np.testing.assert_allclose(split_half(measured), 1.0, atol=EXACT)
    rng = np.random.default_rng(0)
    pure_noise = rng.normal(size=(20, 60, 2))
    assert abs(np.mean(split_half(pure_noise))) < 0.1
    assert attainable(1.0) == 1.0 and attainable(-0.2) == 0.0
    assert attainable(0.5) == pytest.approx(np.sqrt(2 / 3))


def test_the_true_datamodel_reaches_about_the_attainable_bound():
    # With seed noise, exact scores are the best any method can do: their LDS against the seed
    # mean is what `attainable` estimates from the split-half correlation (within sampling).
    scores, masks, measured = _noisy_seeds(noise=3.0, seeds=4, q=40, m=200)
    best = np.mean(seed_mean_lds(subset_predictions(scores, masks), measured))
    bound = attainable(np.mean(split_half(measured)))
    assert abs(best - bound) < 0.05, (best, bound)


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_subsets():
    scores, masks, measured = _noisy_seeds(noise=3.0, m=30)
    predicted = subset_predictions(scores, masks)
    few = bootstrap_lds(predicted, measured, samples=300)
    assert few.low <= few.mean <= few.high and few.count == 5
    assert few == bootstrap_lds(predicted, measured, samples=300)  # seeded
    only = bootstrap_lds(predicted, measured, queries=np.array([1, 3]), samples=50)
    scores, masks, measured = _noisy_seeds(noise=3.0, m=300)
    many = bootstrap_lds(subset_predictions(scores, masks), measured, samples=300)
    assert many.high - many.low < few.high - few.low
    assert only.count == 2


def test_slopes_recover_the_scale_of_a_linear_response_whatever_its_offset():
    rng = np.random.default_rng(0)
    predicted = rng.normal(size=(3, 20))
    actual = np.array([[0.5], [1.0], [-2.0]]) * predicted + np.array([[3.0], [-1.0], [0.0]])
    np.testing.assert_allclose(slopes(predicted, actual), [0.5, 1.0, -2.0], rtol=EXACT)
    assert np.isnan(slopes(np.ones((1, 5)), rng.normal(size=(1, 5)))[0])
