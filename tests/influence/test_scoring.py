"""Scores against brute force (explicit gradients, explicit damped curvature, numpy inverse),
low-rank vs dense, breakdown sums, and invariance to batch size, partitions and devices."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from infljax.curvature import DampingArgs, curvature_matrix
from infljax.distributed import Placement
from infljax.influence import attribution, query_grads, scoring
from infljax.influence.query_grads import QueryArgs

EXACT = 1e-10  # float64, same arithmetic up to summation order
STRATEGY = 1e-8  # float64 vs a numpy inverse of the explicit damped curvature (conditioning)
DAMPING = DampingArgs(scale=0.1)


def pipeline(
    split,
    layers,
    corpus,
    queries,
    mesh,
    *,
    strategy="identity",
    factors=None,
    rank=0,
    contraction="auto",
    batch_size=4,
    rows=None,
    svd="exact",
    self_inf=False,
    placement="replicated",
):
    """(BatchScores of corpus rows, plan) through the library's public functions."""
    graphdef, state = split
    where = Placement(mesh, placement)
    state = where.place(state)
    how = scoring.SelfInfluence(strategy, DAMPING) if self_inf else None
    grads_fn = query_grads.make_query_grads_fn(graphdef, layers)
    score_fn = scoring.make_score_fn(graphdef, layers, where, how)
    grads = query_grads.query_gradients(grads_fn, state, queries, 4, mesh)
    pre = query_grads.precondition_queries(grads, strategy, factors, DAMPING)
    compressed = query_grads.compress(pre, QueryArgs(rank=rank, svd=svd))
    args = scoring.ScoreArgs(batch_size=batch_size, contraction=contraction)
    plan, _ = scoring.make_plan(compressed, args, corpus.max_length)
    rows = (0, corpus.num_documents) if rows is None else rows
    factors = None if factors is None else where.place(factors)
    out = scoring.score_documents(score_fn, state, plan, corpus, rows, batch_size, mesh, factors)
    return out, plan


def explicit_scores(brute, layers, strategy, factors):
    """Σ_layers vec(G_q)ᵀ C⁻¹ vec(G_m) and vec(G_m)ᵀ C⁻¹ vec(G_m), C explicit, numpy solve."""
    gq, gm = brute
    scores, self_inf = 0.0, 0.0
    for p in layers:
        q, m = gq[p].reshape(len(gq[p]), -1), gm[p].reshape(len(gm[p]), -1)
        matrix = curvature_matrix(strategy, factors[p], DAMPING)
        solved = np.linalg.solve(matrix, m.T)  # [D, M]
        scores = scores + q @ solved
        self_inf = self_inf + np.einsum("md,dm->m", m, solved)
    return scores, self_inf


def rel(x, y) -> float:
    return float(np.linalg.norm(np.asarray(x) - np.asarray(y)) / np.linalg.norm(y))


def test_identity_equals_plain_jax_grad_dot_products(brute, layers, split, corpus, queries, mesh1):
    gq, gm = brute
    expected = sum(np.einsum("qoi,moi->qm", gq[p], gm[p]) for p in layers)
    norms = np.sqrt(sum(np.sum(gm[p] ** 2, axis=(1, 2)) for p in layers))
    for rank, contraction in ((0, "dense"), (64, "lowrank"), (64, "dense")):
        out, _ = pipeline(split, layers, corpus, queries, mesh1, rank=rank, contraction=contraction)
        assert rel(out.scores, expected) < EXACT, (rank, contraction)
        assert rel(scoring.doc_grad_norms(out.sq_norms), norms) < EXACT
    assert np.all(np.abs(expected) > 0)


@pytest.mark.parametrize("strategy", ["identity", "diagonal", "kfac", "ekfac"])
def test_strategy_matches_explicit_damped_curvature_inverse(
    strategy, brute, layers, split, corpus, queries, mesh1, factors
):
    expected, expected_self = explicit_scores(brute, layers, strategy, factors)
    common = dict(strategy=strategy, factors=factors)
    dense, _ = pipeline(split, layers, corpus, queries, mesh1, self_inf=True, **common)
    low, _ = pipeline(
        split, layers, corpus, queries, mesh1, rank=64, contraction="lowrank", **common
    )
    for out in (dense, low):
        assert rel(out.scores, expected) < STRATEGY, strategy
    assert rel(dense.self_influence, expected_self) < STRATEGY, strategy
    assert np.all(expected_self > 0)  # a damped curvature inverse is positive definite


