"""Batched retraining: K copies of a training run as one jitted, vmapped computation.

A **retraining** is the pretrain stage's run (`infljax.training`: same optimizer, schedule,
number of steps and batch shape) with a **weight per document** in the loss and its own
**seed**. The weight `w[n]` multiplies the loss of every prediction of a token of document n
(weight 0 removes the document from the loss; all ones is the original run), and the seed picks
the initialisation and the data order (the held-out split stays the original one; the
initialisation may also be fixed apart from the seed, `init_seeds`). K
retrainings share nothing but the compiled step: parameters, optimizer states, data orders and
weights are stacked along a leading model axis and the step is `jax.vmap`-ed over it, so one
call trains K models at about the cost of K sequential steps on a machine the tiny models
cannot fill, and without K compilations.

A run is a `lax.scan` over steps; `weighted_training` is the same function of the document
weights that `infljax.validation.metagradient` differentiates, so retrainings and
metagradients describe the same datamodel.

With packing, documents are packed into full rows in a seeded order (`training.pack_rows`);
a zero-weight document stays in its row as context for the next document but contributes no
loss (`train_model(exclude_rows=...)` cuts it out instead). Without packing a zero-weight row
contributes nothing at all, exactly as `train_model(exclude_rows=...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from infljax import training
from infljax.influence.measurement import make_nats_fn
from infljax.models.decoder import Decoder, DecoderConfig
from infljax.models.losses import Batch, token_nll
from infljax.trees import stack


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Stream:
    """What one seed's run reads.

    tokens: [P, T] int32 training rows (packed or one document each), PAD after `lengths`;
    lengths: [P] int32; docs: [P, T] int32 corpus row of the token at each position (-1: PAD);
    order: [S, B] int32 the rows of every step's batch.
    """

    tokens: jax.Array
    lengths: jax.Array
    docs: jax.Array
    order: jax.Array


def stream(tokens: np.ndarray, lengths: np.ndarray, args: training.TrainArgs, seed: int) -> Stream:
    """The data of a run with `seed` over the corpus `tokens` [N, T] / `lengths` [N]: the
    training rows of `args` (its own seed's held-out split), packed when `args.packing`, and
    the batch of every step (`training.batch_rows` with `seed`)."""
    train_rows, _ = training.split_rows(len(lengths), args.held_out_fraction, args.seed)
    if args.packing:
        rows_tokens, rows_lengths = training.pack_rows(tokens, lengths, train_rows, seed)
        docs = training.packed_documents(lengths, train_rows, seed, tokens.shape[1])
        rows = np.arange(len(rows_lengths))
    else:
        rows_tokens, rows_lengths, rows = np.asarray(tokens), np.asarray(lengths), train_rows
        positions = np.arange(tokens.shape[1])[None, :]
        docs = np.where(positions < rows_lengths[:, None], np.arange(len(lengths))[:, None], -1)
    order = np.stack(
        [training.batch_rows(rows, s, args.batch_size, seed) for s in range(args.steps)]
    )
    return Stream(
        jnp.asarray(rows_tokens, jnp.int32),
        jnp.asarray(rows_lengths, jnp.int32),
        jnp.asarray(docs, jnp.int32),
        jnp.asarray(order, jnp.int32),
    )


def init_params(cfg: DecoderConfig, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a fresh model, initialised as the pretrain stage does with `seed`."""
    return nnx.split(Decoder(cfg, rngs=nnx.Rngs(seed)), nnx.Param)


def weighted_loss(graphdef, params, tokens, lengths, docs, weights) -> jax.Array:
    """Mean NLL per weighted prediction of one batch: tokens/docs [B, T], lengths [B], weights
    [N] per corpus document. The prediction at position t (of token t+1) has weight
    `weights[docs[:, t+1]]`; with all weights 1 this is `training.mean_token_loss`."""
    batch = Batch.from_documents(tokens, lengths)
    target_docs = jnp.concatenate([docs[:, 1:], jnp.full_like(docs[:, :1], -1)], axis=1)
    w = batch.weights * weights[jnp.maximum(target_docs, 0)]
    logits = nnx.merge(graphdef, params)(tokens)
    return jnp.sum(w * token_nll(logits, batch.targets)) / jnp.maximum(jnp.sum(w), 1.0)


def make_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable:
    """One model's `(params, opt_state, data: Stream, step, weights) -> (params, opt_state,
    loss)` (pure; vmapped and scanned by the callers)."""

    def step(params, opt_state, data: Stream, index, weights):
        rows = data.order[index]
        loss_fn = lambda p: weighted_loss(  # noqa: E731
            graphdef, p, data.tokens[rows], data.lengths[rows], data.docs[rows], weights
        )
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def weighted_training(
    graphdef: nnx.GraphDef,
    args: training.TrainArgs,
    params: nnx.State,
    data: Stream,
    weights: jax.Array,
    remat: bool = False,
) -> nnx.State:
    """The trained parameters of one run as a function of its document `weights` [N] (pure;
    `remat` recomputes each step in the backward pass, for metagradients)."""
    tx = training.make_optimizer(args)
    step = make_step(graphdef, tx)
    if remat:
        step = jax.checkpoint(step)

    def body(carry, index):
        params, opt_state = carry
        params, opt_state, loss = step(params, opt_state, data, index, weights)
        return (params, opt_state), loss

    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(args.steps))
    return params


