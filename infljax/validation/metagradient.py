"""Exact metagradients: the derivative of a query's measurement after training with respect to
each document's loss weight, through the whole training run (MAGIC; Ilyas & Engstrom 2025).

The trained parameters are a deterministic function of the document weights `w` [N]
(`infljax.validation.retrain.weighted_training`: seeded initialisation and data order, AdamW,
the learning-rate schedule). `jax.vjp` differentiates the query NLLs after the last step with
respect to `w`, at w = 1 (the original run), by reverse mode through the optimizer; each step
is rematerialised (`jax.checkpoint`), so the backward pass holds one step's activations and the
scan's carries (parameters and optimizer state per step), not every step's activations.

Sign (DESIGN §2): scores are effects on the completion's log-probability. Up-weighting
document n by dw changes the NLL by `dnats_q/dw_n · dw`, so the score is `-dnats_q/dw_n`, and
keeping only the subset S (the others' weights 1 → 0) is predicted to change the NLL by
`Σ_{n ∉ S} score(q, n)`, i.e. `c - Σ_{n ∈ S} score(q, n)`: what
`infljax.validation.lds.subset_predictions` assumes of every method.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from infljax import training
from infljax.checkpoints import check_finite
from infljax.influence.measurement import make_nats_fn
from infljax.models.losses import Batch
from infljax.validation.retrain import Stream, weighted_training


def make_metagradient_fn(
    graphdef: nnx.GraphDef, args: training.TrainArgs
) -> Callable[[nnx.State, Stream, Batch, jax.Array], tuple[jax.Array, jax.Array]]:
    """A jitted `(initial params, stream, queries [Q, T], cotangents [C, Q]) -> (nats [Q],
    [C, N] = cotangents @ dnats/dw)`, at document weights 1 (N = corpus documents, from the
    stream). The forward run is shared by the C cotangents; the backward is vmapped over them."""

    nats_fn = make_nats_fn(graphdef)

    def nats_after_training(params, data: Stream, queries: Batch, weights):
        trained = weighted_training(graphdef, args, params, data, weights, remat=True)
        return nats_fn(trained, queries)

    def fn(params, data, queries, cotangents, num_documents):
        weights = jnp.ones((num_documents,), cotangents.dtype)
        nats, pullback = jax.vjp(lambda w: nats_after_training(params, data, queries, w), weights)
        return nats, jax.vmap(lambda c: pullback(c)[0])(cotangents)

    return jax.jit(fn, static_argnums=(4,))


def metagradient_scores(
    graphdef: nnx.GraphDef,
    args: training.TrainArgs,
    params: nnx.State,
    data: Stream,
    queries: Batch,
    num_documents: int,
    chunk: int = 0,
    on_chunk: Callable[[int], None] | None = None,
    float64: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, N] = -dnats_q/dw_n, nats [Q] after training) of every query, `chunk` queries
    per backward pass (0: all at once; each pass re-runs the forward training).

    `float64`: train and differentiate in float64. The adjoint of a float32 run overflows on
    the way back through hundreds of Adam steps (1 / (sqrt(nu) + eps) of parameters whose
    gradients are tiny; seen on the demo's small model: 3 of 4 queries NaN), so float32 is
    only for models whose runs are short. Raises NonFiniteError rather than return NaN."""
    if float64:
        with jax.enable_x64(True):
            wide = lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
            params, queries = jax.tree.map(wide, params), jax.tree.map(wide, queries)
            return metagradient_scores(
                graphdef, args, params, data, queries, num_documents, chunk, on_chunk, False
            )
    if args.eps_root <= 0:
        raise ValueError(
            "metagradients need a training whose optimizer is differentiable everywhere: set "
            "the model's train.eps_root > 0 (e.g. 1e-12; Adam's sqrt(nu) has no derivative "
            "at nu = 0)"
        )
    fn = make_metagradient_fn(graphdef, args)
    q = queries.inputs.shape[0]
    chunk = chunk or q
    rows, nats = [], None
    dtype = jax.tree.leaves(params)[0].dtype  # the measurement's dtype
    for start in range(0, q, chunk):
        eye = np.eye(q, dtype=dtype)[start : start + chunk]
        if len(eye) < chunk:  # the same shape for every pass: one compilation
            eye = np.concatenate([eye, np.zeros((chunk - len(eye), q), eye.dtype)])
        nats, grads = fn(params, data, queries, jnp.asarray(eye), num_documents)
        rows.append(np.asarray(grads)[: min(chunk, q - start)])
        if on_chunk is not None:
            on_chunk(min(chunk, q - start))
    scores = -np.concatenate(rows)
    check_finite(f"the metagradients of {q} queries (train in float64)", scores)
    return scores, np.asarray(nats)
