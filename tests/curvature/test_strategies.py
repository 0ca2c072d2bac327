"""Strategies on random factors: inverse products, damping, batching, jit, errors (float64)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infljax.curvature import (
    STRATEGIES,
    DampingArgs,
    LayerFactors,
    curvature_eigenvalues,
    curvature_matrix,
    damping_value,
    precondition,
)

RTOL = 1e-10  # float64 exactness
D_OUT, D_IN = 3, 4


def orthogonal(rng, n) -> np.ndarray:
    return np.linalg.qr(rng.normal(size=(n, n)))[0]


@pytest.fixture(scope="module")
def factors() -> LayerFactors:
    rng = np.random.default_rng(0)
    return LayerFactors(
        a_eigvecs=jnp.asarray(orthogonal(rng, D_IN)),
        a_eigvals=jnp.asarray(rng.uniform(0.1, 2.0, D_IN)),
        s_eigvecs=jnp.asarray(orthogonal(rng, D_OUT)),
        s_eigvals=jnp.asarray(rng.uniform(0.1, 2.0, D_OUT)),
        lambdas=jnp.asarray(rng.uniform(0.0, 3.0, (D_OUT, D_IN))),
        diagonal=jnp.asarray(rng.uniform(0.0, 3.0, (D_OUT, D_IN))),
        tokens_per_sequence=jnp.asarray(2.5),
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("damping", [DampingArgs(), DampingArgs(scale=0.5, absolute=0.2)])
def test_damped_curvature_times_ihvp_is_v(factors, strategy, damping):
    v = np.random.default_rng(1).normal(size=(D_OUT, D_IN))
    ihvp = np.asarray(precondition(strategy, factors, v, damping))
    np.testing.assert_allclose(
        curvature_matrix(strategy, factors, damping) @ ihvp.ravel(), v.ravel(), rtol=RTOL, atol=RTOL
    )


def test_identity_leaves_the_gradient_unchanged():
    v = np.random.default_rng(2).normal(size=(5, D_OUT, D_IN))
    np.testing.assert_array_equal(precondition("identity", None, v, DampingArgs()), v)


def test_ekfac_with_kfac_eigenvalues_is_kfac(factors):
    as_kfac = dataclasses.replace(factors, lambdas=curvature_eigenvalues("kfac", factors))
    v = np.random.default_rng(3).normal(size=(D_OUT, D_IN))
    np.testing.assert_allclose(
        precondition("ekfac", as_kfac, v, DampingArgs()),
        precondition("kfac", factors, v, DampingArgs()),
        rtol=RTOL,
    )
    expected = 2.5 * np.outer(factors.s_eigvals, factors.a_eigvals)
    np.testing.assert_allclose(curvature_eigenvalues("kfac", factors), expected, rtol=RTOL)


def test_damping_is_scale_times_mean_eigenvalue_unless_absolute(factors):
    lambdas = factors.lambdas
    assert np.isclose(damping_value(lambdas, DampingArgs(scale=0.3)), 0.3 * np.mean(lambdas))
    assert damping_value(lambdas, DampingArgs(scale=0.3, absolute=0.7)) == 0.7


@pytest.mark.parametrize("strategy", ["diagonal", "kfac", "ekfac"])
def test_leading_axes_are_batched_and_jit_works(factors, strategy):
    v = np.random.default_rng(4).normal(size=(2, 5, D_OUT, D_IN))
    fn = jax.jit(lambda f, g: precondition(strategy, f, g, DampingArgs()))
    batched = fn(factors, v)
    one = precondition(strategy, factors, v[1, 3], DampingArgs())
    np.testing.assert_allclose(batched[1, 3], one, rtol=RTOL)


def test_unknown_strategy_lists_the_valid_ones(factors):
    with pytest.raises(ValueError, match="identity.*diagonal.*kfac.*ekfac"):
        precondition("ekfca", factors, np.zeros((D_OUT, D_IN)), DampingArgs())
    with pytest.raises(ValueError, match="needs fitted factors"):
        precondition("ekfac", None, np.zeros((D_OUT, D_IN)), DampingArgs())


def test_damping_args_validate():
    with pytest.raises(ValueError, match="non-negative"):
        DampingArgs(scale=-1.0)
    with pytest.raises(ValueError, match="both 0"):
        DampingArgs(scale=0.0)
