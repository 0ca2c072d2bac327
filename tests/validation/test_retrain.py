"""Batched retraining and metagradients, float64 on a tiny model.

Tolerances (float64): a scanned / vmapped run equals the pretrain stage's loop to 1e-9 relative
(the same operations in another order, over a few steps); metagradients equal central finite
differences of retraining to 1e-6 relative (the difference's truncation error is O(eps²) with
eps = 1e-4 on weights of order 1).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from infljax import training
from infljax.distributed import MeshArgs, make_mesh
from infljax.influence.measurement import completion_batch
from infljax.models.io import load_model
from infljax.models.losses import token_nll
from infljax.stages.pretrain import train_model
from infljax.trees import take
from infljax.validation import metagradient, retrain
from tests.tiny import TINY, random_corpus

ARGS = training.TrainArgs(
    steps=6, batch_size=4, learning_rate=1e-2, warmup_steps=1, held_out_fraction=0.2,
    eval_every=100, checkpoint_every=100, seed=3, eps_root=1e-12,
)  # fmt: skip


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])


def _close(a, b, rtol):
    a, b = _flat(a), _flat(b)
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), np.max(np.abs(a - b))


def _pretrained(tmp_path, corpus, args, exclude=None):
    mesh = make_mesh(MeshArgs(data=1), jax.devices()[:1])
    out = tmp_path / f"model_{args.packing}_{exclude is not None}"
    train_model("tiny", TINY, args, corpus, mesh, out, exclude_rows=exclude)
    return nnx.state(load_model(out), nnx.Param)


@pytest.mark.parametrize("packing", [False, True])
def test_all_ones_is_the_pretrain_run(tmp_path, packing):
    corpus = random_corpus(n=14, seed=1)
    args = dataclasses.replace(ARGS, packing=packing)
    run = retrain.Retrainer(TINY, args, corpus.tokens, corpus.lengths, chunk_steps=4)
    params, _ = run(np.ones((1, 14)), [args.seed])
    _close(take(params, 0), _pretrained(tmp_path, corpus, args), 1e-9)


def test_zero_weight_is_exclusion_without_packing(tmp_path):
    corpus = random_corpus(n=14, seed=2)
    excluded = np.array([1, 4, 5, 9])
    weights = np.ones((1, 14))
    weights[0, excluded] = 0
    run = retrain.Retrainer(TINY, ARGS, corpus.tokens, corpus.lengths)
    params, _ = run(weights, [ARGS.seed])
    expected = _pretrained(tmp_path, corpus, ARGS, exclude=excluded)
    _close(take(params, 0), expected, 1e-9)


def test_batched_models_equal_each_alone():
    corpus = random_corpus(n=14, seed=3)
    weights = np.random.default_rng(0).integers(0, 2, size=(3, 14)).astype(np.float64)
    seeds = [3, 4, 5]
    run = retrain.Retrainer(TINY, ARGS, corpus.tokens, corpus.lengths, chunk_steps=4)
    together, saved = run(weights, seeds, checkpoints=(2,))
    for k in range(3):
        alone, alone_saved = run(weights[k : k + 1], seeds[k : k + 1], checkpoints=(2,))
        _close(take(together, k), take(alone, 0), 1e-9)
        _close(take(saved[2], k), take(alone_saved[2], 0), 1e-9)
    assert not np.allclose(_flat(take(together, 0)), _flat(take(together, 1)))


def test_a_fixed_initialisation_keeps_each_seeds_data_order():
    corpus = random_corpus(n=14, seed=3)
    weights = np.ones((2, 14))
    run = retrain.Retrainer(TINY, ARGS, corpus.tokens, corpus.lengths, chunk_steps=4)
    fixed, _ = run(weights, [3, 4], init_seeds=[3, 3])
    assert _flat(run.seed_params(3)).tobytes() != _flat(run.seed_params(4)).tobytes()
    _close(take(fixed, 0), take(run(weights[:1], [3])[0], 0), 1e-9)  # seed 3 from its own init
    # seed 4's data order from seed 3's start: neither seed 4's run nor seed 3's
    _close(take(fixed, 1), take(run(weights[:1], [4], init_seeds=[3])[0], 0), 1e-9)
    assert not np.allclose(_flat(take(fixed, 1)), _flat(take(run(weights[:1], [4])[0], 0)))
    assert not np.allclose(_flat(take(fixed, 1)), _flat(take(fixed, 0)))
    with pytest.raises(ValueError, match="init_seeds has 1 entries for 2 seeds"):
        run(weights, [3, 4], init_seeds=[3])


def test_bad_weights_shape_is_refused():
    corpus = random_corpus(n=14, seed=3)
    run = retrain.Retrainer(TINY, ARGS, corpus.tokens, corpus.lengths)
    with pytest.raises(ValueError, match=r"weights must be \[K, N\] = \[2, 14\]"):
        run(np.ones((2, 13)), [0, 1])


@pytest.mark.parametrize("packing", [False, True])
def test_metagradient_equals_finite_differences_of_retraining(packing):
    corpus = random_corpus(n=10, seed=4)
    args = dataclasses.replace(ARGS, packing=packing, held_out_fraction=0.0)
    graphdef, params = retrain.init_params(TINY, args.seed)
    data = retrain.stream(corpus.tokens, corpus.lengths, args, args.seed)
    rng = np.random.default_rng(5)
    queries = rng.integers(3, 16, size=(2, 8)).astype(np.int32)
    batch = completion_batch(queries, np.array([3, 4]), np.array([8, 7]))
    scores, nats = metagradient.metagradient_scores(graphdef, args, params, data, batch, 10, 1)

    def measured(weights):
        trained = retrain.weighted_training(graphdef, args, params, data, weights)
        logits = nnx.merge(graphdef, trained)(batch.inputs)
        return np.asarray(jnp.sum(batch.weights * token_nll(logits, batch.targets), axis=1))

    np.testing.assert_allclose(nats, measured(jnp.ones(10)), rtol=1e-12)
    eps = 1e-4
    for n in (0, 3, 7):
        up, down = np.ones(10), np.ones(10)
        up[n], down[n] = 1 + eps, 1 - eps
        derivative = (measured(jnp.asarray(up)) - measured(jnp.asarray(down))) / (2 * eps)
        scale = np.max(np.abs(scores))
        assert scale > 0
        np.testing.assert_allclose(-scores[:, n], derivative, rtol=0, atol=1e-6 * scale)
