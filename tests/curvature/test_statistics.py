"""Per-batch statistics on random a and g against direct formulas (float64)."""

import jax.numpy as jnp
import numpy as np
import pytest

from infljax.curvature.state import Eigenbasis
from infljax.curvature.statistics import batch_counts, covariance_sums, gram, lambda_sums
from infljax.models.capture import LayerIO

RTOL = 1e-12  # float64, small sums


@pytest.mark.parametrize("d", [9, 513, 1100])  # one product, 2 blocks, 4 blocks
def test_gram_is_the_exactly_symmetric_product(d):
    x = np.random.default_rng(d).normal(size=(20, d))
    got = np.asarray(gram(jnp.asarray(x)))
    np.testing.assert_allclose(got, x.T @ x, rtol=RTOL, atol=RTOL * d)
    np.testing.assert_array_equal(got, got.T)


def random_io(rng, b=7, t=5, d_in=4, d_out=3):
    a, g = rng.normal(size=(b, t, d_in)), rng.normal(size=(b, t, d_out))
    mask = np.arange(t)[None, :] < rng.integers(0, t + 1, size=(b, 1))
    return LayerIO(jnp.asarray(a), jnp.asarray(g * mask[..., None])), mask


def test_covariance_sums_mask_the_inputs():
    rng = np.random.default_rng(0)
    io, mask = random_io(rng)
    a = np.asarray(io.a) * mask[..., None]
    sums = covariance_sums(io, jnp.asarray(mask))
    np.testing.assert_allclose(sums.a_sum, np.einsum("bti,btj->ij", a, a), rtol=RTOL)
    np.testing.assert_allclose(sums.s_sum, np.einsum("bto,btp->op", io.g, io.g), rtol=RTOL)
    np.testing.assert_array_equal(batch_counts(jnp.asarray(mask)), [mask.sum(), mask.any(1).sum()])


@pytest.mark.parametrize("chunk", [1, 3, 7, 20])  # divides, pads, whole batch, larger
def test_lambda_sums_equal_rotated_per_sequence_gradients(chunk):
    rng = np.random.default_rng(1)
    io, mask = random_io(rng)
    q_a = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    q_s = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    basis = Eigenbasis(jnp.asarray(q_a), jnp.ones(4), jnp.asarray(q_s), jnp.ones(3))
    grads = np.einsum("bto,bti->boi", io.g, np.asarray(io.a) * mask[..., None])
    sums = lambda_sums(io, jnp.asarray(mask), basis, chunk)
    rotated = q_s.T @ grads @ q_a
    np.testing.assert_allclose(sums.lambda_sum, np.sum(rotated**2, 0), rtol=RTOL)
    np.testing.assert_allclose(sums.diagonal_sum, np.sum(grads**2, 0), rtol=RTOL)
