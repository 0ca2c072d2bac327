"""Pretraining: device invariance of a train step, exact resume, deterministic data order."""

import dataclasses

import jax
import numpy as np
from flax import nnx

from infljax import training
from infljax.checkpoints import is_complete
from infljax.distributed import MeshArgs, make_mesh, replicate, shard_batch
from infljax.models.decoder import Decoder
from infljax.models.io import load_model
from infljax.models.losses import Batch
from infljax.stages.pretrain import train_model
from tests.tiny import TINY, random_corpus

RTOL = 1e-10  # float64; only the order of the gradient all-reduce differs between meshes
CFG = TINY


def _one_step(mesh, batch, args):
    graphdef, params = nnx.split(Decoder(CFG, rngs=nnx.Rngs(0)), nnx.Param)
    tx = training.make_optimizer(args)
    params, opt_state = replicate((params, tx.init(params)), mesh)
    step = training.make_train_step(graphdef, tx)
    for _ in range(2):
        params, opt_state, loss = step(params, opt_state, shard_batch(batch, mesh))
    return jax.device_get(params), float(loss)


def test_train_step_on_8_devices_equals_1_device():
    corpus = random_corpus(24)
    batch = Batch.from_documents(corpus.tokens[:8], corpus.lengths[:8])
    args = training.TrainArgs(steps=10, warmup_steps=1, learning_rate=1e-2)
    p1, l1 = _one_step(make_mesh(devices=jax.devices()[:1]), batch, args)
    p8, l8 = _one_step(make_mesh(MeshArgs(data=8)), batch, args)
    assert len(jax.devices()) == 8
    np.testing.assert_allclose(l8, l1, rtol=RTOL)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-14)


def test_batch_rows_are_deterministic_and_cover_each_epoch():
    rows = np.arange(10, 30)
    seen = np.concatenate([training.batch_rows(rows, s, 5, seed=3) for s in range(4)])
    assert sorted(seen) == list(rows)  # one epoch = 4 steps of 5
    assert np.array_equal(training.batch_rows(rows, 7, 5, 3), training.batch_rows(rows, 7, 5, 3))


def test_interrupted_training_resumes_to_the_same_parameters(tmp_path):
    corpus = random_corpus(24)
    mesh = make_mesh(devices=jax.devices()[:2])
    args = training.TrainArgs(
        steps=8,
        batch_size=4,
        warmup_steps=1,
        eval_every=4,
        checkpoint_every=100,
        held_out_fraction=0.2,
    )
    train_model("a", CFG, args, corpus, mesh, tmp_path / "a")
    train_model("b", CFG, args, corpus, mesh, tmp_path / "b", stop_at=3)
    assert not is_complete(tmp_path / "b")
    train_model("b", CFG, args, corpus, mesh, tmp_path / "b")
    assert is_complete(tmp_path / "b")
    pa = nnx.state(load_model(tmp_path / "a"), nnx.Param)
    pb = nnx.state(load_model(tmp_path / "b"), nnx.Param)
    for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(a, b)


def test_changed_arguments_are_refused_with_the_differing_field(tmp_path):
    import pytest

    from infljax.checkpoints import StageConflict

    corpus, mesh = random_corpus(24), make_mesh(devices=jax.devices()[:1])
    args = training.TrainArgs(
        steps=2, batch_size=4, warmup_steps=0, eval_every=1, checkpoint_every=100
    )
    train_model("a", CFG, args, corpus, mesh, tmp_path)
    with pytest.raises(StageConflict, match=r"train\.learning_rate: 0\.01 -> 0\.5"):
        train_model("a", CFG, dataclasses.replace(args, learning_rate=0.5), corpus, mesh, tmp_path)
