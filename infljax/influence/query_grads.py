"""Query gradients: per tracked layer, ∇ of each query's measurement, preconditioned, compressed.

Per query q and layer, `G_q = Σ_t g_t a_tᵀ` ([d_out, d_in(+1)], from one capture), then the
preconditioned gradient `P_q = IHVP(G_q)` with the chosen strategy (DESIGN §2). `P_q` is kept
either dense (`DenseQueries`) or as a rank-r factorisation `P_q ≈ L_q R_qᵀ` (`LowRankQueries`,
L = U·diag(s), R = V from an exact or randomized SVD), so that all queries fit beside a batch of
documents in one pass over the corpus.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from infljax.config import free
from infljax.curvature import DampingArgs, Factors, precondition
from infljax.distributed import (
    DATA,
    PLACED,
    Placement,
    gather_layer,
    on_mesh,
    replicated,
    round_up,
    shard_batch,
    to_host,
)
from infljax.influence.measurement import QueryTokens, completion_batch
from infljax.models.capture import capture, layer_groups
from infljax.models.losses import Batch
from infljax.multihost import process_count

SVD_METHODS = ("exact", "randomized")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DenseQueries:
    """grads: [Q, d_out, d_in] preconditioned query gradients of one layer."""

    grads: jax.Array

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Q, d_out, d_in)."""
        return tuple(self.grads.shape)

    def dense(self) -> jax.Array:
        return self.grads


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LowRankQueries:
    """P_q ≈ left[q] @ right[q]ᵀ. left: [Q, d_out, r] (singular values folded in);
    right: [Q, d_in, r] (orthonormal columns)."""

    left: jax.Array
    right: jax.Array

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Q, d_out, d_in) of the matrices they represent."""
        return (self.left.shape[0], self.left.shape[1], self.right.shape[1])

    @property
    def rank(self) -> int:
        return self.left.shape[-1]

    def dense(self) -> jax.Array:
        """[Q, d_out, d_in]."""
        return jnp.einsum("qok,qik->qoi", self.left, self.right)


LayerQueries = DenseQueries | LowRankQueries


@dataclasses.dataclass(frozen=True)
class QueryArgs:
    """How preconditioned query gradients are computed and stored.

    Attributes:
      rank: r of the per-layer factorisation; 0 keeps them dense. A rank at or above
        min(d_out, d_in) is exact (the layer is then factorised at full rank).
      svd: "exact" (batched SVD) or "randomized" (Halko et al. 2011 range finder).
      oversample, power_iterations: randomized SVD only.
      batch_size: queries per capture call (padded with empty rows to a fixed shape).
      seed: randomized SVD only.
      layer_groups: the tracked layers are prepared in this many contiguous groups, one
        capture of the queries per group, with only that group's factors on the devices
        (`prepare_queries`). Results do not depend on it.
    """

    rank: int = 32
    svd: str = "exact"
    oversample: int = 8
    power_iterations: int = 2
    batch_size: int = free(16)
    seed: int = 0
    layer_groups: int = free(1)

    def __post_init__(self):
        if self.svd not in SVD_METHODS:
            raise ValueError(f"QueryArgs.svd={self.svd!r}; valid: {SVD_METHODS}")
        for name in ("rank", "oversample", "power_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"QueryArgs.{name} must be >= 0, got {getattr(self, name)}")
        if min(self.batch_size, self.layer_groups) < 1:
            raise ValueError(f"QueryArgs.batch_size and layer_groups must be >= 1: {self}")


@functools.lru_cache(maxsize=32)
def make_query_grads_fn(
    graphdef: nnx.GraphDef, layers: tuple[str, ...]
) -> Callable[[nnx.State, Batch], dict[str, jax.Array]]:
    """A jitted `(state, batch) -> {layer: [B, d_out, d_in]}` of per-sequence gradients."""

    def grads(state, batch):
        _, io = capture(nnx.merge(graphdef, state), batch, layers)
        return io.map(lambda _, x, __: jnp.einsum("bto,bti->boi", x.g, x.a))

    return jax.jit(grads)


def query_gradients(
    grads_fn: Callable,
    state: nnx.State,
    queries: QueryTokens,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, np.ndarray]:
    """{layer: [Q, d_out, d_in]} raw gradients of each query's measurement (host arrays).

    Queries go through in chunks of `batch_size` rows (padded with empty rows, which have zero
    gradient), sharded over the mesh's ``data`` axis.
    """
    size = round_up(batch_size, mesh.shape["data"])
    chunks = []
    for start in range(0, queries.num_queries, size):
        rows = np.arange(start, min(start + size, queries.num_queries))
        batch = _padded(queries, rows, size)
        out = to_host(grads_fn(state, shard_batch(batch, mesh)))
        chunks.append({p: g[: len(rows)] for p, g in out.items()})
    return {p: np.concatenate([c[p] for c in chunks]) for p in chunks[0]}


def _padded(queries: QueryTokens, rows: np.ndarray, size: int) -> Batch:
    extra = size - len(rows)
    pad = lambda x: np.concatenate([x[rows], np.zeros((extra, *x.shape[1:]), x.dtype)])  # noqa: E731
    return completion_batch(pad(queries.tokens), pad(queries.prompt_lengths), pad(queries.lengths))


def precondition_queries(
    grads: dict[str, np.ndarray],
    strategy: str,
    factors: Factors | None = None,
    damping: DampingArgs | None = None,
) -> dict[str, jax.Array]:
    """{layer: IHVP(G_q)}: each layer's gradients [Q, d_out, d_in] times the strategy's damped
    inverse curvature (`infljax.curvature.precondition`; identity needs no factors)."""
    damping = DampingArgs() if damping is None else damping
    return {
        p: precondition(strategy, None if factors is None else factors[p], jnp.asarray(g), damping)
        for p, g in grads.items()
    }


def compress(
    grads: dict[str, jax.Array], args: QueryArgs, offset: int = 0
) -> dict[str, LayerQueries]:
    """Dense (rank 0) or rank-r factors of each layer's preconditioned query gradients.

    `offset`: the index of the first query (it seeds each query's randomized sketch,
    `query_keys`).
    """
    if args.rank == 0:
        return {p: DenseQueries(jnp.asarray(g)) for p, g in grads.items()}
    out = {}
    for path, g in grads.items():
        rows = offset + jnp.arange(g.shape[0])
        keys = query_keys(args.seed, layer_key(path), rows)
        out[path] = factorise(jnp.asarray(g), args, keys)
    return out


def layer_key(path: str) -> jax.Array:
    """The layer's number in `query_keys`: crc32 of its path, as an int32 scalar."""
    return jnp.asarray(zlib.crc32(path.encode()) & 0x7FFFFFFF, jnp.int32)


