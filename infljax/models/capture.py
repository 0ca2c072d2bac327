"""Capture: one forward+backward that returns the loss and, per tracked layer, `a` and `g`.

Call it inside `jax.jit` and reduce the statistics you need in the same jit (`Captured.map`), so
`a` and `g` never leave the device (DESIGN §6). Layers are selected by regexes over module paths
such as ``blocks.0.mlp.fc_in``. The blocks run as scans and the per-layer statistics as loops
over the layers of a site, so tracing and compiling cost about one block whatever the depth.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from infljax.distributed import gather
from infljax.models.losses import Batch, gumbel_noise, sample_targets, summed_nll
from infljax.models.tracked import TrackedLinear
from infljax.trees import stack, take, unstack

DEFAULT_LAYERS = (r"blocks\.\d+\.mlp\..*",)
# Segments and sites of at most this many blocks run unrolled, without remat, when the model is
# whole: the loop's machinery and remat cost shallow models 15-30% of capture throughput
# (docs/results.md, Performance), and a few blocks compile quickly. Longer ones are scanned.
UNROLLED_BLOCKS = 4


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerIO:
    """a: [B, T, d_in(+1)] layer inputs (a trailing 1 when the layer has a bias);
    g: [B, T, d_out] gradients of the summed loss w.r.t. the layer output.

    The per-sequence gradient is `G_b = Σ_t g[b, t] a[b, t]ᵀ`, shape [d_out, d_in(+1)].
    """

    a: jax.Array
    g: jax.Array


def tracked_modules(model: nnx.Module) -> dict[str, TrackedLinear]:
    """Every `TrackedLinear` of the model by its dotted module path, in definition order."""
    return {
        ".".join(str(p) for p in path): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, TrackedLinear)
    }


def layer_paths(model: nnx.Module) -> list[str]:
    """Module paths of every `TrackedLinear` in the model, in definition order."""
    return list(tracked_modules(model))


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
    """The tracked layer at dotted `path`."""
    modules = tracked_modules(model)
    if path not in modules:
        raise KeyError(f"no tracked layer at {path!r}")
    return modules[path]


def layer_shapes(model: nnx.Module, layers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{path: (d_out, d_in)} of each layer's gradient; d_in counts the bias coordinate. The
    model may be abstract (`nnx.eval_shape`)."""
    modules = tracked_modules(model)
    shapes = {}
    for path in layers:
        d_in, d_out = modules[path].kernel.shape
        shapes[path] = (d_out, d_in + (modules[path].bias is not None))
    return shapes


