"""Stage bookkeeping and orbax wrappers: the only module that decides skip / refuse / resume.

Every stage directory holds ``args.json`` = {"args": ..., "inputs": ..., "complete": bool,
"run": id} (DESIGN §1):
* outputs complete, arguments and inputs equal -> the stage is skipped;
* arguments differ                             -> refused with the differing keys, unless
                                                  overwrite (or nothing was written yet);
* inputs changed (`fingerprint`)               -> recomputed;
* arguments and inputs equal, not complete     -> resumed from its own partial outputs;
* overwrite                                    -> recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from infljax.multihost import on_main, process_count
from infljax.workdir import ARGS_FILE, StageRecord


class StageConflict(RuntimeError):
    """A stage directory holds outputs written with different arguments."""


class NonFiniteError(ValueError):
    """An array a stage wrote or read holds NaN or inf."""


def check_finite(what: str, tree: Any) -> None:
    """Raise NonFiniteError naming `what` and every leaf of `tree` (arrays) holding NaN/inf."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    finite = jax.device_get(
        [
            jnp.isfinite(x).all() if isinstance(x, jax.Array) else np.isfinite(x).all()
            for _, x in leaves
        ]
    )
    bad = [
        jax.tree_util.keystr(p, simple=True, separator=".")
        for (p, _), ok in zip(leaves, finite, strict=True)
        if not ok
    ]
    if bad:
        parts = f" ({', '.join(b or 'the array' for b in bad[:8])}{' ...' if len(bad) > 8 else ''})"
        raise NonFiniteError(f"non-finite values (NaN/inf) in {what}{parts}")


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


def begin_stage(
    directory: str | Path,
    args: dict,
    *,
    inputs: dict[str, str | Path] | None = None,
    overwrite: bool = False,
    resumes: bool = True,
    upgrade: Callable[[dict], dict] | None = None,
) -> bool:
    """Prepare `directory` for a stage run with `args`. Returns True when it is already complete.

    `inputs`: what the stage reads ({name: path}), recorded by `fingerprint`, so that an input
    changed in place (a corpus fixed, a checkpoint replaced, an upstream stage recomputed)
    makes the stage recompute instead of returning stale results.

    Raises StageConflict naming the differing arguments when the directory holds outputs
    written with other arguments and `overwrite` is False. An incomplete directory with
    nothing to resume from (no outputs beside its record, e.g. a run refused for an invalid
    value, or any output of a stage that never `resumes` from partial outputs) is simply
    taken over. With
    `overwrite` the stage always recomputes (its old outputs are removed). With several
    processes, process 0 decides and writes; every process gets its answer.

    `upgrade`: turns a record's arguments written by an older layout into today's (it returns
    today's as they are); a directory whose upgraded arguments match is kept, its record
    rewritten in today's layout.
    """
    args, inputs = _normalise(args), dict(inputs or {})
    return on_main(_begin_stage, Path(directory), args, inputs, overwrite, resumes, upgrade)


def _begin_stage(
    directory: Path, args: dict, inputs: dict, overwrite: bool, resumes: bool, upgrade
) -> bool:
    record = directory / ARGS_FILE
    found = _normalise({name: fingerprint(path) for name, path in sorted(inputs.items())})
    if record.exists():
        saved = json.loads(record.read_text())
        if upgrade is not None and (new := _normalise(upgrade(saved["args"]))) != saved["args"]:
            saved["args"] = new
            _write_record(directory, saved)
        changes = diff_args(saved["args"], args)
        kept = _has_outputs(directory) and (resumes or saved.get("complete"))
        if changes and not overwrite and kept:
            raise StageConflict(
                f"{directory} was written with different arguments:\n  "
                + "\n  ".join(changes)
                + "\nUse another --workdir, or pass --config.overwrite=True to recompute (with "
                "--stages=<stage> to recompute only this stage; the stages after it follow)."
            )
        before = saved.get("inputs", found)  # records older than inputs: trusted
        changed = sorted(k for k in found.keys() | before.keys() if found.get(k) != before.get(k))
        if not changes and not changed and not overwrite and (resumes or saved.get("complete")):
            return bool(saved.get("complete"))
        if changed and not changes and kept:
            logging.warning("%s: input(s) %s changed since it ran; recomputing", directory, changed)
        shutil.rmtree(directory)
    elif directory.exists() and any(directory.iterdir()) and not overwrite:
        raise StageConflict(
            f"{directory} is not empty but has no {ARGS_FILE}; it was not written by infljax. "
            "Use another --workdir, or pass --config.overwrite=True to replace it."
        )
    elif directory.exists() and overwrite:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_record(directory, {"args": args, "inputs": found, "complete": False})
    return False


def _has_outputs(directory: Path) -> bool:
    return any(p.name != ARGS_FILE for p in directory.iterdir())


def fingerprint(path: str | Path) -> dict | None:
    """What a stage record keeps of an input: a stage directory (or a file directly in one) by
    the run that completed it (so a recomputed upstream stage is seen, and a moved workdir is
    not); any other file or directory by the names, sizes and modification times of its
    files; None when it does not exist."""
    path = Path(path)
    for stage_dir in (path, path.parent):
        record = StageRecord.read(stage_dir)
        if record is not None:
            return {"run": record.run}
    if path.is_file():
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_dir():
        digest, count = hashlib.sha256(), 0
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(
                f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
            count += 1
        return {"files": count, "sha256": digest.hexdigest()}
    return None


def finish_stage(directory: str | Path) -> None:
    """Mark the stage in `directory` complete, with a new run id (`fingerprint`) that the
    stages reading it record (process 0 writes; every process waits for it)."""
    on_main(_finish_stage, Path(directory))


def _finish_stage(directory: Path) -> None:
    saved = json.loads((directory / ARGS_FILE).read_text())
    _write_record(directory, saved | {"complete": True, "run": uuid.uuid4().hex})


def is_complete(directory: str | Path) -> bool:
    """Whether the stage in `directory` finished (read by process 0, told to every process)."""
    return on_main(_is_complete, Path(directory))


def _is_complete(directory: Path) -> bool:
    record = StageRecord.read(directory)
    return record is not None and record.complete


def _write_record(directory: Path, record: dict) -> None:
    tmp = directory / (ARGS_FILE + ".tmp")
    tmp.write_text(json.dumps(_normalise(record), indent=2))
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
