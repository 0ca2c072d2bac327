"""Stage `validate`: do the scores predict retraining? (LDS and counterfactual removal.)

For one model (``config.validation.model``, trained by the pretrain stage) and every method in
``config.validation.methods`` (``ekfac`` = the scores stage's matrix; the others = the
baselines stage's: kfac, grad_dot, grad_cosine, tfidf, random):

* **LDS** (`infljax.validation.lds`): M seeded subsets of the training documents; the model is
  retrained on each (the others excluded, `train_model(exclude_rows=...)`) and every query is
  measured; per query, Spearman between each method's prediction and the measured NLL.
* **Counterfactual removal** (`infljax.validation.counterfactual`): for chosen factual and
  reasoning queries, each method's top-k training documents are removed, the model retrained
  from the same initialisation and data order, and the query's completion NLL re-measured.

Each retraining is one **unit**, named by a hash of the rows it leaves out, under
``validate/<model>/units/<hash>/``: ``excluded.npy``, ``model/`` (the retrained model, its
checkpoints deleted once measured), ``nats.npy`` [Q] (every query's completion NLL) and
``unit.json``. Units are shared (two methods that pick the same top-k cost one retraining),
cached (a finished unit is never redone) and claimed with an OS file lock, so several processes
may run this stage on the same workdir at once: each takes the units nobody holds, then waits
for the rest. An interrupted unit resumes from its training checkpoints.

Outputs: ``validate/<model>/summary.json`` (per method: LDS and NLL change, mean ± standard
error over queries, for factual / reasoning / control queries), ``validate/<model>/*.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from absl import logging
from ml_collections import ConfigDict

from infljax import training
from infljax.analysis.families import query_kind
from infljax.analysis.inputs import QueryRecord
from infljax.checkpoints import ARGS_FILE, begin_stage, finish_stage
from infljax.data.corpus import TokenizedCorpus, load_corpus
from infljax.data.tokenization import load_tokenizer, tokenizer_info
from infljax.distributed import MeshArgs, make_mesh
from infljax.influence.measurement import (
    QueryText,
    QueryTokens,
    encode_queries,
    read_query_records,
)
from infljax.models.io import read_model_config
from infljax.pipeline import stage, write_json
from infljax.stages.pretrain import train_model
from infljax.stages.scores import ScoresArgs
from infljax.validation import counterfactual, figures, lds
from infljax.workdir import (
    baselines_dir,
    corpus_dir,
    model_dir,
    scores_dir,
    tokenizer_path,
    validate_dir,
)

METHODS = ("ekfac", "kfac", "grad_dot", "grad_cosine", "tfidf", "random")


@dataclasses.dataclass(frozen=True)
class ValidateArgs:
    """What the validation measures.

    Attributes:
      model: the model to validate (a trained one: retraining needs its TrainArgs).
      methods: score matrices to compare (METHODS; all but ``ekfac`` come from the baselines
        stage, so ``config.baselines.methods`` must include them).
      num_subsets, fraction, seed: LDS subsets (M subsets of `fraction` of the training docs).
      k: documents removed per query in the counterfactual test.
      factual_queries, reasoning_queries: how many of each kind get the counterfactual test
        (evenly spaced over the kind's queries, so every family is represented).
    """

    model: str = "small"
    methods: tuple[str, ...] = METHODS
    num_subsets: int = 16
    fraction: float = 0.5
    seed: int = 0
    k: int = 10
    factual_queries: int = 3
    reasoning_queries: int = 3

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"validation.methods={self.methods!r}: choose from {METHODS}")
        if self.num_subsets < 3:
            raise ValueError(f"validation.num_subsets must be >= 3, got {self.num_subsets}")
        if self.k < 1 or min(self.factual_queries, self.reasoning_queries) < 0:
            raise ValueError(f"validation: k must be >= 1 and query counts >= 0: {self}")

    @classmethod
    def from_config(cls, section: ConfigDict) -> ValidateArgs:
        raw = section.to_dict()
        return cls(**{k: tuple(v) if k == "methods" else v for k, v in raw.items()})


@stage("validate")
def run(config: ConfigDict, workdir: Path) -> None:
    args = ValidateArgs.from_config(config.validation)
    name = args.model
    if name not in config.models or config.models[name].get("checkpoint"):
        raise ValueError(
            f"validation.model={name!r} must be one of the trained models {list(config.models)}"
        )
    out = validate_dir(workdir, name)
    corpus = load_corpus(corpus_dir(workdir))
    records = read_query_records(scores_dir(workdir, name) / "queries.jsonl")
    scores = {m: _method_scores(workdir, name, m, len(records)) for m in args.methods}
    record = {"validation": dataclasses.asdict(args), "model": _read_args(model_dir(workdir, name))}
    record["scores"] = {m: _sha256(s) for m, s in scores.items()}
    if begin_stage(out, record, overwrite=config.overwrite):
        logging.info("validate %s: up to date in %s", name, out)
        return
    train_args = training.TrainArgs(**record["model"]["train"])
    train_rows = counterfactual.trained_rows(corpus.num_documents, train_args)
    plan = _plan(args, records, scores, train_rows)
    tokens = _encode(workdir, config, records, corpus.max_length)
    retrain = _Retrainer(name, model_dir(workdir, name), train_args, corpus, config, tokens, out)
    original = retrain.original_nats()
    nats = retrain.all(plan.units())
    summary = _summarize(args, records, scores, train_rows, plan, nats, original)
    summary["units"] = retrain.stats(plan.units())
    write_json(out / "summary.json", summary)
    for file, png in figures.validation_figures(summary).items():
        (out / file).write_bytes(png)
    finish_stage(out)
    logging.info("validate %s: %s", name, _headline(summary))


def _method_scores(workdir: Path, name: str, method: str, num_queries: int) -> np.ndarray:
    """[Q, N] float64 scores of `method` (effects on log-probability for ekfac/kfac/grad_dot)."""
    directory = (
        scores_dir(workdir, name) if method == "ekfac" else baselines_dir(workdir, name, method)
    )
    path = directory / "scores.npy"
    if not path.is_file():
        hint = "the scores stage" if method == "ekfac" else f"baselines with {method!r}"
        raise FileNotFoundError(f"validate {name}: no {path}; run {hint} first")
    if method == "ekfac":
        strategy = json.loads((directory / ARGS_FILE).read_text())["args"]["args"]["strategy"]
        if strategy != "ekfac":
            raise ValueError(
                f"validate {name}: scores/{name} used strategy {strategy!r}, not ekfac"
            )
    rows = read_query_records(directory / "queries.jsonl")
    scores = np.load(path).astype(np.float64)
    if len(rows) != num_queries or scores.shape[0] != num_queries:
        raise ValueError(
            f"validate {name}: {method} has {scores.shape[0]} query rows, the influence scores "
            f"{num_queries}; rerun the baselines stage after the scores stage"
        )
    return scores


def _read_args(directory: Path) -> dict:
    """The pretrain stage's record of the model (its DecoderConfig and TrainArgs)."""
    path = directory / ARGS_FILE
    record = json.loads(path.read_text())["args"] if path.is_file() else {}
    if "train" not in record:
        raise ValueError(f"validate: {directory} was not trained by the pretrain stage")
    return record


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _encode(workdir: Path, config: ConfigDict, records, max_length: int) -> QueryTokens:
    tokenizer = load_tokenizer(tokenizer_path(workdir))
    return encode_queries(
        [QueryText.from_record(r) for r in records],
        tokenizer,
        tokenizer_info(tokenizer),
        max_length,
        ScoresArgs.from_config(config).measurement,
    )


# --- which retrainings -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """masks [M, N_train] (LDS subsets, True = kept); removals: (method, query row) -> rows."""

    train_rows: np.ndarray
    masks: np.ndarray
    removals: dict[tuple[str, int], np.ndarray]

    def lds_exclusions(self) -> list[np.ndarray]:
        return [self.train_rows[~mask] for mask in self.masks]

    def units(self) -> list[np.ndarray]:
        """Every distinct exclusion set, LDS subsets first."""
        out = {unit_key(e): e for e in [*self.lds_exclusions(), *self.removals.values()]}
        return list(out.values())


def _plan(args: ValidateArgs, records, scores: dict, train_rows: np.ndarray) -> _Plan:
    masks = lds.sample_subsets(len(train_rows), args.num_subsets, args.fraction, args.seed)
    removals = {
        (method, q): counterfactual.top_k_rows(scores[method][q], args.k, train_rows)
        for q in chosen_queries(records, args.factual_queries, args.reasoning_queries)
        for method in args.methods
    }
    return _Plan(train_rows, masks, removals)


def chosen_queries(records: list[dict], factual: int, reasoning: int) -> list[int]:
    """Rows of the counterfactual queries: `factual` and `reasoning` ones, evenly spaced over
    each kind's rows (the rows are grouped by family, so every family gets its share)."""
    kinds = [_kind(r) for r in records]
    chosen = []
    for kind, count in (("factual", factual), ("reasoning", reasoning)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if count > len(rows):
            raise ValueError(f"validation: {count} {kind} queries asked, {len(rows)} available")
        if count:
            chosen += [rows[int(i)] for i in np.linspace(0, len(rows) - 1, count).round()]
    return chosen


def _kind(record: dict) -> str:
    return query_kind(QueryRecord.from_json(record, "query"))


def unit_key(excluded: np.ndarray) -> str:
    """The unit's name: a hash of the sorted rows it leaves out."""
    rows = np.unique(np.asarray(excluded, np.int64))
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


# --- running the retrainings -----------------------------------------------------------------


class _Retrainer:
    """Runs units (retrain without some rows, measure every query), cached and lock-claimed."""

    def __init__(self, name, original, train_args, corpus: TokenizedCorpus, config, tokens, out):
        self.name, self.original, self.train_args = name, original, train_args
        self.corpus, self.tokens, self.out = corpus, tokens, out
        self.cfg = read_model_config(original)
        self.mesh = make_mesh(MeshArgs(**config.mesh.to_dict()))
        (out / "units").mkdir(parents=True, exist_ok=True)

    def original_nats(self) -> np.ndarray:
        """Every query's NLL under the pretrained model itself (the "nothing removed" run)."""
        return counterfactual.measure(self.original, self.tokens, self.mesh)

    def all(self, units: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Unit key -> nats [Q] for every unit: runs those nobody holds, then waits for the rest."""
        waiting = []
        for i, excluded in enumerate(units):
            with _claim(self._dir(excluded), block=False) as claimed:
                if not claimed:
                    waiting.append(excluded)
                    continue
                self._run(excluded, f"{i + 1}/{len(units)}")
        for excluded in waiting:  # held by another process: wait for it to finish
            with _claim(self._dir(excluded), block=True):
                self._run(excluded, "(after another process)")
        return {unit_key(e): np.load(self._dir(e) / "nats.npy") for e in units}

    def stats(self, units: list[np.ndarray]) -> dict:
        seconds = [json.loads((self._dir(e) / "unit.json").read_text())["seconds"] for e in units]
        return {"count": len(units), "seconds": round(float(sum(seconds)), 1)}

    def _dir(self, excluded: np.ndarray) -> Path:
        return self.out / "units" / unit_key(excluded)

    def _run(self, excluded: np.ndarray, which: str) -> None:
        """Retrain without `excluded` and measure, unless the unit is already done."""
        unit = self._dir(excluded)
        if (unit / "nats.npy").is_file():
            return
        logging.info("validate %s: unit %s, %d rows left out", self.name, which, len(excluded))
        start = time.perf_counter()
        np.save(unit / "excluded.npy", np.unique(excluded))
        train_model(
            self.name,
            self.cfg,
            self.train_args,
            self.corpus,
            self.mesh,
            unit / "model",
            exclude_rows=excluded,
        )
        nats = counterfactual.measure(unit / "model", self.tokens, self.mesh)
        shutil.rmtree(unit / "model" / "checkpoints", ignore_errors=True)
        seconds = round(time.perf_counter() - start, 1)
        write_json(unit / "unit.json", {"excluded": int(len(excluded)), "seconds": seconds})
        np.save(unit / "nats.npy", nats)  # last: its presence marks the unit done


@contextlib.contextmanager
def _claim(unit: Path, block: bool) -> Iterator[bool]:
    """Hold the unit's lock file (released when the process dies); yields whether it is held."""
    unit.mkdir(parents=True, exist_ok=True)
    with open(unit / "lock", "w") as f:
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


def _summarize(args, records, scores, train_rows, plan: _Plan, nats, original) -> dict:
    """summary.json: per method, LDS and counterfactual NLL change by query kind."""
    kinds = np.asarray([_kind(r) for r in records])
    actual = np.stack([nats[unit_key(e)] for e in plan.lds_exclusions()], axis=1)  # [Q, M]
    out = {
        "model": args.model,
        "args": dataclasses.asdict(args),
        "queries": [r["id"] for r in records],
        "kinds": kinds.tolist(),
        "lds": {},
        "counterfactual": {},
        "original_nats": original.tolist(),
        "subset_nats_std": float(np.mean(actual.std(axis=1))),
    }
    chosen = sorted({q for _, q in plan.removals})
    for method in args.methods:
        predicted = lds.subset_predictions(scores[method][:, train_rows], plan.masks)
        per_query = lds.lds(predicted, actual)
        out["lds"][method] = _by_kind(per_query, kinds) | {"per_query": _floats(per_query)}
        change = np.asarray(
            [nats[unit_key(plan.removals[method, q])][q] - original[q] for q in chosen]
        )
        out["counterfactual"][method] = _by_kind(change, kinds[chosen]) | {
            "per_query": dict(zip([records[q]["id"] for q in chosen], _floats(change), strict=True))
        }
    return out


def _by_kind(values: np.ndarray, kinds: np.ndarray) -> dict:
    """{"all" | kind: {"mean", "stderr", "count"}} (None where undefined, e.g. one query)."""
    groups = {"all": np.ones(len(kinds), bool)} | {k: kinds == k for k in np.unique(kinds)}
    return {
        k: {
            key: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for key, v in dataclasses.asdict(lds.summarize(values[m])).items()
        }
        for k, m in groups.items()
    }


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _headline(summary: dict) -> str:
    parts = []
    for method, entry in summary["lds"].items():
        change = summary["counterfactual"][method]["all"]["mean"]
        parts.append(f"{method} LDS {_num(entry['all']['mean'])}, Δnats {_num(change, '+.3f')}")
    return "; ".join(parts)
