"""Capture exactness: Σ_t a_t g_tᵀ equals jax.grad of the summed loss (DESIGN §2, §6)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from infljax.curvature import statistics
from infljax.distributed import DATA, PLACED, Placement, make_mesh, shard_batch
from infljax.models.capture import (
    UNROLLED_BLOCKS,
    LayerIO,
    capture,
    layer_paths,
    select_layers,
)
from infljax.models.decoder import Decoder
from infljax.models.losses import Batch, gumbel_noise, sample_targets, summed_nll
from infljax.planning import compiled_bytes
from tests.tiny import NARROW

RTOL = 1e-10  # float64 exactness


def tiny(**overrides) -> Decoder:
    return Decoder(dataclasses.replace(NARROW, **overrides), rngs=nnx.Rngs(0))


def tiny_batch() -> Batch:
    tokens = np.array([[1, 3, 4, 5, 2, 0], [1, 7, 8, 2, 0, 0], [1, 9, 2, 0, 0, 0]])
    return Batch.from_documents(tokens, np.array([5, 4, 3]))


def kernel_grad(grads: nnx.State, path: str) -> jax.Array:
    node = grads
    for key in path.split("."):
        node = node[int(key) if key.isdigit() else key]
    w = node["kernel"][...].T
    return w if node.get("bias") is None else jnp.concatenate([w, node["bias"][...][:, None]], 1)


def _captured(model, batch, layers):
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, b: capture(nnx.merge(graphdef, s), b, layers))
    return fn(state, batch)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {
            "use_bias": False,
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "positions": "rope",
            "num_kv_heads": 1,
        },
    ],
)
def test_sum_of_outer_products_equals_kernel_gradient(variant):
    assert_capture_exact(tiny(**variant), tiny_batch())


def assert_capture_exact(model: Decoder, batch: Batch, layers=None) -> None:
    """For every linear (attention included; or `layers`): loss and Σ_t g aᵀ equal jax.grad
    to RTOL."""
    layers = tuple(layer_paths(model)) if layers is None else layers
    loss, io = _captured(model, batch, layers)
    graphdef, params = nnx.split(model, nnx.Param)
    ref_loss, grads = jax.jit(
        jax.value_and_grad(lambda p: summed_nll(nnx.merge(graphdef, p)(batch.inputs), batch))
    )(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    for path in layers:
        G = jnp.einsum("bto,bti->oi", io[path].g, io[path].a)
        ref = kernel_grad(grads, path)
        assert np.linalg.norm(G - ref) <= RTOL * np.linalg.norm(ref), path


@pytest.mark.parametrize(
    "num_layers, patterns",
    [
        (4, (r"blocks\.0\..*", r"blocks\.2\.mlp\.fc_in")),  # blocks 0 / 1 / 2 / 3 differ
        (4, (r"blocks\.[12]\.attn\.(q|v)_proj",)),  # untracked blocks around a tracked pair
        (7, (r"blocks\.[0-5]\..*", r"blocks\.6\.mlp\.fc_in")),  # a scanned segment of 6
    ],
)
def test_a_selection_that_differs_between_blocks_is_captured_exactly(num_layers, patterns):
    """Blocks that track different sublayers (or none) run as separate segments, scanned or
    unrolled (at most `UNROLLED_BLOCKS`): still exact."""
    model = tiny(num_layers=num_layers)
    assert_capture_exact(model, tiny_batch(), select_layers(model, patterns))


def test_map_gives_each_layer_its_input_and_traces_once_per_run():
    """`Captured.map` applies fn to every layer with that layer's own input (picked, not
    stacked), in the layers' order; fn is traced once per run of layers whose inputs have the
    same shapes (here fc_in's first block takes a vector: fc_in splits into two runs), in a
    scanned model and in an unrolled one (at most `UNROLLED_BLOCKS` blocks)."""
    for num_layers in (3, UNROLLED_BLOCKS + 2):
        _check_map(tiny(num_layers=num_layers), tiny_batch())


def _check_map(model, batch):
    layers = select_layers(model)
    inputs = {p: jnp.asarray(float(i + 1)) for i, p in enumerate(layers)}
    inputs["blocks.0.mlp.fc_in"] = jnp.asarray([2.0, 0.5])
    traced = []

    def fn(first, io, x):
        traced.append(first)
        return jnp.sum(io.g * jnp.sum(x)) + jnp.sum(io.a)

    graphdef, state = nnx.split(model)

    def both(state, batch):
        _, io = capture(nnx.merge(graphdef, state), batch, layers)
        direct = {p: jnp.sum(io[p].g * jnp.sum(inputs[p])) + jnp.sum(io[p].a) for p in layers}
        return io.map(fn, inputs), direct

    mapped, direct = jax.jit(both)(state, batch)
    assert list(mapped) == list(layers)
    for p in layers:
        np.testing.assert_allclose(mapped[p], direct[p], rtol=RTOL)
    assert sorted(traced) == ["blocks.0.mlp.fc_in", "blocks.0.mlp.fc_out", "blocks.1.mlp.fc_in"]


def _products(num_layers: int) -> int:
    """Matrix products in the lowered program of capture + per-layer covariance sums."""
    model, batch = tiny(num_layers=num_layers), tiny_batch()
    graphdef, state = nnx.split(model)
    layers = tuple(layer_paths(model))

    def sums(state, batch):
        _, io = capture(nnx.merge(graphdef, state), batch, layers)
        return io.map(lambda _, x, __: statistics.covariance_sums(x, batch.mask))

    return jax.jit(sums).lower(state, batch).as_text().count("dot_general")


def test_the_program_does_not_grow_with_depth():
    """Beyond `UNROLLED_BLOCKS` the blocks run as one scan and each sublayer's statistics as
    one loop, so the lowered program holds the same matrix products at 5 and 9 blocks (the
    loop over blocks held 59 at 2 and 179 at 6): tracing and compiling cost about one block
    whatever the depth."""
    assert UNROLLED_BLOCKS < 5
    assert _products(5) == _products(9)


def test_per_sequence_sums_equal_per_sequence_gradients():
    model, batch = tiny(), tiny_batch()
    layers = select_layers(model)
    _, io = _captured(model, batch, layers)
    graphdef, params = nnx.split(model, nnx.Param)

    def one(p, inputs, targets, weights):
        b = Batch(inputs[None], targets[None], weights[None])
        return summed_nll(nnx.merge(graphdef, p)(b.inputs), b)

    per_seq = jax.vmap(jax.grad(one), in_axes=(None, 0, 0, 0))(
        params, batch.inputs, batch.targets, batch.weights
    )
    for path in layers:
        G = jnp.einsum("bto,bti->boi", io[path].g, io[path].a)
        for b in range(batch.inputs.shape[0]):
            ref = kernel_grad(jax.tree.map(lambda x, b=b: x[b], per_seq), path)
            assert np.linalg.norm(G[b] - ref) <= RTOL * np.linalg.norm(ref), (path, b)


def test_default_selection_is_the_mlp_linears_and_errors_list_paths():
    model = tiny()
    assert select_layers(model) == tuple(
        f"blocks.{i}.mlp.{n}" for i in range(2) for n in ("fc_in", "fc_out")
    )
    with pytest.raises(ValueError, match="blocks.0.attn.q_proj"):
        select_layers(model, [r"nothing\..*"])


def test_plain_forward_stores_nothing_and_does_not_warn():
    model = tiny()
    before = nnx.state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(tiny_batch().inputs)
    after = nnx.state(model)
    assert jax.tree.structure(before) == jax.tree.structure(after)


def test_padding_positions_have_zero_output_gradient():
    model, batch = tiny(), tiny_batch()
    _, io = _captured(model, batch, select_layers(model))
    g = io["blocks.0.mlp.fc_in"].g
    assert np.all(np.asarray(g)[~np.asarray(batch.weights, bool)] == 0)


def test_sampled_labels_are_deterministic_per_key_and_change_the_loss():
    model, batch = tiny(), tiny_batch()
    graphdef, state = nnx.split(model)
    layers = select_layers(model)
    fn = jax.jit(lambda s, k: capture(nnx.merge(graphdef, s), batch, layers, sample_key=k)[0])
    k0, k1 = jax.random.key(0), jax.random.key(1)
    assert fn(state, k0) == fn(state, k0)
    assert fn(state, k0) != fn(state, k1)


@pytest.mark.parametrize("first, width", [(0, 300), (6, 4), (100, 200), (299, 1)])
def test_gumbel_noise_of_a_vocabulary_slice_is_the_slice_of_the_whole(first, width):
    key = jax.random.key(3)
    whole = np.asarray(gumbel_noise(key, (5, 300)))[:, first : first + width]
    assert np.array_equal(gumbel_noise(key, (5, width), first), whole)  # offset known
    traced = jax.jit(lambda f: gumbel_noise(key, (5, width), f))(first)  # offset traced
    assert np.array_equal(traced, whole)


def test_sampled_labels_follow_the_model_distribution():
    # 20,000 draws from p = (0.1, 0.2, 0.7): frequencies within 5 standard errors (≤ 0.015).
    p = np.array([0.1, 0.2, 0.7])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(20_000))
    labels = jax.vmap(lambda k: sample_targets(k, jnp.log(p)[None]))(keys)
    freq = np.bincount(np.asarray(labels).ravel(), minlength=3) / 20_000
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / 20_000))


# ----------------------------------------------------------------------- FSDP: block by block


def _split_capture(model: Decoder, batch: Batch, layers, mesh, placement: str, sampled=False):
    """capture inside shard_map with the parameters placed as `placement` says: split ones are
    handed over as pieces with their specs (the block-wise path), replicated ones whole.
    `sampled`: true-Fisher labels, one key per row."""
    graphdef, state = nnx.split(model)
    where = Placement(mesh, placement)
    rows = np.arange(batch.inputs.shape[0], dtype=np.int32)

    def body(specs, state, batch, rows):
        keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(7), r))(rows)
        key = keys if sampled else None
        model = nnx.merge(graphdef, state)
        loss, io = capture(model, batch, layers, sample_key=key, specs=specs[0])
        return loss[None], dict(io)

    out_specs = (P("data"), {p: LayerIO(P("data"), P("data")) for p in layers})
    fn = where.step(body, (PLACED, DATA, DATA), out_specs)
    return jax.jit(fn), where.place(state), *shard_batch((batch, rows), mesh)


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize(
    "variant",
    [{}, {"residual": "parallel", "positions": "rope", "num_kv_heads": 1, "tie_embeddings": False}],
)
def test_blockwise_gathering_captures_what_the_whole_model_captures(variant, sampled):
    """Parameters split over 8 devices, gathered one block at a time (and again in the
    backward), the embedding and head split over the vocabulary (16 / 8 ids per device, never
    gathered): the same loss, `a` and `g` of every linear layer as the whole model, with the
    batch's labels or sampled ones (float64; the same operations, so RTOL is generous)."""
    model, mesh = tiny(**variant), make_mesh()
    tokens = np.tile(tiny_batch().inputs, (3, 1))[:8]
    batch = Batch.from_documents(np.asarray(tokens), np.array([5, 4, 3] * 3)[:8])
    layers = tuple(layer_paths(model))
    results = {}
    for placement in ("replicated", "fsdp"):
        fn, state, *inputs = _split_capture(model, batch, layers, mesh, placement, sampled)
        assert _vocab_split(state) == (placement == "fsdp")
        results[placement] = jax.device_get(fn(state, *inputs))
    (loss, io), (ref_loss, ref) = results["fsdp"], results["replicated"]
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    for path in layers:
        for got, want in ((io[path].a, ref[path].a), (io[path].g, ref[path].g)):
            assert np.linalg.norm(got - want) <= RTOL * np.linalg.norm(want), path


def test_blockwise_gathering_holds_one_block_not_the_model():
    """XLA's compiled bytes per device of a split-parameter capture grow with the number of
    blocks by 1/8 of the added blocks' bytes (each device's pieces), not by the whole added
    blocks, as gathering the whole model would: the added 12 blocks cost < 50% of their bytes
    (measured: 12.5%; gathering the whole model: 115%)."""
    compiled = {}
    for num_layers in (4, 16):
        compiled[num_layers], model, _ = _fsdp_capture(num_layers=num_layers, d_model=128)
    block_bytes = 4 * sum(x.size for x in jax.tree.leaves(nnx.state(model.blocks[0])))
    growth = compiled[16] - compiled[4]
    assert growth < 0.5 * 12 * block_bytes, (growth, 12 * block_bytes)


@pytest.mark.parametrize("sampled", [False, True])
def test_vocabulary_parallel_capture_holds_a_slice_of_the_embedding(sampled):
    """XLA's compiled bytes per device of a split-parameter capture grow with the vocabulary by
    about 1/8 of the added embedding rows (each device's slice; the logits [B, T, V/8] of every
    device's rows add as much as [b, T, V] of its own would), not by the whole added table, as
    gathering it would: < 25% (measured: 12.5% with the batch's labels, 14.8% with sampled
    ones)."""
    compiled = {}
    for vocab in (1024, 8192):
        compiled[vocab], _, state = _fsdp_capture(sampled, vocab_size=vocab, d_model=512)
        assert _vocab_split(state)
    added_rows = (8192 - 1024) * 512 * 4
    assert compiled[8192] - compiled[1024] < 0.25 * added_rows


def _fsdp_capture(sampled: bool = False, **shape) -> tuple[int, Decoder, nnx.State]:
    """(XLA's compiled bytes per device, model, placed state) of a float32 capture of one layer
    with the parameters split over 8 devices, for a NARROW decoder with `shape` changed."""
    cfg = dataclasses.replace(NARROW, d_ff=512, num_heads=4, use_bias=False, **shape)
    model = Decoder(dataclasses.replace(cfg, param_dtype="float32"), rngs=nnx.Rngs(0))
    tokens = np.ones((8, cfg.max_length), np.int32)
    batch = Batch.from_documents(tokens, np.full(8, cfg.max_length))
    layers = ("blocks.0.mlp.fc_out",)
    fn, state, *inputs = _split_capture(model, batch, layers, make_mesh(), "fsdp", sampled)
    return compiled_bytes(fn.lower(state, *inputs).compile()), model, state


def _vocab_split(state) -> bool:
    """Whether the embedding of a placed state is split along the vocabulary."""
    return tuple(state["embed"][...].sharding.spec)[:1] == ("data",)
