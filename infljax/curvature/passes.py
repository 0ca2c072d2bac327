"""The two data passes of EK-FAC fitting and `fit_factors`, which runs them end to end.

Each pass is one jitted step per batch: a `jax.shard_map` over the mesh's ``data`` axis runs
`capture` on the local rows, reduces the statistics inside the same jit and sums them over
devices, so `a` and `g` never leave the device (DESIGN §6, §7). Parameters, eigenbases and the
running sums are placed as an `infljax.distributed.Placement` says: replicated, or split over
``data`` (fsdp): gathered where used, and the sums reduce-scattered so each device keeps 1/data
of them. True-Fisher labels are sampled with one key per sequence, `fold_in(key(seed), row)`,
so they do not depend on the batch size, the partitioning or the number of devices.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from infljax.config import free
from infljax.curvature import statistics
from infljax.curvature.eigen import eigendecompose
from infljax.curvature.state import (
    Counts,
    CovarianceSums,
    Eigenbasis,
    Factors,
    LambdaSums,
    Statistics,
    build_factors,
    zero_covariance,
    zero_lambdas,
)
from infljax.data.batches import RowBatch
from infljax.distributed import (
    DATA,
    PLACED,
    STACKED,
    WHOLE,
    Placement,
    gather_layer,
    global_batch,
    reduce_over_data,
    to_host,
)
from infljax.models.capture import by_layer, by_site, capture, layer_module, layer_shapes, sites
from infljax.models.losses import Batch
from infljax.multihost import process_count

FISHERS = ("true", "empirical")
AUTO_CHUNK = 16  # lambda chunk on accelerators when FactorArgs.lambda_chunk = 0


@dataclasses.dataclass(frozen=True)
class FactorArgs:
    """How factors are fitted.

    Attributes:
      fisher: "true" (labels sampled from the model, one sample per token) or "empirical"
        (the real next tokens).
      seed: seeds the sampled labels (sequence `row` uses `fold_in(key(seed), row)`).
      lambda_chunk: sequences whose per-sequence gradients exist at once in the lambda pass
        (per device); memory grows as lambda_chunk · d_out · d_in per layer. 0 = automatic:
        1 on CPU (XLA:CPU runs one 2-D product per sequence fastest), AUTO_CHUNK elsewhere.
        Results do not depend on it.
    """

    fisher: str = "true"
    seed: int = 0
    lambda_chunk: int = free(0)

    def chunk_for(self, mesh: Mesh) -> int:
        """The lambda chunk used on `mesh` (resolves 0 = automatic)."""
        if self.lambda_chunk:
            return self.lambda_chunk
        return 1 if mesh.devices.flat[0].platform == "cpu" else AUTO_CHUNK

    def __post_init__(self):
        if self.fisher not in FISHERS:
            raise ValueError(f"FactorArgs.fisher={self.fisher!r}; valid: {FISHERS}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"FactorArgs.seed must be in [0, 2**32), got {self.seed}")
        if self.lambda_chunk < 0:
            raise ValueError(f"FactorArgs.lambda_chunk must be >= 0, got {self.lambda_chunk}")


def check_finite_parameters(model: nnx.Module) -> None:
    """Raise ValueError naming every parameter (layer path + name) that holds NaN or inf."""
    params = nnx.state(model, nnx.Param)
    finite = jax.device_get(_all_finite(params))
    bad = [
        jax.tree_util.keystr(path, simple=True, separator=".").removesuffix(".value")
        for path, ok in jax.tree_util.tree_leaves_with_path(finite)
        if not ok
    ]
    if bad:
        raise ValueError(
            f"non-finite (NaN/inf) parameters: {bad}. Factors fitted from them would be "
            "meaningless; load a healthy checkpoint (or fix the conversion) before fitting."
        )


@jax.jit
def _all_finite(tree):
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def label_keys(seed: jax.Array | int, rows: jax.Array) -> jax.Array:
    """Keys [B] for true-Fisher labels: `fold_in(key(seed), row)` (padding rows -1 use row 0)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.maximum(rows, 0))


def _sample_key(fisher: str, seed: jax.Array, rows: jax.Array) -> jax.Array | None:
    return None if fisher == "empirical" else label_keys(seed, rows)


