"""Greedy decoding (`infljax.models.generate`) equals a plain one-token-at-a-time loop, in
float64, for every prompt length, batch padding, EOS and both length caps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from infljax.models.decoder import Decoder, DecoderConfig
from infljax.models.generate import GenerateArgs, greedy_generate

CFG = DecoderConfig(
    vocab_size=24, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_length=12,
    param_dtype="float64",
)  # fmt: skip
PAD = 0


@pytest.fixture(scope="module")
def model() -> Decoder:
    return Decoder(CFG, rngs=nnx.Rngs(3))


@pytest.fixture(scope="module")
def forward(model):
    """One prompt's logits [T, vocab], computed in a PAD-filled [1, max_length] buffer (causal
    attention: the pads after the prompt do not change its logits)."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))

    def logits(tokens):
        buffer = np.full((1, CFG.max_length), PAD, np.int32)
        buffer[0, : len(tokens)] = tokens
        return run(state, jnp.asarray(buffer))[0, : len(tokens)]

    return logits


def naive_greedy(forward, prompt, max_new_tokens, eos_id):
    """The reference: re-run the model on the growing sequence, one token at a time."""
    tokens, out = list(prompt), []
    while len(out) < max_new_tokens and len(tokens) < CFG.max_length:
        token = int(jnp.argmax(forward(tokens)[-1]))
        if token == eos_id:
            break
        tokens.append(token)
        out.append(token)
    return out


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(3, CFG.vocab_size, size=int(n)).tolist() for n in rng.integers(1, 12, count)
    ]


def test_matches_the_plain_loop_with_padding_batches_and_caps(model, forward):
    batch = prompts(7)  # 7 prompts in batches of 3: the last batch is padded
    for max_new_tokens in (1, 4, 20):  # 20: the 12-token buffer caps every prompt
        args = GenerateArgs(max_new_tokens=max_new_tokens, batch_size=3)
        got = greedy_generate(model, batch, eos_id=-1, pad_id=PAD, args=args)
        assert got == [naive_greedy(forward, p, max_new_tokens, -1) for p in batch]
    assert [len(g) for g in got] == [CFG.max_length - len(p) for p in batch]


def test_stops_at_eos_without_returning_it(model, forward):
    batch = prompts(5, seed=1)
    free = naive_greedy(forward, batch[0], 8, -1)
    eos = free[len(free) // 2]  # a token the model emits for prompt 0
    got = greedy_generate(model, batch, eos_id=eos, pad_id=PAD, args=GenerateArgs(8, 2))
    assert got == [naive_greedy(forward, p, 8, eos) for p in batch]
    assert eos not in got[0] and len(got[0]) < len(free)


def test_bad_prompts_and_arguments_are_refused(model):
    with pytest.raises(ValueError, match="max_length is 12"):
        greedy_generate(model, [[3] * 12], eos_id=2, pad_id=PAD)
    with pytest.raises(ValueError, match="prompt 1 has 0 tokens"):
        greedy_generate(model, [[3], []], eos_id=2, pad_id=PAD)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerateArgs(max_new_tokens=0)
