"""Influence next to its baselines: the tables and one-line readings that sections F, G/H, I,
ground truth and "EK-FAC vs baselines" of the report show, computed from `summary.json`.

A baseline's section (``models.<m>.baselines.<method>``, stage `baselines`) has the layout of the
model's own ``answer_in_top_k``, ``categories``, ``source_ratio`` and ``ground_truth``, so every
function here reads either. Tables are (header, rows) of plain text, which the report escapes;
columns without a single value are left out. Every function returns None without baselines.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from infljax.analysis.readings import (
    families_of,
    family_order,
    fmt,
    mean_of,
    pct,
    ranked_sources,
    sources_text,
)

Summary = dict[str, Any]
Table = tuple[list[str], list[list[str]]]
Method = tuple[str, Summary]  # (row label, section)
Cell = Callable[[str, Summary], str]  # (method label, its section) -> the text of one cell
Column = tuple[str, Cell]  # (header, cell)

MISSING = ("n/a", "")
# Baselines closest to influence first, chance last; unknown methods before random.
_ORDER = ("kfac", "grad_dot", "grad_cosine", "tfidf", "random")
_STRATEGIES = {"ekfac": "EK-FAC", "kfac": "K-FAC", "diagonal": "diagonal", "identity": "grad dot"}
KINDS = ("factual", "reasoning")


def influence_label(s: Summary) -> str:
    """Row label of the influence scores: their strategy (``conventions.strategy``)."""
    strategy = s.get("conventions", {}).get("strategy")
    if strategy is None:
        return "influence"
    return _STRATEGIES.get(strategy, f"influence ({strategy})")


def methods(s: Summary) -> list[Method]:
    """Influence first, then each baseline (closest methods first, random last); empty without
    baselines."""
    baselines = s.get("baselines") or {}

    def order(name: str) -> tuple:
        return (name == "random", _ORDER.index(name) if name in _ORDER else len(_ORDER), name)

    if not baselines:
        return []
    return [(influence_label(s), s), *((n, baselines[n]) for n in sorted(baselines, key=order))]


def _table(ms: list[Method], columns: list[Column], extra: list[list[str]] = ()) -> Table | None:
    """One row per method (then the `extra` rows, label first); columns missing for every
    method are left out."""
    if not ms:
        return None
    cells = [[cell(label, sec) for _, cell in columns] for label, sec in ms]
    keep = [j for j in range(len(columns)) if any(row[j] not in MISSING for row in cells)]
    header = ["method", *(columns[j][0] for j in keep)]
    rows = [[label, *(row[j] for j in keep)] for (label, _), row in zip(ms, cells, strict=True)]
    rows += [[row[0], *(row[1 + j] for j in keep)] for row in extra]
    return header, rows


def _by_method(ms: list[Method], cell: Cell) -> str:
    """ "label value, label value, ..." over the methods."""
    return ", ".join(f"{label} {cell(label, sec)}" for label, sec in ms)


def _kinds(s: Summary) -> list[tuple[str, list[str]]]:
    """(kind, its families) for factual and reasoning, when the model has such queries."""
    return [(kind, families_of(s, kind)) for kind in KINDS if families_of(s, kind)]


# ----------------------------------------------------------------------------- values


def answer(sec: Summary, families: list[str]) -> float | None:
    """F: share of the families' queries with one top-k document stating every target."""
    return mean_of(sec["answer_in_top_k"], families)


def relevant_share(sec: Summary, families: list[str], kind: str) -> float | None:
    """G: share of the top-k documents that work the query's procedure (reasoning) or state its
    fact (factual; ground truth only), averaged over `families`."""
    c = sec["categories"]
    if kind == "reasoning":
        return mean_of(c["procedure"], families)
    truth = c.get("ground_truth") or {}
    return mean_of({f: truth.get(f, {}).get("states_fact") for f in families}, families)


def top_source(sec: Summary, families: list[str], count: int = 1) -> str:
    """I: the `count` most over-represented sources at the smallest k, "source r×"."""
    ranked = ranked_sources(sec, families)
    return sources_text(ranked[:count]) if ranked else "n/a"


