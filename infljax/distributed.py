"""Mesh construction and batch placement (DESIGN §7).

One mesh with axes ``("data", "model")``: batches are sharded over ``data``. A `Placement`
(the mesh and a policy, ``config.mesh.params``) says where the parameter-like trees of a step
live: replicated, or with ``"fsdp"`` (ZeRO-3 / FSDP style) each tensor split over ``data`` along
its largest divisible dimension and gathered inside the step where it is used
(`Placement.place`, `Placement.step`, `gather`): at rest a device holds 1/data of the model,
and a step gathers one block or layer at a time (the scans and loops of
`infljax.models.capture`). Statistics are reduced over ``data`` inside the steps
(`reduce_over_data`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from infljax.multihost import process_count

PLACEMENTS = ("replicated", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshArgs:
    """data: devices along the batch axis (-1 = all remaining); model: devices per model shard;
    params: how the factors and scores stages place the model's parameters (PLACEMENTS)."""

    data: int = -1
    model: int = 1
    params: str = "replicated"

    def __post_init__(self):
        if self.model < 1 or (self.data < 1 and self.data != -1):
            raise ValueError(f"mesh sizes must be positive (data may be -1), got {self}")
        if self.params not in PLACEMENTS:
            raise ValueError(f"mesh.params={self.params!r}; valid: {PLACEMENTS}")

    def data_size(self, num_devices: int) -> int:
        """Devices along ``data`` on a mesh over `num_devices`."""
        return num_devices // self.model if self.data == -1 else self.data


def make_mesh(args: MeshArgs = MeshArgs(), devices: list | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    data = args.data_size(len(devices))
    if data * args.model != len(devices):
        raise ValueError(
            f"mesh data={data} x model={args.model} needs {data * args.model} devices, "
            f"but {len(devices)} are available; set config.mesh.data / config.mesh.model"
        )
    return Mesh(np.asarray(devices).reshape(data, args.model), ("data", "model"))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree, mesh: Mesh):
    """Place every leaf of a host batch (the whole global batch, the same on every process) with
    its leading axis split over ``data``; each process transfers only its rows."""
    size = mesh.shape["data"]
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % size:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not divisible by the mesh's data axis ({size})"
            )
    if process_count() == 1:
        return jax.device_put(tree, data_sharding(mesh))
    rows = process_rows(jax.tree.leaves(tree)[0].shape[0], mesh)
    return global_batch(jax.tree.map(lambda x: np.asarray(x)[rows], tree), mesh)


def replicate(tree, mesh: Mesh):
    """Every leaf on every device of `mesh` (see `put`)."""
    return put(tree, replicated(mesh))


def param_spec(shape: tuple[int, ...], mesh: Mesh, policy: str) -> PartitionSpec:
    """A parameter's spec under `policy`: replicated, or (fsdp) split over ``data`` along
    `split_axis`."""
    if policy not in PLACEMENTS:
        raise ValueError(f"unknown parameter placement {policy!r}; valid: {PLACEMENTS}")
    spec: list[str | None] = [None] * len(shape)
    axis = split_axis(shape, mesh.shape["data"]) if policy == "fsdp" else None
    if axis is not None:
        spec[axis] = "data"
    return PartitionSpec(*spec)


def split_axis(shape: tuple[int, ...], size: int) -> int | None:
    """The dimension FSDP splits an array of `shape` along over `size` devices: its largest
    dimension divisible by `size`, the first of equals (None: kept whole, e.g. a scalar or an
    odd-sized bias, or when `size` is 1)."""
    if size == 1:
        return None
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % size == 0:
            return axis
    return None


