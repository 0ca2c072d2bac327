"""The report's figures, each a function from analysis results to PNG bytes.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot, so nothing global is touched and no display is needed. Families keep one colour across
every figure.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from infljax.analysis import comparison, readings
from infljax.analysis.categories import CATEGORIES, GROUND_TRUTH
from infljax.analysis.cross_model import PairAnalysis
from infljax.analysis.dependency import mean_and_sem
from infljax.analysis.families import FamilyIndex
from infljax.analysis.ranking import top_indices
from infljax.analysis.study import ModelAnalysis

DPI = 110
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_PALETTE += ("#7f7f7f", "#bcbd22", "#17becf")
# Influence is blue; each baseline keeps one colour (random grey), others are brown.
_METHOD_COLOURS = {"tfidf": "#ff7f0e", "random": "#7f7f7f", "grad_dot": "#2ca02c"}
_METHOD_COLOURS |= {"grad_cosine": "#bcbd22", "kfac": "#9467bd"}
MAX_SOURCE_PANELS = 4
_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 1, 10, 100 rather than 10^0 or 1.0


def family_colours(families: Sequence[str]) -> dict[str, str]:
    return {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(families)}


def to_png(fig: Figure) -> bytes:
    """Render `fig` to PNG bytes (Agg)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- A


