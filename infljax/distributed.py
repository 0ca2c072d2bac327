"""Mesh construction and batch placement (DESIGN §7).

One mesh with axes ``("data", "model")``: batches are sharded over ``data``, parameters are
replicated (FSDP-style sharding over ``model`` comes with large checkpoints). Statistics are
reduced with `jax.shard_map` + `psum` over ``data`` by the stages that accumulate them.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class MeshArgs:
    """data: devices along the batch axis (-1 = all remaining); model: devices per model shard."""

    data: int = -1
    model: int = 1

    def __post_init__(self):
        if self.model < 1 or (self.data < 1 and self.data != -1):
            raise ValueError(f"mesh sizes must be positive (data may be -1), got {self}")


def make_mesh(args: MeshArgs = MeshArgs(), devices: list | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    data = len(devices) // args.model if args.data == -1 else args.data
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
    """Place every leaf of a host batch with its leading axis split over ``data``."""
    size = mesh.shape["data"]
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % size:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not divisible by the mesh's data axis ({size})"
            )
    return jax.device_put(tree, data_sharding(mesh))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
