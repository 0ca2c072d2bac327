"""Stage `baselines`: score matrices of simple methods, written beside the influence scores.

Per model and method, ``<workdir>/baselines/<model>/<method>/`` holds what the scores stage
writes for EK-FAC (DESIGN §4), so `infljax.analysis.inputs.read_model_scores` and every analysis
read it unchanged: ``scores.npy`` float32 [Q, N], ``query_nats.npy`` [Q], ``doc_grad_norms.npy``
[N] and ``queries.jsonl`` (the rows of ``scores/<model>/``, in the same order). Methods:

* ``tfidf``: TF-IDF cosine of prompt + completion against each document (no model involved);
* ``random``: seeded Gaussian noise;
* ``grad_dot``: plain gradient dot products — the scores stage's own pass
  (`infljax.influence.run.ScoringRun`) with strategy ``identity``, into this directory;
* ``grad_cosine``: grad_dot ÷ (‖∇q‖ ‖∇m‖), from grad_dot's files (computed when either is asked);
* ``kfac``: the scores stage's pass with strategy ``kfac`` (Kronecker factors without the
  eigenvalue correction; same factors, damping and rank as the influence scores);
* ``checkpoints`` (written for every model whose config has ``checkpoints``, a mapping
  {model: weight}): multi-checkpoint EK-FAC for a model family that publishes intermediate
  checkpoints (Pythia, OLMo): Σ_c w_c · ``scores/<c>/scores.npy`` over the listed models, each a
  ``config.models`` entry of its own (converted from one checkpoint, fitted and scored as usual).
  w_c is the learning rate spent in the segment of training that ends at checkpoint c (SOURCE,
  Bae et al. 2024; `infljax.validation.methods`), which published checkpoints do not record:
  compute it from the family's schedule. The model's own doc_grad_norms are kept.

The analyses rank by score ÷ doc_grad_norm when normalising. For ``tfidf``, ``random`` and
``grad_cosine`` (already normalised) ``doc_grad_norms.npy`` is therefore all ones, so they are
ranked by their own scores; ``grad_dot`` keeps the real gradient norms, like EK-FAC.

Config (optional; absent = defaults): ``config.baselines`` (`BaselineArgs`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import logging
from ml_collections import ConfigDict

from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import placement, read, section, settings
from infljax.data.corpus import load_corpus
from infljax.data.tokenization import load_tokenizer
from infljax.influence import baselines, query_grads
from infljax.influence.measurement import QueryText, read_query_records
from infljax.influence.run import ModelInputs, ScoresArgs, ScoringRun
from infljax.models.spec import model_specs
from infljax.multihost import on_main
from infljax.validation import methods
from infljax.workdir import (
    ScoreFiles,
    baselines_dir,
    corpus_dir,
    queries_path,
    scores_dir,
    tokenizer_path,
    write_jsonl,
)

METHODS = ("tfidf", "random", "grad_dot", "grad_cosine", "kfac")
GRADIENT_METHODS = ("grad_dot", "grad_cosine")
# Baselines that are the scores stage's own pass with another strategy.
SCORING_METHODS = {"grad_dot": "identity", "kfac": "kfac"}


@dataclasses.dataclass(frozen=True)
class BaselineArgs:
    """Which baselines to write. methods: a subset of METHODS; seed: of ``random``;
    sublinear_tf: TF-IDF with 1 + log(count) instead of the raw count."""

    methods: tuple[str, ...] = ("tfidf", "random")
    seed: int = 0
    sublinear_tf: bool = False

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"baselines.methods={self.methods!r}: choose from {METHODS}")


def checkpoint_weights(config: ConfigDict, name: str) -> dict[str, float]:
    """`config.models.<name>.checkpoints` ({model: weight}; {} when absent), checked: every
    key is a model of the config, every weight finite and >= 0, some weight > 0."""
    weights = model_specs(config)[name].checkpoints
    unknown = [m for m in weights if m not in config.models]
    if unknown:
        raise ValueError(
            f"models.{name}.checkpoints names {unknown}, not models of this config "
            f"{list(config.models)}: add each checkpoint as a config.models entry of its own"
        )
    if weights and (
        not all(np.isfinite(w) and w >= 0 for w in weights.values()) or not sum(weights.values())
    ):
        raise ValueError(f"models.{name}.checkpoints weights must be >= 0, not all 0: {weights}")
    return weights


def stage_args(config: ConfigDict) -> BaselineArgs:
    """``config.baselines`` (absent: the defaults), typed."""
    return read(BaselineArgs, section(config, "baselines"), "baselines")


def check(config: ConfigDict) -> None:
    stage_args(config)
    for name in config.models:
        checkpoint_weights(config, name)


def run(config: ConfigDict, workdir: Path) -> None:
    args, overwrite = stage_args(config), settings(config).overwrite
    corpus = load_corpus(corpus_dir(workdir))
    for name in config.models:
        if weights := checkpoint_weights(config, name):
            on_main(_checkpoint_sum, workdir, name, weights, overwrite)
        if any(m in GRADIENT_METHODS for m in args.methods):
            _scoring_baseline(config, workdir, name, corpus, "grad_dot")
            _gradient_cosine(config, workdir, name)
        if "kfac" in args.methods:
            _scoring_baseline(config, workdir, name, corpus, "kfac")
        source = on_main(_companion, workdir, name)
        records = read_query_records(source[1], model=name)
        texts = [baselines.query_text(QueryText.from_record(r)) for r in records]
        docs = [d.text for d in corpus.documents]
        record = {}  # the rows and corpus are recorded by where they were read (`_write`)
        # process 0 computes and writes the host baselines (with one process: just runs)
        write = functools.partial(on_main, _write, workdir, name, (source[0], records), overwrite)
        if "tfidf" in args.methods:
            fn = functools.partial(baselines.tfidf_scores, texts, docs, args.sublinear_tf)
            write("tfidf", fn, record | {"sublinear_tf": args.sublinear_tf})
        if "random" in args.methods:
            fn = functools.partial(baselines.random_scores, len(texts), len(docs), args.seed)
            write("random", fn, record | {"seed": args.seed})


def _scoring_baseline(config: ConfigDict, workdir: Path, name: str, corpus, method: str) -> None:
    """The scores stage's pass with `method`'s strategy (SCORING_METHODS), into its directory.

    Only the [Q, N] matrix is wanted: no self-influence, per-layer or per-token breakdowns.
    """
    influence = ScoresArgs.from_config(config)
    args = dataclasses.replace(
        influence,
        strategy=SCORING_METHODS[method],
        scoring=dataclasses.replace(influence.scoring, self_influence=False),
        per_layer=False,
        rescore_top_k=0,
        per_token_top=0,
    )
    tokenizer = load_tokenizer(tokenizer_path(workdir))
    inputs = ModelInputs.of_workdir(workdir, name, corpus, tokenizer)
    out = baselines_dir(workdir, name, method)
    ScoringRun(name, inputs, args, placement(config), out, settings(config).overwrite).run()


def _gradient_cosine(config: ConfigDict, workdir: Path, name: str) -> None:
    """grad_cosine from grad_dot's files: scores ÷ (‖∇q‖ ‖∇m‖)."""
    dot = ScoreFiles(baselines_dir(workdir, name, "grad_dot"))

    def cosine() -> np.ndarray:
        norms = baselines.query_grad_norms(query_grads.load_queries(dot.query_grads))
        return baselines.gradient_cosine(dot.load("scores"), norms, dot.load("doc_grad_norms"))

    rows = read_query_records(dot.queries)
    record = {}  # grad_dot's directory is recorded by its run (`_write`)
    source = (dot.query_nats, rows)
    overwrite = settings(config).overwrite
    on_main(_write, workdir, name, source, overwrite, "grad_cosine", cosine, record)


