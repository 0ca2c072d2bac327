"""Capture: one forward+backward that returns the loss and, per tracked layer, `a` and `g`.

Call it inside `jax.jit` and reduce the statistics you need in the same jit, so `a` and `g` never
leave the device (DESIGN §6). Layers are selected by regexes over module paths such as
``blocks.0.mlp.fc_in``; unselected layers' captures are dead code that XLA removes.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from infljax.distributed import after, gather
from infljax.models.losses import Batch, gumbel_noise, sample_targets, summed_nll
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


def layer_groups(layers: Sequence[str], groups: int) -> list[tuple[str, ...]]:
    """`layers` cut into `groups` contiguous groups, in order, whose sizes differ by at most one
    (the first ones larger, as `np.array_split` cuts)."""
    if not 1 <= groups <= len(layers):
        raise ValueError(
            f"{groups} layer groups for {len(layers)} tracked layers: the number of groups must "
            f"be between 1 (all at once) and {len(layers)} (one layer per group)"
        )
    cuts = np.array_split(np.arange(len(layers)), groups)
    return [tuple(layers[i] for i in cut) for cut in cuts]


def path_keys(path: str) -> tuple[str | int, ...]:
    """The keys of a dotted module path: ``"blocks.0.attn.q"`` -> ``("blocks", 0, "attn", "q")``."""
    return tuple(int(k) if k.isdigit() else k for k in path.split("."))


def at_path(tree, path: str | tuple):
    """The node of a nested state (nnx.State, pure dict) at a dotted path or its keys."""
    for key in path_keys(path) if isinstance(path, str) else path:
        tree = tree[key]
    return tree


def layer_module(model: nnx.Module, path: str) -> TrackedLinear:
    for p, module in nnx.iter_modules(model):
        if ".".join(str(x) for x in p) == path:
            return module
    raise KeyError(f"no module at {path!r}")


def layer_shapes(model: nnx.Module, layers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{path: (d_out, d_in)} of each layer's gradient; d_in counts the bias coordinate. The
    model may be abstract (`nnx.eval_shape`)."""
    shapes = {}
    for path in layers:
        module = layer_module(model, path)
        d_in, d_out = module.kernel.shape
        shapes[path] = (d_out, d_in + (module.bias is not None))
    return shapes


