"""Capture: one forward+backward that returns the loss and, per tracked layer, `a` and `g`.

Call it inside `jax.jit` and reduce the statistics you need in the same jit, so `a` and `g` never
leave the device (DESIGN §6). Layers are selected by regexes over module paths such as
``blocks.0.mlp.fc_in``; unselected layers' captures are dead code that XLA removes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from infljax.models.losses import Batch, sample_targets, summed_nll
from infljax.models.tracked import TrackedLinear

DEFAULT_LAYERS = (r"blocks\.\d+\.mlp\..*",)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerIO:
    """a: [B, T, d_in(+1)] layer inputs (a trailing 1 when the layer has a bias);
    g: [B, T, d_out] gradients of the summed loss w.r.t. the layer output.

    The per-sequence gradient is `G_b = Σ_t g[b, t] a[b, t]ᵀ`, shape [d_out, d_in(+1)].
    """

    a: jax.Array
    g: jax.Array


def layer_paths(model: nnx.Module) -> list[str]:
    """Module paths of every `TrackedLinear` in the model, in definition order."""
    return [
        ".".join(str(p) for p in path)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, TrackedLinear)
    ]


def select_layers(model: nnx.Module, patterns: Sequence[str] = DEFAULT_LAYERS) -> tuple[str, ...]:
    """Tracked-layer paths matching any regex (full match). Raises listing the paths if none."""
    paths = layer_paths(model)
    chosen = tuple(p for p in paths if any(re.fullmatch(pat, p) for pat in patterns))
    if not chosen:
        raise ValueError(f"no layer matches {list(patterns)}; layer paths are: {paths}")
    return chosen


def layer_module(model: nnx.Module, path: str) -> TrackedLinear:
    for p, module in nnx.iter_modules(model):
        if ".".join(str(x) for x in p) == path:
            return module
    raise KeyError(f"no module at {path!r}")


def capture(
    model: nnx.Module,
    batch: Batch,
    layers: Sequence[str],
    *,
    sample_key: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, LayerIO]]:
    """Summed NLL of the batch and {layer_path: LayerIO} for the selected layers.

    With `sample_key`, the labels are sampled from the model's own predictions (true Fisher);
    otherwise `batch.targets` are used. `sample_key` is one typed key for the whole batch, or
    keys [B] with one key per sequence: then a sequence's labels depend only on its own key and
    logits, not on the batch it sits in (what the curvature passes need to be invariant to batch
    size, partitions and devices). The loss is summed over sequences, so `g` of one sequence
    depends only on that sequence and per-sequence gradients are sums over its tokens.
    """
    graphdef, state = nnx.split(model)
    _, perturbations = nnx.capture(nnx.merge(graphdef, state), nnx.Perturbation)(batch.inputs)

    def loss_fn(perturbations):
        # A fresh module per trace level: nnx modules may not be mutated across JAX traces.
        fresh = nnx.merge(graphdef, state)
        logits, inputs = nnx.capture(fresh, nnx.Intermediate, init=perturbations)(batch.inputs)
        targets = None if sample_key is None else _sample(sample_key, logits)
        return summed_nll(logits, batch, targets), inputs

    (loss, inputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(perturbations)
    return loss, {path: _layer_io(model, inputs, grads, path) for path in layers}


def _sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Labels [B, T] from logits [B, T, V]: one key for the batch, or keys [B] (one per row)."""
    if key.ndim == 0:
        return sample_targets(key, logits)
    if key.shape != logits.shape[:1]:
        raise ValueError(
            f"sample_key must be one key or one key per sequence ({logits.shape[0]}), "
            f"got shape {key.shape}"
        )
    return jax.vmap(sample_targets)(key, logits)


def _layer_io(model, inputs, grads, path: str) -> LayerIO:
    keys = tuple(int(k) if k.isdigit() else k for k in path.split("."))
    node_a, node_g = inputs, grads
    for k in keys:
        node_a, node_g = node_a[k], node_g[k]
    a = node_a["a"].get_value()[0]  # sow stores a tuple of calls; each layer is called once
    g = node_g["g"].get_value()
    if layer_module(model, path).bias is not None:
        a = jnp.concatenate([a, jnp.ones_like(a[..., :1])], axis=-1)
    return LayerIO(a=a, g=g)
