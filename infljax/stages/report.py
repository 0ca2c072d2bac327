"""Stage `report`: render ``report/index.html`` from the analysis outputs.

Reads ``analysis/summary.json``, ``analysis/top_documents.json`` and ``analysis/*.png``, plus
``models/<name>/metrics.json`` (held-out loss vs the unigram baseline), ``corpus/stats.json`` and
``validate/<model>/`` (summary.json and figures) when present, and writes one self-contained
page (figures embedded as base64 PNG).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import logging
from ml_collections import ConfigDict

from infljax.analysis.report import ReportInputs, render_report, validation_figure_name
from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import settings
from infljax.workdir import (
    analysis_dir,
    corpus_dir,
    model_dir,
    queries_dir,
    report_dir,
    validate_dir,
)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def report_inputs(workdir: Path) -> ReportInputs:
    """Everything the page shows, read from the workdir (analysis must have run)."""
    analysis = analysis_dir(workdir)
    summary = _read_json(analysis / "summary.json")
    if summary is None:
        raise FileNotFoundError(
            f"no {analysis / 'summary.json'}; run the analysis stage before the report"
        )
    models = list(summary.get("models", {}))
    knowledge = (_read_json(workdir / "queries" / "stats.json") or {}).get("fact_knowledge", {})
    metrics = {m: _read_json(model_dir(workdir, m) / "metrics.json") or {} for m in models}
    for m in models:
        if m in knowledge:
            metrics[m] = metrics[m] | {"fact_knowledge": knowledge[m]}
    validation = {m: _read_json(validate_dir(workdir, m) / "summary.json") for m in models}
    validation = {m: v for m, v in validation.items() if v}
    figures = {p.name: p.read_bytes() for p in sorted(analysis.glob("*.png"))}
    for m in validation:
        for p in sorted(validate_dir(workdir, m).glob("*.png")):
            figures[validation_figure_name(m, p.name)] = p.read_bytes()
    return ReportInputs(
        summary=summary,
        figures=figures,
        validation=validation,
        browser=_read_json(analysis / "top_documents.json") or {},
        metrics=metrics,
        corpus_stats=_read_json(corpus_dir(workdir) / "stats.json"),
    )


def run(config: ConfigDict, workdir: Path) -> None:
    out = report_dir(workdir)
    inputs = {"analysis": analysis_dir(workdir), "queries": queries_dir(workdir)}
    inputs |= {f"validate/{d.name}": d for d in sorted((workdir / "validate").glob("*"))}
    if begin_stage(out, {}, inputs=inputs, overwrite=settings(config).overwrite, resumes=False):
        logging.info("report: up to date in %s", out / "index.html")
        return
    page = render_report(report_inputs(workdir))
    (out / "index.html").write_text(page, encoding="utf-8")
    finish_stage(out)
    logging.info("report: %s (%.0f kB)", (out / "index.html").absolute(), len(page) / 1024)