# How `Placement.step` passes each argument into its shard_map.
PLACED = "placed"  # a tree placed with `Placement.place`: its pieces, gathered where used
STACKED = "stacked"  # placed with `place(..., stacked=True)` (per-site running sums)
DATA = "data"  # split over ``data`` along its leading axis (batches, their row ids)
WHOLE = "whole"  # replicated (seeds)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a step's parameter-like trees (parameters, eigenbases, factors, plans, running
    sums) live on `mesh`: ``"replicated"`` on every device, or ``"fsdp"``: each tensor split
    over ``data`` along its largest divisible dimension (`split_axis`) and gathered inside the
    step where it is used. Batches are always split over ``data``. Hashable: jitted steps take
    it as a static argument."""

    mesh: Mesh
    policy: str = "replicated"

    def __post_init__(self):
        if self.policy not in PLACEMENTS:
            raise ValueError(f"unknown parameter placement {self.policy!r}; valid: {PLACEMENTS}")

    @property
    def split(self) -> bool:
        """Whether trees are split over ``data`` at rest (fsdp)."""
        return self.policy == "fsdp"

    @property
    def data_size(self) -> int:
        """Devices along ``data``: every batch size is a multiple of it."""
        return self.mesh.shape["data"]

    def specs(self, tree, stacked: bool = False):
        """`param_spec` of every leaf (works on tracers too: only shapes are read). `stacked`:
        each leaf stacks one array per layer along its leading axis, which is never split (each
        layer is split as it would be alone)."""
        if stacked:
            return jax.tree.map(
                lambda x: PartitionSpec(
                    None, *param_spec(tuple(x.shape[1:]), self.mesh, self.policy)
                ),
                tree,
            )
        return jax.tree.map(lambda x: param_spec(tuple(x.shape), self.mesh, self.policy), tree)

    def place(self, tree, stacked: bool = False):
        """`tree` on the mesh as `specs` says."""
        specs = self.specs(tree, stacked)
        shardings = jax.tree.map(lambda s: NamedSharding(self.mesh, s), specs, is_leaf=_is_spec)
        return put(tree, shardings)

    def step(self, local: Callable, kinds: tuple[str, ...], out_specs) -> Callable:
        """`fn(*args)`: `local(specs, *pieces)` under `jax.shard_map` over the mesh.

        Each argument is passed as its kind says (PLACED, STACKED, DATA, WHOLE). `local` gets
        this device's pieces and `specs`, one entry per argument: the PartitionSpecs of a
        split PLACED or STACKED tree (hand them to `gather` where a piece is used), else None.
        """

        def run(*args):
            specs = tuple(self._arg_specs(kind, x) for kind, x in zip(kinds, args, strict=True))
            split = tuple(
                s if self.split and kind in (PLACED, STACKED) else None
                for kind, s in zip(kinds, specs, strict=True)
            )
            body = functools.partial(local, split)
            return jax.shard_map(body, mesh=self.mesh, in_specs=specs, out_specs=out_specs)(*args)

        return run

    def _arg_specs(self, kind: str, tree):
        if kind in (PLACED, STACKED):
            return self.specs(tree, stacked=kind == STACKED)
        if kind in (DATA, WHOLE):
            return PartitionSpec("data") if kind == DATA else PartitionSpec()
        raise ValueError(f"unknown argument kind {kind!r}; valid: {PLACED, STACKED, DATA, WHOLE}")


def make_placement(args: MeshArgs = MeshArgs(), devices: list | None = None) -> Placement:
    """The mesh of `args` over `devices` (default: all) and its parameter placement."""
    return Placement(make_mesh(args, devices), args.params)


def gather(tree, specs):
    """Inside `jax.shard_map`: the full tree from its local pieces (all-gather over ``data`` of
    every split leaf; replicated leaves pass through). `specs` None: `tree` is whole already."""
    if specs is None:
        return tree

    def full(x, spec):
        for axis, name in enumerate(spec):
            if name is not None:
                return jax.lax.all_gather(x, name, axis=axis, tiled=True)
        return x

    return jax.tree.map(full, tree, specs, is_leaf=_is_spec)


def gather_layer(piece, specs: dict | None, path: str):
    """`gather` of layer `path`'s piece of a per-layer tree ({path: ...}: factors, eigenbases,
    a plan) whose specs are `specs` (None: the tree is whole)."""
    return piece if specs is None else gather(piece, specs[path])


def reduce_over_data(tree, specs):
    """Inside `jax.shard_map`: sum every leaf over ``data``; a leaf whose spec splits it keeps
    only this device's slice of the sum (reduce-scatter), the others the whole sum (all-reduce)."""

    def reduce(x, spec):
        for axis, name in enumerate(spec):
            if name is not None:
                return jax.lax.psum_scatter(x, name, scatter_dimension=axis, tiled=True)
        return jax.lax.psum(x, "data")

    return jax.tree.map(reduce, tree, specs, is_leaf=_is_spec)


def on_mesh(tree, mesh: Mesh):
    """`tree` with every leaf already placed on `mesh` kept as it is, the others replicated."""

    def keep_or_replicate(x):
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return x
        return put(x, replicated(mesh))

    return jax.tree.map(keep_or_replicate, tree)


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


# ----------------------------------------------------------------------------- several processes
# Each process reads only its rows of every batch (`process_rows`) and `global_batch` joins them;
# results come back to every process with `to_host`. With one process all of this reduces to
# `jax.device_put` / `jax.device_get`.


