"""The workdir contract (DESIGN §4): every path a stage writes or reads, in one place."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

ARGS_FILE = "args.json"  # every stage directory's record (`StageRecord`)


@dataclasses.dataclass(frozen=True)
class StageRecord:
    """What readers take from a stage directory's ``args.json``: the arguments the stage ran
    with, whether it finished and the id of the run that finished it (the input fingerprints
    are `infljax.checkpoints.begin_stage`'s own)."""

    args: dict
    complete: bool = False
    run: str | None = None

    @classmethod
    def read(cls, directory: str | Path) -> StageRecord | None:
        """The record of the stage in `directory`; None when it holds none."""
        path = Path(directory) / ARGS_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return cls(
            args=saved.get("args", {}),
            complete=bool(saved.get("complete")),
            run=saved.get("run"),
        )


def write_json(path: str | Path, obj) -> None:
    """Write `obj` as indented JSON, atomically (a temporary file, then a rename), creating the
    parent directory. With several processes, call it through `infljax.multihost.on_main`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def save_array(path: str | Path, value) -> None:
    """`np.save` atomically (a temporary file, then a rename): a reader, or a run resumed after
    a crash, never finds half an array."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, value)
    tmp.replace(path)


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Write `records` one JSON object per line (UTF-8, non-ASCII kept)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def recorded_args(directory: str | Path) -> dict | None:
    """The arguments the stage in `directory` ran with; None when it holds no record."""
    record = StageRecord.read(directory)
    return None if record is None else record.args


class WorkdirError(ValueError):
    """The workdir cannot be used (a URL, a file, not writable)."""


def local_workdir(workdir: str | Path) -> Path:
    """`workdir` as a path of the file system; a URL (gs://, s3://, ...) is refused with how to
    use a bucket: every stage reads and writes files (json, npy, parquet, orbax, html) through
    the file system, so a bucket is mounted (docs/scaling.md, "Multi-host runs": Cloud Storage
    FUSE)."""
    text = str(workdir)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise WorkdirError(
            f"workdir {text!r} is a URL; infljax writes its workdir through the file system. "
            "Mount the bucket (e.g. gcsfuse --implicit-dirs BUCKET /mnt/BUCKET, docs/scaling.md "
            '"Multi-host runs") and pass the mounted path'
        )
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {text!r} is a file, not a directory; pass a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WorkdirError(f"workdir {text!r}: {existing} is not writable; use another --workdir")
    return path


def stored_path(path: str | Path, workdir: str | Path) -> str:
    """How a record keeps a path: relative to the workdir when inside it (so that a moved
    workdir stays valid), else absolute."""
    path, root = Path(path).absolute(), Path(workdir).absolute()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path.resolve())


def world_dir(workdir: Path) -> Path:
    """world.json (ground truth) and corpus.jsonl of the procedural world."""
    return Path(workdir) / "world"


def corpus_dir(workdir: Path) -> Path:
    """tokens.npy, lengths.npy, documents.jsonl, meta.json, tokenizer.json, stats.json."""
    return Path(workdir) / "corpus"


def tokenizer_path(workdir: Path) -> Path:
    return corpus_dir(workdir) / "tokenizer.json"


def tokenizer_info_path(workdir: Path) -> Path:
    """The special ids and the BOS/EOS wrapping the corpus was tokenised with (TokenizerInfo)."""
    return corpus_dir(workdir) / "tokenizer_info.json"


def model_dir(workdir: Path, name: str) -> Path:
    """model.json + params/ (orbax), checkpoints/, metrics.json."""
    return Path(workdir) / "models" / name


def factors_dir(workdir: Path, name: str) -> Path:
    return Path(workdir) / "factors" / name


def queries_dir(workdir: Path) -> Path:
    """The queries stage's directory: queries.jsonl, stats.json."""
    return Path(workdir) / "queries"


def queries_path(workdir: Path) -> Path:
    """The queries stage's queries.jsonl, copied to the workdir's top level for users."""
    return Path(workdir) / "queries.jsonl"


def scores_dir(workdir: Path, name: str) -> Path:
    return Path(workdir) / "scores" / name


_ARRAYS = ("scores", "query_nats", "doc_grad_norms", "per_layer", "self_influence", "scored")


