"""Shared fixtures: a briefly trained tiny float64 decoder, its data, the reference fit and the
brute-force Fishers.

Brute force (`infljax.curvature.exact`) = explicit per-sequence gradients from
`jax.vmap(jax.grad(...))` of the summed NLL, with the same labels the fit uses (true Fisher: one
sample per token, key fold_in(seed, row)); it shares only that key derivation with the factor
passes and nothing with capture.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from infljax import training
from infljax.curvature import FactorArgs, fit_factors
from infljax.curvature.exact import exact_fisher, fisher_targets, per_sequence_gradients
from infljax.data.batches import RowBatch, row_batches
from infljax.data.corpus import TokenizedCorpus
from infljax.data.readers import Record
from infljax.distributed import Placement, make_mesh
from infljax.models.capture import select_layers
from infljax.models.decoder import Decoder
from infljax.models.losses import Batch
from tests.tiny import NARROW

CFG = NARROW
NUM_ROWS = 16
SEED = 3
ARGS = FactorArgs(fisher="true", seed=SEED, lambda_chunk=3)


def structured_corpus(n: int, seed: int) -> TokenizedCorpus:
    """Rows counting from a random start in steps of 1-3 (mod 15, ids 1..15): learnable."""
    rng = np.random.default_rng(seed)
    t = CFG.max_length
    lengths = rng.integers(1, t + 1, size=n).astype(np.int32)
    lengths[:2] = (t, 1)  # a full row and a row with no prediction
    start, step = rng.integers(0, 15, size=(n, 1)), rng.integers(1, 4, size=(n, 1))
    tokens = ((start + step * np.arange(t)[None]) % 15 + 1).astype(np.int32)
    tokens[np.arange(t)[None, :] >= lengths[:, None]] = 0
    docs = [Record(doc_id=str(i), source="web", text=f"doc {i}", extra={}) for i in range(n)]
    return TokenizedCorpus(tokens=tokens, lengths=lengths, documents=docs)


def _train(model: Decoder, steps: int = 40) -> Decoder:
    corpus = structured_corpus(64, seed=1)
    graphdef, params = nnx.split(model, nnx.Param)
    args = training.TrainArgs(steps=steps, warmup_steps=2, learning_rate=3e-2, weight_decay=0.0)
    tx = training.make_optimizer(args)
    opt_state, step = tx.init(params), training.make_train_step(graphdef, tx)
    batch = Batch.from_documents(corpus.tokens, corpus.lengths)
    for _ in range(steps):
        params, opt_state, _ = step(params, opt_state, batch)
    return nnx.merge(graphdef, params)


@pytest.fixture(scope="session")
def trained_model() -> Decoder:
    return _train(Decoder(CFG, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="session")
def corpus() -> TokenizedCorpus:
    return structured_corpus(NUM_ROWS, seed=2)


@pytest.fixture(scope="session")
def layers(trained_model) -> tuple[str, ...]:
    return select_layers(trained_model)


@pytest.fixture(scope="session")
def brute_force(trained_model, corpus, layers) -> dict[str, np.ndarray]:
    """{layer: exact Fisher} over the corpus rows with the seed-SEED sampled labels."""
    batch = Batch.from_documents(corpus.tokens, corpus.lengths)
    targets = fisher_targets(trained_model, batch, np.arange(NUM_ROWS), SEED)
    grads = per_sequence_gradients(trained_model, batch, targets, layers)
    sequences = int(np.sum(np.asarray(batch.mask).any(axis=1)))
    return {p: exact_fisher(g, sequences) for p, g in grads.items()}


def reference_batches(corpus) -> list[RowBatch]:
    """Batches of 6 rows: 6 + 6 + 4 real rows and 2 padding rows (index -1, length 0)."""
    return list(row_batches(corpus, np.arange(NUM_ROWS), 6))


@pytest.fixture(scope="session")
def factors(trained_model, corpus, layers):
    """Reference fit: batches of 6 (one padded) on one device."""
    mesh = make_mesh(devices=jax.devices()[:1])
    return fit_factors(trained_model, layers, reference_batches(corpus), ARGS, Placement(mesh))