def correlation_figure(m: ModelAnalysis) -> bytes:
    """A: the query-query correlation heatmap grouped by family, and the family-mean matrix."""
    fig = Figure(layout="constrained", figsize=(13, 5.6))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    order = m.index.display_order()
    image = left.imshow(m.correlation[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    _family_ticks(left, m.index)
    left.set_title(f"{m.name}: Pearson correlation of query score vectors")
    fig.colorbar(image, ax=left, fraction=0.046, pad=0.02)
    _annotated_matrix(right, m.families.family_matrix, m.index.families, vmin=-1, vmax=1)
    right.set_title("mean correlation between families (diagonal: within)")
    return to_png(fig)


def _family_ticks(ax, index: FamilyIndex) -> None:
    sizes = [len(r) for r in index.rows]
    edges = np.cumsum([0, *sizes])
    for edge in edges[1:-1]:
        ax.axhline(edge - 0.5, color="k", lw=0.8)
        ax.axvline(edge - 0.5, color="k", lw=0.8)
    centres = (edges[:-1] + edges[1:]) / 2 - 0.5
    ax.set_xticks(centres, index.families, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(centres, index.families, fontsize=8)


def _annotated_matrix(ax, matrix: np.ndarray, labels: Sequence[str], vmin, vmax, cmap="RdBu_r"):
    image = ax.imshow(np.nan_to_num(matrix), cmap=cmap, vmin=vmin, vmax=vmax)
    _annotate(ax, image, matrix, ".2f")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)


def _annotate(ax, image, matrix: np.ndarray, spec: str) -> None:
    """Write each cell's value on a heatmap, white on dark cells and black on light ones."""
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isfinite(value):
            ax.text(j, i, "–", ha="center", va="center", fontsize=7)
            continue
        r, g, b, _ = image.cmap(image.norm(value))
        colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
        ax.text(j, i, format(value, spec), ha="center", va="center", fontsize=7, color=colour)


# ----------------------------------------------------------------------------- C


def dependency_figure(m: ModelAnalysis) -> bytes:
    """C: cumulative positive influence per nat and as a share, and the negative tail."""
    d, colours = m.dependency, family_colours(m.index.families)
    fig = Figure(layout="constrained", figsize=(14, 4.2))
    axes = fig.subplots(1, 3)
    panels = (
        (d.positive, "positive influence per nat (top k%)"),
        (d.positive_share, "share of total positive influence"),
        (d.negative, "|negative influence| per nat (bottom k%)"),
    )
    for ax, (values, title) in zip(axes, panels, strict=True):
        for family, rows in zip(m.index.families, m.index.rows, strict=True):
            mean, sem = mean_and_sem(values, rows)
            ax.plot(d.percents, mean, marker="o", ms=3, color=colours[family], label=family)
            ax.fill_between(d.percents, mean - sem, mean + sem, color=colours[family], alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("top k percent of documents")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{m.name}: dependency on the most influential documents (±1 s.e.)")
    return to_png(fig)


# ----------------------------------------------------------------------------- D


def power_law_figure(m: ModelAnalysis) -> bytes:
    """D: each query's fitted slope by family, and mean log-log top-score curves."""
    colours = family_colours(m.index.families)
    fig = Figure(layout="constrained", figsize=(12, 4.2))
    left, right = fig.subplots(1, 2)
    _strip(left, m.index, m.power_law.slope, colours)
    t = m.slope_test
    left.set_title(f"slopes (factual vs reasoning: Welch t={t.t:.2f}, p={t.p_value:.2g})")
    left.set_ylabel("slope of log(score) vs log(rank)")
    k = min(m.args.power_law_k, m.num_documents)
    magnitudes = m.raw_scores / m.query_nats[:, None]
    top = np.take_along_axis(magnitudes, top_indices(magnitudes, k), axis=1)
    ranks = np.arange(1, top.shape[1] + 1)
    for family, rows in zip(m.index.families, m.index.rows, strict=True):
        curve = np.clip(top[list(rows)], 1e-30, None).mean(0)
        right.loglog(ranks, curve, color=colours[family], label=family)
    right.set_xlabel("rank")
    right.set_ylabel("score per nat (family mean)")
    right.set_title(f"top {k} scores")
    right.legend(fontsize=7)
    return to_png(fig)


def _strip(ax, index: FamilyIndex, values: np.ndarray, colours, log: bool = False) -> None:
    """One column of points per family, with the mean marked."""
    rng = np.random.default_rng(0)
    for i, (family, rows) in enumerate(zip(index.families, index.rows, strict=True)):
        v = np.asarray(values, dtype=np.float64)[list(rows)]
        v = v[np.isfinite(v) & ((v > 0) if log else True)]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=12, color=colours[family], alpha=0.7)
        if len(v):
            centre = np.exp(np.log(v).mean()) if log else v.mean()
            ax.hlines(centre, i - 0.3, i + 0.3, color="k", lw=1.5)
    ax.set_xticks(range(len(index.families)), index.families, rotation=30, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_minor_formatter(_PLAIN)


# ----------------------------------------------------------------------------- F, G/H


def answers_figure(summary: dict, families: Sequence[str], name: str) -> bytes:
    """F: fraction of queries whose answer (every step) is in their top-k documents."""
    a = summary["answer_in_top_k"]
    fig = Figure(layout="constrained", figsize=(7, 3.6))
    ax = fig.subplots()
    x = np.arange(len(families))
    same = [a.get(f) if a.get(f) is not None else np.nan for f in families]
    anywhere = [a["any_document"].get(f) or np.nan for f in families]
    ax.bar(x - 0.2, same, 0.4, label="one document states every target")
    ax.bar(x + 0.2, anywhere, 0.4, label="every target in some document", alpha=0.6)
    ax.set_xticks(x, families, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of queries")
    ax.set_title(f"{name}: answer in the top {a['k']} documents")
    ax.legend(fontsize=7)
    return to_png(fig)


def categories_figure(m: ModelAnalysis) -> bytes:
    """G/H: keyword labels of the top documents (stacked) and ground-truth shares."""
    c = m.categories
    has_truth = bool(c.ground_truth)
    fig = Figure(layout="constrained", figsize=(13 if has_truth else 7.5, 4.2))
    axes = fig.subplots(1, 2 if has_truth else 1)
    axes = np.atleast_1d(axes)
    families = m.index.families
    shares = np.array([c.keyword[list(rows)].mean(0) for rows in m.index.rows])
    bottom = np.zeros(len(families))
    for j, label in enumerate(CATEGORIES):
        axes[0].bar(families, shares[:, j], bottom=bottom, label=label, color=_PALETTE[j % 10])
        bottom += shares[:, j]
    axes[0].set_title(f"keyword labels of the top {c.k} documents", fontsize=10)
    axes[0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    axes[0].tick_params(axis="x", rotation=30, labelsize=8)
    if has_truth:
        width = 0.8 / len(GROUND_TRUTH)
        x = np.arange(len(families))
        for j, name in enumerate(GROUND_TRUTH):
            values = [c.ground_truth[name][list(rows)].mean() for rows in m.index.rows]
            axes[1].bar(x + (j - 2) * width, values, width, label=name.replace("_", " "))
        axes[1].set_xticks(x, families, rotation=30, ha="right", fontsize=8)
        axes[1].set_title(f"ground truth of the top {c.k} documents (share)", fontsize=10)
        axes[1].legend(fontsize=7)
    fig.suptitle(f"{m.name}: what the top documents are")
    return to_png(fig)


# ----------------------------------------------------------------------------- I


def sources_figure(m: ModelAnalysis) -> bytes | None:
    """I: source over-representation (top-k and bottom-k) as heatmaps, a few k of the grid."""
    s = m.sources
    if not s.ks:
        return None
    picks = np.unique(np.linspace(0, len(s.ks) - 1, min(MAX_SOURCE_PANELS, len(s.ks))).round())
    picks = picks.astype(int)
    fig = Figure(
        layout="constrained",
        figsize=(3.4 * len(picks) + 1, 2 * (1.2 + 0.32 * len(m.index.families))),
    )
    axes = np.atleast_2d(fig.subplots(2, len(picks), squeeze=False))
    high = max(2.0, float(np.nanmax([s.top.max(), s.bottom.max()])))
    norm = TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=high)
    for row, direction in enumerate(("top", "bottom")):
        for col, i in enumerate(picks):
            ax = axes[row, col]
            matrix = np.array([s.family_mean(direction, rows)[i] for rows in m.index.rows])
            image = ax.imshow(matrix, cmap="RdBu_r", norm=norm, aspect="auto")
            _annotate(ax, image, matrix, ".1f")
            ax.set_xticks(range(len(s.sources)), s.sources, rotation=40, ha="right", fontsize=7)
            names = m.index.families if col == 0 else [""] * len(m.index.families)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.set_title(f"{direction} {s.ks[i]}", fontsize=9)
    fig.suptitle(f"{m.name}: share in top/bottom k ÷ share in corpus (1 = as in corpus)")
    return to_png(fig)


# ----------------------------------------------------------------------------- retrieval


def retrieval_figure(m: ModelAnalysis) -> bytes | None:
    """Ground truth: rank of the best fact-stating document (factual queries) and of the
    best planted-answer / worked-instance documents (reasoning queries), log scale."""
    r = m.retrieval
    if r is None:
        return None
    fig = Figure(layout="constrained", figsize=(12, 4))
    left, right = fig.subplots(1, 2)
    facts = r.fact_rank[r.fact_rank > 0]
    if len(facts):
        bins = np.unique(np.geomspace(1, max(r.num_documents, 2), 20).astype(int))
        left.hist(facts, bins=bins, color="#1f77b4")
        left.set_xscale("log")
        left.xaxis.set_major_formatter(_PLAIN)
        left.axvline(10, color="k", ls="--", lw=0.8)
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("rank of the best document stating the fact")
    left.set_ylabel("factual queries")
    left.set_title(f"facts ({len(facts)} queries; dashed: rank 10 of {r.num_documents})")
    _reasoning_ranks(right, m)
    fig.suptitle(f"{m.name}: where the ground-truth documents rank")
    return to_png(fig)


def _reasoning_ranks(ax, m: ModelAnalysis) -> None:
    r, labels, i = m.retrieval, [], 0
    for family, rows in zip(m.index.families, m.index.rows, strict=True):
        for name, best, colour in (
            ("answer", r.answer_rank, "#d62728"),
            ("worked", r.worked_rank, "#2ca02c"),
        ):
            values = best[list(rows)]
            values = values[values > 0]
            if len(values):
                jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(values))
                ax.scatter(i + jitter, values, s=12, color=colour, alpha=0.7)
                labels.append(f"{family}\n{name} docs")
                i += 1
    ax.set_yscale("log")
    ax.set_ylim(max(r.num_documents, 2) * 1.2, 0.8)  # the whole ranking, rank 1 at the top
    ax.yaxis.set_major_formatter(_PLAIN)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("best rank (1 = top)")
    ax.set_title("reasoning: planted answer docs (red), worked-instance docs (green)")


# ----------------------------------------------------------------------------- B, E


def cross_model_figure(
    p: PairAnalysis, families_of_queries: Sequence[str], order: Sequence[str]
) -> bytes:
    """B and E: per-query correlation of the two models' scores, and magnitude ratios.

    `families_of_queries`: the family of each shared query; `order`: the display order (and
    colours) of the families, model a's."""
    families = [f for f in order if f in families_of_queries]
    index = FamilyIndex(
        tuple(families),
        tuple(tuple(i for i, f in enumerate(families_of_queries) if f == g) for g in families),
        tuple("" for _ in families),
    )
    colours = family_colours(order)
    fig = Figure(layout="constrained", figsize=(13, 4.2))
    left, mid, right = fig.subplots(1, 3)
    _strip(left, index, p.correlation, colours)
    left.axhline(0, color="k", lw=0.5)
    left.set_title(f"correlation of {p.a} and {p.b} scores per query", fontsize=10)
    _strip(mid, index, p.ratio_top, colours, log=True)
    mid.set_title(f"|score|/nat ratio {p.b}/{p.a}, top {p.k}", fontsize=10)
    _strip(right, index, p.ratio_bottom, colours, log=True)
    right.set_title(f"|score|/nat ratio {p.b}/{p.a}, bottom {p.k}", fontsize=10)
    for ax in (mid, right):
        ax.axhline(1, color="k", lw=0.5)
    return to_png(fig)


def layers_figure(m: ModelAnalysis) -> bytes | None:
    """Each tracked layer's share of the summed score of the top documents, by family."""
    if m.layer_shares is None:
        return None
    colours = family_colours(m.index.families)
    fig = Figure(layout="constrained", figsize=(7, 3.6))
    ax = fig.subplots()
    layers = np.arange(m.layer_shares.shape[0])
    width = 0.8 / len(m.index.families)
    for j, (family, rows) in enumerate(zip(m.index.families, m.index.rows, strict=True)):
        values = np.nanmean(m.layer_shares[:, list(rows)], axis=1)
        ax.bar(layers + j * width, values, width, color=colours[family], label=family)
    ax.set_xticks(layers + width * (len(m.index.families) - 1) / 2, [str(i) for i in layers])
    ax.set_xlabel("tracked layer (order of per_layer.npy)")
    ax.set_ylabel("share of the top documents' score")
    ax.legend(fontsize=7)
    ax.set_title(f"{m.name}: per-layer share of influence")
    return to_png(fig)


# ----------------------------------------------------------------------------- baselines


def baselines_figure(summary: dict, name: str) -> bytes | None:
    """Influence next to each baseline (`summary`: a model's section of summary.json; None
    without baselines). Top: one panel per method, the source mix of each family's top k (the
    smallest k of I) beside the corpus's. Bottom: answer in the top k (F) and the share of the
    top documents working the procedure / stating the fact (G), one bar per method."""
    ms = comparison.methods(summary)
    if not ms or not summary["source_ratio"]["ks"]:
        return None
    fig = Figure(layout="constrained", figsize=(max(10.0, 3.2 * len(ms) + 1.5), 7.6))
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    _source_mix(top.subplots(1, len(ms), sharey=True, squeeze=False)[0], ms, summary)
    left, right = bottom.subplots(1, 2)
    families = readings.family_order(summary)
    answers = [[comparison.answer(sec, [f]) for f in families] for _, sec in ms]
    k = summary["answer_in_top_k"]["k"]
    _method_bars(left, ms, families, answers, f"answer in the top {k} (share of queries)")
    columns = [(f, "factual") for f in readings.families_of(summary, "factual")]
    columns += [(f, "reasoning") for f in readings.families_of(summary, "reasoning")]
    shares = [[comparison.relevant_share(sec, [f], kind) for f, kind in columns] for _, sec in ms]
    labels = [f"{f}\n({'fact' if kind == 'factual' else 'procedure'})" for f, kind in columns]
    title = f"top {summary['categories']['k']}: share stating the fact / working the procedure"
    _method_bars(right, ms, labels, shares, title)
    fig.suptitle(f"{name}: {ms[0][0]} next to the baselines")
    return to_png(fig)


def _source_mix(axes, ms: list, summary: dict) -> None:
    """Stacked share of each source in each family's top k, one panel per method."""
    ratios = summary["source_ratio"]
    k, sources, corpus = str(ratios["ks"][0]), ratios["sources"], ratios["corpus_share"]
    colours = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(sources)}
    families = readings.family_order(summary)
    for ax, (label, sec) in zip(axes, ms, strict=True):
        table = sec["source_ratio"]["top"][k]
        x = [*range(len(families)), len(families) + 0.4]  # the corpus bar a little apart
        bottom = np.zeros(len(x))
        for s in sources:
            values = [(table[f][s] or 0.0) * corpus[s] for f in families] + [corpus[s]]
            ax.bar(x, values, bottom=bottom, color=colours[s], label=s)
            bottom += values
        ax.axvline(len(families) - 0.3, color="k", lw=0.6, ls=":")
        ax.set_xticks(x, [*families, "corpus"], rotation=40, ha="right")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{label}: sources of the top {k}", fontsize=9)
    axes[0].set_ylabel("share of the top documents")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))


