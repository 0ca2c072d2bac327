"""Breakdowns of scores for chosen documents: per token, and full-rank re-scores of the top k.

Per-token score of document m at position t for query q: `Σ_layers g_tᵀ P_q a_t` (the layer's
computation at input position t; `g_t` carries the loss of every later prediction). Summed over
the positions it is exactly the document's score with the same query plan (DESIGN §2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from infljax.data.batches import real_rows, row_batches
from infljax.data.corpus import TokenizedCorpus
from infljax.distributed import global_batch, process_rows, replicate, to_host
from infljax.influence import contraction
from infljax.influence.scoring import Plan, score_documents
from infljax.models.capture import capture
from infljax.models.losses import Batch


def top_documents(scores: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] document indices of each query's k highest scores, best first (stable ties)."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@functools.lru_cache(maxsize=32)
def make_token_scores_fn(
    graphdef: nnx.GraphDef, layers: tuple[str, ...], mesh: jax.sharding.Mesh
) -> Callable[[nnx.State, Batch, Plan], jax.Array]:
    """A jitted `(state, batch, plan) -> [Q, B, T]` per-token scores summed over layers."""

    def local(state, batch, plan):
        _, io = capture(nnx.merge(graphdef, state), batch, layers)
        scores = io.map(lambda _, x, layer_plan: contraction.token_scores(x, layer_plan), plan)
        return sum(scores.values())

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=P(None, "data")
    )
    return jax.jit(sharded)


def token_scores(
    fn: Callable,
    state: nnx.State,
    plan: Plan,
    corpus: TokenizedCorpus,
    rows: np.ndarray,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """[Q, len(rows), T] per-token scores of the given corpus rows for every query."""
    plan = replicate(plan, mesh)
    local = process_rows(batch_size, mesh)  # this process reads only its rows of each batch
    batches = row_batches(corpus, np.asarray(rows), batch_size, local)
    parts = [
        to_host(fn(state, global_batch(rb.batch, mesh), plan))[:, :valid]
        for valid, rb in zip(real_rows(len(rows), batch_size), batches, strict=True)
    ]
    return np.concatenate(parts, axis=1)


def token_attributions(
    per_token: np.ndarray, rows: np.ndarray, top: np.ndarray, corpus: TokenizedCorpus
) -> list[dict]:
    """One record per (query, chosen document): its row, per-token scores (`scores`) and their sum
    (`score`).

    per_token: [Q, len(rows), T] from `token_scores`; top: [Q, k] document indices (each in
    `rows`). Token scores cover the document's real tokens (positions 0..length-1).
    """
    column = {int(r): i for i, r in enumerate(rows)}
    records = []
    for q, docs in enumerate(top):
        for rank, m in enumerate(docs.tolist()):
            values = per_token[q, column[m], : int(corpus.lengths[m])]
            records.append(
                {
                    "query": q,
                    "rank": rank,
                    "document": m,
                    "score": float(np.sum(values)),
                    "tokens": corpus.tokens[m, : len(values)].tolist(),
                    "scores": values.tolist(),
                }
            )
    return records


def rescore(
    score_fn: Callable,
    state: nnx.State,
    full_plan: Plan,
    corpus: TokenizedCorpus,
    top: np.ndarray,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """[Q, k] full-rank scores of each query's chosen documents `top` [Q, k].

    `full_plan` holds the unfactorised preconditioned query gradients (`DenseQueries`, rank 0).
    Every chosen document is scored once against every query; the pairs are then picked out
    (cheap: at most Q·k documents).
    """
    rows = np.unique(top)
    full = score_documents(score_fn, state, full_plan, corpus, rows, batch_size, mesh).scores
    column = np.searchsorted(rows, top)
    return np.take_along_axis(full, column, axis=1)
