"""Contracting a batch's captured `a`, `g` with the query gradients of one layer.

score(q, m) for one layer is `⟨P_q, G_m⟩` with `G_m = Σ_t g_t a_tᵀ`. Two ways to get it:

* ``dense``: form `G_m` ([B, d_out, d_in], cost B·T·d_out·d_in), then one matrix product with
  the dense `P_q` (Q·B·d_out·d_in).
* ``lowrank``: never form `G_m`; with `P_q = Σ_k l_k r_kᵀ`,
  `⟨P_q, G_m⟩ = Σ_t Σ_k (l_kᵀ g_t)(r_kᵀ a_t)` (B·T·Q·r·(d_out + d_in)); the gradient norm then
  comes from the T×T Gram matrices, `‖G_m‖² = Σ_{t,s} (g_t·g_s)(a_t·a_s)` (B·T²·(d_out + d_in)).

`choose` picks the cheaper by these multiply-add counts; the plan it returns is just the query
representation the contraction needs (a dense plan layer holds `P_q` densely).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from infljax.influence.query_grads import DenseQueries, LayerQueries, LowRankQueries
from infljax.models.capture import LayerIO

CONTRACTIONS = ("auto", "dense", "lowrank")


def costs(
    d_out: int, d_in: int, num_queries: int, rank: int, batch: int, seq: int, self_influence: bool
) -> dict[str, float]:
    """Multiply-adds per batch of each contraction (see module docstring). rank 0 = dense."""
    form_g = float(batch * seq * d_out * d_in)
    dense = form_g + num_queries * batch * d_out * d_in
    if rank == 0:
        return {"dense": dense}
    lowrank = batch * seq * (num_queries * rank + seq) * (d_out + d_in)
    return {"dense": dense, "lowrank": lowrank + (form_g if self_influence else 0.0)}


def choose(
    queries: LayerQueries, batch: int, seq: int, preference: str = "auto", self_influence=False
) -> str:
    """ "dense" or "lowrank" for one layer: `preference` unless "auto", then the cheaper."""
    if preference not in CONTRACTIONS:
        raise ValueError(f"contraction={preference!r}; valid: {CONTRACTIONS}")
    rank = queries.rank if isinstance(queries, LowRankQueries) else 0
    num_queries, d_out, d_in = queries.shape
    options = costs(d_out, d_in, num_queries, rank, batch, seq, self_influence)
    if preference != "auto":
        if preference not in options:
            raise ValueError(
                f"contraction={preference!r} needs low-rank queries; "
                "set scores.query_grads.rank > 0"
            )
        return preference
    return min(options, key=options.get)


def plan_layer(queries: LayerQueries, contraction: str) -> LayerQueries:
    """The representation `contraction` uses: dense P_q, or the low-rank factors as they are."""
    if contraction == "dense":
        return queries if isinstance(queries, DenseQueries) else DenseQueries(queries.dense())
    return queries


def layer_scores(io: LayerIO, queries: LayerQueries) -> tuple[jax.Array, jax.Array]:
    """(scores [Q, B], squared gradient norms ‖G_m‖² [B]) of one layer."""
    if isinstance(queries, DenseQueries):
        grads = sequence_grads(io)
        # One [Q, d_out·d_in] x [d_out·d_in, B] product. The einsum "qoi,boi->qb" let XLA:CPU
        # lay every layer's P_q out again (transposed copies of the whole dense plan, all live
        # through the forward pass); flattening makes the small G_m adapt instead.
        q, b = queries.grads.shape[0], grads.shape[0]
        scores = queries.grads.reshape(q, -1) @ grads.reshape(b, -1).T
        return scores, jnp.sum(grads * grads, axis=(1, 2))
    gl, ar = _project(io, queries)
    scores = jnp.einsum("btqk,btqk->qb", gl, ar)
    gram = jnp.einsum("bto,bso->bts", io.g, io.g) * jnp.einsum("bti,bsi->bts", io.a, io.a)
    return scores, jnp.sum(gram, axis=(1, 2))


def token_scores(io: LayerIO, queries: LayerQueries) -> jax.Array:
    """[Q, B, T]: g_tᵀ P_q a_t per token; summed over T it is `layer_scores`."""
    if isinstance(queries, DenseQueries):
        return jnp.einsum("bto,qoi,bti->qbt", io.g, queries.grads, io.a)
    gl, ar = _project(io, queries)
    return jnp.einsum("btqk,btqk->qbt", gl, ar)


def sequence_grads(io: LayerIO) -> jax.Array:
    """[B, d_out, d_in]: G_b = Σ_t g_t a_tᵀ."""
    return jnp.einsum("bto,bti->boi", io.g, io.a)


def _project(io: LayerIO, queries: LowRankQueries) -> tuple[jax.Array, jax.Array]:
    # [B, T, Q, r] each: one matmul per side against all queries' factors at once.
    return (
        jnp.einsum("bto,qok->btqk", io.g, queries.left),
        jnp.einsum("bti,qik->btqk", io.a, queries.right),
    )
