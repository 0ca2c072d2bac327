"""Pretraining pieces: optimizer, data order, jitted train step, held-out loss (pure functions).

The loop with checkpoints and progress bars lives in `infljax.stages.pretrain`; everything here is
arrays in, arrays out. Training minimises the mean next-token NLL per predicted token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from infljax.models.losses import Batch, summed_nll


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """AdamW with linear warmup + cosine decay and global-norm clipping."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-2
    warmup_steps: int = 50
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Adam's denominator sqrt(nu + eps_root) + eps: > 0 keeps the update differentiable where
    # nu = 0 (parameters without gradient yet), which metagradients through training need.
    eps_root: float = 0.0
    seed: int = 0
    held_out_fraction: float = 0.05
    packing: bool = False  # pack training documents into full rows (no padding compute)
    eval_every: int = 200
    checkpoint_every: int = 500

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainArgs.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"TrainArgs.warmup_steps must be in [0, steps), got {self}")
        if self.eps_root < 0:
            raise ValueError(f"TrainArgs.eps_root must be >= 0, got {self.eps_root}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"TrainArgs.held_out_fraction must be in [0, 1): {self}")


def learning_rate(args: TrainArgs) -> optax.Schedule:
    """step -> learning rate: linear warmup from 0, cosine decay to final_lr_fraction × peak."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=args.learning_rate,
        warmup_steps=args.warmup_steps,
        decay_steps=args.steps,
        end_value=args.learning_rate * args.final_lr_fraction,
    )


def make_optimizer(args: TrainArgs) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(args.grad_clip),
        optax.adamw(learning_rate(args), weight_decay=args.weight_decay, eps_root=args.eps_root),
    )


def split_rows(num_documents: int, held_out_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """(train_rows, held_out_rows): a seeded split of corpus rows, each sorted."""
    order = np.random.default_rng(seed).permutation(num_documents)
    n_held = int(round(num_documents * held_out_fraction))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def pack_rows(
    tokens: np.ndarray,
    lengths: np.ndarray,
    rows: np.ndarray,
    seed: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the documents `rows` (in a seeded order) into full rows of the same width.

    Returns (tokens [P, T] int32, lengths [P]); every row is full except possibly the last.
    Each document keeps its own BOS/EOS, so boundaries stay visible to the model.

    `exclude` (corpus rows) deletes those documents' tokens from the packed rows after packing
    the full order: every other token stays in the same packed row, in the same order, and the
    rows keep their number (some become shorter), so the data order of a counterfactual run is
    the original one minus the excluded documents (`exclude=None` or empty: unchanged).
    """
    order = np.random.default_rng([seed, 1]).permutation(rows)
    stream = np.concatenate([tokens[r, : lengths[r]] for r in order]).astype(np.int32)
    width = tokens.shape[1]
    num = -(-len(stream) // width)
    packed = np.zeros((num, width), np.int32)
    packed.reshape(-1)[: len(stream)] = stream
    packed_lengths = np.full(num, width, np.int32)
    packed_lengths[-1] = len(stream) - (num - 1) * width
    if exclude is None or len(exclude) == 0:
        return packed, packed_lengths
    keep = np.zeros((num, width), bool)
    keep.reshape(-1)[: len(stream)] = np.repeat(~np.isin(order, exclude), lengths[order])
    return _compact(packed, keep)


def packed_documents(lengths: np.ndarray, rows: np.ndarray, seed: int, width: int) -> np.ndarray:
    """[P, width] int32: the corpus row of every token of `pack_rows(tokens, lengths, rows,
    seed)` (nothing excluded), -1 after the stream's end."""
    order = np.random.default_rng([seed, 1]).permutation(rows)
    stream = np.repeat(order, np.asarray(lengths)[order]).astype(np.int32)
    num = -(-len(stream) // width)
    docs = np.full((num, width), -1, np.int32)
    docs.reshape(-1)[: len(stream)] = stream
    return docs


def _compact(packed: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's kept tokens to its front (order preserved) and PAD the rest."""
    moved = np.take_along_axis(packed, np.argsort(~keep, axis=1, kind="stable"), axis=1)
    new_lengths = keep.sum(axis=1).astype(np.int32)
    moved[np.arange(packed.shape[1])[None, :] >= new_lengths[:, None]] = 0
    return moved, new_lengths


def exclude_documents(
    tokens: np.ndarray, lengths: np.ndarray, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Unpacked training: the excluded corpus rows become empty (length 0, all PAD).

    They stay in the batch order as rows that contribute nothing, so every other document is
    seen at the same steps, in the same batch position, as in the original run.
    """
    if exclude is None or len(exclude) == 0:
        return tokens, lengths
    tokens, lengths = tokens.copy(), lengths.copy()
    tokens[exclude], lengths[exclude] = 0, 0
    return tokens, lengths


def batch_rows(rows: np.ndarray, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of the batch at `step`: epochs are seeded permutations of `rows`, laid end to end.

    Depends only on (rows, step, batch_size, seed), so a resumed run sees the same data order.
    """
    n = len(rows)
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(positions // n):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
        sel = positions // n == epoch
        out[sel] = rows[perm[positions[sel] % n]]
    return out


def mean_token_loss(graphdef: nnx.GraphDef, params: nnx.State, batch: Batch) -> jax.Array:
    logits = nnx.merge(graphdef, params)(batch.inputs)
    return summed_nll(logits, batch) / jnp.maximum(jnp.sum(batch.weights), 1.0)


def make_train_step(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation
) -> Callable[[nnx.State, optax.OptState, Batch], tuple[nnx.State, optax.OptState, jax.Array]]:
    """A jitted `(params, opt_state, batch) -> (params, opt_state, loss)`.

    Inputs keep their shardings (params replicated, batch split over ``data``); XLA inserts
    the gradient all-reduce.
    """

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: mean_token_loss(graphdef, p, batch))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def make_eval_fn(graphdef: nnx.GraphDef) -> Callable[[nnx.State, Batch], tuple[jax.Array, ...]]:
    """A jitted `(params, batch) -> (summed NLL, number of predicted tokens)`."""

    def evaluate(params, batch):
        logits = nnx.merge(graphdef, params)(batch.inputs)
        return summed_nll(logits, batch), jnp.sum(batch.weights)

    return jax.jit(evaluate)


def held_out_loss(eval_fn: Callable, params: nnx.State, batches: Iterator[Batch]) -> float:
    """Mean NLL per predicted token (nats) over all batches."""
    total, count = 0.0, 0.0
    for batch in batches:
        nll, n = eval_fn(params, batch)
        total, count = total + float(nll), count + float(n)
    return total / max(count, 1.0)
