"""Stage `validate`: do the scores predict retraining? (the linear datamodeling score, LDS)

For one trained model (``config.validation.model``) the stage

1. **retrains** it `num_subsets` × `seeds` times (`infljax.validation.retrain`: K models per
   jitted, vmapped call): on each of `num_subsets` random subsets of `fraction` of the training
   documents (the others get loss weight 0), from each of `seeds` seeds (initialisation and
   data order), and measures every query's completion NLL;
2. computes the **training-aware** methods (`infljax.validation.methods`): EK-FAC at
   `checkpoints` points of one run combined with the learning-rate weights, EK-FAC averaged
   over `ensemble` models trained from different seeds, and the **exact metagradients** of
   `metagradient_queries` queries through the whole training run (the ground truth);
3. scores every method (``ekfac`` = the scores stage's matrix, the baselines stage's, and the
   training-aware ones) by LDS against the seeds' mean NLL per subset, with bootstrap 95%
   intervals, beside the **ceiling**: how well half of the seeds predicts the other half.

Files under ``validate/<model>/``: ``methods/<name>.npy`` (EK-FAC at the checkpoints and
seeds), ``summary.json``, ``lds.png``, ``linearity.png``. The retrainings do not depend on the
scores, so they live apart, under ``retrainings/<model>/``, one folder per setting named by a
digest of everything its numbers depend on (the model's pretrain run, the corpus, the queries,
the subsets, seeds and weight scale: ``key.json`` says which): ``runs_<digest>/chunk_<i>.npy``
(nats [K, Q] of one call's retrainings; the unit of resume, claimed with an OS file lock so
that several processes running this stage share the work), ``single_model[_scale<t>]_<digest>/``
(the same for the single-model protocol at each weight reduction t) and
``metagradient_<digest>/metagradient.npy``. Rescoring, a new baseline or another damping
re-runs only the cheap part; summary.json names the folders it read
(``retraining.folders``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import nnx
from ml_collections import ConfigDict
from tqdm import tqdm

from infljax import training
from infljax.analysis.families import query_kind
from infljax.analysis.inputs import QueryRecord
from infljax.checkpoints import begin_stage, fingerprint, finish_stage
from infljax.config import (
    free,
    placement,
    read,
    recorded,
    section,
    settings,
    with_added_defaults,
)
from infljax.curvature.fit import factors_section
from infljax.data.corpus import TokenizedCorpus, load_corpus
from infljax.data.tokenization import load_tokenizer, read_tokenizer_info
from infljax.distributed import Placement
from infljax.influence.measurement import (
    QueryText,
    QueryTokens,
    encode_queries,
    read_query_records,
    records_sha256,
)
from infljax.influence.model_scores import InfluenceArgs, influence_scores
from infljax.influence.run import ScoresArgs
from infljax.models.io import read_model_config
from infljax.models.spec import model_specs
from infljax.trees import take
from infljax.validation import figures, lds, metagradient, methods, retrain
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

METHODS = ("ekfac", "kfac", "grad_dot", "grad_cosine", "tfidf", "random")
TRAINING_AWARE = ("ekfac_checkpoints", "ekfac_ensemble", "metagradient")
UNITLESS = ("tfidf", "random")  # scores that are not effects in nats: no slope to read


@dataclasses.dataclass(frozen=True)
class ValidateArgs:
    """What the validation measures.

    Attributes:
      model: the model to validate (trained by the pretrain stage: retraining needs its
        TrainArgs).
      methods: score matrices of the scores/baselines stages to compare (METHODS; all but
        ``ekfac`` come from the baselines stage, so ``config.baselines.methods`` must hold them).
      num_subsets, fraction, seed: LDS subsets (`num_subsets` seeded subsets of `fraction` of
        the training documents).
      seeds: retrainings per subset (seeds train.seed, train.seed + 1, ...); >= 2 for the
        ceiling.
      fixed_init: every retraining (and every seed-ensemble member) starts from the
        original model's initialisation (train.seed): the seeds vary the data order alone,
        to tell which of the two makes retrainings disagree (docs/results.md); False, the
        TRAK/kronfluence protocol, varies both.
      models_per_call: retrainings trained together in one vmapped call.
      checkpoints: multi-checkpoint EK-FAC over this many evenly spaced steps of the seed
        train.seed run (the last is the final step; 0: off).
      ensemble: seed-ensemble EK-FAC over this many models (0: off).
      metagradient_queries: exact metagradients of this many queries, evenly spaced over the
        query rows (0: off; each costs about 3 training runs), `metagradient_chunk` per pass.
      bootstrap: bootstrap replicates of each interval.
      single_model_subsets, single_model_fraction: the single-model protocol (MAGIC's): as
        many retrainings from the original seed alone (initialisation and data order fixed, so
        the only change is the data), each keeping `single_model_fraction` of the training
        documents; LDS against those runs is what a derivative of the one run can reach
        (0 subsets: off).
      single_model_scales: the dropped documents' loss weight is lowered by each scale t in
        turn (1: removed, as above; t < 1: down-weighted to 1 - t), the same subsets each time:
        LDS against t is the **linearity curve** (a derivative of the run, the metagradient,
        is exact as t -> 0, so where its LDS falls with t the response stops being linear).
    """

    model: str = "small"
    methods: tuple[str, ...] = METHODS
    num_subsets: int = 100
    fraction: float = 0.5
    seed: int = 0
    seeds: int = 2
    fixed_init: bool = False
    models_per_call: int = free(8)
    checkpoints: int = 3
    ensemble: int = 3
    metagradient_queries: int = 8
    metagradient_chunk: int = free(8)
    bootstrap: int = 1000
    single_model_subsets: int = 50
    single_model_fraction: float = 0.95
    single_model_scales: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"validation.methods={self.methods!r}: choose from {METHODS}")
        if self.num_subsets < 3:
            raise ValueError(f"validation.num_subsets must be >= 3, got {self.num_subsets}")
        if self.seeds < 1 or self.models_per_call < 1 or self.bootstrap < 1:
            raise ValueError(
                f"validation.seeds, models_per_call and bootstrap must be >= 1: {self}"
            )
        if self.single_model_subsets and self.single_model_subsets < 3:
            raise ValueError(
                "validation.single_model_subsets must be 0 or >= 3, got "
                f"{self.single_model_subsets}"
            )
        for fraction in ("fraction", "single_model_fraction"):
            if not 0 < getattr(self, fraction) < 1:
                raise ValueError(f"validation.{fraction} must be in (0, 1): {self}")
        scales = self.single_model_scales
        if self.single_model_subsets and (
            not scales or any(not 0 < t <= 1 for t in scales) or len(set(scales)) < len(scales)
        ):
            raise ValueError(
                "validation.single_model_scales must be distinct weight reductions in (0, 1] "
                f"(1: remove the documents), got {scales}"
            )
        for name in ("checkpoints", "ensemble", "metagradient_queries", "metagradient_chunk"):
            if getattr(self, name) < 0:
                raise ValueError(f"validation.{name} must be >= 0, got {getattr(self, name)}")


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
    cache = _Cache(retrainings_dir(workdir, name), inputs, records)
    work = _Work(
        name, args, train_args, corpus, tokens, read_model_config(model_dir(workdir, name)), cache
    )
    started = time.perf_counter()
    measured = work.retrain_subsets("runs", work.masks, args.seeds, subsets=work.subsets)
    single = {  # scale -> [Q, M, 1]
        t: work.retrain_subsets(
            _single_folder(t), work.single_masks, 1, t, subsets=work.single_subsets
        )
        for t in (args.single_model_scales if args.single_model_subsets else ())
    }
    retrain_seconds = time.perf_counter() - started
    scores |= work.training_aware(out, _influence_args(config), placement(config))
    summary = _summarize(args, records, scores, work, measured, single)
    summary["retraining"] = _throughput(work, retrain_seconds, model_dir(workdir, name))
    summary["retraining"]["folders"] = {k: stored_path(v, workdir) for k, v in cache.used.items()}
    write_json(out / "summary.json", summary)
    for file, png in figures.validation_figures(summary).items():
        (out / file).write_bytes(png)
    finish_stage(out)
    logging.info("validate %s: %s", name, _headline(summary))


def _upgrade(record: dict) -> dict:
    """A record from before a ValidateArgs field existed (fixed_init) reads as its default."""
    return {**record, "validation": with_added_defaults(record["validation"], ValidateArgs)}


def _method_scores(workdir: Path, name: str, method: str, num_queries: int) -> np.ndarray:
    """[Q, N] float64 scores of `method` (effects on log-probability for ekfac/kfac/grad_dot)."""
    files = ScoreFiles(_method_dir(workdir, name, method))
    if not files.scores.is_file():
        hint = "the scores stage" if method == "ekfac" else f"baselines with {method!r}"
        raise FileNotFoundError(f"validate {name}: no {files.scores}; run {hint} first")
    if method == "ekfac" and (strategy := files.method()) != "ekfac":
        raise ValueError(f"validate {name}: scores/{name} used strategy {strategy!r}, not ekfac")
    rows = read_query_records(files.queries)
    scores = np.load(files.scores).astype(np.float64)
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


def chosen_rows(count: int, num_queries: int) -> np.ndarray:
    """`count` query rows evenly spaced over all rows (grouped by family: each gets a share)."""
    count = min(count, num_queries)
    if not count:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, num_queries - 1, count).round().astype(int))


def _kind(record: dict) -> str:
    return query_kind(QueryRecord.from_json(record, "query"))


# --- the work: retrainings, training-aware methods ---------------------------------------------


class _Cache:
    """The folders of the retrainings under `root` (``retrainings/<model>/``), each named by a
    digest of what its numbers depend on: the model's pretrain run and the corpus (their
    fingerprints in `inputs`), the query records and the folder's own settings. A setting
    seen before finds its folder again whatever else changed (scores, baselines, damping), a
    retrained model or another corpus gets new ones; `used` maps each kind to its folder."""

    def __init__(self, root: Path, inputs: dict, records: list[dict]):
        self.root, self.used = root, {}
        self.identity = {
            "model": fingerprint(inputs["model"]),
            "corpus": fingerprint(inputs["corpus"]),
            "queries_sha256": records_sha256(records),
        }

    def folder(self, kind: str, **settings) -> Path:
        # a False setting stays out of the key: a switch added later, left off, keeps the names
        # of the folders written before it existed
        settings = {k: v for k, v in settings.items() if v is not False}
        key = {"kind": kind, **self.identity, **settings}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        folder = self.root / f"{kind}_{digest}"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "key.json").is_file():
            tmp = folder / f"key.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(key, indent=2, sort_keys=True))
            tmp.replace(folder / "key.json")
        self.used[kind] = folder
        return folder


class _Work:
    """The retrainings and the training-aware scores of one validated model."""

    def __init__(
        self, name, args: ValidateArgs, train_args, corpus: TokenizedCorpus, tokens, cfg, cache
    ):
        self.name, self.args, self.train_args, self.corpus, self.cfg, self.cache = (
            name, args, train_args, corpus, cfg, cache,
        )  # fmt: skip
        self.tokens, self.queries = tokens, tokens.batch()
        self.train_rows = training.split_rows(
            corpus.num_documents, train_args.held_out_fraction, train_args.seed
        )[0]
        # (count, fraction, seed) of each protocol's subsets of the training rows
        self.subsets = (args.num_subsets, args.fraction, args.seed)
        self.single_subsets = (args.single_model_subsets, args.single_model_fraction, args.seed + 1)
        self.masks = lds.sample_subsets(len(self.train_rows), *self.subsets)
        self.single_masks = (
            lds.sample_subsets(len(self.train_rows), *self.single_subsets)
            if args.single_model_subsets
            else None
        )
        self.retrainer = retrain.Retrainer(
            cfg, train_args, np.asarray(corpus.tokens), corpus.lengths, devices=jax.local_devices()
        )

    def weights(self, mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Loss weights of a retraining on the training rows `mask` keeps (the others' weight
        lowered by `scale`: 1 removes them)."""
        w = np.ones(self.corpus.num_documents, np.float32)
        w[self.train_rows[~mask]] = 1.0 - scale
        return w

    def retrain_subsets(
        self, kind: str, masks: np.ndarray, seeds: int, scale: float = 1.0, *, subsets
    ) -> np.ndarray:
        """[Q, M, S] every query's NLL after retraining on each of the M subsets `masks` (drawn
        as `subsets` = (count, fraction, seed); the other documents' weight lowered by `scale`)
        from each of `seeds` seeds. Chunks are cached in the `kind` folder of the retrainings;
        runs the chunks nobody holds, then waits for the others'."""
        runs = [(m, s) for m in range(len(masks)) for s in range(seeds)]  # seeds innermost
        k = self.args.models_per_call
        chunks = [runs[i : i + k] for i in range(0, len(runs), k)]
        folder = self.cache.folder(
            kind, subsets=list(subsets), seeds=seeds, scale=scale, models_per_call=k,
            fixed_init=self.args.fixed_init,
        )  # fmt: skip
        bar = tqdm(
            total=len(runs) * self.train_args.steps,
            desc=f"retrain {self.name} ({len(runs)} models, {kind})",
            unit="step",
            mininterval=2.0,
        )
        waiting, paths = [], [folder / f"chunk_{i:05d}.npy" for i in range(len(chunks))]
        for path, chunk in zip(paths, chunks, strict=True):
            with _claim(path, block=False) as claimed:
                if claimed:
                    self._run_chunk(path, chunk, masks, scale, bar)
                else:
                    waiting.append((path, chunk))
        for path, chunk in waiting:  # held by another process: wait for it
            with _claim(path, block=True):
                self._run_chunk(path, chunk, masks, scale, bar)
        bar.close()
        nats = np.concatenate([np.load(p) for p in paths])
        return nats.reshape(len(masks), seeds, -1).transpose(2, 0, 1)

    def _run_chunk(self, path: Path, chunk, masks: np.ndarray, scale: float, bar) -> None:
        if path.is_file():
            bar.update(len(chunk) * self.train_args.steps)
            return
        weights = np.stack([self.weights(masks[m], scale) for m, _ in chunk])
        seeds = [self.train_args.seed + s for _, s in chunk]
        params, _ = self.retrainer(
            weights, seeds, lambda n: bar.update(n * len(chunk)), init_seeds=self.inits(seeds)
        )
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, self.retrainer.measure(params, self.queries))
        tmp.replace(path)

    def inits(self, seeds: list[int]) -> list[int]:
        """The initialisation seed of each retraining of `seeds`."""
        return [self.train_args.seed] * len(seeds) if self.args.fixed_init else seeds

    def training_aware(
        self, out: Path, influence: InfluenceArgs, placement: Placement
    ) -> dict[str, np.ndarray]:
        """{method: scores [Q, N]} of the enabled training-aware methods (cached in methods/)."""
        args, found = self.args, {}
        directory = out / "methods"
        directory.mkdir(parents=True, exist_ok=True)
        steps = self.checkpoint_steps()
        if args.checkpoints or args.ensemble:
            per_model = self._reference_scores(directory, influence, placement, steps)
            if args.checkpoints:
                weights = methods.checkpoint_weights(self.train_args, steps)
                checkpoint_scores = [per_model[f"ekfac_seed0_step{t}"] for t in steps]
                found["ekfac_checkpoints"] = methods.combine_checkpoints(checkpoint_scores, weights)
            if args.ensemble:
                final = self.train_args.steps
                members = [per_model[f"ekfac_seed{e}_step{final}"] for e in range(args.ensemble)]
                found["ekfac_ensemble"] = methods.ensemble(members)
        if args.metagradient_queries:
            found["metagradient"] = self._metagradient()
        return found

    def checkpoint_steps(self) -> list[int]:
        c, steps = self.args.checkpoints, self.train_args.steps
        return sorted({int(round(steps * (i + 1) / c)) for i in range(c)}) if c else [steps]

    def _reference_scores(
        self, directory: Path, influence, placement: Placement, steps
    ) -> dict[str, np.ndarray]:
        """EK-FAC scores of the full-data runs: seed 0 at every checkpoint step, seeds 1.. at
        the last step. Trains them (one call) unless every matrix is cached."""
        final = self.train_args.steps
        wanted = [(0, t) for t in steps] + [(e, final) for e in range(1, self.args.ensemble)]
        wanted += [] if (0, final) in wanted else [(0, final)]
        path = lambda e, t: directory / f"ekfac_seed{e}_step{t}.npy"  # noqa: E731
        if not all(path(e, t).is_file() for e, t in wanted):
            seeds = [self.train_args.seed + e for e in range(max(self.args.ensemble, 1))]
            logging.info("validate %s: training %d full-data models", self.name, len(seeds))
            weights = np.ones((len(seeds), self.corpus.num_documents), np.float32)
            last, saved = self.retrainer(
                weights, seeds, checkpoints=tuple(steps), init_seeds=self.inits(seeds)
            )
            saved[final] = last
            for e, t in tqdm(wanted, desc=f"EK-FAC {self.name} (seeds, checkpoints)"):
                model = nnx.merge(self.retrainer.graphdef, take(saved[t], e))
                scores = influence_scores(model, self.corpus, self.tokens, influence, placement)
                np.save(path(e, t), scores)
        return {f"ekfac_seed{e}_step{t}": np.load(path(e, t)) for e, t in wanted}

    def _metagradient(self) -> np.ndarray:
        """[Q, N] metagradient scores on the chosen rows, NaN on the others (cached)."""
        queries = self.args.metagradient_queries
        path = self.cache.folder("metagradient", queries=queries) / "metagradient.npy"
        if not path.is_file():
            rows = chosen_rows(self.args.metagradient_queries, self.queries.inputs.shape[0])
            graphdef, params = retrain.init_params(self.cfg, self.train_args.seed)
            data = self.retrainer.seed_stream(self.train_args.seed)
            queries = jax.tree.map(lambda x: x[rows], self.queries)
            bar = tqdm(total=len(rows), desc=f"metagradients {self.name}", unit="query")
            scores, _ = metagradient.metagradient_scores(
                graphdef, self.train_args, params, data, queries, self.corpus.num_documents,
                self.args.metagradient_chunk, bar.update,
            )  # fmt: skip
            bar.close()
            full = np.full((self.queries.inputs.shape[0], self.corpus.num_documents), np.nan)
            full[rows] = scores
            np.save(path, full)
        return np.load(path)


