"""EK-FAC fitting against brute force from explicit per-sequence gradients (float64).

Tolerances: exactness and invariance 1e-10 relative (float64; only summation order differs).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from infljax.curvature import (
    DampingArgs,
    FactorArgs,
    NonFiniteFactorError,
    check_finite_parameters,
    curvature_eigenvalues,
    curvature_matrix,
    eigendecompose,
    fit_factors,
    passes,
    precondition,
    safe_eigh,
)
from infljax.curvature.exact import exact_fisher, per_sequence_gradients
from infljax.curvature.state import (
    Counts,
    CovarianceSums,
    Eigenbasis,
    Statistics,
    zero_covariance,
    zero_lambdas,
)
from infljax.data.batches import RowBatch, row_batches
from infljax.distributed import Placement, make_mesh, shard_batch
from infljax.models.capture import layer_shapes, select_layers
from infljax.models.decoder import Decoder
from infljax.models.losses import Batch
from tests.tiny import TINY

from .conftest import ARGS, NUM_ROWS, SEED, reference_batches

RTOL = 1e-10


def one_device():
    return Placement(make_mesh(devices=jax.devices()[:1]))


def close(x, y, rtol=RTOL) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return np.linalg.norm(x - y) <= rtol * max(np.linalg.norm(y), 1e-300)


def eigenbasis(f) -> np.ndarray:
    """Q = Q_S ⊗ Q_A: columns are the eigenbasis for row-major vec([d_out, d_in])."""
    return np.kron(np.asarray(f.s_eigvecs), np.asarray(f.a_eigvecs))


def undamped(strategy: str, f) -> np.ndarray:
    q = eigenbasis(f)
    return (q * np.asarray(curvature_eigenvalues(strategy, f)).ravel()) @ q.T


def test_kfac_equals_the_exact_fisher_for_one_sequence_of_one_token(trained_model, layers):
    # T = 1: the only token is real and its prediction is scored, so A = a aᵀ, S = g gᵀ.
    batch = Batch(np.array([[5]]), np.array([[9]]), np.array([[1.0]]))
    args = FactorArgs(fisher="empirical", lambda_chunk=1)
    factors = fit_factors(trained_model, layers, [batch], args, one_device())
    grads = per_sequence_gradients(trained_model, batch, batch.targets, layers)
    for path in layers:
        fisher = exact_fisher(grads[path], 1)
        assert close(undamped("kfac", factors[path]), fisher), path
        assert close(undamped("ekfac", factors[path]), fisher), path


def test_lambdas_and_diagonal_equal_brute_force(factors, brute_force, corpus, layers):
    real = corpus.lengths[corpus.lengths > 1]  # a length-1 row has no scored prediction
    for path in layers:
        fisher, f = brute_force[path], factors[path]
        q = eigenbasis(f)
        assert close(f.lambdas.ravel(), np.diag(q.T @ fisher @ q)), path
        assert close(f.diagonal.ravel(), np.diag(fisher)), path
        assert np.all(np.asarray(f.lambdas) >= 0), path
    assert np.isclose(factors[layers[0]].tokens_per_sequence, real.mean(), rtol=RTOL)


def test_ekfac_is_closer_to_the_exact_fisher_than_scale_matched_kfac(factors, brute_force):
    for path, fisher in brute_force.items():
        ekfac, kfac = undamped("ekfac", factors[path]), undamped("kfac", factors[path])
        scale = np.sum(fisher * kfac) / np.sum(kfac * kfac)  # K-FAC's best scale
        ekfac_error = np.linalg.norm(fisher - ekfac)
        kfac_error = np.linalg.norm(fisher - scale * kfac)
        assert ekfac_error <= kfac_error * (1 + RTOL), path
        assert ekfac_error < np.linalg.norm(fisher), path  # informative, not trivially zero


@pytest.mark.parametrize("strategy", ["ekfac", "kfac", "diagonal", "identity"])
def test_damped_matrix_times_ihvp_returns_v(factors, layers, strategy):
    f = factors[layers[1]]
    v = np.random.default_rng(0).normal(size=f.shape)
    for damping in (DampingArgs(), DampingArgs(absolute=1e-3)):
        ihvp = np.asarray(precondition(strategy, f, v, damping)).ravel()
        assert close(curvature_matrix(strategy, f, damping) @ ihvp, v.ravel()), damping
    if strategy == "identity":
        np.testing.assert_array_equal(precondition(strategy, None, v, DampingArgs()), v)


def test_factors_do_not_depend_on_batch_size_padding_or_devices(
    factors, trained_model, corpus, layers
):
    # Reference: batches of 6 with padding on 1 device, lambda chunks of 3; here one batch of 16
    # over 8 devices, automatic chunks (1 sequence on CPU). Partitions and resume: test_stage.py.
    wide = list(row_batches(corpus, np.arange(NUM_ROWS), 16))
    auto = dataclasses.replace(ARGS, lambda_chunk=0)
    assert auto.chunk_for(make_mesh()) == 1
    other = fit_factors(trained_model, layers, wide, auto, Placement(make_mesh()))
    assert len(jax.devices()) == 8
    for path in layers:
        for name in vars(factors[path]):
            ref, got = getattr(factors[path], name), getattr(other[path], name)
            assert close(got, ref), (path, name)


def test_fsdp_split_parameters_give_the_replicated_factors(factors, trained_model, corpus, layers):
    """Parameters split over 8 devices and gathered inside each step: the same factors as the
    1-device replicated fit (float64, only the summation order differs: RTOL)."""
    fsdp = Placement(make_mesh(), "fsdp")
    specs = fsdp.specs(nnx.state(trained_model))
    assert any(any(s) for s in jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, P)))
    wide = list(row_batches(corpus, np.arange(NUM_ROWS), 16))
    other = fit_factors(trained_model, layers, wide, ARGS, fsdp)
    for path in layers:
        for name in vars(factors[path]):
            ref, got = getattr(factors[path], name), getattr(other[path], name)
            assert close(got, ref), (path, name)


def test_sampled_labels_are_deterministic_per_seed(factors, trained_model, corpus, layers):
    batches = reference_batches(corpus)
    again = fit_factors(trained_model, layers, batches, ARGS, one_device())
    other_seed = FactorArgs(fisher="true", seed=SEED + 1, lambda_chunk=3)
    other = fit_factors(trained_model, layers, batches, other_seed, one_device())
    for path in layers:
        np.testing.assert_array_equal(again[path].lambdas, factors[path].lambdas)
        assert not close(other[path].lambdas, factors[path].lambdas, rtol=1e-3)


def test_a_nan_parameter_is_reported_with_its_layer(trained_model):
    broken = nnx.clone(trained_model)
    kernel = broken.blocks[1].mlp.fc_out.kernel
    kernel[...] = kernel[...].at[0, 0].set(np.nan)
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc_out\.kernel"):
        check_finite_parameters(broken)
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc_out\.kernel"):
        fit_factors(broken, ("blocks.0.mlp.fc_in",), [], ARGS, one_device())


def test_a_non_finite_factor_is_reported_with_its_layer():
    with pytest.raises(NonFiniteFactorError, match="layer blocks.0.mlp.fc_in: A"):
        safe_eigh(np.array([[1.0, np.nan], [np.nan, 1.0]]), "layer blocks.0.mlp.fc_in: A")


def test_eigh_on_host_equals_eigh_on_device():
    m = np.random.default_rng(0).normal(size=(6, 6))
    m = m @ m.T
    host, device = safe_eigh(m, "m", on_host=True), safe_eigh(m, "m", on_host=False)
    for x, y in zip(host, device, strict=True):
        assert close(x, y)
    vals, vecs = host
    assert close((vecs * vals) @ vecs.T, m)


def test_eigendecomposition_shared_over_devices_equals_host():
    # 5 layers = 10 factors over the 8 CPU devices: two waves, the second one partial.
    rng = np.random.default_rng(1)

    def spd(n):
        m = rng.normal(size=(n, n))
        return m @ m.T

    sums = {f"layer{i}": CovarianceSums(spd(3 + i), spd(7 - i)) for i in range(5)}
    stats = Statistics(sums, Counts(tokens=11, sequences=3))
    host, devices = eigendecompose(stats, on_host=True), eigendecompose(stats, on_host=False)
    assert len(jax.local_devices()) == 8
    for path in sums:
        for x, y in zip(jax.tree.leaves(host[path]), jax.tree.leaves(devices[path]), strict=True):
            assert close(x, y)


def test_fit_factors_needs_reiterable_batches(trained_model, layers):
    with pytest.raises(TypeError, match="re-iterable"):
        fit_factors(trained_model, layers, iter([]), ARGS, one_device())


def test_plain_batches_number_rows_by_stream_position(factors, trained_model, corpus, layers):
    # A plain Batch's rows are its positions in the stream of sequences (padding included).
    plain = [rb.batch for rb in reference_batches(corpus)]
    got = fit_factors(trained_model, layers, plain, ARGS, one_device())
    for path in layers:
        np.testing.assert_array_equal(got[path].lambdas, factors[path].lambdas)


def _fitting_products(num_layers: int, placement: str) -> tuple[int, int]:
    """Matrix products in the lowered covariance and lambda steps of a `num_layers` model
    (parameters, bases and sums placed as `placement` says, over 2 devices)."""
    model = Decoder(dataclasses.replace(TINY, num_layers=num_layers), rngs=nnx.Rngs(0))
    mesh = make_mesh(devices=jax.devices()[:2])
    layers = select_layers(model)
    graphdef, params = nnx.split(model)
    where = Placement(mesh, placement)
    params = where.place(params)
    static = dict(graphdef=graphdef, layers=layers, fisher="true", placement=where)
    batch = Batch.from_documents(np.tile(np.arange(1, 9, dtype=np.int32), (4, 1)), np.full(4, 8))
    row_batch = shard_batch(RowBatch(np.arange(4, dtype=np.int32), batch), mesh)
    seed = jnp.asarray(0, jnp.uint32)
    shapes = layer_shapes(model, layers)
    eye = lambda n: jnp.eye(n, dtype=jnp.float64)  # noqa: E731
    bases = {
        p: Eigenbasis(eye(i), jnp.ones(i), eye(o), jnp.ones(o)) for p, (o, i) in shapes.items()
    }
    covariance = passes.covariance_step.lower(
        params,
        passes.zero_sums(zero_covariance, model, layers, where),
        seed,
        row_batch,
        **static,
    )
    lambdas = passes.lambda_step.lower(
        params,
        where.place(bases),
        passes.zero_sums(zero_lambdas, model, layers, where),
        seed,
        row_batch,
        chunk=1,
        **static,
    )
    return tuple(step.as_text().count("dot_general") for step in (covariance, lambdas))


@pytest.mark.parametrize("placement", ["replicated", "fsdp"])
def test_the_fitting_steps_do_not_grow_with_depth(placement):
    """The blocks are scanned and the layers' statistics accumulated in one loop per site, so
    the covariance and lambda steps lower to the same matrix products at 5 and 8 blocks (more
    than `UNROLLED_BLOCKS`; the loop's grew linearly): compile time independent of depth."""
    assert _fitting_products(5, placement) == _fitting_products(8, placement)
