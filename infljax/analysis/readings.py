"""One-line readings of each analysis and the headline rows, computed from `summary.json`.

Every sentence states measured numbers next to what the study reported (STUDY.md); none claims
more than the numbers show. Each function takes one model's section of the summary (``s``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Summary = dict[str, Any]


def fmt(value: Any, spec: str = ".2f") -> str:
    """`value` formatted with `spec`, or "n/a" when missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def pct(value: float | None) -> str:
    return fmt(None if value is None else 100 * value, ".0f") + ("%" if value is not None else "")


def family_order(s: Summary) -> list[str]:
    """The model's families in display order (JSON objects are written with sorted keys)."""
    return list(s.get("family_order") or s["families"])


def families_of(s: Summary, kind: str) -> list[str]:
    return [f for f in family_order(s) if s["families"][f]["kind"] == kind]


def mean_of(values: dict[str, Any], families: list[str]) -> float | None:
    """Mean of the non-missing values of `families` (None when all are missing)."""
    chosen = [values.get(f) for f in families]
    chosen = [v for v in chosen if v is not None]
    return float(np.mean(chosen)) if chosen else None


def accuracy(entries: list[dict[str, Any]], family: str) -> float | None:
    """Share of a family's queries the model answered correctly (None when not recorded)."""
    flags = [
        e["correct"] for e in entries if e["family"] == family and e.get("correct") is not None
    ]
    return float(np.mean(flags)) if flags else None


def ranked_sources(
    s: Summary, families: list[str], direction: str = "top"
) -> list[tuple[str, float | None]]:
    """(source, ratio averaged over `families`) at the smallest k of the grid, most
    over-represented first; empty without a k or families."""
    ratios = s["source_ratio"]
    if not ratios["ks"] or not families:
        return []
    table = ratios[direction][str(ratios["ks"][0])]
    mean = {
        src: mean_of({f: table.get(f, {}).get(src) for f in families}, families)
        for src in ratios["sources"]
    }
    return sorted(mean.items(), key=lambda kv: -(kv[1] or 0))


def sources_text(ranked: list[tuple[str, float | None]]) -> str:
    return ", ".join(f"{src} {fmt(v, '.1f')}×" for src, v in ranked)


def top_sources(s: Summary, kind: str, direction: str = "top", count: int = 3) -> str:
    """ "source ×ratio, ..." for the most over-represented sources of a kind at the smallest k."""
    ranked = ranked_sources(s, families_of(s, kind), direction)
    if not ranked:
        return "n/a"
    return f"top {s['source_ratio']['ks'][0]}: " + sources_text(ranked[:count])


# ----------------------------------------------------------------------------- headline rows


def _within(kind: str) -> Callable:
    """Mean within-family correlation of a kind, with same / different phrasing when known."""

    def get(s: Summary, _, __) -> str:
        c, families = s["correlation"], families_of(s, kind)
        text = fmt(mean_of(c["within_family"], families))
        same, other = mean_of(c["same_variant"], families), mean_of(c["other_variant"], families)
        if same is not None and other is not None:
            text += f" (same phrasing {fmt(same)}, different {fmt(other)})"
        return text

    return get


def _answers(kind: str) -> Callable:
    def get(s: Summary, _, __) -> str:
        a = s["answer_in_top_k"]
        value = pct(mean_of(a, families_of(s, kind)))
        correct = mean_of(a.get("correct_only") or {}, families_of(s, kind))
        extra = f"; correct only {pct(correct)}" if correct is not None else ""
        return f"{value} (top {a['k']}{extra})"

    return get


def _magnitude(s: Summary, _, __) -> str:
    totals = s["dependency"]["total_positive_per_nat"]
    r = mean_of(totals, families_of(s, "reasoning"))
    f = mean_of(totals, families_of(s, "factual"))
    return fmt(r / f if r is not None and f else None, ".2g")


def _slopes(s: Summary, _, __) -> str:
    t = s["power_law"]["factual_vs_reasoning"]
    return f"{fmt(t['mean_factual'])} vs {fmt(t['mean_reasoning'])} (p={fmt(t['p_value'], '.2g')})"


def _procedure(s: Summary, _, __) -> str:
    c = s["categories"]
    reasoning = families_of(s, "reasoning")
    value = mean_of(c["procedure"], reasoning)
    base = mean_of(c.get("procedure_base_rate", {}), reasoning)
    chance = f", corpus {pct(base)}" if base is not None else ""
    return f"{pct(value)} of top {c['k']}{chance}"


def _fact_recall(s: Summary, _, __) -> str:
    g = s.get("ground_truth")
    if not g or g.get("fact_recall_at_10") is None:
        return "n/a"
    return f"{pct(g['fact_recall_at_10'])} (chance {pct(g['chance_fact_recall_at_10'])})"


HEADLINE: tuple[tuple[str, str, Callable], ...] = (
    ("Within-family correlation, reasoning", "≈0.9 same format (max 0.96), ≈0.55 different",
     _within("reasoning")),
    ("Within-family correlation, factual", "0.03–0.06", _within("factual")),
    ("Between families", "≈0", lambda s, _, __: fmt(s["correlation"]["between_families"])),
    ("Reasoning vs its control", "≈0.2", lambda s, _, __: fmt(
        mean_of(s["correlation"]["with_control"], families_of(s, "reasoning")))),
    ("Answer in top-k, factual", "55% / 30% of correct (top 500)", _answers("factual")),
    ("Answer in top-k, reasoning", "7% / 0% (top 500)", _answers("reasoning")),
    ("Total positive influence per nat, reasoning ÷ factual", "well below 1", _magnitude),
    ("Power-law slope, factual vs reasoning", "compared by t-test", _slopes),
    ("Procedure documents in top-k, reasoning", "frequent (code, formulas; top 100)", _procedure),
    ("Over-represented sources, reasoning", "StackExchange >10×; code, arxiv ≥2×",
     lambda s, _, __: top_sources(s, "reasoning")),
    ("Over-represented sources, factual", "wiki, trivia",
     lambda s, _, __: top_sources(s, "factual")),
    ("Fact recall@10 (procedural world)", "–", _fact_recall),
)  # fmt: skip


