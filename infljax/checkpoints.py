"""Stage bookkeeping and orbax wrappers: the only module that decides skip / refuse / resume.

Every stage directory holds ``args.json`` = {"args": ..., "complete": bool} (DESIGN §1):
* outputs complete and arguments equal  -> the stage is skipped;
* arguments differ                      -> refused with the differing keys, unless overwrite;
* arguments equal but not complete      -> the stage resumes from its own partial outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from infljax.multihost import on_main, process_count

ARGS_FILE = "args.json"


class StageConflict(RuntimeError):
    """A stage directory holds outputs written with different arguments."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _normalise(args: dict) -> dict:
    return json.loads(json.dumps(args, sort_keys=True, default=str))


def diff_args(old: dict, new: dict) -> list[str]:
    """Human-readable lines ``key: old -> new`` for every differing (flattened) key."""
    a, b = _flatten(_normalise(old)), _flatten(_normalise(new))
    keys = sorted(set(a) | set(b))
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in keys
        if a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


def begin_stage(directory: str | Path, args: dict, *, overwrite: bool = False) -> bool:
    """Prepare `directory` for a stage run with `args`. Returns True when it is already complete.

    Raises StageConflict naming the differing arguments when the directory was written with
    other arguments and `overwrite` is False; with `overwrite` the old outputs are removed.
    With several processes, process 0 decides and writes; every process gets its answer.
    """
    return on_main(_begin_stage, Path(directory), _normalise(args), overwrite)


def _begin_stage(directory: Path, args: dict, overwrite: bool) -> bool:
    record = directory / ARGS_FILE
    if record.exists():
        saved = json.loads(record.read_text())
        changes = diff_args(saved["args"], args)
        if not changes:
            return bool(saved.get("complete"))
        if not overwrite:
            raise StageConflict(
                f"{directory} was written with different arguments:\n  "
                + "\n  ".join(changes)
                + "\nUse another --workdir, or pass --config.overwrite=True to replace it."
            )
        shutil.rmtree(directory)
    elif directory.exists() and any(directory.iterdir()) and not overwrite:
        raise StageConflict(
            f"{directory} is not empty but has no {ARGS_FILE}; it was not written by infljax. "
            "Use another --workdir, or pass --config.overwrite=True to replace it."
        )
    directory.mkdir(parents=True, exist_ok=True)
    _write_record(directory, args, complete=False)
    return False


def finish_stage(directory: str | Path) -> None:
    """Mark the stage in `directory` complete (process 0 writes; every process waits for it)."""
    on_main(_finish_stage, Path(directory))


def _finish_stage(directory: Path) -> None:
    saved = json.loads((directory / ARGS_FILE).read_text())
    _write_record(directory, saved["args"], complete=True)


def is_complete(directory: str | Path) -> bool:
    """Whether the stage in `directory` finished (read by process 0, told to every process)."""
    return on_main(_is_complete, Path(directory))


def _is_complete(directory: Path) -> bool:
    record = directory / ARGS_FILE
    return record.exists() and bool(json.loads(record.read_text()).get("complete"))


def _write_record(directory: Path, args: dict, complete: bool) -> None:
    tmp = directory / (ARGS_FILE + ".tmp")
    tmp.write_text(json.dumps({"args": _normalise(args), "complete": complete}, indent=2))
    tmp.replace(directory / ARGS_FILE)


def _checkpointer() -> ocp.StandardCheckpointer:
    """Every process takes part (orbax writes host arrays from process 0 only), except inside
    `infljax.multihost.on_main`, where process 0 reads and writes alone."""
    if process_count() == 1 and jax.process_count() > 1:
        alone = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
        return ocp.StandardCheckpointer(multiprocessing_options=alone)
    return ocp.StandardCheckpointer()


def save_pytree(path: str | Path, tree: Any) -> None:
    """Write a pytree of arrays with orbax (blocking). Overwrites `path`. With several
    processes, every process calls it with the same values (see `_checkpointer`)."""
    path = Path(path).absolute()
    if jax.process_count() > 1:  # orbax takes arrays of one process's devices as host arrays
        tree = jax.tree.map(_host_if_local, tree)
    with _checkpointer() as ckptr:
        ckptr.save(path, tree, force=True)


def _host_if_local(x: Any) -> Any:
    """A value this process holds whole (its own devices' array, or one replicated over the
    processes) goes to orbax as a host array: written by process 0 without the run's device
    topology, so any other run can read it."""
    if isinstance(x, jax.Array) and (x.is_fully_addressable or x.is_fully_replicated):
        return np.asarray(x.addressable_data(0))
    return x


def restore_pytree(path: str | Path, like: Any | None = None) -> Any:
    """Read a pytree written by `save_pytree`; `like` (arrays or ShapeDtypeStructs) fixes
    structure, dtypes and shardings."""
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with _checkpointer() as ckptr:
        if like is None:
            return ckptr.restore(path)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        if jax.process_count() > 1:
            abstract = jax.tree.map(_whole_on_this_process, abstract)
        return ckptr.restore(path, abstract)


def _whole_on_this_process(leaf: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    """With several processes, a leaf without a sharding is restored whole onto this process's
    first device: the sharding stored in the checkpoint names the devices of the run that wrote
    it, which another run's processes do not have."""
    if getattr(leaf, "sharding", None) is not None:
        return leaf
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
