"""`analysis/summary.json`: every number the report shows, as plain JSON.

Schema (`<f>` a query family, `<s>` a source, `<k>` a k of the grid; NaN and inf become null;
JSON objects are written with sorted keys, so display orders are given as lists):

    setup.{models (display order: smaller first), num_documents, sources.<s>, ground_truth, args}
    models.<name>.{num_queries, num_documents, family_order, families.<f>.{kind, num_queries},
                   conventions.{ranking, magnitudes, correlation}}
    models.<name>.correlation.{within_family.<f>, within_family_max.<f>, between_families,
                               with_control.<f>, same_variant.<f>, other_variant.<f>,
                               family_matrix.{families, values}}                          (A)
    models.<name>.dependency.{percents, positive|positive_share|negative|negative_share.<f>.
                              {mean, sem}, total_positive_per_nat.<f>,
                              total_negative_per_nat.<f>}                                  (C)
    models.<name>.power_law.{k, slopes.<f>.{mean, sem, n}, factual_vs_reasoning.{mean_factual,
                             mean_reasoning, n_factual, n_reasoning, t, p_value, test}}    (D)
    models.<name>.answer_in_top_k.{k, criterion, <f>, any_document.<f>, correct_only.<f>}  (F;
                                   correct_only when queries record `correct`)
    models.<name>.categories.{k, source, keyword.<f>.<label>, ground_truth.<f>.<label>,
                              procedure.<f>, procedure_base_rate.<f>}                      (G/H)
    models.<name>.source_ratio.{ks, sources, corpus_share.<s>, top|bottom.<k>.<f>.<s>}     (I)
    models.<name>.ground_truth.{fact_recall_at_1, fact_recall_at_10, fact_median_rank,
                                chance_fact_recall_at_10, num_factual, num_documents,
                                reasoning.<f>.answer_docs|worked_docs.{num_queries, recall_at_1,
                                recall_at_10, chance_recall_at_1, chance_recall_at_10,
                                median_rank}}                    (with ground truth only)
    models.<name>.per_layer.<f>: [share per layer]              (with per_layer.npy only)
    models.<name>.baselines.<method>.{answer_in_top_k, categories, source_ratio, ground_truth}
        each baseline of stage `baselines` analysed like the model, same layout as above
    models.<name>.baseline_overlap.<method>.{k, chance, <f>}: mean share of the influence
        ranking's top-k documents (k = procedure_k) also in the baseline's top-k; chance = k / N
    models.<name>.conventions.strategy: the scores stage's strategy (ekfac, ...) when recorded
    models.<name>.queries.<id>.{family, kind, nats, power_law_slope, answer_found, fact_rank,
                                answer_rank, worked_rank, top_documents: [{doc_id, source,
                                score, raw_score}]}
    cross_model.<a>__<b>.{num_shared, mean_correlation, max_correlation,
                          correlation_by_family.<f>, magnitude_ratio.{k, direction,
                          top|bottom.{median, mean, by_family.<f>}},
                          queries.<id>.{correlation, ratio_top, ratio_bottom}}             (B, E)
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from infljax.analysis.answers import fraction
from infljax.analysis.categories import CATEGORIES
from infljax.analysis.cross_model import PairAnalysis
from infljax.analysis.dependency import mean_and_sem
from infljax.analysis.families import FamilyIndex, query_kind
from infljax.analysis.inputs import DocumentTable
from infljax.analysis.ranking import top_overlap
from infljax.analysis.retrieval import rank_summary
from infljax.analysis.study import AnalysisArgs, ModelAnalysis


def plain(value: Any) -> Any:
    """`value` with numpy scalars/arrays as Python values and NaN/inf as None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _per_family(index: FamilyIndex, values: np.ndarray) -> dict[str, float]:
    """family -> mean of finite [Q] values over its rows (NaN when none is finite)."""
    out = {}
    for family, rows in zip(index.families, index.rows, strict=True):
        chosen = np.asarray(values, dtype=np.float64)[list(rows)]
        chosen = chosen[np.isfinite(chosen)]
        out[family] = float(chosen.mean()) if chosen.size else float("nan")
    return out


def model_summary(m: ModelAnalysis, table: DocumentTable) -> dict[str, Any]:
    """The JSON section of one model (see the module docstring); `table` names the documents."""
    out = {
        "num_queries": len(m.queries),
        "num_documents": m.num_documents,
        "conventions": {
            "ranking": "score / doc_grad_norm" if m.args.normalise else "raw score",
            "magnitudes": "raw score per nat of completion NLL",
            "correlation": "Pearson over all documents of the ranking score",
        },
        "family_order": list(m.index.families),
        "families": {
            f: {"kind": k, "num_queries": len(r)}
            for f, k, r in zip(m.index.families, m.index.kinds, m.index.rows, strict=True)
        },
        "correlation": _correlation(m),
        "dependency": _dependency(m),
        "power_law": _power_law(m),
        "answer_in_top_k": _answers(m),
        "categories": _categories(m),
        "source_ratio": _sources(m),
        "queries": _queries(m, table),
    }
    if m.retrieval is not None:
        out["ground_truth"] = _ground_truth(m)
    if m.layer_shares is not None:
        out["per_layer"] = {
            f: m.layer_shares[:, list(rows)].mean(1) for f, rows in _zip_rows(m.index)
        }
    return plain(out)