def query_keys(seed: int, layer: jax.Array, rows: jax.Array) -> jax.Array:
    """Keys [Q] of the randomized SVD: query `row` of the layer whose `layer_key` is `layer`
    uses fold_in(fold_in(key(seed), layer), row), whatever chunk, device or group of layers
    computes it."""
    base = jax.random.fold_in(jax.random.key(seed), layer)
    return jax.vmap(lambda row: jax.random.fold_in(base, row))(jnp.maximum(rows, 0))


def factorise(grads: jax.Array, args: QueryArgs, keys: jax.Array) -> LowRankQueries:
    """grads [Q, d_out, d_in] -> rank-min(r, d_out, d_in) factors (exact SVD, or randomized
    with one key per query, `query_keys`)."""
    rank = min(args.rank, *grads.shape[1:])
    if args.svd == "exact" or rank == min(grads.shape[1:]):
        u, s, vt = jnp.linalg.svd(grads, full_matrices=False)
    else:
        sketch = functools.partial(
            _randomized_svd, width=rank + args.oversample, power_iterations=args.power_iterations
        )
        u, s, vt = jax.vmap(sketch)(grads, keys)
    left = u[..., :rank] * s[:, None, :rank]
    return LowRankQueries(left=left, right=jnp.swapaxes(vt[:, :rank, :], 1, 2))


def _randomized_svd(m: jax.Array, key: jax.Array, width: int, power_iterations: int):
    """Randomized SVD of one m [d_out, d_in] with a sketch of `width` columns."""
    width = min(width, *m.shape)
    omega = jax.random.normal(key, (m.shape[1], width), m.dtype)
    basis, _ = jnp.linalg.qr(m @ omega)
    for _ in range(power_iterations):  # sharpen the spectrum; QR keeps it well conditioned
        basis, _ = jnp.linalg.qr(m @ jnp.linalg.qr(m.T @ basis)[0])
    u_small, s, vt = jnp.linalg.svd(basis.T @ m, full_matrices=False)
    return basis @ u_small, s, vt


