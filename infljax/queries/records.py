"""The query record (DESIGN.md §3) and its JSONL form.

A query is a prompt, the completion whose log-probability is measured, the expected `answer`
and every intermediate result (`steps`, strings). Families add the procedural world's ground
truth: the facts asked about (`fact_ids`), the task instance (`instance_id`, `in_corpus`) and the
documents that state the fact, state the answer, or work the instance (`relevant`). Generated
completions record the `model` that wrote them, what answer it gave (`model_answer`) and whether
it was `correct`.

One JSON object per line. The DESIGN.md §3 fields (``id, family, prompt, completion, answer,
steps, control``) and ``generated`` are always written; the others only when set, so that a
record without ``model`` applies to every model (readers keep records whose ``model`` is absent
or names theirs). Unknown fields of a file's records are kept in `extra` and written back, so
``read_queries_jsonl(write_queries_jsonl(q))`` returns `q` exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CORE_FIELDS = ("id", "family", "prompt", "completion", "answer", "steps", "control", "generated")
OPTIONAL_FIELDS = (
    "task", "variant", "fact_ids", "instance_id", "in_corpus", "relevant", "correct",
    "model_answer", "model",
)  # fmt: skip
RELEVANT_KINDS = ("states", "answers", "works")


class QueryFileError(ValueError):
    """A query file or record is malformed; the message says where and what to change."""


@dataclasses.dataclass(frozen=True)
class Relevant:
    """Documents (ids) of the procedural world that bear on a query.

    `states`: documents stating the fact(s) asked about. `answers`: planted documents stating the
    instance's answer without the procedure. `works`: documents working the instance step by step.
    """

    states: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    works: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {kind: list(getattr(self, kind)) for kind in RELEVANT_KINDS}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Relevant:
        if not isinstance(raw, Mapping) or set(raw) - set(RELEVANT_KINDS):
            raise QueryFileError(
                f"{where}: 'relevant' must be an object with keys among {RELEVANT_KINDS}, "
                f"got {raw!r}"
            )
        return cls(**{k: _strings(raw.get(k, ()), f"{where}: relevant.{k}") for k in raw})


@dataclasses.dataclass(frozen=True)
class Query:
    """One query and what is known about it.

    Attributes:
      id: unique within a queries file.
      family: the family that made it (analyses group by it).
      prompt, completion: the completion's NLL given the prompt is the measurement.
      answer: the expected final answer ("" when none).
      steps: every intermediate result, in order, as strings (reasoning); for a factual question
        with several parts (mountain and height), each part.
      control: a control query (its answer is given in the prompt).
      task: the reasoning task it exercises ("arithmetic", "slope", "linear"), else None.
      variant: the phrasing it was written in (e.g. "calculate", "story"), else None.
      fact_ids, instance_id, in_corpus, relevant: the procedural world's ground truth (see the
        module docstring); in_corpus/relevant are None when unknown.
      generated: the completion is a model's greedy generation (else the template).
      correct, model_answer, model: for a generated completion, whether its extracted answer
        (`model_answer`, None when none was found) is right, and which model wrote it.
      extra: any further fields of a record read from a file, kept verbatim.
    """

    id: str
    family: str
    prompt: str
    completion: str
    answer: str = ""
    steps: tuple[str, ...] = ()
    control: bool = False
    generated: bool = False
    task: str | None = None
    variant: str | None = None
    fact_ids: tuple[str, ...] = ()
    instance_id: str | None = None
    in_corpus: bool | None = None
    relevant: Relevant | None = None
    correct: bool | None = None
    model_answer: str | None = None
    model: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        for name in ("id", "family", "prompt", "completion", "answer"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Query.{name} must be a string, got {getattr(self, name)!r}")
        if not self.id:
            raise ValueError("Query.id must not be empty")
        clash = set(self.extra) & set(CORE_FIELDS + OPTIONAL_FIELDS)
        if clash:
            raise ValueError(f"Query.extra repeats record fields {sorted(clash)}")

    def to_json(self) -> dict[str, Any]:
        """The JSONL record (see the module docstring for which fields are written)."""
        record = {name: _jsonable(getattr(self, name)) for name in CORE_FIELDS}
        for name in OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None and value != ():
                record[name] = _jsonable(value)
        return {**record, **self.extra}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Relevant):
        return value.to_json()
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------- reading


def query_from_json(
    raw: Any, where: str = "query record", default_family: str | None = None
) -> Query:
    """The `Query` of one JSON record; `id`, `prompt`, `completion` are required, `family` too
    unless `default_family` is given. Raises QueryFileError naming `where` and the field."""
    if not isinstance(raw, Mapping):
        raise QueryFileError(f"{where}: a query record must be a JSON object, got {raw!r}")
    raw = dict(raw)
    if default_family is not None:
        raw.setdefault("family", default_family)
    missing = [k for k in ("id", "family", "prompt", "completion") if k not in raw]
    if missing:
        raise QueryFileError(
            f"{where}: missing fields {missing} (every query needs id, prompt and completion; "
            "family unless the source gives one)"
        )
    fields = {k: raw.pop(k) for k in CORE_FIELDS + OPTIONAL_FIELDS if k in raw}
    for name in ("id", "family", "prompt", "completion", "answer"):
        if name in fields and not isinstance(fields[name], str):
            raise QueryFileError(f"{where}: '{name}' must be a string, got {fields[name]!r}")
    for name in ("control", "generated"):
        if name in fields and not isinstance(fields[name], bool):
            raise QueryFileError(f"{where}: '{name}' must be true or false, got {fields[name]!r}")
    for name in ("steps", "fact_ids"):
        if name in fields:
            fields[name] = _strings(fields[name], f"{where}: '{name}'")
    if fields.get("relevant") is not None:
        fields["relevant"] = Relevant.from_json(fields["relevant"], where)
    try:
        return Query(**fields, extra=raw)
    except (TypeError, ValueError) as e:
        raise QueryFileError(f"{where}: {e}") from e


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise QueryFileError(f"{where} must be a list of strings, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise QueryFileError(f"{where} must hold strings only, got {value!r}")
    return tuple(value)


def read_queries_jsonl(path: str | os.PathLike, default_family: str | None = None) -> list[Query]:
    """Every query of a JSONL file, in file order (blank lines skipped).

    Raises:
      FileNotFoundError: no such file.
      QueryFileError: a line is not JSON or not a valid record (names path:line), or two
        records share an id and a model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no queries file at {str(path)!r}")
    queries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise QueryFileError(f"{path}:{number}: not valid JSON ({e})") from e
            queries.append(query_from_json(raw, f"{path}:{number}", default_family))
    check_unique_ids(queries, str(path))
    return queries


def check_unique_ids(queries: Iterable[Query], where: str) -> None:
    """Raise QueryFileError when two queries share an id (for the same model)."""
    seen, duplicates = set(), set()
    for query in queries:
        key = (query.id, query.model)
        (duplicates if key in seen else seen).add(key)
    if duplicates:
        names = sorted(i if m is None else f"{i} (model {m})" for i, m in duplicates)
        raise QueryFileError(f"{where}: duplicate query ids {names}")


def write_queries_jsonl(queries: Iterable[Query], path: str | os.PathLike) -> None:
    """One JSON record per query, in order (UTF-8, non-ASCII kept); written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for query in queries:
            f.write(json.dumps(query.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
