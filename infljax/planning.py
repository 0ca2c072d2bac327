"""Memory planning (DESIGN §7b): what each device-heavy step holds per device, from shapes.

    shapes = ModelShapes.from_config(cfg)                  # or ModelShapes.of(model, layers)
    work = Workload(seq=512, queries=100, rank=32)
    memory = estimate("scores", shapes, work, Layout(data=8), batch=32)
    batch = largest_batch("scores", shapes, work, Layout(data=8), device_bytes=80 * GiB)

`estimate` returns one step's per-device bytes broken into parts; `largest_batch` picks the
largest batch (a multiple of the data axis) that fits a device with a stated headroom, or raises
`PlanError` with the numbers; `check_fits` refuses a given plan the same way, and `check_step`
(what the factors and scores stages call) adds the largest batch that would fit. A **step** is
the compiled step that dominates a pipeline stage (the factors stage has two, the scores stage
two):

==========  ==================================================================================
pretrain    one AdamW step (`infljax.training.make_train_step`)
covariance  one covariance-pass step (`infljax.curvature.passes.covariance_step`)
lambdas     one lambda-pass step (`infljax.curvature.passes.lambda_step`)
queries     one chunk of queries (the batch): capture, preconditioning and SVD, layer by layer
            (`infljax.influence.query_grads.make_query_plan_fn`)
scores      one scoring step (`infljax.influence.scoring.make_score_fn`)
==========  ==================================================================================

The parts follow DESIGN §7b: factor state per layer (`d_in² + d_out²` eigenvectors or sums,
`d_in·d_out` lambdas), the query plan (dense `Q·d_out·d_in` or low-rank `Q·r·(d_out + d_in)` per
layer, chosen exactly as `scoring.make_plan` chooses), captured `a`, `g` (`batch·T·(d_in + d_out)`
per layer), plus what the section leaves implicit: parameters, optimizer state and gradients,
the model's activations kept for the backward pass (`activation_bytes_per_token`), the logits,
per-sequence gradients (lambda chunk, dense contraction, query gradients) and the outputs. Parts
are summed as if all were live at the peak (a tensor XLA frees before the peak is left out, e.g.
the block-wise covariance pass's `a` of all but one layer); tests/test_planning.py checks
every step's total against XLA's compiled memory analysis (within 25% on a small decoder; a
good deal closer on most shapes).

Sharding enters through `Layout`: the batch divides over ``data``; `param_shards` and
`factor_shards` divide the parameters (with gradients and optimizer state) and the factor state
at rest (``config.mesh.params="fsdp"``; an array no dimension of which the data axis divides
stays whole), and the step adds what it gathers, one block's parameters and one layer's
eigenbasis or query plan at a time (a vocabulary-split embedding is not gathered; the hidden
states of every device's tokens are). Activations do not divide: every device runs the full
model on its data shard.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from infljax.distributed import Placement, split_axis
from infljax.influence import scoring
from infljax.influence.query_grads import DenseQueries, LowRankQueries
from infljax.models.capture import (
    DEFAULT_LAYERS,
    UNROLLED_BLOCKS,
    layer_groups,
    layer_shapes,
    select_layers,
)
from infljax.models.decoder import Decoder, DecoderConfig

STEPS = ("pretrain", "covariance", "lambdas", "queries", "scores")
GiB = 2**30
HEADROOM = 0.1  # fraction of device memory `largest_batch` leaves free (allocator, XLA slack)
_F32 = 4


@dataclasses.dataclass(frozen=True)
class ModelShapes:
    """What the estimate needs to know about a model.

    Attributes:
      cfg: the decoder's shape and variant.
      params: number of parameters.
      block_params: parameters of the largest block (what a per-block gather holds at once).
      layers: tracked layers {path: (d_out, d_in)}; d_in counts the bias coordinate.
    """

    cfg: DecoderConfig
    params: int
    block_params: int
    layers: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, model: nnx.Module, layers: Sequence[str]) -> ModelShapes:
        """From a model, concrete or abstract (`nnx.eval_shape`), and its tracked layer paths."""
        blocks = [_size(nnx.state(block, nnx.Param)) for block in model.blocks]
        params = _size(nnx.state(model, nnx.Param))
        return cls(model.cfg, params, max(blocks), layer_shapes(model, layers))

    @classmethod
    def from_config(
        cls, cfg: DecoderConfig, patterns: Sequence[str] = DEFAULT_LAYERS
    ) -> ModelShapes:
        """From a config alone: the model is built abstractly (no parameter is allocated)."""
        model = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
        return cls.of(model, select_layers(model, patterns))

    @property
    def itemsize(self) -> int:
        """Bytes per parameter and per activation (the model's dtype)."""
        return jnp.dtype(self.cfg.param_dtype).itemsize

    @property
    def stats_itemsize(self) -> int:
        """Bytes per element of factor state and preconditioned query gradients (the model's
        dtype, at least float32, as `curvature.statistics.stats_dtype`)."""
        return jnp.promote_types(self.cfg.param_dtype, jnp.float32).itemsize


def _size(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a step is spread over devices.

    Attributes:
      data: devices along the mesh's ``data`` axis; the batch divides over them.
      param_shards: devices each parameter (with its gradient and optimizer state) is split
        over at rest: 1 = replicated; the data axis under ``config.mesh.params="fsdp"``.
      factor_shards: devices the factor state (sums, eigenbases, factors) is split over at rest:
        1 = replicated; the data axis under ``config.mesh.params="fsdp"``.

    A step gathers split arrays where it uses them: one block's parameters at a time (again
    in the backward, which recomputes the block), one layer's eigenbasis, factors or query plan
    at a time; it forms one layer's batch statistics at a time and reduce-scatters them.
    """

    data: int = 1
    param_shards: int = 1
    factor_shards: int = 1

    def __post_init__(self):
        if min(self.data, self.param_shards, self.factor_shards) < 1:
            raise ValueError(f"Layout sizes must be positive, got {self}")

    @classmethod
    def of(cls, placement: Placement) -> Layout:
        """The layout of the factors and scores stages under `placement` ("fsdp" splits
        parameters and factors over ``data``)."""
        data = placement.data_size
        shards = data if placement.split else 1
        return cls(data, shards, shards)


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the stages run (besides the batch, an argument of `estimate`).

    Attributes:
      seq: tokens per sequence (documents and queries).
      queries, rank: number of queries and the rank of their gradients (0 = dense).
      svd, oversample: how query gradients are factorised (`query_grads.QueryArgs`).
      lambda_chunk: sequences per device whose per-sequence gradients exist at once in the
        lambda pass (`FactorArgs.chunk_for`).
      fisher: "true" (the fitting passes sample labels) or "empirical" (`FactorArgs.fisher`).
      contraction, max_dense_plan_bytes, self_influence: as `scoring.ScoreArgs`.
    """

    seq: int
    queries: int = 100
    rank: int = 32
    svd: str = "exact"
    oversample: int = 8
    lambda_chunk: int = 1
    fisher: str = "true"
    contraction: str = "auto"
    max_dense_plan_bytes: int = 4 * GiB
    self_influence: bool = False

    def __post_init__(self):
        if min(self.seq, self.queries, self.lambda_chunk) < 1 or self.rank < 0:
            raise ValueError(f"Workload: seq, queries, lambda_chunk >= 1 and rank >= 0: {self}")


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """One step's per-device bytes: `parts` ((name, bytes), ...) sum to `total`."""

    step: str
    batch: int
    local_batch: int
    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.parts)

    def summary(self) -> str:
        """One line: the total, the batch and every non-zero part."""
        parts = ", ".join(f"{name} {format_bytes(n)}" for name, n in self.parts if n)
        return (
            f"{self.step}: needs {format_bytes(self.total)} per device at batch {self.batch} "
            f"({self.local_batch} per device) ({parts})"
        )

    def lines(self) -> list[str]:
        """A small table: one line per non-zero part, then the total."""
        rows = [f"{name:<22}{format_bytes(n):>12}" for name, n in self.parts if n]
        return rows + [f"{'total':<22}{format_bytes(self.total):>12}"]

    @property
    def largest_part(self) -> str:
        return max(self.parts, key=lambda p: p[1])[0]