def _sharded_step(local: Callable, placement: Placement, placed: int, sums) -> Callable:
    """`fn(sums, *placed, seed, row_batch) -> (sums, counts)`: `local(specs, reduce, sums,
    *placed, seed, row_batch)` under `Placement.step`.

    The `placed` trees (parameters, eigenbases) arrive as this device's pieces, with `specs`
    to gather them where used (`infljax.distributed.gather`). The running `sums` are kept per
    site, stacked (`infljax.models.capture.by_site`), and placed alike, each layer's slice split
    as the layer alone would be. `reduce(new)` sums one layer's batch statistics over data;
    split, each device keeps only its slice of the sum (a reduce-scatter instead of an
    all-reduce). The batch is split over data.
    """

    def reduce(new):
        return reduce_over_data(new, placement.specs(new))

    def body(specs, *args):
        new, counts = local(specs[1 : 1 + placed], reduce, *args)
        return new, jax.lax.psum(counts, "data")

    kinds = (STACKED, *[PLACED] * placed, WHOLE, DATA)
    return placement.step(body, kinds, out_specs=(placement.specs(sums, stacked=True), P()))


_STATIC = ("graphdef", "layers", "fisher", "placement")


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnames=("sums",))
def covariance_step(
    params, sums, seed, row_batch: RowBatch, *, graphdef, layers, fisher, placement
):
    """sums + this batch's Σ a aᵀ, Σ g gᵀ (sums per site, `zero_sums`); and int32 [2] (tokens,
    sequences) of the batch."""

    def local(specs, reduce, sums, params, seed, rb: RowBatch):
        model = nnx.merge(graphdef, params)
        key = _sample_key(fisher, seed, rb.rows)
        _, io = capture(model, rb.batch, layers, sample_key=key, specs=specs[0])
        mask = rb.batch.mask

        def layer(path, layer_io, _):  # one layer's batch statistics at a time
            return reduce(statistics.covariance_sums(layer_io, mask))

        return io.accumulate(layer, sums), statistics.batch_counts(mask)

    return _sharded_step(local, placement, 1, sums)(sums, params, seed, row_batch)


@functools.partial(jax.jit, static_argnames=_STATIC + ("chunk",), donate_argnames=("sums",))
def lambda_step(
    params,
    bases,
    sums,
    seed,
    row_batch: RowBatch,
    *,
    graphdef,
    layers,
    fisher,
    placement,
    chunk,
):
    """sums + this batch's Σ (Q_Sᵀ G Q_A)², Σ G² (sums per site, `zero_sums`); and int32 [2]
    (tokens, sequences)."""

    def local(specs, reduce, sums, params, bases, seed, rb: RowBatch):
        model = nnx.merge(graphdef, params)
        key = _sample_key(fisher, seed, rb.rows)
        _, io = capture(model, rb.batch, layers, sample_key=key, specs=specs[0])
        mask = rb.batch.mask

        def layer(path, layer_io, basis):  # one layer's eigenbasis and statistics at a time
            basis = gather_layer(basis, specs[1], path)
            return reduce(statistics.lambda_sums(layer_io, mask, basis, chunk))

        new = io.accumulate(layer, sums, {p: bases[p] for p in layers})
        return new, statistics.batch_counts(mask)

    step = _sharded_step(local, placement, 2, sums)
    return step(sums, params, bases, seed, row_batch)


def zero_sums(
    zero: Callable, model: nnx.Module, layers: Sequence[str], placement: Placement
) -> dict:
    """The zero running sums of a pass (`zero`: `zero_covariance` or `zero_lambdas`), kept per
    site and stacked as the steps accumulate them (`infljax.models.capture.by_site`), placed
    as `placement` says."""
    per_layer = zero(layer_shapes(model, layers), factor_dtype(model, layers))
    return placement.place(by_site(per_layer, sites(model, layers)), stacked=True)


