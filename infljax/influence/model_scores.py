"""One model's influence scores in one call, in memory: fit the factors, prepare the queries,
score every document. For models and corpora that fit in memory at once (the embedded world:
validation's seed ensembles and training checkpoints, tests); the resumable, disk-backed runs
(`infljax.curvature.fit.FactorFit`, `infljax.influence.run.ScoringRun`) compose the same calls.

    scores = influence_scores(model, corpus, query_tokens, InfluenceArgs(layers), Placement(mesh))
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from infljax.curvature.passes import FactorArgs, fit_factors
from infljax.curvature.strategies import DampingArgs
from infljax.data.batches import row_batches
from infljax.data.corpus import TokenizedCorpus
from infljax.distributed import Placement
from infljax.influence import query_grads, scoring
from infljax.influence.measurement import QueryTokens
from infljax.models.capture import select_layers


@dataclasses.dataclass(frozen=True)
class InfluenceArgs:
    """What `influence_scores` computes: the tracked `layers` (regexes), the curvature
    `strategy` (identity needs no factors) with its `factors` fit (on every document,
    `fit_batch_size` at a time) and `damping`, the `query_grads` preparation and the `scoring`
    pass (self-influence and partitions are not used here)."""

    layers: tuple[str, ...]
    strategy: str = "ekfac"
    factors: FactorArgs = FactorArgs()
    fit_batch_size: int = 64
    damping: DampingArgs = DampingArgs()
    query_grads: query_grads.QueryArgs = query_grads.QueryArgs()
    scoring: scoring.ScoreArgs = scoring.ScoreArgs()


def influence_scores(
    model: nnx.Module,
    corpus: TokenizedCorpus,
    queries: QueryTokens,
    args: InfluenceArgs,
    placement: Placement,
) -> np.ndarray:
    """scores [Q, N] (float32, DESIGN §2) of every query against every corpus document, the
    factors fitted on the whole corpus (as the factors stage does with num_documents=0), the
    parameters, factors and plan placed as `placement` says."""
    layers = select_layers(model, args.layers)
    factors = None
    if args.strategy != "identity":
        batches = list(row_batches(corpus, np.arange(corpus.num_documents), args.fit_batch_size))
        factors = fit_factors(model, layers, batches, args.factors, placement)
    graphdef, state = nnx.split(model)
    prepared = query_grads.prepare_queries(
        graphdef, layers, state, queries, args.query_grads, placement, args.strategy, factors,
        args.damping,
    )  # fmt: skip
    plan, _ = scoring.make_plan(prepared, args.scoring, corpus.max_length)
    score_fn = scoring.make_score_fn(graphdef, layers, placement)
    result = scoring.score_documents(
        score_fn,
        state,
        plan,
        corpus,
        (0, corpus.num_documents),
        args.scoring.batch_size,
        placement.mesh,
    )
    return np.asarray(result.scores, np.float32)