def test_full_rank_equals_dense_and_error_shrinks_with_rank(
    layers, split, corpus, queries, mesh1, factors
):
    # contraction="dense" applies every rank's P_q ≈ L Rᵀ as a [Q, d_out, d_in] matrix: the
    # truncation error alone, and one compiled function for all ranks.
    common = dict(strategy="ekfac", factors=factors, contraction="dense")
    dense, _ = pipeline(split, layers, corpus, queries, mesh1, **common)
    errors = []
    for rank in (1, 2, 4, 6, 9):  # the layers are [16, 9] and [8, 17]: rank 9 is full
        low, _ = pipeline(split, layers, corpus, queries, mesh1, rank=rank, **common)
        errors.append(rel(low.scores, dense.scores))
    assert errors[-1] < EXACT
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors


def test_randomized_svd_is_close_to_the_exact_truncation(layers, split, corpus, queries, mesh1):
    common = dict(contraction="dense")
    exact, _ = pipeline(split, layers, corpus, queries, mesh1, rank=4, **common)
    rand, _ = pipeline(split, layers, corpus, queries, mesh1, rank=4, svd="randomized", **common)
    dense, _ = pipeline(split, layers, corpus, queries, mesh1, **common)
    assert rel(rand.scores, dense.scores) < 1.5 * rel(exact.scores, dense.scores) + 1e-12


@pytest.mark.parametrize("rank, contraction", [(0, "dense"), (3, "lowrank"), (3, "dense")])
def test_per_layer_and_per_token_scores_sum_to_the_total(
    rank, contraction, split, layers, corpus, queries, mesh1
):
    out, plan = pipeline(split, layers, corpus, queries, mesh1, rank=rank, contraction=contraction)
    np.testing.assert_allclose(out.per_layer.sum(axis=0), out.scores, rtol=EXACT, atol=0)
    graphdef, state = split
    fn = attribution.make_token_scores_fn(graphdef, layers, mesh1)
    rows = np.array([0, 3, 7])
    per_token = attribution.token_scores(fn, state, plan, corpus, rows, 4, mesh1)
    assert per_token.shape == (queries.num_queries, 3, corpus.max_length)
    np.testing.assert_allclose(per_token.sum(axis=2), out.scores[:, rows], rtol=EXACT, atol=0)
    top = attribution.top_documents(out.scores, 2)
    records = attribution.token_attributions(
        per_token, rows, np.array([[0, 3], [7, 0], [3, 7]]), corpus
    )
    for r in records:
        assert len(r["scores"]) == corpus.lengths[r["document"]]
        np.testing.assert_allclose(r["score"], out.scores[r["query"], r["document"]], rtol=EXACT)
    assert top.shape == (3, 2) and np.all(out.scores[0, top[0, 0]] >= out.scores[0])


def test_invariant_to_batch_size_partitions_and_devices(
    split, layers, corpus, queries, mesh1, mesh8, factors
):
    common = dict(strategy="ekfac", factors=factors, rank=3, contraction="lowrank")
    base, _ = pipeline(split, layers, corpus, queries, mesh1, batch_size=4, **common)
    whole, _ = pipeline(split, layers, corpus, queries, mesh1, batch_size=12, **common)
    parts = [
        pipeline(split, layers, corpus, queries, mesh1, rows=bounds, batch_size=4, **common)[0]
        for bounds in scoring.partition_bounds(corpus.num_documents, 3)
    ]
    devices, _ = pipeline(split, layers, corpus, queries, mesh8, batch_size=8, **common)
    for other in (whole, scoring.BatchScores.concatenate(parts), devices):
        for x, y in zip(other.__dict__.values(), base.__dict__.values(), strict=True):
            np.testing.assert_allclose(x, y, rtol=EXACT, atol=1e-14)


def test_fsdp_split_parameters_give_the_replicated_scores(split, layers, corpus, queries, mesh8,
                                                          factors):  # fmt: skip
    """Parameters and factors split over the 8 devices (gathered inside the step) change nothing
    but the summation order: float64 to EXACT."""
    specs = Placement(mesh8, "fsdp").specs(split[1])
    assert sum(any(s) for s in jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, P))) > 3
    common = dict(strategy="ekfac", factors=factors, rank=3, batch_size=8, self_inf=True)
    base, _ = pipeline(split, layers, corpus, queries, mesh8, **common)
    fsdp, _ = pipeline(split, layers, corpus, queries, mesh8, placement="fsdp", **common)
    assert any(any(s) for s in jax.tree.leaves(Placement(mesh8, "fsdp").specs(factors),
                                               is_leaf=lambda s: isinstance(s, P)))  # fmt: skip
    for x, y in zip(fsdp.__dict__.values(), base.__dict__.values(), strict=True):
        np.testing.assert_allclose(x, y, rtol=EXACT, atol=1e-14)