def capture(
    model: nnx.Module,
    batch: Batch,
    layers: Sequence[str],
    *,
    sample_key: jax.Array | None = None,
    specs=None,
) -> tuple[jax.Array, dict[str, LayerIO]]:
    """Summed NLL of the batch and {layer_path: LayerIO} for the selected layers.

    With `sample_key`, the labels are sampled from the model's own predictions (true Fisher);
    otherwise `batch.targets` are used. `sample_key` is one typed key for the whole batch (row
    b samples with `fold_in(key, b)`), or keys [B] with one key per sequence: then a sequence's
    labels depend only on its own key and logits, not on the batch it sits in (what the
    curvature passes need to be invariant to batch size, partitions and devices; and the only
    form vocabulary-parallel sampling takes). The loss is summed over sequences, so `g` of one
    sequence depends only on that sequence and per-sequence gradients are sums over its tokens.

    `specs` (FSDP, inside `jax.shard_map`): the model holds only this device's pieces of its
    parameters, split over ``data`` as the PartitionSpecs `specs` (a tree like
    `nnx.state(model)`, `infljax.distributed.param_specs`) say. The forward then gathers one
    block's parameters at a time, just before the block runs, and the backward gathers them
    again (recomputing the block) instead of keeping them: a device holds its pieces, the
    embeddings (unless split over the vocabulary, below) and one block's parameters, never the
    whole model. Same results.

    When the embedding (and an untied head) is split along the vocabulary, it is never gathered:
    the lookup and the logits are vocabulary-parallel (each device looks up and scores every
    device's tokens against its slice of the vocabulary; `_VocabSlice`), with the same labels
    sampled (`losses.gumbel_noise`) and the same loss.
    """
    graphdef, state = nnx.split(model)
    forward = _Whole(graphdef, state) if specs is None else _Blockwise(graphdef, state, specs)
    perturbations = forward.perturbations(batch.inputs)

    def loss_fn(perturbations):
        logits, inputs = forward(perturbations, batch.inputs)
        if not forward.vocab_split:
            targets = None if sample_key is None else _sample(sample_key, logits)
            return summed_nll(logits, batch, targets), inputs
        vocab = _VocabSlice()  # logits [B, T, V/n]: every device's rows, a slice of the vocabulary
        targets = None if sample_key is None else vocab.sample(sample_key, logits)
        return vocab.summed_nll(logits, batch, targets), inputs

    (loss, inputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(perturbations)
    return loss, {path: _layer_io(model, inputs, grads, path) for path in layers}


@dataclasses.dataclass(frozen=True)
class _Whole:
    """The forward of a model that holds all its parameters."""

    graphdef: nnx.GraphDef
    state: nnx.State
    vocab_split = False  # logits over the whole vocabulary

    def perturbations(self, tokens: jax.Array) -> nnx.State:
        """The zero perturbation `g` of every tracked layer (read back as the gradients)."""
        model = nnx.merge(self.graphdef, self.state)
        return nnx.capture(model, nnx.Perturbation)(tokens)[1]

    def __call__(self, perturbations: nnx.State, tokens: jax.Array):
        """(logits, the tracked layers' inputs); a fresh module per trace level (nnx modules
        may not be mutated across JAX traces)."""
        model = nnx.merge(self.graphdef, self.state)
        return nnx.capture(model, nnx.Intermediate, init=perturbations)(tokens)


@dataclasses.dataclass(frozen=True)
class _Blockwise:
    """The forward of a decoder whose parameters are split over ``data`` (see `capture`).

    Block i's parameters are gathered from its pieces only once its input exists, and gathered
    again in the backward only once its output's cotangent has arrived (`_gathered_block`):
    without these data dependencies XLA would start every block's gather at once.
    """

    graphdef: nnx.GraphDef
    state: nnx.State  # this device's pieces
    specs: nnx.State  # how they are split

    @property
    def vocab_split(self) -> bool:
        """Whether the embedding [V, d] (and an untied head [d, V]) is split along the
        vocabulary: then neither is gathered (vocabulary-parallel lookup and logits)."""

        def split(key: str, axis: int) -> bool:
            spec = jax.tree.leaves(self.specs[key], is_leaf=_is_spec)[0]
            return tuple(spec)[axis : axis + 1] == ("data",)

        return split("embed", 0) and ("lm_head" not in self.state or split("lm_head", 1))

    def _model(self) -> nnx.Module:
        """The model with every parameter outside the blocks gathered (embeddings, final norm,
        head), except a vocabulary-split embedding and head; the blocks keep their pieces
        until they run."""
        kept = {"blocks"} | ({"embed", "lm_head"} if self.vocab_split else set())
        top = {k: v if k in kept else gather(v, self.specs[k]) for k, v in self.state.items()}
        return nnx.merge(self.graphdef, nnx.State(top))

    def perturbations(self, tokens: jax.Array) -> nnx.State:
        whole = jax.tree.map(_whole_shape, self.state, self.specs, is_leaf=_is_array)
        probe = lambda state: _Whole(self.graphdef, state).perturbations(tokens)  # noqa: E731
        return jax.tree.map(lambda s: _zeros_like_batch(s, tokens), jax.eval_shape(probe, whole))

    def __call__(self, perturbations: nnx.State, tokens: jax.Array):
        model = self._model()
        vocab = _VocabSlice() if self.vocab_split else None
        lookup = None if vocab is None else functools.partial(vocab.lookup, model.embed[...])
        x, inputs = model.embed_tokens(tokens, lookup), {}
        for i, block in enumerate(model.blocks):
            run = _gathered_block(nnx.graphdef(block), self.specs["blocks"][i])
            x, inputs[i] = run(self.state["blocks"][i], perturbations["blocks"][i], x)
        if vocab is None:
            return model.unembed(x), {"blocks": inputs}
        head = model.embed[...].T if model.lm_head is None else model.lm_head[...]
        return vocab.logits(model, x, head), {"blocks": inputs}


class _VocabSlice:
    """Vocabulary-parallel embedding lookup, logits, labels and loss inside `jax.shard_map`:
    this device holds rows [i·V/n, (i+1)·V/n) of the embedding (and columns of the head), with
    i its index along ``data``. It works on every device's rows of the batch at once: the
    logits are [B, T, V/n] for the global batch B = n·b instead of [b, T, V], the same size,
    and the only gathered arrays are the tokens and the last hidden states [B, T, d] (not the
    [V, d] table). Results equal the whole model's: the lookup sums one nonzero row; the loss
    combines the slices' maxima and sums of exponentials; labels use `gumbel_noise`, which is
    the same for a vocabulary slice as for the whole."""

    @staticmethod
    def _index() -> jax.Array:
        return jax.lax.axis_index("data")

    def lookup(self, piece: jax.Array, tokens: jax.Array) -> jax.Array:
        """Embedding rows [b, T, d] of this device's `tokens` [b, T] from its slice `piece`:
        every device looks up every device's tokens in its slice (zero where another slice
        holds the id) and the sums reach their owners (reduce-scatter)."""
        everyone = jax.lax.all_gather(tokens, "data", axis=0, tiled=True)
        ids = everyone - self._index() * piece.shape[0]
        mine = (ids >= 0) & (ids < piece.shape[0])
        rows = jnp.where(mine[..., None], piece[jnp.clip(ids, 0, piece.shape[0] - 1)], 0)
        return jax.lax.psum_scatter(rows, "data", scatter_dimension=0, tiled=True)

    def logits(self, model: nnx.Module, x: jax.Array, head: jax.Array) -> jax.Array:
        """Every device's last hidden states [b, T, d] -> logits [B, T, V/n] of this slice."""
        return model.unembed(jax.lax.all_gather(x, "data", axis=0, tiled=True), head)

    def sample(self, keys: jax.Array, logits: jax.Array) -> jax.Array:
        """True-Fisher labels [B, T] of every device's rows (keys [b], one per local row):
        Gumbel-max over each slice, then the best of the slices (the lowest id on ties, as
        `jnp.argmax` over the whole vocabulary)."""
        if keys.ndim != 1:
            raise ValueError("vocabulary-parallel sampling needs one sample_key per sequence")
        data = jax.lax.all_gather(jax.random.key_data(keys), "data", axis=0, tiled=True)
        every_key = jax.random.wrap_key_data(data, impl=jax.random.key_impl(keys))
        width = logits.shape[-1]
        first = self._index() * width
        noise = jax.vmap(lambda k: gumbel_noise(k, logits.shape[1:], first))(every_key)
        score = jax.lax.stop_gradient(logits) + noise
        best = jax.lax.all_gather(jnp.max(score, axis=-1), "data")  # [n, B, T]
        label = jax.lax.all_gather(jnp.argmax(score, axis=-1) + first, "data")
        winner = jnp.argmax(best, axis=0)
        return jnp.take_along_axis(label, winner[None], axis=0)[0].astype(jnp.int32)

    def summed_nll(self, logits: jax.Array, batch: Batch, targets: jax.Array | None) -> jax.Array:
        """`losses.summed_nll` of this device's rows from the slice logits [B, T, V/n];
        `targets` [B, T] of every device's rows (default: the batch's)."""
        if targets is None:
            targets = jax.lax.all_gather(batch.targets, "data", axis=0, tiled=True)
        x = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        width, rows = x.shape[-1], batch.targets.shape[0]
        top = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(x, axis=-1)), "data")
        total = jax.lax.psum(jnp.sum(jnp.exp(x - top[..., None]), axis=-1), "data")
        ids = targets - self._index() * width
        mine = (ids >= 0) & (ids < width)
        picked = jnp.take_along_axis(x, jnp.clip(ids, 0, width - 1)[..., None], axis=-1)[..., 0]
        nll = top + jnp.log(total) - jax.lax.psum(jnp.where(mine, picked, 0), "data")
        own = jax.lax.dynamic_slice_in_dim(nll, self._index() * rows, rows, axis=0)
        return jnp.sum(batch.weights * own)


