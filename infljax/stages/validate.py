"""Stage `validate`: do the scores predict retraining? (the linear datamodeling score, LDS)

For one trained model (``config.validation.model``, `infljax.validation.run.ValidateArgs`) the
stage reads the score matrices of the compared methods (``ekfac`` = the scores stage's, the
others the baselines stage's) and hands the work to the library: `ValidationRun` retrains the
model on random subsets of its training documents from several seeds and computes the
training-aware methods (EK-FAC at checkpoints and over seeds, exact metagradients);
`infljax.validation.summary` scores every method by LDS against the seeds' mean NLL per
subset, with bootstrap 95% intervals, beside the **ceiling** (how well half of the seeds
predicts the other half).

Files under ``validate/<model>/``: ``methods/<name>.npy`` (EK-FAC at the checkpoints and
seeds), ``summary.json``, ``lds.png``, ``linearity.png``. The retrainings live apart, under
``retrainings/<model>/`` (`infljax.validation.run.RetrainingCache`), so that rescoring, a new
baseline or another damping re-runs only the cheap part; summary.json names the folders it read
(``retraining.folders``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from absl import logging
from ml_collections import ConfigDict

from infljax import training
from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import placement, read, recorded, section, section_record, settings
from infljax.curvature.fit import factors_section
from infljax.data.corpus import load_corpus
from infljax.data.tokenization import load_tokenizer, read_tokenizer_info
from infljax.influence.measurement import (
    QueryText,
    QueryTokens,
    encode_queries,
    read_query_records,
)
from infljax.influence.model_scores import InfluenceArgs
from infljax.influence.run import ScoresArgs
from infljax.models.io import read_model_config
from infljax.models.spec import model_specs
from infljax.validation import figures
from infljax.validation.run import RetrainingCache, ValidateArgs, ValidationRun
from infljax.validation.summary import headline, summarize, throughput
from infljax.workdir import (
    ScoreFiles,
    baselines_dir,
    corpus_dir,
    model_dir,
    recorded_args,
    retrainings_dir,
    scores_dir,
    stored_path,
    tokenizer_info_path,
    tokenizer_path,
    validate_dir,
    write_json,
)


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    _args(config)


def _args(config: ConfigDict) -> ValidateArgs:
    """``config.validation``, typed; its model must be one the pretrain stage trains."""
    args = read(ValidateArgs, section(config, "validation"), "validation")
    specs = model_specs(config)
    if args.model not in specs or not specs[args.model].trained:
        trained = [n for n, s in specs.items() if s.trained]
        raise ValueError(
            f"validation.model={args.model!r} must be one of the trained models {trained}"
        )
    return args


def run(config: ConfigDict, workdir: Path) -> None:
    args = _args(config)
    name = args.model
    out = validate_dir(workdir, name)
    records = read_query_records(ScoreFiles(scores_dir(workdir, name)).queries)
    scores = {m: _method_scores(workdir, name, m, len(records)) for m in args.methods}
    model_record = _pretrain_args(model_dir(workdir, name))
    train_args = training.TrainArgs(**model_record["train"])
    if args.metagradient_queries and train_args.eps_root <= 0:
        raise ValueError(
            f"validate {name}: metagradients need models.{name}.train.eps_root > 0 (Adam is not "
            "differentiable at nu = 0); set it (e.g. 1e-12) and retrain, or set "
            "validation.metagradient_queries=0"
        )
    record = {"validation": recorded(args)}  # the model and scores: by their runs (inputs)
    inputs = {"model": model_dir(workdir, name), "corpus": corpus_dir(workdir)}
    inputs |= {m: _method_dir(workdir, name, m) for m in args.methods}
    if begin_stage(
        out, record, inputs=inputs, overwrite=settings(config).overwrite, upgrade=_upgrade
    ):
        logging.info("validate %s: up to date in %s", name, out)
        return
    corpus = load_corpus(corpus_dir(workdir))
    tokens = _encode(workdir, config, records, corpus.max_length)
    cache = RetrainingCache(retrainings_dir(workdir, name), inputs, records)
    cfg = read_model_config(model_dir(workdir, name))
    work = ValidationRun(name, args, train_args, corpus, tokens, cfg, cache)
    started = time.perf_counter()
    measured, single = work.retrainings()
    retrain_seconds = time.perf_counter() - started
    scores |= work.training_aware(out, _influence_args(config), placement(config))
    summary = summarize(args, records, scores, work, measured, single)
    summary["retraining"] = throughput(work, retrain_seconds, model_dir(workdir, name))
    summary["retraining"]["folders"] = {k: stored_path(v, workdir) for k, v in cache.used.items()}
    write_json(out / "summary.json", summary)
    for file, png in figures.validation_figures(summary).items():
        (out / file).write_bytes(png)
    finish_stage(out)
    logging.info("validate %s: %s", name, headline(summary))


def _upgrade(record: dict) -> dict:
    """A record from before a ValidateArgs field existed (fixed_init) reads as its default."""
    return {
        **record,
        "validation": section_record(ValidateArgs, record["validation"], "validation"),
    }


def _method_scores(workdir: Path, name: str, method: str, num_queries: int) -> np.ndarray:
    """[Q, N] float64 scores of `method` (effects on log-probability for ekfac/kfac/grad_dot)."""
    files = ScoreFiles(_method_dir(workdir, name, method))
    if not files.scores.is_file():
        hint = "the scores stage" if method == "ekfac" else f"baselines with {method!r}"
        raise FileNotFoundError(f"validate {name}: no {files.scores}; run {hint} first")
    if method == "ekfac" and (strategy := files.method()) != "ekfac":
        raise ValueError(f"validate {name}: scores/{name} used strategy {strategy!r}, not ekfac")
    rows = read_query_records(files.queries)
    scores = files.load("scores").astype(np.float64)
    if len(rows) != num_queries or scores.shape[0] != num_queries:
        raise ValueError(
            f"validate {name}: {method} has {scores.shape[0]} query rows, the influence scores "
            f"{num_queries}; rerun the baselines stage after the scores stage"
        )
    return scores


def _method_dir(workdir: Path, name: str, method: str) -> Path:
    return scores_dir(workdir, name) if method == "ekfac" else baselines_dir(workdir, name, method)


def _pretrain_args(directory: Path) -> dict:
    """The pretrain stage's record of the model (its DecoderConfig and TrainArgs)."""
    record = recorded_args(directory) or {}
    if "train" not in record:
        raise ValueError(f"validate: {directory} was not trained by the pretrain stage")
    return record


def _encode(workdir: Path, config: ConfigDict, records, max_length: int) -> QueryTokens:
    tokenizer = load_tokenizer(tokenizer_path(workdir))
    return encode_queries(
        [QueryText.from_record(r) for r in records],
        tokenizer,
        read_tokenizer_info(tokenizer_info_path(workdir), tokenizer),
        max_length,
        ScoresArgs.from_config(config).measurement,
    )


def _influence_args(config: ConfigDict) -> InfluenceArgs:
    """The scores stage's EK-FAC settings, for the models the validation trains itself."""
    s = ScoresArgs.from_config(config)
    factors, plan, _ = factors_section(config.factors)
    return InfluenceArgs(
        layers=s.layers,
        strategy="ekfac",
        factors=factors,
        fit_batch_size=plan.batch_size,
        damping=s.damping,
        query_grads=s.query_grads,
        scoring=dataclasses.replace(s.scoring, self_influence=False),
    )
