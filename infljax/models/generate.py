"""Greedy decoding with a fixed-size buffer: one compilation for every prompt and batch.

Prompts sit left-aligned in a ``[batch, max_length]`` buffer with PAD after their lengths (the
decoder's layout: attention is causal, so pads after a row's end never reach its logits). Each
step runs the full forward pass over the buffer and appends, per row, the argmax at the row's
last position, until the row emits EOS, has `max_new_tokens` new tokens or fills the buffer. No
KV cache: generation here is for short completions of small models, where the recompute is cheap
and the code stays a pure function of the parameters.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class GenerateArgs:
    """Attributes:
    max_new_tokens: at most this many tokens per prompt (EOS not counted, not returned).
    batch_size: prompts per call of the compiled step loop (the last batch is padded).
    """

    max_new_tokens: int = 64
    batch_size: int = 8

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GenerateArgs.{name} must be an integer >= 1, got {value!r}")


DecodeFn = Callable[[nnx.State, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@functools.lru_cache(maxsize=8)
def make_greedy_fn(graphdef: nnx.GraphDef, eos_id: int) -> DecodeFn:
    """A jitted ``(state, tokens [B, L] int32, lengths [B] int32, limits [B] int32) -> (tokens,
    lengths)`` that appends greedy tokens after each row's length until EOS or `limits` (see the
    module docstring). Cached: one compilation per model graph, EOS id and batch shape."""

    def decode(state, tokens, lengths, limits):
        model = nnx.merge(graphdef, state)
        rows = jnp.arange(tokens.shape[0])

        def step(carry):
            tokens, lengths, done = carry
            logits = model(tokens)[rows, lengths - 1]  # [B, vocab] at each row's last token
            new = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
            write = ~done & (new != eos_id)
            at = jnp.minimum(lengths, tokens.shape[1] - 1)
            tokens = tokens.at[rows, at].set(jnp.where(write, new, tokens[rows, at]))
            lengths = lengths + write.astype(lengths.dtype)
            return tokens, lengths, done | ~write | (lengths >= limits)

        carry = (tokens, lengths, lengths >= limits)
        tokens, lengths, _ = jax.lax.while_loop(lambda c: ~jnp.all(c[2]), step, carry)
        return tokens, lengths

    return jax.jit(decode)


def greedy_generate(
    model: nnx.Module,
    prompts: Sequence[Sequence[int]],
    eos_id: int,
    pad_id: int,
    args: GenerateArgs = GenerateArgs(),
) -> list[list[int]]:
    """The greedy continuation (token ids, EOS excluded) of each prompt.

    `model` maps tokens [B, T] to logits [B, T, vocab] and has ``cfg.max_length``, the buffer
    length; a prompt must leave room for at least one new token.
    """
    buffer = model.cfg.max_length
    for i, prompt in enumerate(prompts):
        if not 1 <= len(prompt) < buffer:
            raise ValueError(
                f"prompt {i} has {len(prompt)} tokens; generation needs 1 to {buffer - 1} "
                f"(the model's max_length is {buffer})"
            )
    graphdef, state = nnx.split(model)
    decode = make_greedy_fn(graphdef, eos_id)
    out: list[list[int]] = []
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start : start + args.batch_size]
        tokens = np.full((args.batch_size, buffer), pad_id, np.int32)
        lengths = np.full((args.batch_size,), buffer, np.int32)  # padding rows: full, so done
        for row, prompt in enumerate(chunk):
            tokens[row, : len(prompt)], lengths[row] = prompt, len(prompt)
        limits = np.minimum(lengths + args.max_new_tokens, buffer).astype(np.int32)
        new_tokens, new_lengths = jax.device_get(decode(state, tokens, lengths, limits))
        out += [
            new_tokens[row, lengths[row] : new_lengths[row]].tolist() for row in range(len(chunk))
        ]
    return out