def _gathered_block(graphdef: nnx.GraphDef, specs) -> Callable:
    """`(pieces, perturbations, x) -> (output, the block's tracked-layer inputs)` of one block
    whose parameters are gathered from `pieces` when it runs: in the forward once `x` exists,
    in the backward (which recomputes the block instead of keeping its parameters and
    activations) once the output's cotangent exists."""

    def forward(pieces, perturbations, x):
        block = nnx.merge(graphdef, gather(after(pieces, x), specs))
        return nnx.capture(block, nnx.Intermediate, init=perturbations)(x)

    @jax.custom_vjp
    def run(pieces, perturbations, x):
        return forward(pieces, perturbations, x)

    def run_forward(pieces, perturbations, x):
        return forward(pieces, perturbations, x), (pieces, perturbations, x)

    def run_backward(saved, cotangent):
        pieces, perturbations, x = saved
        _, vjp = jax.vjp(functools.partial(forward, after(pieces, cotangent)), perturbations, x)
        return (jax.tree.map(jnp.zeros_like, pieces), *vjp(cotangent))  # no parameter grads

    run.defvjp(run_forward, run_backward)
    return run


def _whole_shape(piece: jax.Array, spec: PartitionSpec) -> jax.ShapeDtypeStruct:
    """The shape of a parameter whose `piece` this device holds under `spec` (inside
    `jax.shard_map`: the axis names are bound, so their sizes can be read)."""
    shape = [
        n if name is None else n * jax.lax.axis_size(name)
        for n, name in zip(piece.shape, tuple(spec) + (None,) * piece.ndim, strict=False)
    ]
    return jax.ShapeDtypeStruct(tuple(shape), piece.dtype)


