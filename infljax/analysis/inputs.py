"""What the analyses read: queries, the document table and each model's score matrices.

The workdir contract (DESIGN.md §4) is read here and nowhere else in `infljax.analysis`:

* ``scores/<model>/scores.npy`` float32 [Q, N] raw scores (positive = the document helps),
  ``query_nats.npy`` [Q], ``doc_grad_norms.npy`` [N], optional ``per_layer.npy`` [L, Q, N] and
  optional ``per_token.json`` (list of {query_id, doc_id, tokens, scores}).
* the queries, in score-row order: ``scores/<model>/queries.jsonl`` when the scoring stage wrote
  one (per-model generated completions), else ``<workdir>/queries.jsonl`` — restricted to the
  records whose ``model`` field names this model when records carry one.
* ``corpus/documents.jsonl``: one record per score column; the procedural world's ground truth
  (``states``, ``answers``, ``works``, ``procedure``) is read from its extras, or from
  ``world/world.json`` by doc_id when the extras lack it.

Everything else in the package is pure functions of these dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infljax.data.readers import Record
from infljax.workdir import ScoreFiles

QUERY_FIELDS = ("id", "family", "prompt", "completion", "answer", "steps", "control")
GROUND_TRUTH_FIELDS = ("states", "answers", "works", "procedure")


class AnalysisInputError(ValueError):
    """An input file of the analysis is missing, malformed or inconsistent; says which and why."""


@dataclasses.dataclass(frozen=True)
class QueryRecord:
    """One query (DESIGN.md §3): the fields every analysis uses, and the rest in `extra`.

    `extra` keeps ground truth the families may add (``fact_id``, ``instance_id``, ``task``,
    ``correct``, ``generated``, ...).
    """

    id: str
    family: str
    prompt: str
    completion: str
    answer: str
    steps: tuple[str, ...] = ()
    control: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str) -> QueryRecord:
        missing = [k for k in ("id", "family") if k not in raw]
        if missing:
            raise AnalysisInputError(f"{where}: query record lacks {missing}")
        steps = raw.get("steps") or ()
        if isinstance(steps, str) or not isinstance(steps, Sequence):
            raise AnalysisInputError(f"{where}: 'steps' must be a list of strings, got {steps!r}")
        extra = {k: v for k, v in raw.items() if k not in QUERY_FIELDS}
        return cls(
            id=str(raw["id"]),
            family=str(raw["family"]),
            prompt=str(raw.get("prompt", "")),
            completion=str(raw.get("completion", "")),
            answer=str(raw.get("answer", "")),
            steps=tuple(str(s) for s in steps),
            control=bool(raw.get("control", False)),
            extra=extra,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class DocumentTable:
    """The corpus rows the score columns refer to, with ground truth where the corpus has it.

    Attributes:
      doc_ids, texts: N strings each (`texts` may read lazily from disk, see `JsonlTexts`).
      sources: [N] str array of source labels.
      states, answers, works: N frozensets of fact / instance ids (empty when unknown).
      procedure: N task names or None.
      has_ground_truth: whether any row carries the procedural world's labels.
    """

    doc_ids: tuple[str, ...]
    sources: np.ndarray
    texts: Sequence[str]
    states: tuple[frozenset[str], ...]
    answers: tuple[frozenset[str], ...]
    works: tuple[frozenset[str], ...]
    procedure: tuple[str | None, ...]
    has_ground_truth: bool

    def __post_init__(self):
        n = len(self.doc_ids)
        lengths = {len(getattr(self, f.name)) for f in dataclasses.fields(self)[:7]}
        if lengths != {n}:
            raise AnalysisInputError(f"document table columns disagree in length: {lengths}")

    @property
    def num_documents(self) -> int:
        return len(self.doc_ids)

    @classmethod
    def from_records(
        cls, records: Sequence[Record], texts: Sequence[str] | None = None
    ) -> DocumentTable:
        """Build the table from corpus records; ground truth from each record's extras; `texts`
        replaces the records' own texts (lazily read texts of a large corpus)."""
        truth = [_ground_truth(r.extra) for r in records]
        return cls(
            doc_ids=tuple(r.doc_id for r in records),
            sources=np.asarray([r.source for r in records], dtype=str),
            texts=tuple(r.text for r in records) if texts is None else texts,
            states=tuple(t[0] for t in truth),
            answers=tuple(t[1] for t in truth),
            works=tuple(t[2] for t in truth),
            procedure=tuple(t[3] for t in truth),
            has_ground_truth=any(any(k in r.extra for k in GROUND_TRUTH_FIELDS) for r in records),
        )


_NONE: frozenset[str] = frozenset()


def _ids(extra: dict[str, Any], key: str) -> frozenset[str]:
    value = extra.get(key)
    return frozenset(str(x) for x in value) if value else _NONE


def _ground_truth(extra: dict[str, Any]):
    """(states, answers, works, procedure) of one document's extra fields."""
    procedure = extra.get("procedure")
    procedure = None if procedure is None else str(procedure)
    return _ids(extra, "states"), _ids(extra, "answers"), _ids(extra, "works"), procedure


