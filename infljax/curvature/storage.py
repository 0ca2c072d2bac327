"""Factors and partial statistics on disk: orbax arrays plus small JSON descriptions.

``<dir>/layers/<layer path>/`` holds one layer's factors (orbax) and ``<layer path>.json`` its
shape, dtype and the fit's counts, written after the arrays, so its presence means the layer is
complete; ``<dir>/factors.json`` lists the layers of the whole fit and is written last, so its
presence means every layer is there. Layers are written as the fit completes them and read one
at a time (`open_factors`), so a host never needs to hold every layer's factors at once (a 35B
model's MLP factors are ~450 GB in float32). Factors written before this layout (format 1: one
``<dir>/arrays/`` pytree) are still read. Partial statistics of a partition (``<dir>/<kind>_<i>/``
+ ``.json``) use the same scheme, with exact integer counts in the JSON.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from infljax.checkpoints import check_finite, restore_pytree, save_pytree
from infljax.curvature.state import (
    Counts,
    CovarianceSums,
    Factors,
    LambdaSums,
    LayerFactors,
    Statistics,
)
from infljax.multihost import on_main

ARRAYS_DIR = "arrays"  # format 1
LAYERS_DIR = "layers"
FACTORS_FILE = "factors.json"
FORMAT_VERSION = 2


def save_layer_factors(directory: str | Path, factors: Factors, counts: Counts) -> None:
    """Write each layer of `factors` to `directory`/layers (created if needed), its marker last.
    With several processes every process calls it with the same factors; process 0 writes."""
    layers = Path(directory) / LAYERS_DIR
    for path, layer in factors.items():
        check_finite(f"the fitted factors of layer {path!r} ({directory})", layer)
        marker = layers / f"{path}.json"
        on_main(marker.unlink, missing_ok=True)
        save_pytree(layers / path, layer)
        meta = {
            "shape": list(layer.shape),
            "dtype": str(layer.lambdas.dtype),
            "counts": {"tokens": counts.tokens, "sequences": counts.sequences},
        }
        on_main(marker.write_text, json.dumps(meta))


def saved_layers(directory: str | Path) -> dict[str, Counts]:
    """{layer path: the fit's counts} of the layers `save_layer_factors` completed."""
    layers = Path(directory) / LAYERS_DIR
    if not layers.is_dir():
        return {}
    out = {}
    for marker in layers.glob("*.json"):
        counts = json.loads(marker.read_text())["counts"]
        out[marker.stem] = Counts(int(counts["tokens"]), int(counts["sequences"]))
    return out


def finish_factors(directory: str | Path, layers: Sequence[str]) -> None:
    """Mark the factors complete: every one of `layers` (in this order) was saved."""
    directory = Path(directory)
    described = {}
    for path in layers:
        meta = json.loads((directory / LAYERS_DIR / f"{path}.json").read_text())
        described[path] = (meta["shape"], meta["dtype"])
    dtypes = {dtype for _, dtype in described.values()}
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
        "layers": {path: shape for path, (shape, _) in described.items()},
    }
    on_main((directory / FACTORS_FILE).write_text, json.dumps(meta, indent=2))


def save_factors(directory: str | Path, factors: Factors, counts: Counts | None = None) -> None:
    """Write `factors` (fitted on `counts`, if known) to `directory` (created if needed): every
    layer, then the description. With several processes every process calls it with the same
    factors; process 0 writes."""
    on_main((Path(directory) / FACTORS_FILE).unlink, missing_ok=True)
    save_layer_factors(directory, factors, counts or Counts(0, 0))
    finish_factors(directory, list(factors))


class FactorStore(Mapping):
    """The fitted factors of a directory as a read-only mapping {layer path: LayerFactors}
    that reads a layer from disk each time it is looked up (nothing is cached, except a
    format-1 directory's single pytree, read once): take the layers you need, a group at a
    time. `load_factors` reads them all at once."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / FACTORS_FILE
        if not meta_path.exists():
            raise FileNotFoundError(
                f"no fitted factors in {self.directory} (missing {FACTORS_FILE}); run the "
                "factors stage (experiments/fit_factors.py) first"
            )
        meta = json.loads(meta_path.read_text())
        self.version = meta.get("format_version", 1)
        self.dtype = meta["dtype"]
        self.shapes = {path: tuple(shape) for path, shape in meta["layers"].items()}

    def __getitem__(self, path: str) -> LayerFactors:
        if path not in self.shapes:
            raise KeyError(path)
        if self.version == 1:
            return self._format1[path]
        like = _factors_like(*self.shapes[path], self.dtype)
        file = self.directory / LAYERS_DIR / path
        layer = restore_pytree(file, like)
        check_finite(f"the factors of layer {path!r} read from {file}; refit them", layer)
        return layer

    @functools.cached_property
    def _format1(self) -> Factors:
        """Every layer of a format-1 directory (one pytree: read whole, once)."""
        whole = {p: _factors_like(*shape, self.dtype) for p, shape in self.shapes.items()}
        return restore_pytree(self.directory / ARRAYS_DIR, whole)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def open_factors(directory: str | Path) -> FactorStore:
    """The factors written by `save_factors` (or the factors stage), read layer by layer.

    Raises FileNotFoundError when `directory` holds no complete factors.
    """
    return FactorStore(directory)


def load_factors(directory: str | Path) -> Factors:
    """Every layer of the factors written by `save_factors`, read at once.

    Raises FileNotFoundError when `directory` holds no complete factors.
    """
    store = open_factors(directory)
    return {path: store[path] for path in store}


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