def with_rows(batches: Iterable[Batch | RowBatch]) -> Iterator[RowBatch]:
    """RowBatches; a plain Batch's rows are its positions in the stream of sequences.

    With several processes every item is this process's rows of a global batch
    (`infljax.distributed.process_rows`) and must be a RowBatch, which names its corpus rows.
    """
    offset = 0
    for item in batches:
        if isinstance(item, Batch):
            if process_count() > 1:
                raise TypeError(
                    "with several processes, pass RowBatches (each process's rows of every "
                    "batch, with their corpus rows), not plain Batches"
                )
            item = RowBatch(np.arange(offset, offset + item.inputs.shape[0]), item)
        offset += item.rows.shape[0]
        yield RowBatch(np.asarray(item.rows, np.int32), item.batch)  # one dtype: one compile


def _run_pass(step: Callable, sums, batches, mesh: Mesh, progress) -> Statistics:
    counts = []
    for row_batch in with_rows(batches):
        sums, batch_counts = step(sums, global_batch(row_batch, mesh))
        counts.append(batch_counts)
        if progress is not None:
            progress(int(np.sum(np.asarray(row_batch.rows) >= 0)))
    total = np.sum(np.asarray(to_host(counts), np.int64).reshape(-1, 2), axis=0)
    return Statistics(by_layer(to_host(sums)), Counts(int(total[0]), int(total[1])))


def factor_dtype(model: nnx.Module, layers: Sequence[str]) -> jnp.dtype:
    """The dtype statistics and factors are kept in: the layers' dtype, at least float32."""
    return statistics.stats_dtype(layer_module(model, layers[0]).kernel[...].dtype)


def _split(model: nnx.Module, placement: Placement):
    graphdef, params = nnx.split(model)
    return graphdef, placement.place(params)


def covariance_pass(
    model: nnx.Module,
    layers: Sequence[str],
    batches: Iterable[Batch | RowBatch],
    args: FactorArgs,
    placement: Placement,
    progress: Callable[[int], None] | None = None,
) -> Statistics[CovarianceSums]:
    """Σ a aᵀ, Σ g gᵀ and the counts over `batches` (each batch size divisible by the mesh's
    data axis), the parameters and sums placed as `placement` says."""
    graphdef, params = _split(model, placement)
    static = dict(graphdef=graphdef, layers=tuple(layers), fisher=args.fisher, placement=placement)
    seed = jnp.asarray(args.seed, jnp.uint32)

    def step(sums, row_batch):
        return covariance_step(params, sums, seed, row_batch, **static)

    sums = zero_sums(zero_covariance, model, layers, placement)
    return _run_pass(step, sums, batches, placement.mesh, progress)


def lambda_pass(
    model: nnx.Module,
    layers: Sequence[str],
    bases: dict[str, Eigenbasis],
    batches: Iterable[Batch | RowBatch],
    args: FactorArgs,
    placement: Placement,
    progress: Callable[[int], None] | None = None,
) -> Statistics[LambdaSums]:
    """Σ (Q_Sᵀ G Q_A)², Σ G² over sequences and the counts, in the eigenbases `bases`."""
    graphdef, params = _split(model, placement)
    static = dict(graphdef=graphdef, layers=tuple(layers), fisher=args.fisher, placement=placement)
    static["chunk"] = args.chunk_for(placement.mesh)
    seed = jnp.asarray(args.seed, jnp.uint32)
    bases = placement.place({p: bases[p] for p in layers})

    def step(sums, row_batch):
        return lambda_step(params, bases, sums, seed, row_batch, **static)

    sums = zero_sums(zero_lambdas, model, layers, placement)
    return _run_pass(step, sums, batches, placement.mesh, progress)


def fit_factors(
    model: nnx.Module,
    layers: Sequence[str],
    batches: Iterable[Batch | RowBatch],
    args: FactorArgs,
    placement: Placement,
) -> Factors:
    """EK-FAC factors of `layers`: covariance pass, eigendecomposition, lambda pass.

    `batches` is read twice, so it must be re-iterable (a list, not a generator). Pure: no disk.
    Raises ValueError naming the layer when a parameter is non-finite.
    """
    if iter(batches) is batches:
        raise TypeError(
            "fit_factors reads the batches twice (covariance, then lambdas); pass a list or "
            "another re-iterable collection, not an iterator/generator"
        )
    check_finite_parameters(model)
    covariance = covariance_pass(model, layers, batches, args, placement)
    bases = eigendecompose(covariance)
    lambdas = lambda_pass(model, layers, bases, batches, args, placement)
    return build_factors(covariance, bases, lambdas)