@dataclasses.dataclass(frozen=True, eq=False)
class ModelScores:
    """One model's score matrices and the queries of their rows.

    Attributes:
      name: the model's name in the config.
      scores: [Q, N] float32 raw scores.
      query_nats: [Q] completion NLL of each query (nats).
      doc_grad_norms: [N] ‖∇L_m‖ over the tracked layers.
      queries: Q records, one per score row.
      per_layer: [L, Q, N] or None.
      per_token: list of {query_id, doc_id, tokens, scores} or empty.
    """

    name: str
    scores: np.ndarray
    query_nats: np.ndarray
    doc_grad_norms: np.ndarray
    queries: tuple[QueryRecord, ...]
    per_layer: np.ndarray | None = None
    per_token: tuple[dict[str, Any], ...] = ()

    def __post_init__(self):
        q, n = self.scores.shape if self.scores.ndim == 2 else (None, None)
        where = f"scores of model {self.name!r}"
        if q is None:
            raise AnalysisInputError(f"{where}: scores must be [Q, N], got {self.scores.shape}")
        if self.query_nats.shape != (q,) or self.doc_grad_norms.shape != (n,):
            raise AnalysisInputError(
                f"{where}: scores {self.scores.shape}, query_nats {self.query_nats.shape}, "
                f"doc_grad_norms {self.doc_grad_norms.shape} disagree"
            )
        if len(self.queries) != q:
            raise AnalysisInputError(f"{where}: {q} score rows but {len(self.queries)} queries")
        if self.per_layer is not None and self.per_layer.shape[1:] != (q, n):
            raise AnalysisInputError(
                f"{where}: per_layer {self.per_layer.shape} is not [L,{q},{n}]"
            )
        if not np.isfinite(self.scores).all():
            raise AnalysisInputError(f"{where}: scores contain NaN or inf; rerun the scores stage")

    @property
    def query_ids(self) -> list[str]:
        return [q.id for q in self.queries]


# ----------------------------------------------------------------------------- readers


def read_queries(path: str | Path, model: str | None = None) -> list[QueryRecord]:
    """Query records of a JSONL file; with `model`, only records whose ``model`` field (if any)
    names it."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisInputError(f"no queries file at {path}; run the queries stage first")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                records.append(QueryRecord.from_json(json.loads(line), f"{path}:{line_no}"))
    if model is not None:
        records = [r for r in records if r.extra.get("model", model) == model]
    return records


class JsonlTexts(Sequence[str]):
    """The ``text`` field of each line of a JSONL file, read when asked for: the analyses need
    the texts of each query's top documents only, and a 5M-document corpus's texts would not
    fit in memory."""

    def __init__(self, path: Path, offsets: Sequence[int]):
        self._path, self._offsets = Path(path), np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        with open(self._path, "rb") as f:
            f.seek(int(self._offsets[index]))
            return json.loads(f.readline())["text"]


def read_documents(corpus_dir: str | Path, world_json: str | Path | None = None) -> DocumentTable:
    """The document table of ``corpus/documents.jsonl`` (texts read lazily); ground truth from
    `world_json` (``world/world.json``) when the corpus rows carry none and the file exists."""
    path = Path(corpus_dir) / "documents.jsonl"
    if not path.is_file():
        raise AnalysisInputError(f"no document table at {path}; run the corpus stage first")
    records, offsets, offset = [], [], 0
    with open(path, "rb") as f:
        for line in f:
            row = json.loads(line)
            doc_id, source = row.pop("doc_id"), row.pop("source")
            row.pop("text")
            records.append(Record(doc_id=str(doc_id), source=str(source), text="", extra=row))
            offsets.append(offset)
            offset += len(line)
    texts = JsonlTexts(path, offsets)
    table = DocumentTable.from_records(records, texts)
    if not table.has_ground_truth and world_json is not None and Path(world_json).is_file():
        table = _with_world_truth(records, texts, Path(world_json))
    return table


def _with_world_truth(
    records: list[Record], texts: Sequence[str], world_json: Path
) -> DocumentTable:
    payload = json.loads(world_json.read_text(encoding="utf-8"))
    truth = {d["doc_id"]: d for d in payload.get("documents", [])}
    merged = [
        dataclasses.replace(
            r, extra={**r.extra, **{k: truth.get(r.doc_id, {}).get(k) for k in GROUND_TRUTH_FIELDS}}
        )
        for r in records
    ]
    return DocumentTable.from_records(merged, texts)


def read_model_scores(scores_dir: str | Path, name: str, queries_jsonl: str | Path) -> ModelScores:
    """Model `name`'s matrices in `scores_dir` (``scores/<name>/``) with the queries of its rows."""
    files = ScoreFiles(Path(scores_dir))
    if missing := files.missing():
        raise AnalysisInputError(
            f"{files.directory} lacks {missing}; run the scores stage for model {name!r}"
        )
    own = files.queries
    queries = read_queries(own if own.is_file() else queries_jsonl, model=name)
    per_layer = files.load("per_layer", mmap=True) if files.per_layer.is_file() else None
    per_token = ()
    if files.per_token.is_file():
        per_token = tuple(json.loads(files.per_token.read_text(encoding="utf-8")))
    return ModelScores(
        name=name,
        scores=files.load("scores", mmap=True),
        query_nats=files.load("query_nats"),
        doc_grad_norms=files.load("doc_grad_norms"),
        queries=tuple(queries),
        per_layer=per_layer,
        per_token=per_token,
    )