# ----------------------------------------------------------------------------- readings


def correlation(s: Summary, model: str) -> str:
    c = s["correlation"]
    within = c["within_family"]
    parts = ", ".join(f"{f} {fmt(within.get(f))}" for f in family_order(s))
    return (
        f"Mean within-family correlation: {parts}; between families {fmt(c['between_families'])}. "
        "Study: ≈0.9 within a reasoning task, 0.03–0.06 for factual pairs, ≈0 between tasks."
    )


def dependency(s: Summary, model: str) -> str:
    d = s["dependency"]
    totals = d["total_positive_per_nat"]
    percents = d["percents"]
    i = int(np.argmin(np.abs(np.log(np.asarray(percents)) - np.log(1.0))))
    share = {f: v["mean"][i] for f, v in d["positive_share"].items()}
    r, f = families_of(s, "reasoning"), families_of(s, "factual")
    return (
        f"Total positive influence per nat: factual {fmt(mean_of(totals, f), '.3g')}, reasoning "
        f"{fmt(mean_of(totals, r), '.3g')}; the top {percents[i]:g}% of documents carry "
        f"{pct(mean_of(share, f))} of factual and {pct(mean_of(share, r))} of reasoning "
        "influence. Study: reasoning queries have far less total magnitude and flatter curves."
    )


def power_law(s: Summary, model: str) -> str:
    p = s["power_law"]
    t = p["factual_vs_reasoning"]
    return (
        f"Over the top {p['k']} scores, mean slope {fmt(t['mean_factual'])} for factual "
        f"(n={t['n_factual']}) vs {fmt(t['mean_reasoning'])} for reasoning (n={t['n_reasoning']}) "
        f"queries; Welch t = {fmt(t['t'])}, p = {fmt(t['p_value'], '.2g')}."
    )


def answers(s: Summary, model: str) -> str:
    a = s["answer_in_top_k"]
    parts = ", ".join(f"{f} {pct(a.get(f))}" for f in family_order(s))
    return (
        f"Queries with one top-{a['k']} document stating the answer (every step for reasoning): "
        f"{parts}. Study (top 500): factual 55%/30%, reasoning 7%/0%."
    )


def categories(s: Summary, model: str) -> str:
    c = s["categories"]
    reasoning = families_of(s, "reasoning")
    if not reasoning:
        return f"Top-{c['k']} labels from {c['source']} (no reasoning queries)."
    parts = ", ".join(
        f"{f} {pct(c['procedure'].get(f))}"
        + (
            f" (corpus {pct(c['procedure_base_rate'].get(f))})"
            if c["procedure_base_rate"].get(f) is not None
            else ""
        )
        for f in reasoning
    )
    return f"Share of top-{c['k']} documents working the same procedure ({c['source']}): {parts}."


def sources(s: Summary, model: str) -> str:
    return (
        f"Reasoning: {top_sources(s, 'reasoning')}. Factual: {top_sources(s, 'factual')}. "
        "Study: StackExchange >10× and code, arxiv ≥2× for reasoning; wiki, trivia for factual."
    )


def retrieval(s: Summary, model: str) -> str:
    g = s.get("ground_truth")
    if not g:
        return ""
    text = (
        f"Fact-stating document in the top 1 / top 10 for {pct(g['fact_recall_at_1'])} / "
        f"{pct(g['fact_recall_at_10'])} of {g['num_factual']} factual queries (chance at 10: "
        f"{pct(g['chance_fact_recall_at_10'])}), median rank {fmt(g['fact_median_rank'], '.0f')} "
        f"of {g['num_documents']}."
    )
    for family, r in g["reasoning"].items():
        for name, label in (("answer_docs", "planted answer"), ("worked_docs", "worked-instance")):
            if r.get(name):
                text += " " + _rank_reading(f"{family}: best {label} document", r[name])
    return text


def _rank_reading(what: str, r: Summary) -> str:
    return (
        f"{what} median rank {fmt(r['median_rank'], '.0f')}, top 10 for "
        f"{pct(r['recall_at_10'])} (chance {pct(r['chance_recall_at_10'])})."
    )


def layers(s: Summary, model: str) -> str:
    shares = s.get("per_layer")
    if not shares:
        return ""
    parts = "; ".join(
        f"{f}: " + ", ".join(pct(v) for v in shares[f]) for f in family_order(s) if f in shares
    )
    return f"Share of the top documents' score per tracked layer — {parts}."


def cross_model(pair: Summary, a: str, b: str) -> str:
    r = pair["magnitude_ratio"]
    return (
        f"Over {pair['num_shared']} shared queries the two models' score vectors correlate "
        f"{fmt(pair['mean_correlation'], '.3f')} on average (max {fmt(pair['max_correlation'])}); "
        f"study: 0.02 (max 0.19). Median |score|/nat ratio {r['direction']}: top {r['k']} "
        f"{fmt(r['top']['median'], '.3g')}, bottom {fmt(r['bottom']['median'], '.3g')}."
    )
