"""The validation figure (``validate/<model>/summary.json`` -> ``lds.png``).

One group per method, one bar per query kind (factual, reasoning, control): the mean LDS over
the kind's queries with its bootstrap 95% interval, each query as a dot, and the ceiling (how
well half of the seeds predicts the other half) as a dashed line per kind.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from infljax.analysis.figures import to_png

KINDS = ("factual", "reasoning", "control")
KIND_COLOURS = {"factual": "#1f77b4", "reasoning": "#d62728", "control": "#7f7f7f"}


def validation_figures(summary: dict) -> dict[str, bytes]:
    """File name -> PNG: ``lds.png``."""
    args = summary["args"]
    title = (
        f"{summary['model']}: LDS over {args['num_subsets']} random {args['fraction']:.0%} "
        f"subsets x {args['seeds']} seeds (95% bootstrap intervals)"
    )
    return {"lds.png": _bars(summary, title)}


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