def baseline_summary(m: ModelAnalysis) -> dict[str, Any]:
    """What summary.json keeps of a baseline's analysis (``models.<m>.baselines.<method>``): the
    numbers influence is compared on (F, G/H, I, ground truth), in the layout of the model's own
    sections."""
    out = {
        "answer_in_top_k": _answers(m),
        "categories": _categories(m),
        "source_ratio": _sources(m),
    }
    if m.retrieval is not None:
        out["ground_truth"] = _ground_truth(m)
    return plain(out)


def overlap_summary(baseline: ModelAnalysis, influence: ModelAnalysis) -> dict[str, Any]:
    """``models.<m>.baseline_overlap.<method>``: per family of `influence`, the mean share of a
    query's top-k documents (k = procedure_k) that the baseline also ranks in its top k; `chance`
    is what two random rankings share (k / N). Queries are matched by id."""
    k = min(influence.args.procedure_k, influence.num_documents)
    row = {q.id: i for i, q in enumerate(baseline.queries)}
    shared = np.array(
        [
            top_overlap(influence.top[i, :k], baseline.top[row[q.id], :k])
            if q.id in row
            else np.nan
            for i, q in enumerate(influence.queries)
        ]
    )
    return plain(
        {"k": k, "chance": k / influence.num_documents, **_per_family(influence.index, shared)}
    )


def _zip_rows(index: FamilyIndex):
    return zip(index.families, index.rows, strict=True)


def _correlation(m: ModelAnalysis) -> dict[str, Any]:
    fc = m.families
    return {
        "within_family": fc.within,
        "within_family_max": fc.within_max,
        "between_families": fc.between,
        "with_control": fc.with_control,
        "same_variant": fc.same_variant,
        "other_variant": fc.other_variant,
        "family_matrix": {"families": list(m.index.families), "values": fc.family_matrix},
    }


def _dependency(m: ModelAnalysis) -> dict[str, Any]:
    d = m.dependency
    curves = {}
    for name in ("positive", "positive_share", "negative", "negative_share"):
        values = getattr(d, name)
        curves[name] = {}
        for family, rows in _zip_rows(m.index):
            mean, sem = mean_and_sem(values, rows)
            curves[name][family] = {"mean": mean, "sem": sem}
    return {
        "percents": d.percents,
        **curves,
        "total_positive_per_nat": _per_family(m.index, d.total_positive),
        "total_negative_per_nat": _per_family(m.index, d.total_negative),
    }


def _power_law(m: ModelAnalysis) -> dict[str, Any]:
    slopes = {}
    for family, rows in _zip_rows(m.index):
        values = m.power_law.slope[list(rows)]
        values = values[np.isfinite(values)]
        sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
        mean = values.mean() if len(values) else float("nan")
        slopes[family] = {"mean": mean, "sem": sem, "n": len(values)}
    t = m.slope_test
    return {
        "k": min(m.args.power_law_k, m.num_documents),
        "slopes": slopes,
        "factual_vs_reasoning": {
            "mean_factual": t.mean_a,
            "mean_reasoning": t.mean_b,
            "n_factual": t.n_a,
            "n_reasoning": t.n_b,
            "t": t.t,
            "p_value": t.p_value,
            "test": "Welch two-sided t-test",
        },
    }


def _answers(m: ModelAnalysis) -> dict[str, Any]:
    a = m.answers
    out: dict[str, Any] = {"k": a.k, "criterion": "one top-k document states every target"}
    for family, rows in _zip_rows(m.index):
        out[family] = fraction(a.same_document, rows, a.applicable)
    out["any_document"] = {
        f: fraction(a.any_document, r, a.applicable) for f, r in _zip_rows(m.index)
    }
    correct = [q.extra.get("correct") for q in m.queries]
    if any(c is not None for c in correct):
        mask = np.array([bool(c) for c in correct]) & a.applicable
        out["correct_only"] = {f: fraction(a.same_document, r, mask) for f, r in _zip_rows(m.index)}
    return out


def _categories(m: ModelAnalysis) -> dict[str, Any]:
    c = m.categories
    keyword = {
        f: dict(zip(CATEGORIES, c.keyword[list(rows)].mean(0), strict=True))
        for f, rows in _zip_rows(m.index)
    }
    truth = {
        f: {name: float(v[list(rows)].mean()) for name, v in c.ground_truth.items()}
        for f, rows in _zip_rows(m.index)
    }
    return {
        "k": c.k,
        "source": "ground truth" if c.ground_truth else "keyword labels",
        "keyword": keyword,
        "ground_truth": truth if c.ground_truth else {},
        "procedure": _per_family(m.index, c.procedure),
        "procedure_base_rate": _per_family(m.index, c.procedure_base_rate),
    }