class Retrainer:
    """Trains K models at once: `Retrainer(cfg, args, tokens, lengths)(weights [K, N], seeds
    [K])` -> stacked parameters (leading axis K). Streams are built once per seed, and the
    compiled K-model step is reused for every call with the same K."""

    def __init__(
        self,
        cfg: DecoderConfig,
        args: training.TrainArgs,
        tokens: np.ndarray,
        lengths: np.ndarray,
        chunk_steps: int = 50,
        devices: list | None = None,
    ):
        self.cfg, self.args = cfg, args
        self.tokens, self.lengths = np.asarray(tokens), np.asarray(lengths)
        self.chunk_steps = max(1, min(chunk_steps, args.steps))
        self.graphdef = init_params(cfg, args.seed)[0]
        self.tx = training.make_optimizer(args)
        self._streams: dict[int, Stream] = {}
        self._params: dict[int, nnx.State] = {}
        # the model axis split over `devices` (CPU: one device per core trains ~1.3x faster
        # than one device using both cores; measured 42.7 vs 54 ms per model-step)
        self.devices = list(devices or jax.local_devices()[:1])
        mesh = jax.sharding.Mesh(np.asarray(self.devices), ("models",))
        self._split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("models"))
        self._chunk = jax.jit(self._run_chunk, static_argnums=(5,), donate_argnums=(0, 1))
        self._nats = jax.jit(jax.vmap(make_nats_fn(self.graphdef), in_axes=(0, None)))

    def seed_stream(self, seed: int) -> Stream:
        if seed not in self._streams:
            self._streams[seed] = stream(self.tokens, self.lengths, self.args, seed)
        return self._streams[seed]

    def seed_params(self, seed: int) -> nnx.State:
        if seed not in self._params:
            self._params[seed] = init_params(self.cfg, seed)[1]
        return self._params[seed]

    def __call__(
        self,
        weights: np.ndarray,
        seeds: np.ndarray,
        on_steps: Callable[[int], None] | None = None,
        checkpoints: tuple[int, ...] = (),
        init_seeds: np.ndarray | None = None,
    ) -> tuple[nnx.State, dict[int, nnx.State]]:
        """(parameters after the last step, {step: parameters after it} for `checkpoints`),
        each stacked over the K models; `on_steps(n)` after every chunk of n steps. Model k
        starts from the initialisation of `init_seeds[k]` (default: `seeds[k]`, which always
        picks its data order)."""
        weights = jnp.asarray(weights, jnp.float32)
        seeds = _ints(seeds)
        inits = seeds if init_seeds is None else _ints(init_seeds)
        if len(inits) != len(seeds):
            raise ValueError(f"init_seeds has {len(inits)} entries for {len(seeds)} seeds")
        if weights.ndim != 2 or weights.shape != (len(seeds), len(self.lengths)):
            raise ValueError(
                f"weights must be [K, N] = [{len(seeds)}, {len(self.lengths)}] (one row per "
                f"seed, one column per corpus document), got {tuple(weights.shape)}"
            )
        k = len(seeds)
        pad = -k % len(self.devices)  # repeat the last model so every device has as many
        seeds, inits = seeds + seeds[-1:] * pad, inits + inits[-1:] * pad
        weights = jnp.concatenate([weights, jnp.repeat(weights[-1:], pad, axis=0)])
        place = lambda tree: jax.device_put(tree, self._split)  # noqa: E731
        data = place(stack([self.seed_stream(s) for s in seeds]))
        params = place(stack([self.seed_params(s) for s in inits]))
        weights = place(weights)
        opt_state = jax.vmap(self.tx.init)(params)
        saved, done = {}, 0
        for stop in _chunk_ends(self.args.steps, self.chunk_steps, checkpoints):
            params, opt_state = self._chunk(params, opt_state, data, weights, done, stop - done)
            if on_steps is not None:
                on_steps(stop - done)
            done = stop
            if done in checkpoints:
                saved[done] = _first(params, k)
        return _first(params, k), saved

    def measure(self, params: nnx.State, queries: Batch) -> np.ndarray:
        """[K, Q] every query's completion NLL (nats) under each of the stacked models."""
        return np.asarray(self._nats(params, queries))

    def _run_chunk(self, params, opt_state, data, weights, start, count):
        step = jax.vmap(make_step(self.graphdef, self.tx), in_axes=(0, 0, 0, None, 0))

        def body(carry, index):
            params, opt_state, _ = step(*carry, data, index, weights)
            return (params, opt_state), None

        carry, _ = jax.lax.scan(body, (params, opt_state), start + jnp.arange(count))
        return carry


def _ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _first(tree, k: int):
    """The first k models of a stacked tree (copies: the chunk donates its inputs)."""
    return jax.tree.map(lambda x: jnp.array(x[:k]), tree)


def _chunk_ends(steps: int, chunk: int, checkpoints: tuple[int, ...]) -> list[int]:
    """Step counts after which a compiled chunk ends: every `chunk` steps, at every checkpoint
    and at the end (so the chunks have few distinct lengths, each compiled once)."""
    bad = [c for c in checkpoints if not 0 < c <= steps]
    if bad:
        raise ValueError(f"checkpoints must be steps in [1, {steps}], got {bad}")
    return sorted({*range(chunk, steps, chunk), *checkpoints, steps})
