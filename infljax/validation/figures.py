"""Figures of the validation (``validate/<model>/summary.json`` -> PNG bytes).

Both show one group per method and one bar per query kind (factual, reasoning), the mean over
queries with a ±1 standard-error bar, and each query as a dot.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from infljax.analysis.figures import to_png

KINDS = ("factual", "reasoning")
KIND_COLOURS = {"factual": "#1f77b4", "reasoning": "#d62728"}


def validation_figures(summary: dict) -> dict[str, bytes]:
    """File name -> PNG: ``lds.png`` and ``counterfactual.png``."""
    methods = list(summary["args"]["methods"])
    kinds = np.asarray(summary["kinds"])
    lds_points = {m: np.asarray(_nan(summary["lds"][m]["per_query"])) for m in methods}
    chosen = list(summary["counterfactual"][methods[0]]["per_query"])
    chosen_kinds = kinds[[summary["queries"].index(q) for q in chosen]]
    removal_points = {
        m: np.asarray(_nan(summary["counterfactual"][m]["per_query"].values())) for m in methods
    }
    k = summary["args"]["k"]
    return {
        "lds.png": _bars(
            methods,
            lds_points,
            kinds,
            "LDS (Spearman, per query)",
            f"{summary['model']}: linear datamodeling score over "
            f"{summary['args']['num_subsets']} retrainings on random subsets",
        ),
        "counterfactual.png": _bars(
            methods,
            removal_points,
            chosen_kinds,
            "Δ completion NLL (nats) after removal",
            f"{summary['model']}: retrained without each method's top {k} documents "
            "(higher = the removed documents mattered)",
        ),
    }


def _nan(values) -> list[float]:
    return [np.nan if v is None else v for v in values]


def _bars(methods, points: dict, kinds: np.ndarray, ylabel: str, title: str) -> bytes:
    fig = Figure(layout="constrained", figsize=(max(6.0, 1.3 * len(methods) + 2), 4.2))
    ax = fig.subplots()
    width = 0.38
    rng = np.random.default_rng(0)  # jitter of the dots only
    for j, kind in enumerate(KINDS):
        offsets = np.arange(len(methods)) + (j - 0.5) * width
        means, errors = [], []
        for i, method in enumerate(methods):
            values = points[method][kinds == kind]
            values = values[np.isfinite(values)]
            means.append(values.mean() if len(values) else np.nan)
            errors.append(values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0)
            jitter = rng.uniform(-width / 4, width / 4, len(values))
            ax.scatter(offsets[i] + jitter, values, s=9, color="k", alpha=0.45, zorder=3)
        ax.bar(offsets, means, width, yerr=errors, capsize=3, label=kind,
               color=KIND_COLOURS[kind], alpha=0.75)  # fmt: skip
    ax.axhline(0, color="#444", lw=0.8)
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False)
    return to_png(fig)
