"""Read a raw corpus (JSON lines or Parquet) into validated `Record`s.

One document per record (DESIGN.md §3): `text` is required, `id` (or `doc_id`) defaults to the
record's index in the corpus, `source` defaults to ``"unknown"``, every other field is kept in
`Record.extra`. Malformed records are never dropped silently: each one becomes a `BadRecord`
that names the file, the line (JSONL, 1-based) or row (Parquet, 0-based) and the reason, and the
caller decides between skipping them with a report (``on_bad="skip"``) and refusing the corpus
(``on_bad="error"``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES
ON_BAD_CHOICES = ("skip", "error")
DEFAULT_SOURCE = "unknown"
# Keys that name the table columns of a document; an input field with one of these names would
# be ambiguous once extras are flattened next to them (see corpus.save_corpus).
RESERVED_KEYS = ("id", "doc_id", "source", "text")


class CorpusError(ValueError):
    """A corpus (raw or tokenised) cannot be used as given; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One document: its id, source label, text, and every other input field (kept verbatim)."""

    doc_id: str
    source: str
    text: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        clashes = sorted(set(self.extra) & set(RESERVED_KEYS))
        if clashes:
            raise ValueError(f"Record {self.doc_id!r}: extra fields {clashes} are reserved names")


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that was rejected, and where it was.

    `unit` says how `line_or_row` counts: ``"line"`` (JSONL, 1-based), ``"row"`` (Parquet,
    0-based) or ``"record"`` (0-based index into a list of records, used after reading, e.g. a
    document that is empty after tokenisation; then `doc_id` names it).
    """

    path: str
    line_or_row: int
    reason: str
    unit: str = "line"
    doc_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.path} {self.unit} {self.line_or_row}".strip()
        if self.doc_id is not None:
            where += f" (doc_id {self.doc_id!r})"
        return f"{where}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ReadResult:
    """Accepted records in corpus order, and the rejected ones (empty when on_bad="error")."""

    records: list[Record]
    bad: list[BadRecord]


class _Invalid(Exception):
    """Internal: a raw record failed validation; the argument is the reason."""


def read_corpus(path: str | Path, on_bad: str = "skip") -> ReadResult:
    """Read every record of a corpus file, a directory of shards, or a glob of shards.

    Shards are read in sorted path order, so record order and default ids are deterministic.
    Default ids are the record's 0-based index over the whole corpus (blank JSONL lines are not
    records; bad records still take an index, so ids do not shift when one is fixed).

    Raises:
      CorpusError: on_bad="error" and a record is malformed or its id is a duplicate.
      FileNotFoundError: nothing matches `path`.
      ValueError: unknown `on_bad` or unsupported file suffix.
    """
    _check_on_bad(on_bad)
    records, bad, seen = [], [], {}
    index = 0
    for shard in resolve_shards(path):
        for location, raw in _iter_raw(shard):
            bad_record = _accept(shard, location, raw, index, seen, records)
            index += 1
            if bad_record is None:
                continue
            if on_bad == "error":
                raise CorpusError(f"bad record in {bad_record}")
            bad.append(bad_record)
    return ReadResult(records=records, bad=bad)


def _check_on_bad(on_bad: str) -> None:
    if on_bad not in ON_BAD_CHOICES:
        raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}")


def resolve_shards(path: str | Path) -> list[Path]:
    """The corpus files `path` names: itself, the supported files in a directory, or a glob."""
    path_str = str(path)
    if any(ch in path_str for ch in "*?["):
        shards = [Path(p) for p in sorted(glob.glob(path_str)) if Path(p).is_file()]
        if not shards:
            raise FileNotFoundError(f"no corpus files match the pattern {path_str!r}")
    elif Path(path).is_dir():
        shards = sorted(p for p in Path(path).iterdir() if p.suffix in SUPPORTED_SUFFIXES)
        if not shards:
            raise FileNotFoundError(
                f"corpus directory {path_str!r} holds no files ending in {SUPPORTED_SUFFIXES}"
            )
    elif Path(path).is_file():
        shards = [Path(path)]
    else:
        raise FileNotFoundError(f"corpus file {path_str!r} does not exist")
    for shard in shards:
        _check_suffix(shard)
    return shards