def _checkpoint_sum(workdir: Path, name: str, weights: dict[str, float], overwrite: bool) -> None:
    """baselines/<name>/checkpoints/: the listed models' score matrices summed with `weights`
    (their query rows must be the model's own, in its order)."""
    own = ScoreFiles(scores_dir(workdir, name))
    if not own.query_nats.is_file():
        raise FileNotFoundError(f"baselines {name}/checkpoints: run the scores stage first")
    rows = read_query_records(own.queries)
    files = {}
    for model in weights:
        files[model] = ScoreFiles(scores_dir(workdir, model))
        if missing := files[model].missing():
            raise FileNotFoundError(
                f"baselines {name}/checkpoints: {files[model].directory} lacks {missing}; run "
                f"the scores stage for model {model!r}"
            )
        theirs = [r["id"] for r in read_query_records(files[model].queries)]
        if theirs != [r["id"] for r in rows]:
            raise ValueError(
                f"baselines {name}/checkpoints: model {model!r} scored other query rows than "
                f"{name!r}; score every checkpoint on the same queries"
            )

    def combined() -> np.ndarray:
        scores = [f.load("scores") for f in files.values()]
        return methods.combine_checkpoints(scores, np.asarray(list(weights.values())))

    record = {"weights": weights}
    inputs = {f"scores_{m}": f.directory for m, f in files.items()}
    _write(workdir, name, (own.query_nats, rows), overwrite, "checkpoints", combined, record,
           norms=own.doc_grad_norms, inputs=inputs)  # fmt: skip