def test_partition_bounds_cover_documents_once():
    assert scoring.partition_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert scoring.partition_bounds(2, 5) == [(0, 1), (1, 2)]


def test_contraction_choice_follows_the_cost_model():
    from infljax.influence import contraction

    # A wide layer, few queries at low rank, short sequences: the per-token low rank is cheaper.
    wide = query_grads.LowRankQueries(np.zeros((4, 4096, 8)), np.zeros((4, 4096, 8)))
    assert contraction.choose(wide, 8, 16) == "lowrank"
    # The benchmark's d256 MLP at Q=100, r=32, T=512: Q·r exceeds d_in, forming G is cheaper.
    big = query_grads.LowRankQueries(np.zeros((100, 1024, 32)), np.zeros((100, 257, 32)))
    assert contraction.choose(big, 8, 512) == "dense"
    assert contraction.choose(big, 8, 512, self_influence=True) == "dense"
    with pytest.raises(ValueError, match="valid"):
        contraction.choose(big, 8, 512, "fast")
    with pytest.raises(ValueError, match="rank > 0"):
        contraction.choose(query_grads.DenseQueries(np.zeros((2, 3, 4))), 8, 16, "lowrank")


def test_dense_plan_over_the_memory_budget_switches_the_widest_layers_to_low_rank():
    big = query_grads.LowRankQueries(np.zeros((100, 1024, 32)), np.zeros((100, 257, 32)))
    small = query_grads.LowRankQueries(np.zeros((100, 256, 32)), np.zeros((100, 257, 32)))
    queries = {"big": big, "small": small}
    dense_big = 4 * 100 * 1024 * 257
    unlimited = scoring.ScoreArgs(batch_size=8, max_dense_plan_gib=0)
    assert scoring.make_plan(queries, unlimited, 512)[1] == {"big": "dense", "small": "dense"}
    tight = scoring.ScoreArgs(batch_size=8, max_dense_plan_gib=dense_big / 2**30)
    assert scoring.make_plan(queries, tight, 512)[1] == {"big": "lowrank", "small": "dense"}
    forced = scoring.ScoreArgs(batch_size=8, contraction="dense", max_dense_plan_gib=1 / 2**30)
    assert scoring.make_plan(queries, forced, 512)[1] == {"big": "dense", "small": "dense"}


@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_chunked_query_preparation_equals_all_at_once(split, layers, queries, mesh1, factors, svd):
    """The one-step preparation (capture, preconditioning and SVD per layer, 2 queries a chunk)
    equals the library's three steps on all queries at once; randomized sketches are seeded
    per query, so chunks do not change them."""
    graphdef, state = split
    grads_fn = query_grads.make_query_grads_fn(graphdef, layers)
    whole = query_grads.compress(
        query_grads.precondition_queries(
            query_grads.query_gradients(grads_fn, state, queries, 4, mesh1), "ekfac", factors
        ),
        QueryArgs(rank=3, batch_size=4, svd=svd),
    )
    args = QueryArgs(rank=3, batch_size=2, svd=svd)
    chunked = query_grads.prepare_queries(
        graphdef, layers, state, queries, args, Placement(mesh1), "ekfac", factors
    )
    for p in layers:
        assert rel(chunked[p].dense(), whole[p].dense()) < EXACT


@pytest.mark.parametrize(
    "rank, svd, groups", [(0, "exact", 1), (3, "exact", 2), (3, "randomized", 3)]
)
def test_query_preparation_on_8_split_devices_in_layer_groups_equals_one_device(
    split, layers, queries, mesh1, mesh8, factors, rank, svd, groups
):
    """Queries spread over 8 devices, parameters and factors FSDP-split (gathered a block / a
    layer at a time), the layers in groups: the same preconditioned gradients as on one device
    with all layers at once (randomized sketches are seeded per layer and query)."""
    graphdef, state = split
    args = QueryArgs(rank=rank, batch_size=8, svd=svd)
    one = query_grads.prepare_queries(
        graphdef, layers, state, queries, args, Placement(mesh1), "ekfac", factors
    )
    grouped = dataclasses.replace(args, layer_groups=groups)
    fsdp = Placement(mesh8, "fsdp")
    eight = query_grads.prepare_queries(
        graphdef, layers, fsdp.place(state), queries, grouped, fsdp, "ekfac", factors
    )
    assert list(eight) == list(one)
    for p in layers:
        assert rel(eight[p].dense(), one[p].dense()) < EXACT