def _check_suffix(path: Path) -> None:
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot read corpus file {str(path)!r}: unsupported suffix {path.suffix!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)} (.json is read as JSON lines)"
        )


def _iter_raw(path: Path) -> Iterator[tuple[tuple[str, int], Any]]:
    """Yield ((unit, number), raw record or _Invalid) for each record of one shard."""
    if path.suffix in PARQUET_SUFFIXES:
        yield from _iter_parquet(path)
    else:
        yield from _iter_jsonl(path)


def _iter_jsonl(path: Path) -> Iterator[tuple[tuple[str, int], Any]]:
    # Read bytes and decode per line so that one bad line is reported instead of failing the file.
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a UTF-8 byte-order mark is not part of the record
            if not line.strip():
                continue
            yield ("line", lineno), _parse_json_line(line)


def _parse_json_line(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return _Invalid(f"invalid UTF-8 (byte {e.start} of the line)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return _Invalid(f"not valid JSON ({e.msg} at column {e.colno})")


def _iter_parquet(path: Path) -> Iterator[tuple[tuple[str, int], Any]]:
    import pyarrow.parquet as pq  # imported lazily: JSONL users do not pay for it

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for an unreadable file
        raise CorpusError(f"cannot read parquet file {str(path)!r}: {e}") from e
    row = 0
    for batch in parquet.iter_batches():
        for raw in batch.to_pylist():
            yield ("row", row), raw
            row += 1


def _accept(
    path: Path,
    location: tuple[str, int],
    raw: Any,
    index: int,
    seen: dict[str, str],
    records: list[Record],
) -> BadRecord | None:
    """Validate one raw record; append it to `records` or return why it was rejected."""
    unit, number = location
    try:
        record = _to_record(raw, index)
        if record.doc_id in seen:
            raise _Invalid(f"duplicate id {record.doc_id!r} (first seen at {seen[record.doc_id]})")
    except _Invalid as e:
        return BadRecord(path=str(path), line_or_row=number, reason=str(e), unit=unit)
    seen[record.doc_id] = f"{path} {unit} {number}"
    records.append(record)
    return None


def _to_record(raw: Any, index: int) -> Record:
    if isinstance(raw, _Invalid):
        raise raw
    if not isinstance(raw, dict):
        raise _Invalid(f"not a JSON object (got {type(raw).__name__})")
    fields = dict(raw)
    doc_id = _pop_id(fields, index)
    source = fields.pop("source", None)
    if source is None:
        source = DEFAULT_SOURCE
    if not isinstance(source, str):
        raise _Invalid(f"'source' must be a string, got {type(source).__name__}")
    text = _check_text(fields.pop("text", None))
    return Record(doc_id=doc_id, source=source, text=text, extra=fields)


def _pop_id(fields: dict[str, Any], index: int) -> str:
    """The record's id from `id` or `doc_id` (the name used in a saved document table)."""
    if "id" in fields and "doc_id" in fields:
        raise _Invalid("has both 'id' and 'doc_id'; keep one")
    doc_id = fields.pop("id", None) if "id" in fields else fields.pop("doc_id", None)
    if doc_id is None:
        return str(index)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise _Invalid(f"'id' must be a string or an integer, got {type(doc_id).__name__}")
    return str(doc_id)


def _check_text(text: Any) -> str:
    if text is None:
        raise _Invalid("missing 'text'")
    if isinstance(text, bytes):  # a Parquet binary column
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Invalid(f"'text' is invalid UTF-8 (byte {e.start})") from None
    if not isinstance(text, str):
        raise _Invalid(f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise _Invalid("empty 'text' (nothing but whitespace)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON escapes such as "\ud800" decode to lone surrogates that no tokenizer accepts.
        raise _Invalid("'text' holds a lone UTF-16 surrogate (not valid Unicode)") from None
    return text
