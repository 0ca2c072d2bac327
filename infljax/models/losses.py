"""Batches and the summed next-token NLL that every stage differentiates (DESIGN §2).

A `Batch` says, per position, which input tokens are real (`mask`: they enter the activation
covariance) and whose next-token prediction counts in the loss (`weights`). Documents weight every
real prediction; queries weight only their completion tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """inputs, targets: [B, T] int32; weights: [B, T] float (1 where the prediction counts).

    `targets[:, t]` is the token predicted at position t (the next token).
    """

    inputs: jax.Array
    targets: jax.Array
    weights: jax.Array

    @property
    def mask(self) -> jax.Array:
        """[B, T] bool: real (non-pad) input positions. Pads are 0-weight positions at the end."""
        return _real_positions(self.weights)

    @classmethod
    def from_documents(cls, tokens: np.ndarray, lengths: np.ndarray) -> Batch:
        """Documents: tokens [B, T] padded after `lengths`; every real next-token prediction counts.

        A document of length n has n-1 predictions (positions 0..n-2); length-0 rows (batch
        padding) contribute nothing.
        """
        tokens = jnp.asarray(tokens, jnp.int32)
        targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
        positions = jnp.arange(tokens.shape[1])[None, :]
        weights = (positions < jnp.asarray(lengths)[:, None] - 1).astype(jnp.float32)
        return cls(tokens, targets, weights)


def _real_positions(weights: jax.Array) -> jax.Array:
    # A position is real when it or any later position is weighted, or it is the last real token
    # (the input whose prediction is not scored). Equivalently: at or before the last weighted
    # position + 1.
    t = weights.shape[1]
    last = jnp.max(jnp.where(weights > 0, jnp.arange(t)[None, :], -2), axis=1)
    return jnp.arange(t)[None, :] <= (last + 1)[:, None]


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits [B, T, V], targets [B, T] -> NLL [B, T] (float32 or wider)."""
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


NOISE_BLOCK = 128  # vocabulary ids per independent draw of `gumbel_noise`


def sample_targets(key: jax.Array, logits: jax.Array) -> jax.Array:
    """True-Fisher labels of one sequence: logits [T, V] -> [T], one sample per position from
    the model's own next-token distribution (Gumbel-max with `gumbel_noise`)."""
    score = jax.lax.stop_gradient(logits) + gumbel_noise(key, logits.shape)
    return jnp.argmax(score, axis=-1).astype(jnp.int32)


def gumbel_noise(key: jax.Array, shape: tuple[int, int], first_id: int | jax.Array = 0):
    """Gumbel noise [T, V] float32 of one sequence's `key` for vocabulary ids `first_id` ...
    `first_id + V - 1`. Position t's noise for ids in block j (ids j·NOISE_BLOCK onwards) is
    drawn from `fold_in(fold_in(key, t), j)` alone, so a device holding a slice of the
    vocabulary draws the same noise for it as one holding all of it (vocabulary-parallel
    sampling, `infljax.models.capture`), at about the cost of one `jax.random.gumbel` draw."""
    positions, width = shape
    if isinstance(first_id, int):  # known here: exactly the blocks the ids touch
        blocks = -(-(first_id % NOISE_BLOCK + width) // NOISE_BLOCK)
    else:  # any offset: one block more
        blocks = -(-width // NOISE_BLOCK) + 1
    first_block = first_id // NOISE_BLOCK
    tiny = jnp.finfo(jnp.float32).tiny

    def block(k, j):
        return jax.random.uniform(jax.random.fold_in(k, j), (NOISE_BLOCK,), minval=tiny, maxval=1)

    def position(k):
        u = jax.vmap(lambda j: block(k, j))(first_block + jnp.arange(blocks)).reshape(-1)
        return jax.lax.dynamic_slice_in_dim(u, first_id - first_block * NOISE_BLOCK, width)

    keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(positions))
    return -jnp.log(-jnp.log(jax.vmap(position)(keys)))


def summed_nll(logits: jax.Array, batch: Batch, targets: jax.Array | None = None) -> jax.Array:
    """Σ weights · NLL: the training loss of documents / the measurement of queries. Scalar."""
    targets = batch.targets if targets is None else targets
    return jnp.sum(batch.weights * token_nll(logits, targets))