def truth(sec: Summary, key: str, family: str | None = None, docs: str = "") -> Any:
    """``ground_truth.<key>``, or ``ground_truth.reasoning.<family>.<docs>.<key>`` (None when
    absent)."""
    g = sec.get("ground_truth") or {}
    if family is None:
        return g.get(key)
    return (((g.get("reasoning") or {}).get(family) or {}).get(docs) or {}).get(key)


def _answer_cell(families: list[str], _: str, sec: Summary) -> str:
    return pct(answer(sec, families))


def _relevance_cell(families: list[str], kind: str, _: str, sec: Summary) -> str:
    return pct(relevant_share(sec, families, kind))


def _source_cell(families: list[str], count: int, _: str, sec: Summary) -> str:
    return top_source(sec, families, count)


def _truth_cell(key: str, family: str | None, docs: str, _: str, sec: Summary) -> str:
    value = truth(sec, key, family, docs)
    return fmt(value, ".0f") if key.endswith("rank") else pct(value)


# ----------------------------------------------------------------------------- section tables


def answers_table(s: Summary) -> Table | None:
    """F: per family, the share of queries whose answer is in the top k, per method."""
    columns = [(f, partial(_answer_cell, [f])) for f in family_order(s)]
    return _table(methods(s), columns)


def relevance_table(s: Summary) -> Table | None:
    """G: per family, the share of the top k working its procedure (reasoning, with the
    corpus's share in the header) or stating its fact (factual, ground truth only)."""
    columns = []
    if s["categories"].get("ground_truth"):
        columns += [
            (f"{f}: states the fact", partial(_relevance_cell, [f], "factual"))
            for f in families_of(s, "factual")
        ]
    for f in families_of(s, "reasoning"):
        base = s["categories"].get("procedure_base_rate", {}).get(f)
        corpus = f" (corpus {pct(base)})" if base is not None else ""
        columns.append((f"{f}: same procedure{corpus}", partial(_relevance_cell, [f], "reasoning")))
    return _table(methods(s), columns)


def sources_table(s: Summary) -> Table | None:
    """I: per family, the two most over-represented sources in the top k (smallest k)."""
    if not s["source_ratio"]["ks"]:
        return None
    return _table(methods(s), [(f, partial(_source_cell, [f], 2)) for f in family_order(s)])


def retrieval_table(s: Summary) -> Table | None:
    """Ground truth: fact recall@1 / @10 and median rank; per reasoning family, how often its
    planted answer / worked-instance documents reach the top 10. Last row: a random ranking."""
    g = s.get("ground_truth")
    if not g:
        return None
    columns = [
        ("fact in top 1", partial(_truth_cell, "fact_recall_at_1", None, "")),
        ("fact in top 10", partial(_truth_cell, "fact_recall_at_10", None, "")),
        ("fact median rank", partial(_truth_cell, "fact_median_rank", None, "")),
    ]
    chance = ["chance", "", pct(g.get("chance_fact_recall_at_10")), ""]
    for family in [f for f in family_order(s) if f in g["reasoning"]]:
        r = g["reasoning"][family]
        for docs, what in (("answer_docs", "answer doc"), ("worked_docs", "worked doc")):
            if r.get(docs):
                cell = partial(_truth_cell, "recall_at_10", family, docs)
                columns.append((f"{family}: {what} in top 10", cell))
                chance.append(pct(r[docs].get("chance_recall_at_10")))
    return _table(methods(s), columns, [chance])