def capture(
    model: nnx.Module,
    batch: Batch,
    layers: Sequence[str],
    *,
    sample_key: jax.Array | None = None,
    specs=None,
) -> tuple[jax.Array, Captured]:
    """Summed NLL of the batch and the selected layers' `LayerIO` (a `Captured`: a mapping
    {layer_path: LayerIO} whose `map` runs a per-layer function as one loop per site).

    The model is a `Decoder` (embeddings, `blocks`, head). Its blocks run as `jax.lax.scan`s
    over their stacked parameters, one scan per run of consecutive blocks that track the same
    sublayers (`_segments`), so tracing and compiling do not grow with depth; each layer's `a`
    leaves its scan stacked with the same sublayer of the other blocks, and `g` is the gradient
    of stacked zero perturbations.

    With `sample_key`, the labels are sampled from the model's own predictions (true Fisher);
    otherwise `batch.targets` are used. `sample_key` is one typed key for the whole batch (row
    b samples with `fold_in(key, b)`), or keys [B] with one key per sequence: then a sequence's
    labels depend only on its own key and logits, not on the batch it sits in (what the
    curvature passes need to be invariant to batch size, partitions and devices; and the only
    form vocabulary-parallel sampling takes). The loss is summed over sequences, so `g` of one
    sequence depends only on that sequence and per-sequence gradients are sums over its tokens.

    `specs` (FSDP, inside `jax.shard_map`): the model holds only this device's pieces of its
    parameters, split over ``data`` as the PartitionSpecs `specs` (a tree like
    `nnx.state(model)`, `infljax.distributed.Placement.specs`) say. The forward then gathers one
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
    forward = _Forward(graphdef, state, specs, _segments(model, layers))
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
    sites = []
    for segment, a, g in zip(forward.segments, inputs, grads, strict=True):
        for name in segment.names:
            paths = tuple(f"blocks.{i}.{name}" for i in segment.blocks)
            bias = layer_module(model, paths[0]).bias is not None
            io = LayerIO(a=a[name], g=at_path(g, name)["g"].get_value())
            sites.append(Site(paths, bias, io))
    return loss, Captured(tuple(sites), tuple(layers))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Site:
    """Layers that run as one: the same sublayer (e.g. ``mlp.fc_in``) of consecutive blocks.

    paths: their module paths (static), e.g. ``("blocks.0.mlp.fc_in", "blocks.1.mlp.fc_in")``.
    bias: whether the layers have a bias (static): `layer` then appends the bias coordinate.
    io: their inputs and output gradients stacked, a [len(paths), B, T, d_in] (without the bias
      coordinate: appended one layer at a time, never to the whole stack), g [len(paths), B,
      T, d_out].
    """

    paths: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    bias: bool = dataclasses.field(metadata=dict(static=True))
    io: LayerIO

    def at(self, j) -> LayerIO:
        """Layer j's `LayerIO` (j may be traced)."""
        return self.layer(take(self.io, j))

    def layer(self, io: LayerIO) -> LayerIO:
        """One layer's `LayerIO` from its slice of `io` (the bias coordinate appended)."""
        if not self.bias:
            return io
        return LayerIO(a=jnp.concatenate([io.a, jnp.ones_like(io.a[..., :1])], axis=-1), g=io.g)


@jax.tree_util.register_pytree_node_class
class Captured(Mapping):
    """{layer_path: LayerIO} of the selected layers, in their order, kept stacked per `Site`
    (a pytree: it may leave a jitted function).

    Indexing slices one layer out of its site. `map` applies a per-layer function to every
    layer as one loop per site, which is what keeps compilation independent of depth.
    """

    def __init__(self, sites: tuple[Site, ...], layers: tuple[str, ...]):
        self.sites, self.layers = tuple(sites), tuple(layers)
        self._where = {p: (site, j) for site in self.sites for j, p in enumerate(site.paths)}

    def tree_flatten(self):
        return (self.sites,), self.layers

    @classmethod
    def tree_unflatten(cls, layers, children):
        return cls(children[0], layers)

    def __getitem__(self, path: str) -> LayerIO:
        site, j = self._where[path]
        return site.at(j)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def map(self, fn: Callable, inputs: dict | None = None) -> dict:
        """{path: fn(first, io, inputs[path])} for every layer (inputs[path] is None without
        `inputs`), in `layers` order.

        The layers of a site whose inputs have the same structure and shapes run as one
        `jax.lax.map`: one layer after the other, so only one layer's intermediates (gathered
        pieces, statistics before their reduction) exist at a time, and `fn` is traced once for
        all of them, with `first` the first of their paths. So `fn` may read from the path
        only what those layers share (shapes, PartitionSpecs); what differs between layers (a
        per-layer key, their factors) comes through `inputs`.
        """
        out = {}
        for site in self.sites:
            for lo, hi in _runs(site.paths, inputs):
                paths, io = site.paths[lo:hi], site.io
                if (lo, hi) != (0, len(site.paths)):
                    io = jax.tree.map(lambda x: x[lo:hi], io)  # noqa: B023
                values = [None if inputs is None else inputs[p] for p in paths]
                results = _map_layers(fn, paths[0], site.layer, io, values)
                out.update(zip(paths, unstack(results, len(paths)), strict=True))
        return {p: out[p] for p in self.layers}

    def accumulate(self, fn: Callable, into: dict, inputs: dict | None = None) -> dict:
        """`into` ({site paths: the site's running values, stacked; `by_site`}) plus every
        layer's fn(first, io, inputs[path]), added into its slice inside the site's loop: no
        layer's result outlives its turn (`map` would hold them all, stacked). A site's inputs
        must have one structure and shape (one loop per site)."""
        out = {}
        for site in self.sites:
            values = [None if inputs is None else inputs[p] for p in site.paths]
            if len(_runs(site.paths, inputs)) > 1:
                raise ValueError(f"accumulate: the inputs of {site.paths} differ in shape")
            pick = _picker(values)

            def add(j, total, value, site=site):
                new = fn(site.paths[0], site.at(j), value)
                return jax.tree.map(lambda t, v: t.at[j].add(v.astype(t.dtype)), total, new)

            one = lambda j, total, add=add, pick=pick: add(j, total, pick(j))  # noqa: E731
            out[site.paths] = jax.lax.fori_loop(0, len(site.paths), one, into[site.paths])
        return out


