"""One validation's work: the retrainings and the training-aware scores of one model.

`ValidateArgs` says what is measured (``config.validation``). A `ValidationRun` retrains the
model `num_subsets` × `seeds` times (`infljax.validation.retrain`, K models per jitted,
vmapped call) on random subsets of its training documents, and for the single-model protocol
at each weight reduction, measuring every query's completion NLL; then computes the
training-aware methods (`infljax.validation.methods`: EK-FAC at checkpoints and over a seed
ensemble; exact metagradients, `infljax.validation.metagradient`). `infljax.validation.summary`
turns the numbers into summary.json; the stage `infljax.stages.validate` reads the workdir and
writes it.

The retrainings do not depend on the scores, so `RetrainingCache` keeps them apart
(``retrainings/<model>/``), one folder per setting named by a digest of everything its numbers
depend on (the model's pretrain run, the corpus, the queries, the subsets, seeds and weight
scale: ``key.json`` says which): ``runs_<digest>/chunk_<i>.npy`` (nats [K, Q] of one call's
retrainings; the unit of resume, claimed with an OS file lock, `claim`, so that several
processes running the stage share the work), ``single_model[_scale<t>]_<digest>/`` and
``metagradient_<digest>/metagradient.npy``. Rescoring, a new baseline or another damping
re-runs only the cheap part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from infljax import training
from infljax.checkpoints import fingerprint
from infljax.config import free
from infljax.data.corpus import TokenizedCorpus
from infljax.distributed import Placement
from infljax.influence.measurement import records_sha256
from infljax.influence.model_scores import InfluenceArgs, influence_scores
from infljax.trees import take
from infljax.validation import lds, metagradient, methods, retrain
from infljax.workdir import save_array

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


def chosen_rows(count: int, num_queries: int) -> np.ndarray:
    """`count` query rows evenly spaced over all rows (grouped by family: each gets a share)."""
    count = min(count, num_queries)
    if not count:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, num_queries - 1, count).round().astype(int))


class RetrainingCache:
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


class ValidationRun:
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

    def retrainings(self) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        """Every query's NLL after each retraining: [Q, M, S] over the LDS subsets and seeds, and
        {scale t: [Q, M', 1]} of the single-model protocol at each weight reduction."""
        args = self.args
        measured = self.retrain_subsets("runs", self.masks, args.seeds, subsets=self.subsets)
        single = {
            t: self.retrain_subsets(
                single_folder(t), self.single_masks, 1, t, subsets=self.single_subsets
            )
            for t in (args.single_model_scales if args.single_model_subsets else ())
        }
        return measured, single

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
            with claim(path, block=False) as claimed:
                if claimed:
                    self._run_chunk(path, chunk, masks, scale, bar)
                else:
                    waiting.append((path, chunk))
        for path, chunk in waiting:  # held by another process: wait for it
            with claim(path, block=True):
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
        save_array(path, self.retrainer.measure(params, self.queries))

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
                save_array(path(e, t), scores)
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
            save_array(path, full)
        return np.load(path)


@contextlib.contextmanager
def claim(path: Path, block: bool) -> Iterator[bool]:
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


def single_folder(scale: float) -> str:
    """The chunks of the single-model retrainings at one weight reduction (1: `single_model`)."""
    return "single_model" if scale == 1 else f"single_model_scale{scale:g}"
