"""Tiny float64 models and random corpora shared by the exactness and invariance tests."""

import dataclasses

import numpy as np

from infljax.data.corpus import TokenizedCorpus
from infljax.data.readers import Record
from infljax.models.decoder import DecoderConfig

TINY = DecoderConfig(
    vocab_size=16,
    d_model=8,
    num_layers=2,
    num_heads=2,
    d_ff=16,
    max_length=8,
    param_dtype="float64",
)
# Widths ≤ 8 and 6 tokens: small enough for explicit Fisher matrices (curvature, capture tests).
NARROW = dataclasses.replace(TINY, d_ff=8, max_length=6)


def random_corpus(n: int = 12, seed: int = 0, width: int = 8) -> TokenizedCorpus:
    """n documents of 2..width random tokens (ids 3..15), PAD-filled rows of `width`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, width + 1, size=n).astype(np.int32)
    tokens = rng.integers(3, 16, size=(n, width)).astype(np.int32)
    tokens[np.arange(width)[None, :] >= lengths[:, None]] = 0
    docs = [Record(doc_id=f"d{i}", source="web", text=f"doc {i}", extra={}) for i in range(n)]
    return TokenizedCorpus(tokens=tokens, lengths=lengths, documents=docs)