def _method_bars(ax, ms: list, labels: list[str], values: list[list], title: str) -> None:
    """Grouped bars: one group per label, one bar per method (missing values are left out)."""
    width = 0.8 / len(ms)
    x = np.arange(len(labels))
    for j, (label, _) in enumerate(ms):
        heights = [np.nan if v is None else v for v in values[j]]
        colour = "#1f77b4" if j == 0 else _METHOD_COLOURS.get(label, "#8c564b")
        ax.bar(x + (j - (len(ms) - 1) / 2) * width, heights, width, label=label, color=colour)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def model_figures(m: ModelAnalysis, summary: dict) -> dict[str, bytes]:
    """kind -> PNG of every figure of one model that has data (`summary`: the model's section
    of summary.json, which the answers figure reads)."""
    draw = {
        "correlation": correlation_figure,
        "dependency": dependency_figure,
        "power_law": power_law_figure,
        "answers": lambda m: answers_figure(summary, m.index.families, m.name),
        "categories": categories_figure,
        "sources": sources_figure,
        "retrieval": retrieval_figure,
        "layers": layers_figure,
        "baselines": lambda m: baselines_figure(summary, m.name),
    }
    pngs = {kind: fn(m) for kind, fn in draw.items()}
    return {kind: png for kind, png in pngs.items() if png is not None}