def _sources(m: ModelAnalysis) -> dict[str, Any]:
    s = m.sources
    out = {"ks": list(s.ks), "sources": list(s.sources)}
    out["corpus_share"] = dict(zip(s.sources, s.corpus_share, strict=True))
    for direction in ("top", "bottom"):
        out[direction] = {
            str(k): {
                f: dict(zip(s.sources, s.family_mean(direction, rows)[i], strict=True))
                for f, rows in _zip_rows(m.index)
            }
            for i, k in enumerate(s.ks)
        }
    return out


def _ground_truth(m: ModelAnalysis) -> dict[str, Any]:
    r = m.retrieval
    factual = m.index.kind_rows("factual")
    facts = rank_summary(r.fact_rank, r.fact_docs, factual, r.num_documents) or {}
    out: dict[str, Any] = {
        "fact_recall_at_1": facts.get("recall_at_1"),
        "fact_recall_at_10": facts.get("recall_at_10"),
        "fact_median_rank": facts.get("median_rank"),
        "chance_fact_recall_at_10": facts.get("chance_recall_at_10"),
        "num_factual": facts.get("num_queries", 0),
        "num_documents": r.num_documents,
        "reasoning": {},
    }
    for family, rows in _zip_rows(m.index):
        answer = rank_summary(r.answer_rank, r.answer_docs, rows, r.num_documents)
        worked = rank_summary(r.worked_rank, r.worked_docs, rows, r.num_documents)
        if answer or worked:
            out["reasoning"][family] = {"answer_docs": answer, "worked_docs": worked}
    return out


def _queries(m: ModelAnalysis, table: DocumentTable) -> dict[str, Any]:
    out = {}
    shown = m.top[:, : m.args.top_documents]
    for q, query in enumerate(m.queries):
        entry = {
            "family": query.family,
            "kind": query_kind(query),
            "nats": m.query_nats[q],
            "power_law_slope": m.power_law.slope[q],
            "answer_found": bool(m.answers.same_document[q]) if m.answers.applicable[q] else None,
            "top_documents": [
                {
                    "doc_id": table.doc_ids[d],
                    "source": str(table.sources[d]),
                    "score": m.ranking[q, d],
                    "raw_score": m.raw_scores[q, d],
                }
                for d in shown[q]
            ],
        }
        if m.retrieval is not None:
            for name in ("fact_rank", "answer_rank", "worked_rank"):
                value = int(getattr(m.retrieval, name)[q])
                entry[name] = value or None
        out[query.id] = entry
    return out


def pair_summary(p: PairAnalysis, index: FamilyIndex, queries: Sequence) -> dict[str, Any]:
    """The JSON section of one model pair; `index`/`queries` are model a's."""
    families = [queries[r].family for r in p.rows_a]

    def by_family(values: np.ndarray) -> dict[str, float]:
        return {
            f: _finite_mean(values[[i for i, g in enumerate(families) if g == f]])
            for f in index.families
            if f in families
        }

    def ratio(values: np.ndarray) -> dict[str, Any]:
        finite = values[np.isfinite(values)]
        median = float(np.median(finite)) if finite.size else float("nan")
        return {"median": median, "mean": _finite_mean(values), "by_family": by_family(values)}

    finite = p.correlation[np.isfinite(p.correlation)]
    return plain(
        {
            "num_shared": len(p.query_ids),
            "mean_correlation": _finite_mean(p.correlation),
            "max_correlation": float(finite.max()) if finite.size else float("nan"),
            "correlation_by_family": by_family(p.correlation),
            "magnitude_ratio": {
                "k": p.k,
                "direction": f"{p.b} / {p.a}",
                "top": ratio(p.ratio_top),
                "bottom": ratio(p.ratio_bottom),
            },
            "queries": {
                qid: {
                    "correlation": p.correlation[i],
                    "ratio_top": p.ratio_top[i],
                    "ratio_bottom": p.ratio_bottom[i],
                }
                for i, qid in enumerate(p.query_ids)
            },
        }
    )


def _finite_mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def pair_key(a: str, b: str) -> str:
    return f"{a}__{b}"


def study_summary(
    analyses: Sequence[ModelAnalysis],
    pairs: Sequence[PairAnalysis],
    table: DocumentTable,
    args: AnalysisArgs,
) -> dict[str, Any]:
    """The whole summary.json: setup, one section per model (in the given order), one per pair."""
    by_name = {m.name: m for m in analyses}
    return {
        "setup": {
            "models": [m.name for m in analyses],
            "num_documents": table.num_documents,
            "sources": dict(sorted(Counter(table.sources.tolist()).items())),
            "ground_truth": table.has_ground_truth,
            "args": plain(dataclasses.asdict(args)),
        },
        "models": {m.name: model_summary(m, table) for m in analyses},
        "cross_model": {
            pair_key(p.a, p.b): pair_summary(p, by_name[p.a].index, by_name[p.a].queries)
            for p in pairs
        },
    }