def overview_table(s: Summary) -> Table | None:
    """Every comparison in one row per method, by kind: top sources, procedure / fact shares,
    answers, fact recall, and the top documents each baseline shares with influence."""
    ms = methods(s)
    if not ms:
        return None
    sk, pk = (s["source_ratio"]["ks"] or ["k"])[0], s["categories"]["k"]
    ak, kinds = s["answer_in_top_k"]["k"], _kinds(s)
    what = {"factual": "states the fact", "reasoning": "same procedure"}
    columns = [(f"top sources, {k} (top {sk})", partial(_source_cell, fs, 2)) for k, fs in kinds]
    columns += [(f"{what[k]}, {k} (top {pk})", partial(_relevance_cell, fs, k)) for k, fs in kinds]
    columns += [(f"answer in top {ak}, {k}", partial(_answer_cell, fs)) for k, fs in kinds]
    columns += [
        ("fact in top 1", partial(_truth_cell, "fact_recall_at_1", None, "")),
        ("fact in top 10", partial(_truth_cell, "fact_recall_at_10", None, "")),
    ]
    overlap = s.get("baseline_overlap") or {}
    if overlap:
        chance = next(iter(overlap.values()))["chance"]
        header = f"top {pk} shared with {ms[0][0]} (chance {pct(chance)})"
        columns.append((header, partial(_overlap_cell, s)))
    return _table(ms, columns)


def _overlap_cell(s: Summary, label: str, _: Summary) -> str:
    """ "factual x%, reasoning y%": a baseline's top documents shared with influence ("–" for
    influence itself)."""
    overlap = (s.get("baseline_overlap") or {}).get(label)
    if overlap is None or label == methods(s)[0][0]:
        return "–"
    return ", ".join(f"{kind} {pct(mean_of(overlap, fs))}" for kind, fs in _kinds(s))


# ----------------------------------------------------------------------------- readings


def answers_reading(s: Summary) -> str | None:
    ms = methods(s)
    if not ms:
        return None
    parts = [f"{kind}: {_by_method(ms, partial(_answer_cell, fs))}" for kind, fs in _kinds(s)]
    k = s["answer_in_top_k"]["k"]
    return f"Answer in the top {k} next to the baselines — " + "; ".join(parts) + "."


def relevance_reading(s: Summary) -> str | None:
    ms, c = methods(s), s["categories"]
    parts = []
    for kind, fs in _kinds(s) if ms else ():
        if kind == "factual" and not c.get("ground_truth"):
            continue
        what = (
            "working the query's procedure" if kind == "reasoning" else "stating the queried fact"
        )
        base = mean_of(c.get("procedure_base_rate", {}), fs) if kind == "reasoning" else None
        corpus = f" (corpus {pct(base)})" if base is not None else ""
        parts.append(
            f"{what} ({kind}): {_by_method(ms, partial(_relevance_cell, fs, kind))}{corpus}"
        )
    if not parts:
        return None
    return f"Share of the top {c['k']} documents " + "; ".join(parts) + "."


def sources_reading(s: Summary) -> str | None:
    ms = methods(s)
    if not ms or not s["source_ratio"]["ks"]:
        return None
    parts = [f"{kind}: {_by_method(ms, partial(_source_cell, fs, 1))}" for kind, fs in _kinds(s)]
    k = s["source_ratio"]["ks"][0]
    return f"Most over-represented source in the top {k}, " + "; ".join(parts) + "."


def retrieval_reading(s: Summary) -> str | None:
    ms, g = methods(s), s.get("ground_truth")
    if not ms or not g or g.get("fact_recall_at_10") is None:
        return None
    first = _by_method(ms, partial(_truth_cell, "fact_recall_at_1", None, ""))
    ten = _by_method(ms, partial(_truth_cell, "fact_recall_at_10", None, ""))
    chance = pct(g.get("chance_fact_recall_at_10"))
    return f"Fact-stating document ranked first: {first}; in the top 10: {ten} (chance {chance})."


def overview_reading(s: Summary) -> str | None:
    """Where each method's top documents come from, and how many of influence's top documents
    each baseline also ranks at the top."""
    text, overlap = sources_reading(s), s.get("baseline_overlap") or {}
    if text is None or not overlap:
        return text
    ms = methods(s)
    families = [f for _, fs in _kinds(s) for f in fs]
    shared = ", ".join(
        f"{name} {pct(mean_of(overlap[name], families))}" for name, _ in ms[1:] if name in overlap
    )
    first = next(iter(overlap.values()))
    return (
        f"{text} Share of {ms[0][0]}'s top {first['k']} documents also in a baseline's top "
        f"{first['k']} (factual and reasoning queries): {shared}; chance {pct(first['chance'])}."
    )