def round_up(n: int, multiple: int) -> int:
    """The least multiple of `multiple` >= `n` (a batch padded to split evenly over devices)."""
    return -(-n // multiple) * multiple


def process_rows(batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch of `batch_size` that this process holds under the ``data``
    split of `mesh`: a contiguous block, in the device order of the mesh (all rows with one
    process). Callers read only these rows and pass them to `global_batch`."""
    if process_count() == 1:
        return slice(0, batch_size)
    indices = data_sharding(mesh).addressable_devices_indices_map((batch_size,)).values()
    blocks = sorted({index[0].indices(batch_size)[:2] for index in indices})
    start, stop = blocks[0][0], blocks[-1][1]
    if sum(b - a for a, b in blocks) != stop - start:
        raise ValueError(
            f"this process's devices hold rows {blocks} of each batch, not one block; build the "
            "mesh with each process's devices next to each other along 'data'"
        )
    return slice(start, stop)


def global_batch(tree, mesh: Mesh):
    """One global batch, split over ``data``, from this process's rows of it (`process_rows`;
    every leaf's leading axis). With one process: `shard_batch`."""
    if process_count() == 1:
        return shard_batch(tree, mesh)
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def to_host(tree):
    """Numpy values of a tree of arrays, the same on every process: an array split over devices
    of several processes is all-gathered, so every process must call this at the same point."""

    def fetch(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)


def put(tree, sharding: Sharding | object):
    """`jax.device_put(tree, sharding)` (one sharding, or a tree of them) that also works when
    the sharding spans several processes.

    Then every process must hold the same host values: each places its own devices' pieces
    (no data crosses between processes), after checking a digest of the values against the
    other processes' (a mismatch raises instead of computing with different inputs).
    Leaves already placed as asked are kept; arrays already spread over several processes'
    devices (e.g. FSDP-split) are resharded on the devices (every process must call this).
    """
    if process_count() == 1:
        return jax.device_put(tree, sharding)
    leaves, treedef = jax.tree.flatten(tree)
    shardings = (
        [sharding] * len(leaves)
        if isinstance(sharding, Sharding)
        else treedef.flatten_up_to(sharding)
    )
    todo = [
        i
        for i, (x, s) in enumerate(zip(leaves, shardings, strict=True))
        if not (isinstance(x, jax.Array) and x.sharding == s)
    ]
    spread = [i for i in todo if _spread(leaves[i])]
    for i in spread:
        leaves[i] = jax.jit(lambda x: x, out_shardings=shardings[i])(leaves[i])
    host = {i: _host_value(leaves[i]) for i in todo if i not in spread}
    if host:
        _check_same_on_all_processes(list(host.values()))
        for i, value in host.items():
            leaves[i] = _from_host(value, shardings[i])
    return treedef.unflatten(leaves)


def _spread(x) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def _from_host(value: np.ndarray, sharding: Sharding) -> jax.Array:
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _host_value(x) -> np.ndarray:
    value = np.asarray(jax.device_get(x))
    return value.astype(jax.dtypes.canonicalize_dtype(value.dtype), copy=False)


def _check_same_on_all_processes(values: list[np.ndarray]) -> None:
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        digest.update(str((value.shape, value.dtype)).encode())
        digest.update(fingerprint(value).tobytes())
    multihost_utils.assert_equal(
        np.frombuffer(digest.digest(), np.uint8),
        "values to be replicated differ between processes (each process must compute the same "
        "parameters, eigenbases and query gradients; are the hosts' software or inputs equal?)",
    )


FINGERPRINT_CHUNKS = 64


def fingerprint(value: np.ndarray) -> np.ndarray:
    """[2, FINGERPRINT_CHUNKS + 1] uint64: the wrapping sum and the xor of the value's bytes,
    read as 64-bit words, in each of FINGERPRINT_CHUNKS contiguous chunks (and the last, partial
    word). One pass at memory speed (a cryptographic hash of a 7B float32 model takes minutes);
    any change of one word changes its chunk's sum, and moving values between chunks (a
    transpose) changes the chunks."""
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    whole = raw.size // 8 * 8
    tail = np.zeros(8, np.uint8)
    tail[: raw.size - whole] = raw[whole:]
    chunks = [
        *np.array_split(raw[:whole].view(np.uint64), FINGERPRINT_CHUNKS),
        tail.view(np.uint64),
    ]
    sums = [np.add.reduce(c, dtype=np.uint64) if c.size else 0 for c in chunks]
    xors = [np.bitwise_xor.reduce(c) if c.size else 0 for c in chunks]
    return np.array([sums, xors], np.uint64)
