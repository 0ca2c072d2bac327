"""The workdir contract (DESIGN §4): every path a stage writes or reads, in one place."""

from __future__ import annotations

import os
import re
from pathlib import Path


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


def baselines_dir(workdir: Path, name: str, method: str = "") -> Path:
    """``baselines/<model>/<method>/``: a baseline's score files, laid out like scores_dir;
    without `method`, the model's directory of baselines."""
    root = Path(workdir) / "baselines" / name
    return root / method if method else root


def validate_dir(workdir: Path, name: str) -> Path:
    """``validate/<model>/``: summary.json, lds.png, linearity.png, the retrainings (``runs/``,
    ``single_model/``, ``single_model_scale<t>/``: chunk_*.npy) and the training-aware scores
    (``methods/``)."""
    return Path(workdir) / "validate" / name


def analysis_dir(workdir: Path) -> Path:
    return Path(workdir) / "analysis"


def report_dir(workdir: Path) -> Path:
    return Path(workdir) / "report"
