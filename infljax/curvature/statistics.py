"""Per-batch statistics from captured `a` and `g` (pure; run inside the jitted passes).

a: [B, T, d_in] layer inputs (bias coordinate included); g: [B, T, d_out] output gradients;
mask: [B, T] real input tokens. `g` is already zero where no prediction is scored; `a` is masked
here, so pads never enter A.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from infljax.curvature.state import CovarianceSums, Eigenbasis, LambdaSums
from infljax.models.capture import LayerIO

GRAM_BLOCK = 256  # columns per block of a symmetric product (below 2 blocks: one product)


def stats_dtype(dtype) -> jnp.dtype:
    """Statistics accumulate in float32 or wider, whatever the model's dtype."""
    return jnp.promote_types(dtype, jnp.float32)


def _masked(io: LayerIO, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    dtype = stats_dtype(io.a.dtype)
    a = io.a.astype(dtype) * mask[..., None].astype(dtype)
    return a, io.g.astype(dtype)


def covariance_sums(io: LayerIO, mask: jax.Array) -> CovarianceSums:
    """Σ a aᵀ and Σ g gᵀ over the batch's real tokens."""
    a, g = _masked(io, mask)
    return CovarianceSums(
        a_sum=gram(a.reshape(-1, a.shape[-1])),
        s_sum=gram(g.reshape(-1, g.shape[-1])),
    )


def gram(x: jax.Array, block: int = GRAM_BLOCK) -> jax.Array:
    """xᵀ x for x [N, d]: [d, d], exactly symmetric.

    A symmetric product needs only its upper blocks: with k column blocks of about `block`
    (k ≤ 4) this does (k + 1) / 2k of the work, e.g. 5/8 for k = 4. (A 2-D product is also much
    faster than the 3-D einsum on XLA:CPU.)
    """
    k = min(4, x.shape[1] // block)
    if k < 2:
        return x.T @ x
    edges = [round(i * x.shape[1] / k) for i in range(k + 1)]
    cols = [x[:, edges[i] : edges[i + 1]] for i in range(k)]
    upper = {(i, j): cols[i].T @ cols[j] for i in range(k) for j in range(i, k)}
    return jnp.block(
        [[upper[i, j] if i <= j else upper[j, i].T for j in range(k)] for i in range(k)]
    )


def lambda_sums(io: LayerIO, mask: jax.Array, basis: Eigenbasis, chunk: int) -> LambdaSums:
    """Σ over sequences of (Q_Sᵀ G Q_A)² and of G², G = Σ_t g_t a_tᵀ.

    `a` and `g` are rotated per token (ã = Q_Aᵀ a, g̃ = Q_Sᵀ g) so that the rotated gradient is
    Σ_t g̃_t ã_tᵀ; per-sequence gradients exist only for `chunk` sequences at a time
    ([chunk, d_out, d_in] twice), never for the whole batch.
    """
    a, g = _masked(io, mask)
    a_rot = a @ basis.a_eigvecs.astype(a.dtype)
    g_rot = g @ basis.s_eigvecs.astype(g.dtype)
    chunks = tuple(_chunked(x, chunk) for x in (a, g, a_rot, g_rot))

    def squares(a_c, g_c, a_rot_c, g_rot_c):
        return _squared_gradients(g_rot_c, a_rot_c), _squared_gradients(g_c, a_c)

    def body(carry, xs):
        return jax.tree.map(jnp.add, carry, squares(*xs)), None

    # The first chunk seeds the carry (it then has the same sharding type inside shard_map).
    first = squares(*(x[0] for x in chunks))
    (lam, diag), _ = jax.lax.scan(body, first, tuple(x[1:] for x in chunks))
    return LambdaSums(lambda_sum=lam, diagonal_sum=diag)


def _squared_gradients(g: jax.Array, a: jax.Array) -> jax.Array:
    """Σ_c (g_cᵀ a_c)² for g [c, T, d_out], a [c, T, d_in] -> [d_out, d_in]."""
    if g.shape[0] == 1:  # one 2-D product: several times faster than a batched one on XLA:CPU
        return (g[0].T @ a[0]) ** 2
    return jnp.sum(jnp.einsum("cto,cti->coi", g, a) ** 2, axis=0)


def _chunked(x: jax.Array, chunk: int) -> jax.Array:
    """[B, T, d] -> [ceil(B / chunk), chunk, T, d], zero-padded (zero rows add nothing)."""
    b = x.shape[0]
    chunk = min(chunk, b)
    n = -(-b // chunk)
    x = jnp.pad(x, ((0, n * chunk - b),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape((n, chunk) + x.shape[1:])


def batch_counts(mask: jax.Array) -> jax.Array:
    """int32 [2]: (real tokens, sequences with a real token) of the batch."""
    tokens = jnp.sum(mask, dtype=jnp.int32)
    sequences = jnp.sum(jnp.any(mask, axis=1), dtype=jnp.int32)
    return jnp.stack([tokens, sequences])