@contextlib.contextmanager
def _claim(path: Path, block: bool) -> Iterator[bool]:
    """Hold `path`'s lock file (released when the process dies); yields whether it is held."""
    with open(path.with_suffix(".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- results ---------------------------------------------------------------------------------


def _summarize(args: ValidateArgs, records, scores: dict, work: _Work, measured, single) -> dict:
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


def _throughput(work: _Work, seconds: float, original: Path) -> dict:
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


def _single_folder(scale: float) -> str:
    """The chunks of the single-model retrainings at one weight reduction (1: `single_model`)."""
    return "single_model" if scale == 1 else f"single_model_scale{scale:g}"


def _median(values: np.ndarray) -> float | None:
    """The median of the finite `values` as `_floats` stores numbers (None: none finite)."""
    finite = values[np.isfinite(values)]
    return _floats(np.median(finite, keepdims=True))[0] if len(finite) else None


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def _headline(summary: dict) -> str:
    parts = [f"{m} {summary['lds'][m]['all']['mean']:.3f}" for m in summary["methods"]]
    if "ceiling" in summary:
        parts.append(f"ceiling {summary['ceiling']['all']['mean']:.3f}")
    line = "LDS " + ", ".join(parts)
    single = [(m, summary["lds"][m].get("single_model")) for m in summary["methods"]]
    if single[0][1] is not None:
        line += "; single-model LDS " + ", ".join(f"{m} {e['all']['mean']:.3f}" for m, e in single)
    return line
