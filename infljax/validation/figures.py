"""The validation figures (``validate/<model>/summary.json`` -> ``lds.png``, ``linearity.png``).

``lds.png``: one group per method, one bar per query kind (factual, reasoning, control): the
mean LDS over the kind's queries with its bootstrap 95% interval, each query as a dot, and the
ceiling (how well half of the seeds predicts the other half) as a dashed line per kind.

``linearity.png`` (when the single-model protocol ran at several weight reductions): per
method, the single-model LDS against the scale t by which the dropped documents' weight was
lowered (log axis, 95% band), and the median slope of the measured change on the predicted
one (1: the method gets the size of the effect right; not drawn for TF-IDF and random, whose
scores are not effects in nats).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from infljax.analysis.figures import to_png

KINDS = ("factual", "reasoning", "control")
KIND_COLOURS = {"factual": "#1f77b4", "reasoning": "#d62728", "control": "#7f7f7f"}


def validation_figures(summary: dict) -> dict[str, bytes]:
    """File name -> PNG: ``lds.png`` and, with several single-model scales, ``linearity.png``."""
    args = summary["args"]
    title = (
        f"{summary['model']}: LDS over {args['num_subsets']} random {args['fraction']:.0%} "
        f"subsets x {args['seeds']} seeds (95% bootstrap intervals)"
    )
    figures = {"lds.png": _bars(summary, title)}
    if len(summary["lds"][summary["methods"][0]].get("linearity", [])) > 1:
        figures["linearity.png"] = _linearity(summary)
    return figures


def _linearity(summary: dict) -> bytes:
    args = summary["args"]
    fig = Figure(layout="constrained", figsize=(9.0, 3.8))
    lds_ax, slope_ax = fig.subplots(1, 2)
    for method in summary["methods"]:
        points = summary["lds"][method].get("linearity", [])
        t = np.array([p["scale"] for p in points])
        mean = np.array([_num(p["all"]["mean"]) for p in points])
        (line,) = lds_ax.plot(t, mean, marker="o", label=method)
        low = np.array([_num(p["all"]["low"]) for p in points])
        high = np.array([_num(p["all"]["high"]) for p in points])
        lds_ax.fill_between(t, low, high, color=line.get_color(), alpha=0.15)
        slopes = [_num(p["slope"]) for p in points]  # None for scores that are not in nats
        slope_ax.plot(t, slopes, marker="o", color=line.get_color())
    for ax in (lds_ax, slope_ax):
        ax.set_xscale("log")
        ax.set_xlabel("weight reduction t of the dropped documents (1: removed)")
    lds_ax.axhline(0, color="#444", lw=0.8)
    lds_ax.set_ylabel("single-model LDS (95% interval)")
    lds_ax.legend(frameon=False, fontsize=8)
    slope_ax.axhline(1, color="#444", lw=0.8, ls="--")
    slope_ax.set_yscale("symlog", linthresh=1e-3)
    slope_ax.set_ylabel("median slope: measured / predicted change")
    fig.suptitle(
        f"{summary['model']}: linearity, {args['single_model_subsets']} subsets dropping "
        f"{1 - args['single_model_fraction']:.0%} of the documents, original seed",
        fontsize=10,
    )
    return to_png(fig)


def _bars(summary: dict, title: str) -> bytes:
    methods, kinds = summary["methods"], np.asarray(summary["kinds"])
    present = [k for k in KINDS if k in set(kinds)]
    fig = Figure(layout="constrained", figsize=(max(6.0, 1.1 * len(methods) + 2), 4.4))
    ax = fig.subplots()
    width = 0.8 / len(present)
    rng = np.random.default_rng(0)  # jitter of the dots only
    for j, kind in enumerate(present):
        offsets = np.arange(len(methods)) + (j - (len(present) - 1) / 2) * width
        entries = [summary["lds"][m].get(kind, {}) for m in methods]
        means = np.array([_num(e.get("mean")) for e in entries])
        low = np.array([_num(e.get("low")) for e in entries])
        high = np.array([_num(e.get("high")) for e in entries])
        errors = np.nan_to_num(np.stack([means - low, high - means]))
        ax.bar(offsets, means, width, yerr=errors, capsize=2, label=kind,
               color=KIND_COLOURS[kind], alpha=0.75)  # fmt: skip
        for i, method in enumerate(methods):
            values = np.array([_num(v) for v in summary["lds"][method]["per_query"]])
            values = values[(kinds == kind) & np.isfinite(values)]
            jitter = rng.uniform(-width / 4, width / 4, len(values))
            ax.scatter(offsets[i] + jitter, values, s=7, color="k", alpha=0.4, zorder=3)
        single = [summary["lds"][m].get("single_model", {}).get(kind, {}) for m in methods]
        if any(e.get("mean") is not None for e in single):
            ax.scatter(offsets, [_num(e.get("mean")) for e in single], marker="D", s=22,
                       facecolor="white", edgecolor=KIND_COLOURS[kind], zorder=4,
                       label=f"{kind}: single model")  # fmt: skip
        ceiling = summary.get("ceiling", {}).get(kind, {}).get("mean")
        if ceiling is not None:
            ax.axhline(ceiling, color=KIND_COLOURS[kind], ls="--", lw=1)
    ax.axhline(0, color="#444", lw=0.8)
    ax.set_xticks(np.arange(len(methods)), methods, rotation=20, ha="right")
    ax.set_ylabel("LDS (Spearman per query; dashed: ceiling)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return to_png(fig)


def _num(value) -> float:
    return np.nan if value is None else float(value)