@dataclasses.dataclass(frozen=True)
class ScoreFiles:
    """The files of one method's score directory (``scores/<model>/``, written by the scores
    stage, or ``baselines/<model>/<method>/``, laid out alike; DESIGN §4). Every module names
    these files through it."""

    directory: Path

    @property
    def scores(self) -> Path:
        """float32 [Q, N]: effects on each query's log-probability (DESIGN §2)."""
        return self.directory / "scores.npy"

    @property
    def query_nats(self) -> Path:
        """[Q]: each query's completion NLL under the scored model."""
        return self.directory / "query_nats.npy"

    @property
    def doc_grad_norms(self) -> Path:
        """[N]: each document's training-gradient norm (ones for the normalised baselines)."""
        return self.directory / "doc_grad_norms.npy"

    @property
    def queries(self) -> Path:
        """The JSONL of the query rows, in the order of the matrices' rows."""
        return self.directory / "queries.jsonl"

    @property
    def query_grads(self) -> Path:
        """The queries' preconditioned (low-rank) gradients (`influence.query_grads`, npz)."""
        return self.directory / "query_grads.npz"

    @property
    def per_layer(self) -> Path:
        """Optional float32 [L, Q, N]: the scores per tracked layer (they sum to `scores`)."""
        return self.directory / "per_layer.npy"

    @property
    def per_token(self) -> Path:
        """Optional: per-token scores of each query's top documents (JSON list)."""
        return self.directory / "per_token.json"

    @property
    def self_influence(self) -> Path:
        """Optional [N]: each document's score against itself."""
        return self.directory / "self_influence.npy"

    @property
    def scored(self) -> Path:
        """Optional bool [Q, N], with a prefilter only: the entries that were scored."""
        return self.directory / "scored.npy"

    @property
    def meta(self) -> Path:
        """What the run recorded beside the matrices: layers, contractions, timings (JSON)."""
        return self.directory / "meta.json"

    @property
    def top_k(self) -> Path:
        """Optional: each query's top-k documents re-scored at full rank (npz)."""
        return self.directory / "top_k.npz"

    def save(self, **arrays) -> None:
        """Write arrays by their file's name (``files.save(scores=s, doc_grad_norms=n)``), each
        atomically; scores and per_layer as float32."""
        for name, value in arrays.items():
            dtype = np.float32 if name in ("scores", "per_layer") else None
            save_array(self._array(name), np.asarray(value, dtype))

    def load(self, name: str, mmap: bool = False) -> np.ndarray:
        """The array `name` (scores, query_nats, ...), memory-mapped with `mmap` (a [Q, N]
        matrix of millions of documents need not fit in memory)."""
        path = self._array(name)
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {self.directory}")
        return np.load(path, mmap_mode="r" if mmap else None)

    def _array(self, name: str) -> Path:
        if name not in _ARRAYS:
            raise ValueError(f"a score directory holds no array {name!r}; one of {_ARRAYS}")
        return getattr(self, name)

    def missing(self) -> list[str]:
        """The names of the required files (scores, query_nats, doc_grad_norms) not there."""
        required = (self.scores, self.query_nats, self.doc_grad_norms)
        return [p.name for p in required if not p.is_file()]

    def method(self) -> str | None:
        """The method that wrote the directory: the scores stage's strategy (ekfac, kfac,
        identity, ...) or the baseline's name; None without a record."""
        args = recorded_args(self.directory)
        if args is None:
            return None
        method = args.get("method") or upgrade_scores_record(args).get("strategy")
        return None if method is None else str(method)


def upgrade_scores_record(saved: dict) -> dict:
    """A scores record as written before the typed config (its arguments nested under "args",
    damping as two fields, the query gradients' settings as "queries", the dense plan's limit in
    bytes, the batch sizes recorded) in today's layout, so that such score directories stay up
    to date; today's records are returned as they are."""
    if "args" not in saved:
        return saved
    own, rest = dict(saved["args"]), {k: v for k, v in saved.items() if k != "args"}
    if "damping_scale" in own:  # a partial record (e.g. a test's) moves only what it holds
        own["damping"] = {
            "scale": own.pop("damping_scale"),
            "absolute": own.pop("damping_absolute"),
        }
    if "queries" in own:
        own["query_grads"] = {k: v for k, v in own.pop("queries").items() if k != "batch_size"}
    if "scoring" in own:
        scoring = {k: v for k, v in own["scoring"].items() if k != "batch_size"}
        scoring["max_dense_plan_gib"] = scoring.pop("max_dense_plan_bytes") / 2**30
        own["scoring"] = scoring
    return own | rest


def baselines_dir(workdir: Path, name: str, method: str = "") -> Path:
    """``baselines/<model>/<method>/``: a baseline's score files, laid out like scores_dir;
    without `method`, the model's directory of baselines."""
    root = Path(workdir) / "baselines" / name
    return root / method if method else root


def validate_dir(workdir: Path, name: str) -> Path:
    """``validate/<model>/``: summary.json, lds.png, linearity.png and the training-aware scores
    of EK-FAC (``methods/``); the retrainings are in `retrainings_dir`."""
    return Path(workdir) / "validate" / name


def retrainings_dir(workdir: Path, name: str) -> Path:
    """``retrainings/<model>/``: the validate stage's retrainings and metagradients, one folder
    per setting, named by a digest of everything they depend on (``<kind>_<digest>/``: key.json,
    chunk_*.npy or metagradient.npy), so that rescoring never discards them."""
    return Path(workdir) / "retrainings" / name


def analysis_dir(workdir: Path) -> Path:
    return Path(workdir) / "analysis"


def report_dir(workdir: Path) -> Path:
    return Path(workdir) / "report"
