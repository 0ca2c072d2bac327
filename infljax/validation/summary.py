"""summary.json of a validation: per method, LDS by query kind with bootstrap intervals, the
ceiling, the single-model protocol and its linearity curve, the retrainings' throughput."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from infljax.analysis.families import query_kind
from infljax.analysis.inputs import QueryRecord
from infljax.validation import lds
from infljax.validation.run import TRAINING_AWARE, UNITLESS, ValidateArgs, ValidationRun


def summarize(
    args: ValidateArgs, records, scores: dict, work: ValidationRun, measured, single
) -> dict:
    """summary.json: per method, LDS by query kind with bootstrap intervals; the ceiling; the
    single-model protocol's LDS at each weight reduction (`single`: {scale: [Q, M, 1] NLLs};
    "single_model" is its largest scale, "linearity" every scale with the median slope of the
    measured change on the predicted one: 1 where a method gets the size of the effect right)."""
    kinds = np.asarray([_kind(r) for r in records])
    groups = {"all": np.arange(len(kinds))} | {k: np.flatnonzero(kinds == k) for k in set(kinds)}
    interval = lambda p, m, rows: dataclasses.asdict(  # noqa: E731
        lds.bootstrap_lds(p, m, rows, args.bootstrap, args.seed)
    )
    out = {
        "model": args.model,
        "args": dataclasses.asdict(args),
        "methods": [*args.methods, *(m for m in TRAINING_AWARE if m in scores)],
        "queries": [r["id"] for r in records],
        "kinds": kinds.tolist(),
        "subset_nats_std": float(np.mean(measured.mean(axis=2).std(axis=1))),
        "seed_nats_std": float(np.mean(measured.std(axis=2))) if args.seeds > 1 else None,
        "lds": {},
    }
    if "metagradient" in scores:
        meta_rows = np.flatnonzero(np.isfinite(scores["metagradient"][:, 0]))
        out["metagradient_queries"] = [records[q]["id"] for q in meta_rows]
    for method in out["methods"]:
        predicted = lds.subset_predictions(
            np.nan_to_num(scores[method][:, work.train_rows]), work.masks
        )
        defined = np.isfinite(scores[method][:, 0])
        per_query = np.where(defined, lds.seed_mean_lds(predicted, measured), np.nan)
        entry = {
            k: interval(predicted, measured, rows[defined[rows]]) for k, rows in groups.items()
        }
        entry["per_query"] = _floats(per_query)
        entry["seed0"] = float(
            np.nanmean(np.where(defined, lds.lds(predicted, measured[:, :, 0]), np.nan))
        )
        if "metagradient" in scores:
            entry["on_metagradient_queries"] = interval(predicted, measured, meta_rows)
        if single:
            alone = lds.subset_predictions(
                np.nan_to_num(scores[method][:, work.train_rows]), work.single_masks
            )
            entry["linearity"], rows = [], groups["all"][defined]
            for t, nats in single.items():  # a weight lowered by t: t times the effect
                entry["linearity"].append(
                    {
                        "scale": t,
                        "all": interval(alone, nats, rows),
                        "slope": None
                        if method in UNITLESS
                        else _median(lds.slopes(t * alone, nats[:, :, 0])[rows]),
                    }
                )
            largest = max(single)
            entry["single_model"] = {
                k: interval(alone, single[largest], rows[defined[rows]])
                for k, rows in groups.items()
            }
            entry["single_model"]["per_query"] = _floats(
                np.where(defined, lds.seed_mean_lds(alone, single[largest]), np.nan)
            )
        out["lds"][method] = entry
    if args.seeds > 1:
        split = lds.split_half(measured)
        half = measured.shape[2] // 2
        a, b = measured[:, :, :half].mean(axis=2), measured[:, :, half : 2 * half]
        ceiling = {k: interval(a, b, rows) for k, rows in groups.items()}
        ceiling["per_query"] = _floats(split)
        ceiling["attainable"] = lds.attainable(np.nanmean(split))
        out["ceiling"] = ceiling
    return out


def throughput(work: ValidationRun, seconds: float, original: Path) -> dict:
    """Retrainings per hour, batched (this stage) and sequential (the pretrain stage's loop)."""
    a = work.args
    count = a.num_subsets * a.seeds + a.single_model_subsets * len(a.single_model_scales)
    metrics = original / "metrics.json"
    sequential = json.loads(metrics.read_text()).get("seconds") if metrics.is_file() else None
    return {
        "count": count,
        "seconds": round(seconds, 1),
        "per_hour_batched": round(3600 * count / max(seconds, 1e-9), 1),
        "per_hour_sequential": round(3600 / sequential, 1) if sequential else None,
        "models_per_call": work.args.models_per_call,
        "devices": len(work.retrainer.devices),
    }


def _median(values: np.ndarray) -> float | None:
    """The median of the finite `values` as `_floats` stores numbers (None: none finite)."""
    finite = values[np.isfinite(values)]
    return _floats(np.median(finite, keepdims=True))[0] if len(finite) else None


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def headline(summary: dict) -> str:
    parts = [f"{m} {summary['lds'][m]['all']['mean']:.3f}" for m in summary["methods"]]
    if "ceiling" in summary:
        parts.append(f"ceiling {summary['ceiling']['all']['mean']:.3f}")
    line = "LDS " + ", ".join(parts)
    single = [(m, summary["lds"][m].get("single_model")) for m in summary["methods"]]
    if single[0][1] is not None:
        line += "; single-model LDS " + ", ".join(f"{m} {e['all']['mean']:.3f}" for m, e in single)
    return line


def _kind(record: dict) -> str:
    return query_kind(QueryRecord.from_json(record, "query"))