@functools.lru_cache(maxsize=32)
def make_query_plan_fn(
    graphdef: nnx.GraphDef,
    layers: tuple[str, ...],
    placement: Placement,
    strategy: str,
    damping: DampingArgs,
    args: QueryArgs,
    factorise_here: bool = True,
) -> Callable:
    """A jitted `(state, batch, rows, factors) -> {layer: LayerQueries}` of every row of the
    batch: capture, then per layer the per-sequence gradient, its preconditioning and its
    factorisation (dense when `args.rank` is 0), all in one step and one layer at a time
    (`infljax.models.capture.Captured.map`), so only one layer's dense gradients exist at once.

    The batch and `rows` (each row's query index, seeding its randomized sketch) are split over
    ``data``: each device prepares its own queries. The state and the factors are placed as
    `placement` says, gathered a block (`capture`) or a layer at a time. Without
    `factorise_here` the step returns the dense preconditioned gradients (`prepare_queries`
    factorises them on the host where the devices should not).
    """

    def local(specs, state, batch, rows, factors):
        state_specs, _, _, factor_specs = specs
        _, io = capture(nnx.merge(graphdef, state), batch, layers, specs=state_specs)

        def layer(path, layer_io, inputs):  # one layer's gradients at a time
            layer_factors, layer_id = inputs
            layer_factors = gather_layer(layer_factors, factor_specs, path)  # None: no factors
            grads = jnp.einsum("bto,bti->boi", layer_io.g, layer_io.a)
            pre = precondition(strategy, layer_factors, grads, damping)
            if args.rank == 0 or not factorise_here:
                return DenseQueries(pre)
            return factorise(pre, args, query_keys(args.seed, layer_id, rows))

        factors = dict.fromkeys(layers) if factors is None else factors
        return io.map(layer, {p: (factors[p], layer_key(p)) for p in layers})

    step = placement.step(local, (PLACED, DATA, DATA, PLACED), out_specs=P("data"))
    # Every device ends with all the results (gathered inside this program; a separate
    # cross-process gather per output would be one more collective launch per leaf).
    return jax.jit(step, out_shardings=replicated(placement.mesh))


def prepare_queries(
    graphdef: nnx.GraphDef,
    layers: Sequence[str],
    state: nnx.State,
    queries: QueryTokens,
    args: QueryArgs,
    placement: Placement,
    strategy: str,
    factors: Factors | None = None,
    damping: DampingArgs | None = None,
) -> dict[str, LayerQueries]:
    """Preconditioned, compressed query gradients (host arrays), `args.batch_size` queries at a
    time (rounded up to a multiple of the data axis) through `make_query_plan_fn`: the dense
    [Q, d_out, d_in] gradients of every layer never exist at once (unless rank 0). The layers
    go in `args.layer_groups` groups; each group's factors are placed as `placement` says only
    while its queries are prepared (factors already placed stay as they are).

    Equals `compress(precondition_queries(query_gradients(...)), args)`. A state already on
    the mesh (`infljax.distributed.Placement.place`) stays as it is; otherwise it is replicated.
    """
    damping = DampingArgs() if damping is None else damping
    mesh = placement.mesh
    state = on_mesh(state, mesh)
    here = _factorise_on_devices(mesh)
    out = {}
    for group in layer_groups(list(layers), args.layer_groups):
        plan_fn = make_query_plan_fn(graphdef, group, placement, strategy, damping, args, here)
        placed = None if factors is None else placement.place({p: factors[p] for p in group})
        out.update(_prepare_group(plan_fn, state, queries, placed, mesh, args, here))
    return out


def _factorise_on_devices(mesh: jax.sharding.Mesh) -> bool:
    """Whether the SVDs run inside the query step. Not on CPU devices of several processes:
    there, LAPACK calls inside a program with cross-process (gloo) collectives hung 2 runs in
    10 (never in 12 with the SVD on the host); the cause is not known (docs/scaling.md,
    "Multi-host runs", Failures)."""
    return not (process_count() > 1 and mesh.devices.flat[0].platform == "cpu")


def _prepare_group(plan_fn, state, queries: QueryTokens, factors, mesh, args, here: bool):
    size = round_up(args.batch_size, mesh.shape["data"])
    parts = []
    for start in range(0, queries.num_queries, size):
        rows = np.arange(start, min(start + size, queries.num_queries))
        ids = np.concatenate([rows, np.full(size - len(rows), -1)]).astype(np.int32)
        batch = shard_batch((_padded(queries, rows, size), ids), mesh)
        out = _first_rows(to_host(plan_fn(state, *batch, factors)), len(rows))
        if args.rank and not here:
            out = jax.device_get(compress({p: q.grads for p, q in out.items()}, args, start))
        parts.append(out)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _first_rows(tree, n: int):
    return jax.tree.map(lambda x: x[:n], tree)


def save_queries(path: str | Path, queries: dict[str, LayerQueries]) -> None:
    """Write per-layer query gradients to one ``.npz`` (atomically: tmp file, then rename)."""
    arrays = {}
    for layer, q in queries.items():
        fields = {"grads": q.grads} if isinstance(q, DenseQueries) else {
            "left": q.left, "right": q.right}  # fmt: skip
        arrays.update({f"{layer}::{k}": np.asarray(v) for k, v in fields.items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_queries(path: str | Path) -> dict[str, LayerQueries]:
    """Read what `save_queries` wrote (layer order preserved)."""
    with np.load(path) as data:
        fields: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            layer, name = key.rsplit("::", 1)
            fields.setdefault(layer, {})[name] = data[key]
    return {
        layer: DenseQueries(jnp.asarray(f["grads"]))
        if "grads" in f
        else LowRankQueries(jnp.asarray(f["left"]), jnp.asarray(f["right"]))
        for layer, f in fields.items()
    }
