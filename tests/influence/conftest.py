"""Shared float64 fixtures for the influence tests: a tiny decoder, a random corpus, queries,
and brute-force per-sequence gradients from plain `jax.grad` (no capture involved)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from infljax.data.corpus import TokenizedCorpus
from infljax.distributed import MeshArgs, Placement, make_mesh, replicate
from infljax.influence.measurement import QueryTokens
from infljax.models.capture import select_layers
from infljax.models.decoder import Decoder
from infljax.models.losses import Batch, summed_nll
from tests.tiny import TINY, random_corpus

CFG = TINY


def make_queries(rows: list[list[int]], prompt_lengths: list[int]) -> QueryTokens:
    lengths = np.asarray([len(r) for r in rows], np.int32)
    tokens = np.zeros((len(rows), int(lengths.max())), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    ids = tuple(f"q{i}" for i in range(len(rows)))
    return QueryTokens(tokens, np.asarray(prompt_lengths, np.int32), lengths, ids)


@pytest.fixture(scope="package")
def model() -> Decoder:
    return Decoder(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="package")
def layers(model) -> tuple[str, ...]:
    return select_layers(model)


@pytest.fixture(scope="package")
def corpus() -> TokenizedCorpus:
    return random_corpus()


@pytest.fixture(scope="package")
def queries() -> QueryTokens:
    # BOS=1; prompts of 1..3 tokens after BOS, completions of 2..4 tokens.
    return make_queries([[1, 3, 4, 5, 6], [1, 7, 8, 9, 10, 11, 12], [1, 5, 13, 14, 15]], [3, 4, 2])


@pytest.fixture(scope="package")
def mesh1():
    return make_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope="package")
def mesh8():
    return make_mesh(MeshArgs(data=8))


@pytest.fixture(scope="package")
def split(model, mesh1):
    graphdef, state = nnx.split(model)
    return graphdef, replicate(state, mesh1)


def _kernel_grad(grads: nnx.State, path: str) -> jax.Array:
    node = grads
    for key in path.split("."):
        node = node[int(key) if key.isdigit() else key]
    w = node["kernel"][...].T
    return w if node.get("bias") is None else jnp.concatenate([w, node["bias"][...][:, None]], 1)


def brute_force_grads(model, batch: Batch, layers) -> dict[str, np.ndarray]:
    """{layer: [B, d_out, d_in]} per-sequence gradients of the summed weighted NLL, by jax.grad
    of each sequence alone (bias column last, as in DESIGN §2)."""
    graphdef, params = nnx.split(model, nnx.Param)
    return jax.device_get(_brute_force_fn(graphdef, tuple(layers))(params, batch))


@functools.lru_cache
def _brute_force_fn(graphdef, layers):
    def one(p, inputs, targets, weights):
        b = Batch(inputs[None], targets[None], weights[None])
        return summed_nll(nnx.merge(graphdef, p)(b.inputs), b)

    def grads(params, batch):
        per_seq = jax.vmap(jax.grad(one), in_axes=(None, 0, 0, 0))(
            params, batch.inputs, batch.targets, batch.weights
        )
        return {p: jax.vmap(lambda g, p=p: _kernel_grad(g, p))(per_seq) for p in layers}

    return jax.jit(grads)


def document_batch(corpus: TokenizedCorpus) -> Batch:
    return Batch.from_documents(corpus.tokens, corpus.lengths)


@pytest.fixture(scope="package")
def factors(model, layers, corpus, mesh1):
    from infljax.curvature import FactorArgs, fit_factors

    batches = [document_batch(corpus)]
    return fit_factors(model, layers, batches, FactorArgs(seed=0), Placement(mesh1))


@pytest.fixture(scope="package")
def brute(model, layers, corpus, queries):
    """(query gradients, document gradients) by brute force: {layer: [Q|N, d_out, d_in]}."""
    return (
        brute_force_grads(model, queries.batch(), layers),
        brute_force_grads(model, document_batch(corpus), layers),
    )
