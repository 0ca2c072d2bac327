"""Counterfactual retraining: remove a method's top-k documents, retrain, re-measure the queries.

Retraining is `infljax.stages.pretrain.train_model(..., exclude_rows=...)`; "the same run minus
the removed documents" means the same initialisation, optimizer, number of steps and batch
schedule; every remaining document is seen at the same steps, in the same order, as in the
original run, and the removed documents' tokens are deleted (unpacked training: their rows
become empty; packed training: their tokens are cut out of the packed rows, which become
shorter). No other document takes their place, so the retrained model differs from the
original only by what the removed documents contributed.
Removing nothing reproduces the original parameters bit for bit.

Sign convention (DESIGN §2): scores are effects on the completion's log-probability, the
measurement is its NLL. Removing documents with positive scores should *raise* the NLL, so
`nats_change = nats(retrained) - nats(original)` is expected to be positive for good top-k lists.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from infljax import training
from infljax.influence.measurement import QueryTokens, query_nats
from infljax.models.io import load_model


def trained_rows(num_documents: int, args: training.TrainArgs) -> np.ndarray:
    """[N_train] corpus rows the model was trained on (held-out rows excluded), sorted."""
    return training.split_rows(num_documents, args.held_out_fraction, args.seed)[0]


def top_k_rows(scores: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
    """scores [N] (one query's row over corpus documents) -> the k candidate rows scoring highest.

    Only `candidates` (normally `trained_rows`: removing a held-out document changes nothing)
    are eligible. Ties go to the lower row, so the choice is deterministic. Returned best first.
    """
    candidates = np.asarray(candidates, np.int64)
    if not 0 < k <= len(candidates):
        raise ValueError(f"k must be in [1, {len(candidates)}] (the candidates), got {k}")
    order = np.lexsort((candidates, -np.asarray(scores, np.float64)[candidates]))
    return candidates[order[:k]]


def measure(model_path: Path, queries: QueryTokens, mesh: jax.sharding.Mesh, batch_size: int = 16):
    """Each query's completion NLL (nats) [Q] under the model saved in `model_path`
    (`infljax.influence.measurement.query_nats`, as the scores stage measures)."""
    graphdef, state = nnx.split(load_model(model_path))
    return query_nats(graphdef, state, queries, batch_size, mesh)
