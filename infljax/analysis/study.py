"""Every analysis of STUDY.md (A-I and ground-truth retrieval) for one model, in one call.

`analyse_model(scores, documents, args)` ranks documents once (score ÷ document-gradient norm by
default, STUDY.md "Scores"), takes each query's top and bottom documents, and runs the analyses
on them; `cross_model.analyse_pair` does B and E for two models. Both are pure: arrays and frozen
dataclasses in, frozen dataclasses out; `summary.py` turns the results into JSON.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from infljax.analysis import answers, categories, correlation, dependency, powerlaw, sources
from infljax.analysis.families import FamilyIndex
from infljax.analysis.inputs import DocumentTable, ModelScores, QueryRecord
from infljax.analysis.ranking import bottom_indices, per_nat, ranking_scores, top_indices
from infljax.analysis.retrieval import Retrieval, ground_truth_retrieval


@dataclasses.dataclass(frozen=True)
class AnalysisArgs:
    """What the analyses look at (defaults: the study's values for a 5M-document corpus).

    Attributes:
      normalise: rank documents by score ÷ document-gradient norm (True) or by raw score.
      answer_k: top documents searched for the answer (F; study: 500).
      procedure_k: top documents labelled (G/H; study: 100).
      power_law_k: top scores the power law is fitted on (D; study: 500).
      magnitude_k: top / bottom documents of the cross-model magnitude ratio (E; study: 50k).
      source_ks: k grid of the source over-representation (I); ks >= N are dropped.
      dependency_percents: percents of the corpus the cumulative influence is read at (C).
      top_documents, bottom_documents: documents per query shown in the report's browser.
      snippet_chars: characters of each shown document's text.
    """

    normalise: bool = True
    answer_k: int = 500
    procedure_k: int = 100
    power_law_k: int = 500
    magnitude_k: int = 50_000
    source_ks: tuple[int, ...] = (50, 500, 5_000, 50_000)
    dependency_percents: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
    top_documents: int = 5
    bottom_documents: int = 2
    snippet_chars: int = 600

    def __post_init__(self):
        if not isinstance(self.normalise, bool):
            raise ValueError(f"AnalysisArgs.normalise must be a bool, got {self.normalise!r}")
        for name in ("answer_k", "procedure_k", "power_law_k", "magnitude_k", "snippet_chars"):
            _check_int(name, getattr(self, name), 1)
        for name in ("top_documents", "bottom_documents"):
            _check_int(name, getattr(self, name), 0)
        object.__setattr__(self, "source_ks", tuple(self.source_ks))
        object.__setattr__(self, "dependency_percents", tuple(self.dependency_percents))
        for k in self.source_ks:
            _check_int("source_ks[]", k, 1)
        if not self.dependency_percents or not all(0 < p <= 100 for p in self.dependency_percents):
            raise ValueError(
                f"AnalysisArgs.dependency_percents must be percents in (0, 100], "
                f"got {self.dependency_percents!r}"
            )


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"AnalysisArgs.{name} must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelAnalysis:
    """Everything analysed for one model (field docs in the analysis modules).

    `top` / `bottom`: [Q, *] column indices of each query's best / most negative documents under
    the ranking score; `ranking`: [Q, N] that score.
    """

    name: str
    args: AnalysisArgs
    queries: tuple[QueryRecord, ...]
    index: FamilyIndex
    num_documents: int
    query_nats: np.ndarray
    ranking: np.ndarray
    raw_scores: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    correlation: np.ndarray
    families: correlation.FamilyCorrelation
    dependency: dependency.DependencyCurves
    power_law: powerlaw.PowerLawFits
    slope_test: powerlaw.SlopeComparison
    answers: answers.AnswerSearch
    categories: categories.CategoryShares
    sources: sources.SourceRatios
    retrieval: Retrieval | None
    layer_shares: np.ndarray | None


def analyse_model(scores: ModelScores, table: DocumentTable, args: AnalysisArgs) -> ModelAnalysis:
    """Run A, C, D, F, G/H, I and the ground-truth retrieval on one model's scores."""
    if scores.scores.shape[1] != table.num_documents:
        raise ValueError(
            f"model {scores.name!r}: {scores.scores.shape[1]} score columns but "
            f"{table.num_documents} documents in the corpus table; were the scores computed on "
            "this corpus?"
        )
    if not scores.queries:
        raise ValueError(
            f"model {scores.name!r} has no queries to analyse; check queries.jsonl (records with "
            "a `model` field are kept only for the model they name)"
        )
    queries, index = scores.queries, FamilyIndex.of(scores.queries)
    ranking = ranking_scores(scores.scores, scores.doc_grad_norms, args.normalise)
    ks = sources.log_grid(table.num_documents, args.source_ks)
    depth = max(args.answer_k, args.procedure_k, args.top_documents, *ks, 1)
    top = top_indices(ranking, depth)
    bottom = bottom_indices(ranking, max(args.bottom_documents, *ks, 1))
    magnitudes = per_nat(scores.scores, scores.query_nats)
    corr = correlation.pearson_rows(ranking)
    fits = powerlaw.power_law_fits(magnitudes, args.power_law_k)
    return ModelAnalysis(
        name=scores.name,
        args=args,
        queries=queries,
        index=index,
        num_documents=table.num_documents,
        query_nats=np.asarray(scores.query_nats, dtype=np.float64),
        ranking=ranking,
        raw_scores=np.asarray(scores.scores),
        top=top,
        bottom=bottom,
        correlation=corr,
        families=correlation.family_correlation(corr, index, _variants(queries)),
        dependency=dependency.dependency_curves(magnitudes, args.dependency_percents),
        power_law=fits,
        slope_test=powerlaw.compare_slopes(
            fits.slope[index.kind_rows("factual")], fits.slope[index.kind_rows("reasoning")]
        ),
        answers=answers.search_answers(queries, top[:, : args.answer_k], table.texts),
        categories=categories.category_shares(queries, top[:, : args.procedure_k], table),
        sources=sources.source_ratios(top, bottom, table.sources, ks),
        retrieval=(
            ground_truth_retrieval(queries, ranking, table)
            if categories.has_ground_truth(queries, table)
            else None
        ),
        layer_shares=_layer_shares(scores.per_layer, top[:, : args.procedure_k]),
    )


def _variants(queries: tuple[QueryRecord, ...]) -> list[str | None]:
    return [None if q.extra.get("variant") is None else str(q.extra["variant"]) for q in queries]


def _layer_shares(per_layer: np.ndarray | None, top: np.ndarray) -> np.ndarray | None:
    """[L, Q] each layer's share of the summed score over the query's top documents (per-layer
    scores sum to the total, DESIGN.md §2), or None without per-layer scores."""
    if per_layer is None:
        return None
    sums = np.stack(
        [np.asarray(per_layer[:, q, :])[:, top[q]].sum(1) for q in range(top.shape[0])], axis=1
    )
    total = sums.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, sums / total, np.nan)
