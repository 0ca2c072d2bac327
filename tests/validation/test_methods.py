"""Training-aware methods: checkpoint weights, their combination, ensembles."""

import numpy as np
import pytest

from infljax import training
from infljax.validation import methods

ARGS = training.TrainArgs(steps=40, warmup_steps=5, learning_rate=0.1, final_lr_fraction=0.0)


def test_one_checkpoint_at_the_last_step_is_ekfac_itself():
    weights = methods.checkpoint_weights(ARGS, [ARGS.steps])
    np.testing.assert_array_equal(weights, [1.0])
    scores = np.random.default_rng(0).normal(size=(3, 7))
    np.testing.assert_array_equal(methods.combine_checkpoints([scores], weights), scores)


def test_weights_are_the_learning_rate_spent_in_each_segment():
    schedule = training.learning_rate(ARGS)
    rates = np.array([float(schedule(t)) for t in range(ARGS.steps)])
    weights = methods.checkpoint_weights(ARGS, [10, 25, 40])
    expected = np.array([rates[:10].sum(), rates[10:25].sum(), rates[25:].sum()]) / rates.sum()
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights.sum() == pytest.approx(1.0)
    assert methods.checkpoint_weights(ARGS, [20]).item() < 1.0  # the rest of the run is missing


def test_combination_and_ensemble_are_weighted_sums_and_means():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    np.testing.assert_allclose(methods.combine_checkpoints([a, b], np.array([0.25, 0.75])),
                               0.25 * a + 0.75 * b)  # fmt: skip
    np.testing.assert_allclose(methods.ensemble([a, b]), (a + b) / 2)


def test_bad_checkpoints_are_refused():
    with pytest.raises(ValueError, match=r"distinct steps in \[1, 40\]"):
        methods.checkpoint_weights(ARGS, [0, 40])
    with pytest.raises(ValueError, match="distinct"):
        methods.checkpoint_weights(ARGS, [10, 10])
    with pytest.raises(ValueError, match="2 score matrices for 1"):
        methods.combine_checkpoints([np.zeros((1, 1))] * 2, np.ones(1))