class PlanError(MemoryError):
    """A step cannot fit the device's memory; the message has the numbers and what to do."""


def format_bytes(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def activation_bytes_per_token(
    cfg: DecoderConfig, seq: int, weight_grads: bool = True, blockwise: bool = False
) -> int:
    """Bytes per token (of sequences of `seq` tokens) that a backward pass keeps, all blocks.

    `blockwise` (each block recomputed in the backward: `capture`'s scans, and training with
    split parameters): every block's input, and one block's internals.

    Counted per block in the model's dtype; XLA fuses the elementwise rest away.

    * With weight gradients (training) the input of every linear layer is kept for its weight
      gradient: the residual stream at each norm's input, each norm's output, q, k and v (k, v
      again after GQA's repeat), the attention output, the MLP's hidden widths (GELU: input and
      activation; gated: gate, up and their product), plus three [heads, seq] rows of attention
      scores per token (logits, probabilities, their gradient), one hidden-width gradient in
      flight, and outside the blocks the embedding output and the final norm's input and output.
    * Without (the capture passes: only gradients w.r.t. layer outputs) just what nonlinear
      backward steps read: each norm's input, q, k and v, the probabilities and the MLP's
      pre-activations. The tracked layers' inputs are counted as captured `a`.
    """
    hd, heads, kv_heads = cfg.head_dim, cfg.num_heads, cfg.kv_heads
    norm_inputs = cfg.d_model * (2 if cfg.residual == "sequential" else 1)
    qkv = heads * hd + 2 * kv_heads * hd * (1 if kv_heads == heads else 2)
    if weight_grads:
        norm_outputs = cfg.d_model * (1 if cfg.residual == "parallel_shared_norm" else 2)
        hidden = cfg.d_ff * (3 if cfg.mlp == "gelu" else 4)
        block = norm_inputs + norm_outputs + qkv + heads * hd + 3 * heads * seq + hidden
        outside = 3 * cfg.d_model
    else:
        pre_activations = cfg.d_ff * (1 if cfg.mlp == "gelu" else 2)
        block, outside = norm_inputs + qkv + heads * seq + pre_activations, 0
    if blockwise:
        block, outside = cfg.d_model, outside + block
    return (cfg.num_layers * block + outside) * jnp.dtype(cfg.param_dtype).itemsize


def logits_bytes_per_token(
    cfg: DecoderConfig, weight_grads: bool = True, sampled: bool = False
) -> int:
    """Logits in the model's dtype, their float32 log-softmax and its gradient; with weight
    gradients the logits' gradient in the model's dtype too; with sampled labels (true Fisher)
    the random bits and the Gumbel noise (`losses.gumbel_noise`)."""
    itemsize = jnp.dtype(cfg.param_dtype).itemsize
    per_logit = itemsize * (2 if weight_grads else 1) + 2 * _F32 + (2 * _F32 if sampled else 0)
    return cfg.vocab_size * per_logit


def plan_choices(shapes: ModelShapes, work: Workload, batch: int) -> dict[str, str]:
    """{layer: "dense" | "lowrank"}: the contraction `scoring.make_plan` picks for these shapes
    and a scoring batch of `batch` (the same function, run on shapes only)."""
    dtype = jnp.promote_types(shapes.cfg.param_dtype, jnp.float32)
    queries = {p: _query_shapes(work, o, i, dtype) for p, (o, i) in shapes.layers.items()}
    args = scoring.ScoreArgs(
        batch_size=batch,
        contraction=work.contraction,
        self_influence=work.self_influence,
        max_dense_plan_gib=work.max_dense_plan_bytes / GiB,
    )
    found = {}

    def plan(q):
        plan, choices = scoring.make_plan(q, args, work.seq)
        found.update(choices)
        return plan

    jax.eval_shape(plan, queries)
    return found


def _query_shapes(work: Workload, d_out: int, d_in: int, dtype):
    q, rank = work.queries, min(work.rank, d_out, d_in)
    if work.rank == 0:
        return DenseQueries(jax.ShapeDtypeStruct((q, d_out, d_in), dtype))
    left = jax.ShapeDtypeStruct((q, d_out, rank), dtype)
    return LowRankQueries(left, jax.ShapeDtypeStruct((q, d_in, rank), dtype))


def estimate(
    step: str,
    shapes: ModelShapes,
    work: Workload,
    layout: Layout,
    batch: int,
    choices: dict[str, str] | None = None,
) -> StepMemory:
    """Per-device bytes of `step` at global `batch` (queries: the query chunk).

    `choices` ({layer: "dense" | "lowrank"}, scores only) overrides the contraction the
    planner would pick (the scores stage passes its own plan's).
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; valid: {STEPS}")
    local = -(-batch // layout.data)
    parts = _Parts(shapes, work, layout, batch, local)
    if step == "scores":
        found = parts.scores(choices or plan_choices(shapes, work, batch))
    else:
        found = getattr(parts, step)()
    return StepMemory(step, batch, local, tuple(found))


Part = tuple[str, int]
Parts = list[Part]


@dataclasses.dataclass(frozen=True)
class _Parts:
    """The parts of each step for one batch (bytes per device); `local` = its share on each
    device of the data axis."""

    shapes: ModelShapes
    work: Workload
    layout: Layout
    batch: int
    local: int

    @property
    def _tokens(self) -> int:
        return self.local * self.work.seq

    def _split(self, shards: int, total: int, layer: int) -> tuple[int, int]:
        """(kept, gathered) elements of an array of `total` elements split over `shards`
        devices at rest; the step gathers `layer` of it at a time."""
        if shards == 1:
            return total, 0
        kept = total // shards
        return kept, layer

    def _params(self, in_step: bool = True) -> Parts:
        """Parameters at rest and, `in_step`, what the step gathers when they are split: one
        block and everything outside the blocks (final norm, position embeddings), and the
        embedding and head unless they are vocabulary-parallel; then every device's tokens'
        last hidden states [data × local, T, d] and their gradient, or their embedding rows,
        which live while no block is gathered (counted as the larger of the two)."""
        s, shards = self.shapes, self.layout.param_shards
        outside = s.params - s.cfg.num_layers * s.block_params
        states = 0
        if vocab_parallel(s.cfg, shards):
            outside -= s.cfg.vocab_size * s.cfg.d_model * (1 if s.cfg.tie_embeddings else 2)
            states = 2 * self.layout.data * self._tokens * s.cfg.d_model
        kept, gathered = self._split(shards, s.params, s.block_params + outside)
        return [
            ("parameters", kept * s.itemsize),
            ("gathered", max(gathered, states) * s.itemsize if in_step else 0),
        ]

    @property
    def _blockwise(self) -> bool:
        """Split parameters gathered block by block (`infljax.models.capture`)."""
        return self.layout.param_shards > 1

    def _factor_state(self, name: str, per_layer: list[Shapes]) -> Part:
        """Factor state (the arrays of each layer): this device's share and what the step
        gathers, one layer's split arrays at a time."""
        shards = self.layout.factor_shards
        kept = sum(_kept(a, shards) for arrays in per_layer for a in arrays)
        gathered = max(
            sum(math.prod(a) for a in arrays if _is_split(a, shards)) for arrays in per_layer
        )
        return name, (kept + gathered) * self.shapes.stats_itemsize

    def _sums(self, per_layer: list[Shapes]) -> Parts:
        """A pass's sums (the arrays of each layer): the running ones and this batch's, formed
        one layer at a time (`infljax.models.capture.Captured.accumulate`). A split array's are
        formed in full and reduce-scattered into a second slice; the others are all-reduced in
        place."""
        shards, itemsize = self.layout.factor_shards, self.shapes.stats_itemsize
        arrays = [a for layer in per_layer for a in layer]
        running = sum(2 * _kept(a, shards) if _is_split(a, shards) else _kept(a, 1) for a in arrays)
        batch = max(sum(math.prod(a) for a in layer) for layer in per_layer)
        return [("factor sums", running * itemsize), ("batch sums", batch * itemsize)]

    def _activations(self, weight_grads: bool = False, sampled: bool = False) -> Parts:
        """The activations kept for the backward pass, and the logits."""
        cfg, seq = self.shapes.cfg, self.work.seq
        # capture (no weight gradients) recomputes every block in the backward when split or
        # scanned (more than UNROLLED_BLOCKS blocks)
        scanned = not weight_grads and cfg.num_layers > UNROLLED_BLOCKS
        remat = self._blockwise or scanned
        activations = activation_bytes_per_token(cfg, seq, weight_grads, remat)
        logits = logits_bytes_per_token(cfg, weight_grads, sampled)
        return [("activations", self._tokens * activations), ("logits", self._tokens * logits)]

    def _model(self, weight_grads: bool = False, sampled: bool = False) -> Parts:
        return self._params() + self._activations(weight_grads, sampled)

    def _captured(self, itemsize: int, inputs: bool = True, in_flight: int = 1) -> Part:
        """Captured `a`, `g`: every tracked layer's `a`, kept from the forward until its `g`
        arrives in the backward (`inputs`; not when the pass reduces `a` on its own at once),
        and `in_flight` × (d_out + d_in) of the widest layer (its `g`, rotations, copies)."""
        layers = self.shapes.layers.values()
        kept = sum(i for _, i in layers) if inputs else 0
        width = kept + in_flight * max(o + i for o, i in layers)
        return "captured a, g", self._tokens * width * itemsize

    def pretrain(self) -> Parts:
        """AdamW: two moments per parameter; the gradients; the model."""
        s = self.shapes
        params = s.params * s.itemsize // self.layout.param_shards
        return self._model(weight_grads=True) + [
            ("optimizer state", 2 * params),
            ("gradients", params),
        ]

    def covariance(self) -> Parts:
        """A and S sums; `a` and `g` in the statistics dtype, every tracked layer's: they leave
        the blocks' scans stacked per site and the layers' statistics are formed one after the
        other once the backward is done (`infljax.models.capture.Captured.accumulate`), so
        all are live then, whole or split."""
        layers = self.shapes.layers.values()
        square = [[(o, o), (i, i)] for o, i in layers]
        model = self._model(sampled=self.work.fisher == "true")
        width = sum(o + i for o, i in layers)
        captured = ("captured a, g", self._tokens * width * self.shapes.stats_itemsize)
        return model + self._sums(square) + [captured]

    def lambdas(self) -> Parts:
        """Eigenbases; Λ and diagonal sums; `a`, `g` and their rotations; the largest layer's
        chunk of per-sequence gradients (plain and rotated)."""
        layers = self.shapes.layers.values()
        bases = [[(o, o), (i, i), (o,), (i,)] for o, i in layers]
        products = [[(o, i), (o, i)] for o, i in layers]
        chunk = min(self.work.lambda_chunk, self.local) * max(o * i for o, i in layers)
        itemsize = self.shapes.stats_itemsize
        return (
            self._model(sampled=self.work.fisher == "true")
            + [self._factor_state("eigenvectors", bases)]
            + self._sums(products)
            + [self._captured(itemsize, in_flight=2), ("lambda chunk", 2 * chunk * itemsize)]
        )

    def queries(self) -> Parts:
        """One chunk of queries (`query_grads.make_query_plan_fn`): the capture's forward and
        backward, then one layer at a time its per-sequence gradients [local, d_out, d_in]
        (plain and preconditioned) and their SVD, with that layer's factors; every layer's
        result (factorised, or dense at rank 0). The capture's activations are freed before
        the layers' work starts, so only the larger of the two counts. EK-FAC factors:
        eigenbases, Λ, diagonal."""
        s, w, local = self.shapes, self.work, self.local
        layers = s.layers.values()
        o, i = max(layers, key=lambda oi: oi[0] * oi[1])
        factors = [[(o, o), (i, i), (o, i), (o, i)] for o, i in layers]
        per_query = sum(o * i if w.rank == 0 else min(w.rank, o, i) * (o + i) for o, i in layers)
        itemsize = s.stats_itemsize
        layer_work = [
            ("layer gradients", 2 * local * o * i * itemsize),
            ("svd", local * _svd_elements(w, o, i) * itemsize),
        ]
        capture = self._activations()
        larger = max(capture, layer_work, key=lambda parts: sum(n for _, n in parts))
        return (
            self._params()
            + larger
            + [
                self._captured(s.itemsize),
                self._factor_state("factors", factors),
                ("query factors", local * per_query * itemsize),
            ]
        )

    def scores(self, choices: dict[str, str]) -> Parts:
        """The query plan; `a`, `g` in the model's dtype; the contractions' intermediates
        (`_contraction`); with self-influence the factors and G_m's IHVP; the outputs
        (scores, per-layer scores, norms)."""
        s, w, local = self.shapes, self.work, self.local
        layers = s.layers.items()
        plan = [_plan_elements(w, o, i, choices[p]) for p, (o, i) in layers]
        contraction = [_contraction_elements(w, local, o, i, choices[p]) for p, (o, i) in layers]
        parts = self._model() + [
            ("query plan", self._plan(plan) * s.stats_itemsize),
            self._captured(s.itemsize),
            ("contraction", self._contraction(contraction) * s.stats_itemsize),
            ("outputs", ((len(s.layers) + 1) * w.queries + 2) * local * _F32),
        ]
        if w.self_influence:
            factors = [[(o, o), (i, i), (o, i)] for o, i in s.layers.values()]
            ihvp = 3 * local * max(o * i for o, i in s.layers.values()) * s.stats_itemsize
            parts += [self._factor_state("factors", factors)]
            parts += [("self-influence", ihvp)]
        return parts

    def _contraction(self, per_layer: list[tuple[int, int]]) -> int:
        """One layer's intermediates and its query factors laid out again (for a split plan,
        the gathered layer counted in the plan is that copy): the layers are contracted one
        after the other (`infljax.models.capture.Captured.map`)."""
        relaid = self.layout.factor_shards == 1
        return max(n + (r if relaid else 0) for n, r in per_layer)

    def _plan(self, per_layer: list[int]) -> int:
        """Query-plan elements on a device: replicated, or split like the factors with one
        layer's gathered."""
        kept, gathered = self._split(self.layout.factor_shards, sum(per_layer), max(per_layer))
        return kept + gathered


Shapes = list[tuple[int, ...]]  # the shapes of one layer's arrays


def _is_split(shape: tuple[int, ...], shards: int) -> bool:
    """Whether an array of `shape` is split over `shards` devices at rest (`split_axis`; else
    it is kept whole on every device, e.g. the A factor of a layer with a bias when d_in + 1
    is odd)."""
    return split_axis(shape, shards) is not None


def vocab_parallel(cfg: DecoderConfig, shards: int) -> bool:
    """Whether FSDP over `shards` devices splits the embedding [V, d] (and an untied head
    [d, V]) along the vocabulary, so that steps look up and score tokens vocabulary-parallel
    instead of gathering them (`infljax.models.capture`)."""
    v, d = cfg.vocab_size, cfg.d_model
    head = cfg.tie_embeddings or split_axis((d, v), shards) == 1
    return split_axis((v, d), shards) == 0 and head


def _kept(shape: tuple[int, ...], shards: int) -> int:
    """Elements of an array of `shape` a device keeps at rest."""
    return math.prod(shape) // (shards if _is_split(shape, shards) else 1)


def _svd_elements(work: Workload, d_out: int, d_in: int) -> int:
    """Per query: the SVD's factors (exact: thin U, Vᵀ; randomized: the sketch and its basis)."""
    k = min(d_out, d_in)
    if work.rank == 0:
        return 0
    if work.svd == "randomized":
        k = min(k, work.rank + work.oversample)
    return k * (d_out + d_in + 1)


def _plan_elements(work: Workload, d_out: int, d_in: int, choice: str) -> int:
    if choice == "dense":
        return work.queries * d_out * d_in
    return work.queries * min(work.rank, d_out, d_in) * (d_out + d_in)


def _contraction_elements(
    work: Workload, local: int, d_out: int, d_in: int, choice: str
) -> tuple[int, int]:
    """(per-batch intermediates, the layer's query factors laid out again for the product)."""
    if choice == "dense":
        return local * d_out * d_in, 0
    rank = min(work.rank, d_out, d_in)
    relaid = work.queries * rank * (d_out + d_in)
    return local * work.seq * (2 * work.queries * rank + work.seq), relaid


def check_fits(memory: StepMemory, device_bytes: int | None, headroom: float = 0.0) -> None:
    """Raise `PlanError` with the numbers when `memory` exceeds (1 - headroom) of the device's
    bytes; None (a backend that does not say, e.g. CPU) checks nothing."""
    if device_bytes is not None and memory.total > (1 - headroom) * device_bytes:
        raise PlanError(refusal(memory, device_bytes, headroom))


def refusal(memory: StepMemory, device_bytes: int, headroom: float = 0.0) -> str:
    """'scores: needs 93.1 GiB per device at batch 8 (...), device has 80.0 GiB; <advice>'."""
    kept = f" ({headroom:.0%} kept free)" if headroom else ""
    return f"{memory.summary()}, device has {format_bytes(device_bytes)}{kept}; {advice(memory)}"


_SPLIT = "split parameters and factors over the devices (config.mesh.params='fsdp')"
_FEWER_LAYERS = "track fewer layers (config.factors.layers)"
_ADVICE = {
    "parameters": f"{_SPLIT} or use bfloat16 parameters (config.param_dtype)",
    "gathered": "use bfloat16 parameters: the step gathers one block and the embeddings",
    "optimizer state": _SPLIT,
    "gradients": _SPLIT,
    "factor sums": f"{_SPLIT} or {_FEWER_LAYERS}",
    "batch sums": f"{_FEWER_LAYERS}: each device forms the batch's sums in full",
    "eigenvectors": f"{_SPLIT} or {_FEWER_LAYERS}",
    "factors": f"turn off self-influence, {_SPLIT} or {_FEWER_LAYERS}",
    "query plan": "lower the rank or config.scores.scoring.max_dense_plan_gib, or " + _FEWER_LAYERS,
    "lambda chunk": "lower config.factors.lambda_chunk",
    "query gradients": "lower config.scores.query_grads.batch_size or " + _FEWER_LAYERS,
    "preconditioned": "lower config.scores.query_grads.batch_size or " + _FEWER_LAYERS,
    "svd": "use config.scores.query_grads.svd='randomized' or a smaller "
    "config.scores.query_grads.batch_size",
}


def advice(memory: StepMemory) -> str:
    """What to change, from the largest part."""
    part = memory.largest_part
    if part in _ADVICE:
        return _ADVICE[part]
    if memory.local_batch > 1:
        return "lower the batch size or use more devices along the mesh's data axis"
    return "shorten the sequences (corpus.max_length) or track fewer layers"


def largest_batch(
    step: str,
    shapes: ModelShapes,
    work: Workload,
    layout: Layout,
    device_bytes: int,
    headroom: float = HEADROOM,
    max_batch: int = 1 << 16,
    choices: dict[str, str] | None = None,
) -> int:
    """The largest global batch, at most `max_batch` and a multiple of `layout.data` (queries:
    any chunk size), whose estimate fits (1 - headroom) of `device_bytes`; `PlanError` with the
    numbers when the smallest does not. Memory grows with the batch, so a bisection finds it."""
    multiple = 1 if step == "queries" else layout.data

    def memory(count: int) -> StepMemory:
        return estimate(step, shapes, work, layout, count * multiple, choices)

    check_fits(memory(1), device_bytes, headroom)
    low, high = 1, max(1, max_batch // multiple)
    while low < high:
        mid = (low + high + 1) // 2
        fits = memory(mid).total <= (1 - headroom) * device_bytes
        low, high = (mid, high) if fits else (low, mid - 1)
    return low * multiple


def check_step(
    memory: StepMemory,
    shapes: ModelShapes,
    work: Workload,
    layout: Layout,
    device_bytes: int | None,
    setting: str,
    choices: dict[str, str] | None = None,
) -> None:
    """What a stage calls before its step starts: `PlanError` when `memory` exceeds the device, its
    message ending with the largest value of the batch `setting` (e.g.
    "config.factors.batch_size") that fits with `HEADROOM`, when one does."""
    if device_bytes is None or memory.total <= device_bytes:
        return
    message = refusal(memory, device_bytes)
    args = (memory.step, shapes, work, layout, device_bytes)
    try:
        best = largest_batch(*args, max_batch=memory.batch, choices=choices)
        message += f"; {setting}={best} fits with {HEADROOM:.0%} headroom"
    except PlanError:
        pass
    raise PlanError(message)


def check_groups(
    memory: StepMemory,
    group: ModelShapes,
    shapes: ModelShapes,
    groups: int,
    work: Workload,
    layout: Layout,
    device_bytes: int | None,
    settings: tuple[str, str],
    at: str = "",
) -> None:
    """`check_step` for a step run in `groups` groups of the tracked layers of `shapes`, given
    the estimate `memory` of its largest, `group` (`largest_group`). A refusal also names the
    fewest groups whose largest would fit at the same batch. `settings`: the config fields of
    the batch size and of the number of groups; `at`: what the hint adds after "fits"."""
    try:
        check_step(memory, group, work, layout, device_bytes, settings[0])
    except PlanError as error:
        args = (memory.step, shapes, groups, work, layout, memory.batch, device_bytes)
        fewer = fewest_groups(*args)
        hint = "" if fewer is None else f"; or {settings[1]}={fewer} fits{at}"
        raise PlanError(f"{error}{hint}") from None


def largest_group(
    step: str, shapes: ModelShapes, groups: int, work: Workload, layout: Layout, batch: int
) -> tuple[ModelShapes, StepMemory]:
    """(shapes, estimate) of the one of `groups` contiguous groups of the tracked layers
    (`infljax.models.capture.layer_groups`, one pass each) whose `step` needs the most."""
    estimates = []
    for layers in layer_groups(list(shapes.layers), groups):
        group = dataclasses.replace(shapes, layers={p: shapes.layers[p] for p in layers})
        estimates.append((group, estimate(step, group, work, layout, batch)))
    return max(estimates, key=lambda found: found[1].total)


def fewest_groups(
    step: str,
    shapes: ModelShapes,
    groups: int,
    work: Workload,
    layout: Layout,
    batch: int,
    device_bytes: int,
) -> int | None:
    """The fewest groups of layers, more than `groups`, whose largest fits `device_bytes` with
    `HEADROOM` at `batch`; None when not even one layer per group does."""
    for more in range(groups + 1, len(shapes.layers) + 1):
        _, memory = largest_group(step, shapes, more, work, layout, batch)
        if memory.total <= (1 - HEADROOM) * device_bytes:
            return more
    return None


def device_memory_bytes() -> int | None:
    """Bytes the first local device can hold, or None when the backend does not say (CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else stats.get("bytes_limit")


def compiled_bytes(compiled) -> int | None:
    """Per-device bytes of a compiled step by XLA's memory analysis (arguments + outputs +
    temporaries − aliased), the figure the estimates are checked against; None when the
    backend does not report one."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except (AttributeError, NotImplementedError):
        return None
