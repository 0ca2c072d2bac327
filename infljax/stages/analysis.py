"""Stage `analysis`: the study's analyses (STUDY.md A-I, ground truth) over every model's scores.

Reads ``scores/<model>/`` (each model of ``config.models``, or ``config.analysis.models``),
``queries.jsonl`` and ``corpus/documents.jsonl`` (+ ``world/world.json`` when present); writes
``analysis/summary.json`` (every number the report shows), ``analysis/top_documents.json`` (the
report's query browser) and the figures ``analysis/*.png``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from absl import logging
from ml_collections import ConfigDict

from infljax.analysis import figures
from infljax.analysis.browser import browser_entries
from infljax.analysis.cross_model import PairAnalysis, analyse_pairs
from infljax.analysis.inputs import read_documents, read_model_scores
from infljax.analysis.report import figure_name, pair_figure_name
from infljax.analysis.study import AnalysisArgs, ModelAnalysis, analyse_model
from infljax.analysis.summary import baseline_summary, overlap_summary, study_summary
from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import read_split, section, settings
from infljax.workdir import (
    ScoreFiles,
    analysis_dir,
    baselines_dir,
    corpus_dir,
    model_dir,
    queries_path,
    scores_dir,
    world_dir,
    write_json,
)


@dataclasses.dataclass(frozen=True)
class AnalysedModels:
    """models: the models analysed (empty: every model of ``config.models``)."""

    models: tuple[str, ...] = ()


def stage_args(config: ConfigDict) -> tuple[AnalysisArgs, AnalysedModels]:
    """``config.analysis`` (absent: the defaults), typed."""
    return read_split(section(config, "analysis"), (AnalysisArgs, AnalysedModels), "analysis")


def model_names(config: ConfigDict, workdir: Path) -> list[str]:
    """The models to analyse (``config.analysis.models``, else every model of the config),
    smaller first by ``metrics.json``'s parameter count, so that pairs read "small vs large"
    (the study's 7B vs 35B) and magnitude ratios are larger ÷ smaller."""
    names = list(stage_args(config)[1].models) or list(config.models.keys())
    unknown = [n for n in names if n not in config.models]
    if unknown:
        raise ValueError(
            f"config.analysis.models names {unknown}, which are not in config.models "
            f"({list(config.models.keys())})"
        )
    return sorted(names, key=lambda n: (_num_params(workdir, n), names.index(n)))


def _num_params(workdir: Path, name: str) -> float:
    path = model_dir(workdir, name) / "metrics.json"
    if not path.is_file():
        return float("inf")
    return float(json.loads(path.read_text()).get("num_params") or float("inf"))


def _baseline_dirs(workdir: Path, name: str) -> list[Path]:
    """``baselines/<name>/<method>/`` directories holding scores (stage `baselines`)."""
    root = baselines_dir(workdir, name)
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if ScoreFiles(d).scores.is_file())


def _baselines(workdir: Path, influence: ModelAnalysis, table, args: AnalysisArgs) -> dict:
    """``models.<name>.baselines`` (each baseline's scores analysed exactly like the model's) and
    ``models.<name>.baseline_overlap`` (its top documents shared with influence's); empty
    without baselines."""
    compared, overlap = {}, {}
    for d in _baseline_dirs(workdir, influence.name):
        analysed = analyse_model(
            read_model_scores(d, influence.name, queries_path(workdir)), table, args
        )
        compared[d.name] = baseline_summary(analysed)
        overlap[d.name] = overlap_summary(analysed, influence)
    return {"baselines": compared, "baseline_overlap": overlap} if compared else {}


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    stage_args(config)


def run(config: ConfigDict, workdir: Path) -> None:
    args, _ = stage_args(config)
    names = model_names(config, workdir)
    out = analysis_dir(workdir)
    record = {
        "args": dataclasses.asdict(args),
        "models": names,
    }
    inputs = {"corpus": corpus_dir(workdir), "world": world_dir(workdir)}
    inputs["queries"] = queries_path(workdir)
    inputs |= {f"scores/{n}": scores_dir(workdir, n) for n in names}
    inputs |= {f"baselines/{n}/{d.name}": d for n in names for d in _baseline_dirs(workdir, n)}
    if begin_stage(out, record, inputs=inputs, overwrite=settings(config).overwrite, resumes=False):
        logging.info("analysis: up to date in %s", out)
        return
    start = time.perf_counter()
    table = read_documents(corpus_dir(workdir), world_dir(workdir) / "world.json")
    scores = [read_model_scores(scores_dir(workdir, n), n, queries_path(workdir)) for n in names]
    analyses = [analyse_model(s, table, args) for s in scores]
    pairs = analyse_pairs(scores, args.normalise, args.magnitude_k)
    summary = study_summary(analyses, pairs, table, args)
    for m in analyses:
        summary["models"][m.name].update(_baselines(workdir, m, table, args))
        strategy = ScoreFiles(scores_dir(workdir, m.name)).method()
        if strategy is not None:
            summary["models"][m.name]["conventions"]["strategy"] = strategy
    write_json(out / "summary.json", summary)
    browser = {
        m.name: browser_entries(m, table, s.per_token)
        for s, m in zip(scores, analyses, strict=True)
    }
    write_json(out / "top_documents.json", browser)
    write_figures(out, analyses, pairs, summary)
    finish_stage(out)
    logging.info("analysis: %d models in %.1fs -> %s", len(names), time.perf_counter() - start, out)


def write_figures(
    out: Path, analyses: list[ModelAnalysis], pairs: list[PairAnalysis], summary: dict
) -> None:
    """Every figure of every model and pair into `out` (figures without data are skipped)."""
    by_name = {m.name: m for m in analyses}
    for m in analyses:
        for kind, png in figures.model_figures(m, summary["models"][m.name]).items():
            (out / figure_name(m.name, kind)).write_bytes(png)
    for p in pairs:
        a = by_name[p.a]
        families = [a.queries[r].family for r in p.rows_a]
        png = figures.cross_model_figure(p, families, a.index.families)
        (out / pair_figure_name(p.a, p.b)).write_bytes(png)
