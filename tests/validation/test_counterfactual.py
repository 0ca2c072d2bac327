"""Counterfactual bookkeeping: the removed documents are the top-k, the remaining order is kept,
and removing nothing (or only never-trained documents) reproduces the original run bit for bit."""

import jax
import numpy as np
import pytest
from flax import nnx

from infljax import training
from infljax.distributed import make_mesh
from infljax.influence.measurement import QueryTokens, make_nats_fn
from infljax.models.io import load_model
from infljax.stages.pretrain import train_model
from infljax.validation.counterfactual import measure, top_k_rows, trained_rows
from tests.tiny import TINY, random_corpus

ARGS = dict(steps=6, batch_size=4, warmup_steps=1, eval_every=3, checkpoint_every=100)


def _params(path):
    return jax.tree.leaves(nnx.state(load_model(path), nnx.Param))


def _assert_bitwise(path_a, path_b):
    for a, b in zip(_params(path_a), _params(path_b), strict=True):
        np.testing.assert_array_equal(a, b)


def test_top_k_are_the_highest_scoring_candidates_ties_to_the_lower_row():
    scores = np.array([0.5, 3.0, -1.0, 3.0, 2.0, 9.0])
    candidates = np.array([0, 1, 2, 3, 4])  # row 5 is held out: never removed
    np.testing.assert_array_equal(top_k_rows(scores, 3, candidates), [1, 3, 4])
    np.testing.assert_array_equal(top_k_rows(scores, 1, np.array([3, 1])), [1])
    with pytest.raises(ValueError, match="k must be"):
        top_k_rows(scores, 6, candidates)


def test_trained_rows_are_the_pretraining_split():
    args = training.TrainArgs(held_out_fraction=0.25, seed=2, **ARGS)
    rows = trained_rows(20, args)
    assert len(rows) == 15
    np.testing.assert_array_equal(rows, training.split_rows(20, 0.25, 2)[0])


def test_packing_without_documents_deletes_exactly_their_tokens_in_place():
    # Every token of document r is r + 1, so each packed token names its document.
    lengths = np.random.default_rng(0).integers(2, 9, size=15).astype(np.int32)
    tokens = np.zeros((15, 8), np.int32)
    for r, n in enumerate(lengths):
        tokens[r, :n] = r + 1
    rows, exclude = np.arange(1, 15), np.array([2, 7, 11])
    full, full_lengths = training.pack_rows(tokens, lengths, rows, seed=4)
    cut, cut_lengths = training.pack_rows(tokens, lengths, rows, seed=4, exclude=exclude)
    assert cut.shape == full.shape  # same rows, so the batch schedule over them is unchanged
    for i in range(len(full)):
        kept = [t for t in full[i, : full_lengths[i]] if t - 1 not in exclude]
        assert cut[i, : cut_lengths[i]].tolist() == kept
        assert not cut[i, cut_lengths[i] :].any()
    assert sum(cut_lengths) == sum(full_lengths) - lengths[exclude].sum()
    same, same_lengths = training.pack_rows(tokens, lengths, rows, seed=4, exclude=np.array([0]))
    np.testing.assert_array_equal(same, full)  # row 0 is not a training row: nothing changes
    np.testing.assert_array_equal(same_lengths, full_lengths)


def test_unpacked_exclusion_empties_the_rows_and_keeps_the_batch_order():
    corpus = random_corpus(10)
    toks, lens = training.exclude_documents(corpus.tokens, corpus.lengths, np.array([3, 5]))
    assert lens[3] == lens[5] == 0 and not toks[[3, 5]].any()
    keep = np.setdiff1d(np.arange(10), [3, 5])
    np.testing.assert_array_equal(toks[keep], corpus.tokens[keep])
    np.testing.assert_array_equal(lens[keep], corpus.lengths[keep])


@pytest.mark.parametrize("packing", [False, True])
def test_retraining_reproduces_the_original_unless_training_documents_are_removed(
    tmp_path, packing
):
    corpus, mesh = random_corpus(24), make_mesh(devices=jax.devices()[:1])
    args = training.TrainArgs(held_out_fraction=0.25, packing=packing, **ARGS)
    rows = trained_rows(corpus.num_documents, args)
    held = np.setdiff1d(np.arange(corpus.num_documents), rows)
    train_model("base", TINY, args, corpus, mesh, tmp_path / "base")
    train_model(
        "none", TINY, args, corpus, mesh, tmp_path / "none", exclude_rows=np.array([], np.int64)
    )
    train_model("held", TINY, args, corpus, mesh, tmp_path / "held", exclude_rows=held)
    _assert_bitwise(tmp_path / "base", tmp_path / "none")
    _assert_bitwise(tmp_path / "base", tmp_path / "held")  # never-trained documents
    removed = top_k_rows(np.arange(24.0), 2, rows)
    train_model("cut", TINY, args, corpus, mesh, tmp_path / "cut", exclude_rows=removed)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(_params(tmp_path / "base"), _params(tmp_path / "cut"), strict=True)
    ]
    assert any(changed)

    queries = QueryTokens(
        corpus.tokens[:5], np.full(5, 2), corpus.lengths[:5].clip(3), tuple("abcde")
    )
    graphdef, params = nnx.split(load_model(tmp_path / "cut"), nnx.Param)
    direct = np.asarray(make_nats_fn(graphdef)(params, queries.batch()))
    np.testing.assert_allclose(
        measure(tmp_path / "cut", queries, mesh, batch_size=2), direct, rtol=1e-12
    )


def test_rows_outside_the_corpus_are_refused(tmp_path):
    args = training.TrainArgs(**ARGS)
    mesh = make_mesh(devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="exclude_rows"):
        train_model(
            "x", TINY, args, random_corpus(8), mesh, tmp_path, exclude_rows=np.array([2, 8])
        )