def sites(model: nnx.Module, layers: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The layer paths grouped as `capture` stacks them: one tuple per `Site`, in its order."""
    return tuple(
        tuple(f"blocks.{i}.{name}" for i in segment.blocks)
        for segment in _segments(model, layers)
        for name in segment.names
    )


def by_site(per_layer: dict, groups: Sequence[tuple[str, ...]]) -> dict:
    """{path: tree} -> {site paths: the site's trees stacked} (the layout `accumulate` keeps)."""
    return {paths: stack([per_layer[p] for p in paths]) for paths in groups}


def by_layer(per_site: dict) -> dict:
    """`by_site` undone: {path: tree}."""
    return {
        p: tree
        for paths, stacked in per_site.items()
        for p, tree in zip(paths, unstack(stacked, len(paths)), strict=True)
    }


def _map_layers(fn: Callable, first: str, layer: Callable, io: LayerIO, values: list):
    """fn(first, layer(io[j]), values[j]) for every j as one `jax.lax.map`, results stacked."""
    pick = _picker(values)

    def one(args):
        j, layer_io = args
        return fn(first, layer(layer_io), pick(j))

    return jax.lax.map(one, (jnp.arange(len(values)), io))


def _picker(values: list) -> Callable[[jax.Array | int], object]:
    """`j -> values[j]` for a traced index, without stacking the values (which would copy
    them all at once): a `jax.lax.switch` whose branches each return one of them, so a loop
    over j copies one value at a time."""
    if len(values) == 1:
        return lambda _: values[0]
    branches = [lambda v=v: v for v in values]
    return lambda j: jax.lax.switch(j, branches)


def _runs(paths: tuple[str, ...], inputs: dict | None) -> list[tuple[int, int]]:
    """(lo, hi) ranges of consecutive `paths` whose inputs one loop can take in turn (same
    structure, shapes and dtypes)."""

    def kind(path):
        if inputs is None:
            return None
        leaves, structure = jax.tree.flatten(inputs[path])
        return structure, tuple((x.shape, x.dtype) for x in leaves)

    runs, kinds = [], [kind(p) for p in paths]
    for j, k in enumerate(kinds):
        if runs and kinds[runs[-1][0]] == k:
            runs[-1] = (runs[-1][0], j + 1)
        else:
            runs.append((j, j + 1))
    return runs


@dataclasses.dataclass(frozen=True)
class _Segment:
    """Consecutive blocks that track the same sublayers `names` (e.g. ``("mlp.fc_in",
    "mlp.fc_out")``, or none): one `jax.lax.scan` runs them."""

    blocks: tuple[int, ...]
    names: tuple[str, ...]


def _segments(model: nnx.Module, layers: Sequence[str]) -> tuple[_Segment, ...]:
    """The blocks of `model` cut into `_Segment`s, in order."""
    names: list[list[str]] = [[] for _ in model.blocks]
    for path in layers:
        keys = path_keys(path)
        if len(keys) < 3 or keys[0] != "blocks" or not 0 <= keys[1] < len(names):
            raise ValueError(f"{path!r} is not a tracked layer of a block (blocks.<i>.<name>)")
        names[keys[1]].append(".".join(map(str, keys[2:])))
    segments: list[_Segment] = []
    for i, block_names in enumerate(map(tuple, names)):
        if segments and segments[-1].names == block_names:
            segments[-1] = _Segment(segments[-1].blocks + (i,), block_names)
        else:
            segments.append(_Segment((i,), block_names))
    return tuple(segments)


@dataclasses.dataclass(frozen=True)
class _Forward:
    """The forward of a decoder as scans over its `_Segment`s, its parameters whole
    (`specs` None) or split over ``data`` (see `capture`).

    Split, each block's parameters are gathered inside the scan's body, so one block's exist at
    a time, and gathered again when the backward recomputes the block (`_scan`).
    """

    graphdef: nnx.GraphDef
    state: nnx.State  # whole, or this device's pieces
    specs: nnx.State | None  # how they are split (None: whole)
    segments: tuple[_Segment, ...]

    @property
    def vocab_split(self) -> bool:
        """Whether the embedding [V, d] (and an untied head [d, V]) is split along the
        vocabulary: then neither is gathered (vocabulary-parallel lookup and logits)."""
        if self.specs is None:
            return False

        def split(key: str, axis: int) -> bool:
            spec = jax.tree.leaves(self.specs[key], is_leaf=_is_spec)[0]
            return tuple(spec)[axis : axis + 1] == ("data",)

        return split("embed", 0) and ("lm_head" not in self.state or split("lm_head", 1))

    def _model(self) -> nnx.Module:
        """The model; split, with every parameter outside the blocks gathered (embeddings,
        final norm, head), except a vocabulary-split embedding and head; the blocks keep their
        pieces until they run."""
        if self.specs is None:
            return nnx.merge(self.graphdef, self.state)
        kept = {"blocks"} | ({"embed", "lm_head"} if self.vocab_split else set())
        top = {k: v if k in kept else gather(v, self.specs[k]) for k, v in self.state.items()}
        return nnx.merge(self.graphdef, nnx.State(top))

    def _block_specs(self, segment: _Segment):
        return None if self.specs is None else self.specs["blocks"][segment.blocks[0]]

    def perturbations(self, tokens: jax.Array) -> tuple:
        """Per segment, the zero perturbations [n, B, T, d_out] of its tracked sublayers (read
        back as their gradients `g`), or None when it tracks none."""
        model = nnx.merge(self.graphdef, self.state)
        width = model.cfg.d_model
        x = jax.ShapeDtypeStruct((*tokens.shape, width), model.embed[...].dtype)
        out = []
        for segment in self.segments:
            if not segment.names:
                out.append(None)
                continue
            first = self.state["blocks"][segment.blocks[0]]
            if self.specs is not None:
                first = jax.tree.map(_whole_shape, first, self._block_specs(segment))
            block = nnx.graphdef(model.blocks[segment.blocks[0]])
            probe = lambda s, x: nnx.capture(nnx.merge(block, s), nnx.Perturbation)(x)[1]  # noqa: B023, E731
            shapes = jax.eval_shape(probe, first, x)
            kept = _only(shapes, segment.names)
            n = len(segment.blocks)
            out.append(jax.tree.map(lambda s: _zeros_like_batch(s, tokens, n), kept))  # noqa: B023
        return tuple(out)

    def __call__(self, perturbations: tuple, tokens: jax.Array):
        """(logits, per segment {name: a [n, B, T, d_in]}); a fresh module per trace level (nnx
        modules may not be mutated across JAX traces)."""
        model = self._model()
        vocab = _VocabSlice() if self.vocab_split else None
        lookup = None if vocab is None else functools.partial(vocab.lookup, model.embed[...])
        x, inputs = model.embed_tokens(tokens, lookup), []
        for segment, segment_perturbations in zip(self.segments, perturbations, strict=True):
            x, a = self._scan(model, segment, segment_perturbations, x)
            inputs.append(a)
        if vocab is None:
            return model.unembed(x), tuple(inputs)
        head = model.embed[...].T if model.lm_head is None else model.lm_head[...]
        return vocab.logits(model, x, head), tuple(inputs)

    def _scan(self, model, segment: _Segment, perturbations, x):
        """One scan over the segment's blocks. Its body is rematerialised: the backward
        recomputes each block from its input (split, gathering its parameters again) instead
        of keeping its intermediates. The loop runs one block at a time, so one block's
        gathered parameters exist at a time."""
        graphdef = nnx.graphdef(model.blocks[segment.blocks[0]])
        specs = self._block_specs(segment)
        if specs is None and len(segment.blocks) <= UNROLLED_BLOCKS:
            return self._unrolled(graphdef, segment, perturbations, x)
        states = stack([self.state["blocks"][i] for i in segment.blocks])

        @jax.checkpoint
        def body(x, xs):
            state, block_perturbations = xs
            state = state if specs is None else gather(state, specs)
            y, inter = _run_block(graphdef, state, block_perturbations, x)
            return y, _sown_inputs(inter, segment.names)

        return jax.lax.scan(body, x, (states, perturbations))

    def _unrolled(self, graphdef, segment: _Segment, perturbations, x):
        """`_scan`'s results from a Python loop over the blocks (whole parameters, no remat)."""
        inputs = []
        for j, i in enumerate(segment.blocks):
            block_perturbations = jax.tree.map(lambda p: p[j], perturbations)  # noqa: B023
            x, inter = _run_block(graphdef, self.state["blocks"][i], block_perturbations, x)
            inputs.append(_sown_inputs(inter, segment.names))
        return x, stack(inputs)


def _run_block(graphdef: nnx.GraphDef, state, perturbations, x: jax.Array):
    """(output, the block's captured `nnx.Intermediate`s) of one block; without perturbations
    it runs uncaptured and captures nothing."""
    block = nnx.merge(graphdef, state)
    if perturbations is None:
        return block(x), {}
    return nnx.capture(block, nnx.Intermediate, init=perturbations)(x)


def _sown_inputs(intermediates, names: Sequence[str]) -> dict[str, jax.Array]:
    """{name: `a`} of a block's tracked sublayers from its captured intermediates (sow keeps a
    tuple of calls; each layer is called once)."""
    return {name: at_path(intermediates, name)["a"].get_value()[0] for name in names}


def _only(tree, names: Sequence[str]) -> nnx.State:
    """The nodes of a nested state at the dotted `names`, nested as they were."""
    kept: dict = {}
    for name in names:
        *parents, last = path_keys(name)
        node = kept
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = at_path(tree, name)
    return nnx.State(kept)


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


def _whole_shape(piece: jax.Array, spec: PartitionSpec) -> jax.ShapeDtypeStruct:
    """The shape of a parameter whose `piece` this device holds under `spec` (inside
    `jax.shard_map`: the axis names are bound, so their sizes can be read)."""
    shape = [
        n if name is None else n * jax.lax.axis_size(name)
        for n, name in zip(piece.shape, tuple(spec) + (None,) * piece.ndim, strict=False)
    ]
    return jax.ShapeDtypeStruct(tuple(shape), piece.dtype)


def _zeros_like_batch(like: jax.ShapeDtypeStruct, tokens: jax.Array, n: int) -> jax.Array:
    """Zeros [n, B, T, d] (`like` is [B, T, d]) made from `tokens` [B, T]: inside
    `jax.shard_map` they vary over the devices as the batch does (constant zeros would count as
    the same on every device, and their gradient `g` would come back summed over them)."""
    if like.shape[:2] != tokens.shape:
        raise ValueError(f"a tracked layer's output {like.shape} is not [B, T, d] {tokens.shape}")
    zeros = jnp.zeros_like(tokens, like.dtype)[None, ..., None]
    return jnp.broadcast_to(zeros, (n, *like.shape))


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
