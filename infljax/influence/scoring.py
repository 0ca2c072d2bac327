"""The scoring pass: every query against every document in one stream over the corpus.

Per batch of documents: one forward+backward with the real labels (capture), then, per tracked
layer, the contraction of `a`, `g` with the query plan (`infljax.influence.contraction`), all
inside one jit. The batch is split over the mesh's ``data`` axis with `jax.shard_map`; documents
are independent, so nothing is reduced across devices: each device scores its documents, and
the step ends by gathering the (small) results onto every device. Results do not depend on the
batch size, the partitioning or the number of devices.

score(q, m) = Σ_layers ⟨IHVP(∇ NLL_q), ∇ L_m⟩ (DESIGN §2): positive means adding document m to
training would raise the query completion's log-probability.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from infljax.config import free
from infljax.curvature import DampingArgs, Factors, precondition
from infljax.data.batches import real_rows, row_batches
from infljax.data.corpus import TokenizedCorpus
from infljax.distributed import (
    DATA,
    PLACED,
    Placement,
    gather_layer,
    global_batch,
    on_mesh,
    process_rows,
    replicated,
    to_host,
)
from infljax.influence import contraction
from infljax.influence.query_grads import LayerQueries, LowRankQueries
from infljax.models.capture import capture
from infljax.models.losses import Batch

Plan = dict[str, LayerQueries]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BatchScores:
    """Scores of one batch (device arrays) or of a range of documents (host arrays).

    scores: [Q, B]; per_layer: [L, Q, B] (sums to `scores`); sq_norms: [B] ‖∇L_m‖² over the
    tracked layers; self_influence: [B] ⟨IHVP(∇L_m), ∇L_m⟩ (zeros unless requested).
    """

    scores: jax.Array
    per_layer: jax.Array
    sq_norms: jax.Array
    self_influence: jax.Array

    def take(self, columns: slice | np.ndarray) -> BatchScores:
        return BatchScores(
            self.scores[:, columns],
            self.per_layer[:, :, columns],
            self.sq_norms[columns],
            self.self_influence[columns],
        )

    @staticmethod
    def concatenate(parts: Sequence[BatchScores]) -> BatchScores:
        axes = BatchScores(1, 2, 0, 0)
        return jax.tree.map(lambda ax, *xs: np.concatenate(xs, axis=ax), axes, *parts)


@dataclasses.dataclass(frozen=True)
class ScoreArgs:
    """The scoring pass.

    Attributes:
      batch_size: documents per forward+backward (a multiple of the mesh's data axis).
      contraction: "auto" (cheaper by multiply-adds, per layer), "dense" or "lowrank".
      self_influence: also compute ⟨IHVP(∇L_m), ∇L_m⟩ per document (forms G_m and
        preconditions it: about one extra IHVP per document).
      partitions: contiguous document ranges written separately (resume granularity).
      max_dense_plan_gib: with contraction="auto", dense layers are switched to the low-rank
        contraction (widest first) until the dense query plan fits in this many GiB
        (0 = no limit). A 100M-parameter model at Q=100 would otherwise hold ~22 GB of dense
        query gradients.
    """

    batch_size: int = free(32)
    contraction: str = "auto"
    self_influence: bool = False
    partitions: int = 1
    max_dense_plan_gib: float = 4.0

    def __post_init__(self):
        if self.batch_size < 1 or self.partitions < 1:
            raise ValueError(f"ScoreArgs.batch_size and partitions must be >= 1: {self}")
        if self.contraction not in contraction.CONTRACTIONS:
            raise ValueError(
                f"ScoreArgs.contraction={self.contraction!r}; valid: {contraction.CONTRACTIONS}"
            )

    @property
    def max_dense_plan_bytes(self) -> int:
        return int(self.max_dense_plan_gib * 2**30)


def make_plan(
    queries: dict[str, LayerQueries], args: ScoreArgs, seq: int
) -> tuple[Plan, dict[str, str]]:
    """(plan, {layer: "dense" | "lowrank"}): each layer's queries in the form its contraction
    needs, chosen once for the batch shape [args.batch_size, seq]."""
    choices = {
        p: contraction.choose(q, args.batch_size, seq, args.contraction, args.self_influence)
        for p, q in queries.items()
    }
    if args.contraction == "auto" and args.max_dense_plan_bytes:
        choices = _fit_dense_plan(queries, choices, args.max_dense_plan_bytes)
    return {p: contraction.plan_layer(q, choices[p]) for p, q in queries.items()}, choices


def _fit_dense_plan(
    queries: dict[str, LayerQueries], choices: dict[str, str], budget: int
) -> dict[str, str]:
    """Switch dense layers with low-rank queries to "lowrank", widest first, until the dense
    plan (Q·d_out·d_in float32 per dense layer) fits in `budget` bytes."""
    choices = dict(choices)

    def dense_bytes(path: str) -> int:
        return 4 * int(np.prod(queries[path].shape))

    switchable = [
        p for p, c in choices.items() if c == "dense" and isinstance(queries[p], LowRankQueries)
    ]
    total = sum(dense_bytes(p) for p, c in choices.items() if c == "dense")
    for path in sorted(switchable, key=dense_bytes, reverse=True):
        if total <= budget:
            break
        choices[path], total = "lowrank", total - dense_bytes(path)
    return choices


@dataclasses.dataclass(frozen=True)
class SelfInfluence:
    """Turns on ⟨IHVP(∇L_m), ∇L_m⟩: the strategy and damping of the IHVP (see curvature)."""

    strategy: str
    damping: DampingArgs = DampingArgs()


@functools.lru_cache(maxsize=32)
def make_score_fn(
    graphdef: nnx.GraphDef,
    layers: tuple[str, ...],
    placement: Placement,
    self_influence: SelfInfluence | None = None,
) -> Callable[[nnx.State, Batch, Plan, Factors | None], BatchScores]:
    """A jitted `(state, batch, plan, factors) -> BatchScores`, the batch split over ``data``.

    The state, the plan and the factors (used only for self-influence; may be None) are placed
    as `placement` says (`infljax.distributed.Placement.place`): split, the step gathers one
    block's parameters (`capture`) and one layer's plan and factors at a time. All are passed
    as arguments, never baked into the compiled function as constants.
    """

    def local(specs, state, batch, plan, factors):
        state_specs, _, plan_specs, factor_specs = specs
        model = nnx.merge(graphdef, state)
        _, io = capture(model, batch, layers, specs=state_specs)

        def layer(path, layer_io, layer_plan):  # one layer's contraction (and plan) at a time
            layer_plan = gather_layer(layer_plan, plan_specs, path)
            return contraction.layer_scores(layer_io, layer_plan)

        results = io.map(layer, {p: plan[p] for p in layers}).values()
        per_layer = jnp.stack([scores for scores, _ in results])
        return BatchScores(
            scores=jnp.sum(per_layer, axis=0),
            per_layer=per_layer,
            sq_norms=sum(norms for _, norms in results),
            self_influence=_self_influence(io, layers, self_influence, factors, factor_specs),
        )

    out_specs = BatchScores(P(None, "data"), P(None, None, "data"), P("data"), P("data"))
    step = placement.step(local, (PLACED, DATA, PLACED, PLACED), out_specs)
    # Every device ends with all the results (gathered inside this program; a separate
    # cross-process gather per output would be one more collective launch per leaf).
    return jax.jit(step, out_shardings=replicated(placement.mesh))


def _self_influence(io, layers, how: SelfInfluence | None, factors, specs) -> jax.Array:
    """[B] Σ_layers ⟨IHVP(G_m), G_m⟩, or zeros when `how` is None. `specs`: how the factors
    are split (None: whole); one layer's are gathered at a time."""
    if how is None:
        return jnp.zeros(io[layers[0]].g.shape[:1], io[layers[0]].g.dtype)

    def layer(path, layer_io, layer_factors):
        grads = contraction.sequence_grads(layer_io)
        layer_factors = gather_layer(layer_factors, specs, path)  # None: no factors
        ihvp = precondition(how.strategy, layer_factors, grads, how.damping)
        return jnp.sum(ihvp * grads, axis=(1, 2))

    inputs = {p: None if factors is None else factors[p] for p in layers}
    return sum(io.map(layer, inputs).values())


def score_documents(
    score_fn: Callable,
    state: nnx.State,
    plan: Plan,
    corpus: TokenizedCorpus,
    rows: tuple[int, int] | np.ndarray,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    factors: Factors | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> BatchScores:
    """Scores of corpus rows (a (start, stop) range or explicit indices), as host arrays.

    `factors` feed self-influence only. A state, plan or factors already on `mesh` (replicated
    or FSDP-split, `infljax.distributed.Placement.place`) stay as they are; anything else is
    replicated.
    `on_batch(num_documents)` is called after each batch (progress bars). Dispatch runs one
    batch ahead of the host copy so the device never waits for Python. With several processes
    each reads only its rows of every batch, and every process returns all the scores.
    """
    state, plan, factors = (on_mesh(x, mesh) for x in (state, plan, factors))
    parts, pending = [], None
    local = process_rows(batch_size, mesh)
    rows = np.arange(*rows) if isinstance(rows, tuple) else np.asarray(rows, np.int64)
    batches = row_batches(corpus, rows, batch_size, local)
    for valid, rb in zip(real_rows(len(rows), batch_size), batches, strict=True):
        result = score_fn(state, global_batch(rb.batch, mesh), plan, factors)
        if pending is not None:
            parts.append(_fetch(*pending, on_batch))
        pending = (result, valid)
    if pending is not None:
        parts.append(_fetch(*pending, on_batch))
    if not parts:
        raise ValueError(f"no documents in rows {rows}")
    return BatchScores.concatenate(parts)


def _fetch(result: BatchScores, valid: int, on_batch) -> BatchScores:
    out = to_host(result).take(slice(0, valid))
    if on_batch is not None:
        on_batch(valid)
    return out


def partition_bounds(num_documents: int, partitions: int) -> list[tuple[int, int]]:
    """`partitions` contiguous (start, stop) ranges covering the documents, sizes within one."""
    parts = min(partitions, max(num_documents, 1))
    edges = [i * num_documents // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def doc_grad_norms(sq_norms: np.ndarray) -> np.ndarray:
    """‖∇L_m‖ over the tracked layers: the denominator of the cosine-style ranking."""
    return np.sqrt(np.maximum(sq_norms, 0.0))