def _zeros_like_batch(like: jax.ShapeDtypeStruct, tokens: jax.Array) -> jax.Array:
    """Zeros [B, T, d] made from `tokens` [B, T]: inside `jax.shard_map` they vary over the
    devices as the batch does (constant zeros would count as the same on every device, and
    their gradient `g` would come back summed over the devices)."""
    if like.shape[:2] != tokens.shape:
        raise ValueError(f"a tracked layer's output {like.shape} is not [B, T, d] {tokens.shape}")
    return jnp.broadcast_to(jnp.zeros_like(tokens, like.dtype)[..., None], like.shape)


def _is_array(x) -> bool:
    return isinstance(x, jax.Array)


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def _sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Labels [B, T] from logits [B, T, V]: one key for the batch (row b samples with
    `fold_in(key, b)`), or keys [B] (one per row)."""
    if key.ndim == 0:
        key = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(logits.shape[0]))
    if key.shape != logits.shape[:1]:
        raise ValueError(
            f"sample_key must be one key or one key per sequence ({logits.shape[0]}), "
            f"got shape {key.shape}"
        )
    return jax.vmap(sample_targets)(key, logits)


def _layer_io(model, inputs, grads, path: str) -> LayerIO:
    node_a, node_g = at_path(inputs, path), at_path(grads, path)
    a = node_a["a"].get_value()[0]  # sow stores a tuple of calls; each layer is called once
    g = node_g["g"].get_value()
    if layer_module(model, path).bias is not None:
        a = jnp.concatenate([a, jnp.ones_like(a[..., :1])], axis=-1)
    return LayerIO(a=a, g=g)
