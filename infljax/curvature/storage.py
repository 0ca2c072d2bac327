"""Factors and partial statistics on disk: orbax arrays plus a small JSON description.

``<dir>/arrays/`` holds the arrays (orbax), ``<dir>/factors.json`` the layer shapes, dtype and
counts; it is written last, so its presence means the arrays are complete. Partial statistics of
a partition (``<dir>/<kind>_<index>/`` + ``.json``) use the same scheme, with exact integer
counts in the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from infljax.checkpoints import restore_pytree, save_pytree
from infljax.curvature.state import (
    Counts,
    CovarianceSums,
    Factors,
    LambdaSums,
    LayerFactors,
    Statistics,
)
from infljax.multihost import on_main

ARRAYS_DIR = "arrays"
FACTORS_FILE = "factors.json"
FORMAT_VERSION = 1


def save_factors(directory: str | Path, factors: Factors) -> None:
    """Write `factors` to `directory` (created if needed). With several processes every process
    calls it with the same factors; process 0 writes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    on_main((directory / FACTORS_FILE).unlink, missing_ok=True)
    save_pytree(directory / ARRAYS_DIR, factors)
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": str(next(iter(factors.values())).lambdas.dtype) if factors else "float32",
        "layers": {path: list(f.shape) for path, f in factors.items()},
    }
    on_main((directory / FACTORS_FILE).write_text, json.dumps(meta, indent=2))


def load_factors(directory: str | Path) -> Factors:
    """Read factors written by `save_factors`.

    Raises FileNotFoundError when `directory` holds no complete factors.
    """
    directory = Path(directory)
    meta_path = directory / FACTORS_FILE
    if not meta_path.exists():
        raise FileNotFoundError(
            f"no fitted factors in {directory} (missing {FACTORS_FILE}); run the factors stage "
            "(experiments/fit_factors.py) first"
        )
    meta = json.loads(meta_path.read_text())
    like = {
        path: _factors_like(d_out, d_in, meta["dtype"])
        for path, (d_out, d_in) in meta["layers"].items()
    }
    return restore_pytree(directory / ARRAYS_DIR, like)


def _factors_like(d_out: int, d_in: int, dtype: str) -> LayerFactors:
    s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    return LayerFactors(
        a_eigvecs=s(d_in, d_in),
        a_eigvals=s(d_in),
        s_eigvecs=s(d_out, d_out),
        s_eigvals=s(d_out),
        lambdas=s(d_out, d_in),
        diagonal=s(d_out, d_in),
        tokens_per_sequence=s(),
    )


def save_statistics(path: str | Path, stats: Statistics) -> None:
    """Write one partition's statistics to `path` (orbax) and `path`.json (counts; last).
    With several processes every process calls it with the same statistics; process 0 writes."""
    path = Path(path)
    marker = path.with_suffix(".json")
    on_main(marker.unlink, missing_ok=True)
    save_pytree(path, stats.sums)
    counts = {"tokens": stats.counts.tokens, "sequences": stats.counts.sequences}
    on_main(marker.write_text, json.dumps(counts))


def statistics_exist(path: str | Path) -> bool:
    return Path(path).with_suffix(".json").exists()


def load_statistics(path: str | Path, like: dict[str, CovarianceSums | LambdaSums]) -> Statistics:
    """Read statistics written by `save_statistics`; `like` fixes layers, shapes and dtypes."""
    path = Path(path)
    counts = json.loads(path.with_suffix(".json").read_text())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
    sums = jax.device_get(restore_pytree(path, abstract))
    return Statistics(sums, Counts(int(counts["tokens"]), int(counts["sequences"])))
