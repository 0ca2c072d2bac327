"""Influence scoring: query measurement and gradients, low-rank query batching, the scoring pass.

    tokens = encode_queries(queries, tokenizer, tokenizer_info(tokenizer), max_length)
    grads = query_gradients(make_query_grads_fn(graphdef, layers), state, tokens, 16, mesh)
    queries = compress(precondition_queries(grads, "ekfac", factors), QueryArgs(rank=32))
    plan, choices = make_plan(queries, ScoreArgs(batch_size=64), corpus.max_length)
    result = score_documents(make_score_fn(graphdef, layers, Placement(mesh)), state, plan, corpus,
                             (0, corpus.num_documents), 64, mesh)

`result.scores[q, m] = Σ_layers ⟨IHVP(∇ NLL_q), ∇ L_m⟩` (DESIGN §2); the stage
`infljax.influence.run.ScoringRun` wires this to the workdir (DESIGN §4).
"""

from infljax.influence.attribution import (
    make_token_scores_fn,
    rescore,
    token_attributions,
    token_scores,
    top_documents,
)
from infljax.influence.contraction import CONTRACTIONS
from infljax.influence.measurement import (
    MeasurementArgs,
    QueryError,
    QueryText,
    QueryTokens,
    QueryTruncationWarning,
    completion_batch,
    encode_queries,
    make_nats_fn,
    read_query_records,
)
from infljax.influence.query_grads import (
    DenseQueries,
    LowRankQueries,
    QueryArgs,
    compress,
    load_queries,
    make_query_grads_fn,
    precondition_queries,
    prepare_queries,
    query_gradients,
    save_queries,
)
from infljax.influence.scoring import (
    BatchScores,
    ScoreArgs,
    SelfInfluence,
    doc_grad_norms,
    make_plan,
    make_score_fn,
    partition_bounds,
    score_documents,
)

__all__ = [
    "CONTRACTIONS",
    "BatchScores",
    "DenseQueries",
    "LowRankQueries",
    "MeasurementArgs",
    "QueryArgs",
    "QueryError",
    "QueryText",
    "QueryTokens",
    "QueryTruncationWarning",
    "ScoreArgs",
    "SelfInfluence",
    "completion_batch",
    "compress",
    "doc_grad_norms",
    "encode_queries",
    "load_queries",
    "make_nats_fn",
    "make_plan",
    "make_query_grads_fn",
    "make_score_fn",
    "make_token_scores_fn",
    "partition_bounds",
    "precondition_queries",
    "prepare_queries",
    "query_gradients",
    "read_query_records",
    "rescore",
    "save_queries",
    "score_documents",
    "token_attributions",
    "token_scores",
    "top_documents",
]