def _companion(workdir: Path, name: str) -> tuple[Path, Path]:
    """query_nats.npy and the JSONL of the query rows: the influence scores', else grad_dot's."""
    for d in (scores_dir(workdir, name), baselines_dir(workdir, name, "grad_dot")):
        files = ScoreFiles(d)
        if files.query_nats.is_file():
            rows = files.queries if files.queries.is_file() else queries_path(workdir)
            return files.query_nats, rows
    raise FileNotFoundError(
        f"baselines {name}: no query_nats.npy in {scores_dir(workdir, name)}; run the scores "
        "stage first (its query rows and query_nats are the baselines' too), or add 'grad_dot' "
        "to config.baselines.methods"
    )


def _write(
    workdir: Path,
    name: str,
    source: tuple[Path, list[dict]],
    overwrite: bool,
    method: str,
    scores_fn: Callable[[], np.ndarray],
    record: dict,
    norms: Path | None = None,
    inputs: dict[str, Path] | None = None,
) -> None:
    """Write one baseline directory (unless up to date): scores_fn() [Q, N] as float32, the
    doc_grad_norms file `norms` (None: all ones), and the rows' source = (its query_nats.npy,
    its query records); `inputs`: what else the scores were computed from."""
    out = baselines_dir(workdir, name, method)
    inputs = {"corpus": corpus_dir(workdir), "rows": source[0].parent, **(inputs or {})}
    if begin_stage(
        out, {"method": method, **record}, inputs=inputs, overwrite=overwrite, resumes=False
    ):
        logging.info("baselines %s/%s: up to date in %s", name, method, out)
        return
    files = ScoreFiles(out)
    scores = np.asarray(scores_fn(), np.float32)
    files.save(scores=scores)
    ones = np.ones(scores.shape[1], np.float32)
    files.save(doc_grad_norms=ones if norms is None else np.load(norms))
    nats, records = source
    if len(records) != scores.shape[0]:
        raise ValueError(
            f"baselines {name}/{method}: {scores.shape[0]} rows, {len(records)} queries"
        )
    files.save(query_nats=np.load(nats))
    write_jsonl(files.queries, records)
    finish_stage(out)
    logging.info("baselines %s/%s: %d x %d in %s", name, method, *scores.shape, out)
