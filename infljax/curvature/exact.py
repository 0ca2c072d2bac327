"""Brute-force references for tiny models: per-sequence gradients, exact Fishers, IHVP errors.

Independent of capture and of the factor passes (plain `jax.grad` of the summed NLL per
sequence), so tests and the accuracy table in `experiments/benchmark.py` can check EK-FAC,
K-FAC and the diagonal against the exact Fisher. Memory is B · d_out · d_in per layer and
the Fisher is (d_out · d_in)²: tiny layers only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from infljax.curvature.passes import label_keys
from infljax.models.capture import at_path
from infljax.models.losses import Batch, sample_targets, summed_nll


def fisher_targets(model: nnx.Module, batch: Batch, rows: np.ndarray, seed: int) -> jax.Array:
    """[B, T] the labels the true-Fisher fit samples for these corpus rows."""
    logits = nnx.jit(lambda m, x: m(x))(model, batch.inputs)
    return jax.vmap(sample_targets)(label_keys(seed, jnp.asarray(rows)), logits)


def per_sequence_gradients(
    model: nnx.Module, batch: Batch, targets: jax.Array, layers: Sequence[str]
) -> dict[str, np.ndarray]:
    """{layer: [B, d_out, d_in(+1)]} gradient of each sequence's summed NLL (bias column last)."""
    graphdef, params = nnx.split(model, nnx.Param)

    def one(p, inputs, targets, weights):
        b = Batch(inputs[None], targets[None], weights[None])
        return summed_nll(nnx.merge(graphdef, p)(b.inputs), b)

    grads = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0, 0)))(
        params, batch.inputs, targets, batch.weights
    )
    return {path: _layer_gradient(grads, path) for path in layers}


def _layer_gradient(grads: nnx.State, path: str) -> np.ndarray:
    node = at_path(grads, path)
    g = np.swapaxes(np.asarray(node["kernel"][...]), 1, 2)
    if node.get("bias") is None:
        return g
    return np.concatenate([g, np.asarray(node["bias"][...])[:, :, None]], axis=2)


def exact_fisher(grads: np.ndarray, num_sequences: int) -> np.ndarray:
    """[d_out·d_in, d_out·d_in] Σ_b vec(G_b) vec(G_b)ᵀ / num_sequences (row-major vec)."""
    flat = np.asarray(grads).reshape(grads.shape[0], -1)
    return flat.T @ flat / num_sequences


def exact_ihvp(fisher: np.ndarray, vectors: np.ndarray, damping: float) -> np.ndarray:
    """(F + λ I)⁻¹ v for vectors [K, d_out, d_in] -> [K, d_out, d_in] (λ absolute)."""
    flat = np.asarray(vectors).reshape(len(vectors), -1)
    solved = np.linalg.solve(fisher + damping * np.eye(len(fisher)), flat.T).T
    return solved.reshape(np.shape(vectors))
