"""The tokenised corpus: fixed-length sequences that memory-map, plus the document table.

One document per sequence by default (DESIGN.md §3): row ``i`` of `tokens` is
``[BOS] + tokens(text_i) + [EOS]`` cut to `max_length` and filled with PAD after `lengths[i]`;
``documents[i]`` is the `Record` it came from (id, source, full text, extra fields), so rows,
scores and the document table share one index. With packing, documents (each wrapped in
BOS/EOS) are concatenated and cut into full rows; a row's record then lists its pieces in
``extra["segments"]``.

On disk (``<workdir>/corpus/``): ``tokens.npy`` (int32 [N, T]), ``lengths.npy`` (int32 [N]),
``documents.jsonl`` (one line per row: doc_id, source, text, extra fields flattened) and
``meta.json``, written last so that its presence means the directory is complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from infljax.config import read_split
from infljax.data.readers import ON_BAD_CHOICES, BadRecord, CorpusError, Record
from infljax.data.tokenization import TokenizerArgs, TokenizerInfo, text_only, tokenizer_info

TOKENS_FILE = "tokens.npy"
LENGTHS_FILE = "lengths.npy"
DOCUMENTS_FILE = "documents.jsonl"
META_FILE = "meta.json"
CORPUS_FILES = (TOKENS_FILE, LENGTHS_FILE, DOCUMENTS_FILE, META_FILE)
FORMAT_VERSION = 1
SEGMENTS_KEY = "segments"
_ENCODE_CHUNK = 1024  # texts per encode_batch call (the Rust side parallelises within a call)
_STATS_CHUNK = 4096  # rows per step when scanning a (memory-mapped) corpus


@dataclasses.dataclass(frozen=True)
class TokenizeArgs:
    """How records become fixed-length sequences.

    Attributes:
      max_length: sequence length T; longer documents are truncated (they then lack EOS).
      packing: concatenate documents into full rows instead of one document per row.
      on_bad: "skip" (report) or "error" (raise) for a document that is empty after tokenisation.
    """

    max_length: int
    packing: bool = False
    on_bad: str = "skip"

    def __post_init__(self):
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise TypeError(f"max_length must be an int, got {type(self.max_length).__name__}")
        if self.max_length < 2:
            raise ValueError(
                f"max_length={self.max_length}: a sequence needs at least 2 tokens to predict one"
            )
        if self.on_bad not in ON_BAD_CHOICES:
            raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {self.on_bad!r}")


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """``config.corpus`` beside its `TokenizeArgs`: where the records and the tokenizer come
    from. path: JSONL/Parquet records ("" = the world's corpus.jsonl); add_bos / add_eos: wrap
    every document in BOS / EOS (None: the tokenizer's own convention,
    `infljax.stages.corpus.conventions`)."""

    path: str = ""
    add_bos: bool | None = None
    add_eos: bool | None = None
    tokenizer: TokenizerArgs = TokenizerArgs()


def corpus_args(section) -> tuple[TokenizeArgs, CorpusSource]:
    """``config.corpus``, typed (raises on an invalid value)."""
    return read_split(section, (TokenizeArgs, CorpusSource), "corpus")


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedCorpus:
    """Fixed-length token rows and the document each row holds.

    Attributes:
      tokens: [N, T] int32, PAD after each row's length (may be a read-only np.memmap).
      lengths: [N] int32, real tokens per row including BOS/EOS.
      documents: N records, one per row (packed rows: see module docstring).
      pad_id: the id filling positions at and after `lengths[i]`.
      packing: whether rows are packed.
      num_truncated: documents cut at max_length when tokenised (None if unknown).
      truncated: (doc_id, tokens before the cut) of those documents, known right after
        tokenisation (empty once saved and loaded).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    documents: list[Record]
    pad_id: int = 0
    packing: bool = False
    num_truncated: int | None = None
    truncated: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        if self.tokens.ndim != 2 or self.tokens.dtype != np.int32:
            raise ValueError(
                f"tokens must be int32 [N, T], got {self.tokens.dtype} {self.tokens.shape}"
            )
        n, t = self.tokens.shape
        if self.lengths.shape != (n,) or len(self.documents) != n:
            raise ValueError(
                f"{n} token rows but lengths {self.lengths.shape} and {len(self.documents)} "
                "documents; they must match"
            )
        if n and (self.lengths.min() < 0 or self.lengths.max() > t):
            raise ValueError(f"lengths must lie in [0, {t}]")

    @property
    def num_documents(self) -> int:
        """Rows (sequences); equal to the number of documents unless packed."""
        return self.tokens.shape[0]

    @property
    def max_length(self) -> int:
        return self.tokens.shape[1]

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens over all rows."""
        return int(self.lengths.sum(dtype=np.int64))

    @property
    def doc_ids(self) -> list[str]:
        return [d.doc_id for d in self.documents]

    @property
    def sources(self) -> list[str]:
        return [d.source for d in self.documents]

    @property
    def segments(self) -> list[list[dict[str, Any]]] | None:
        """Per packed row, its pieces (doc_id, source, start, stop within the row); else None."""
        if not self.packing:
            return None
        return [d.extra[SEGMENTS_KEY] for d in self.documents]


# ----------------------------------------------------------------------------- tokenise


def tokenize_corpus(
    records: Sequence[Record],
    tokenizer: Tokenizer,
    args: TokenizeArgs,
    info: TokenizerInfo | None = None,
) -> tuple[TokenizedCorpus, list[BadRecord]]:
    """Tokenise `records` into fixed-length rows.

    Special-token strings inside a text (e.g. a literal "<|eos|>") are encoded as plain text,
    so a document cannot end early. `info` overrides the pad/bos/eos ids `tokenizer_info` finds.

    Returns:
      The corpus, and the records that were empty after tokenisation (unit "record": index into
      `records`, with their doc_id).

    Raises:
      CorpusError: args.on_bad="error" and a record is empty after tokenisation.
    """
    info = tokenizer_info(tokenizer) if info is None else info
    sequences, kept, bad = _encode_records(records, text_only(tokenizer), info, args)
    if args.packing:
        return _pack(sequences, kept, tokenizer, info.pad_id, args.max_length), bad
    return _one_per_row(sequences, kept, info.pad_id, args.max_length), bad


def _encode_records(
    records: Sequence[Record], encoder: Tokenizer, info: TokenizerInfo, args: TokenizeArgs
) -> tuple[list[np.ndarray], list[Record], list[BadRecord]]:
    """Wrapped token ids ([BOS] + ids + [EOS]) of each non-empty record, the records, the bad."""
    prefix = [info.bos_id] if info.add_bos else []
    suffix = [info.eos_id] if info.add_eos else []
    sequences, kept, bad = [], [], []
    for begin in range(0, len(records), _ENCODE_CHUNK):
        chunk = records[begin : begin + _ENCODE_CHUNK]
        encodings = encoder.encode_batch([r.text for r in chunk], add_special_tokens=False)
        for offset, (record, encoding) in enumerate(zip(chunk, encodings, strict=True)):
            if not encoding.ids:
                bad.append(_empty_record(begin + offset, record, args.on_bad))
                continue
            sequences.append(np.asarray(prefix + encoding.ids + suffix, dtype=np.int32))
            kept.append(record)
    return sequences, kept, bad


def _empty_record(index: int, record: Record, on_bad: str) -> BadRecord:
    bad = BadRecord(
        path="",
        line_or_row=index,
        reason="empty after tokenisation",
        unit="record",
        doc_id=record.doc_id,
    )
    if on_bad == "error":
        raise CorpusError(f"bad record: {bad}")
    return bad


def _one_per_row(
    sequences: list[np.ndarray], records: list[Record], pad_id: int, max_length: int
) -> TokenizedCorpus:
    tokens = np.full((len(sequences), max_length), pad_id, dtype=np.int32)
    lengths = np.zeros(len(sequences), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        n = min(len(sequence), max_length)
        tokens[row, :n] = sequence[:n]
        lengths[row] = n
    truncated = tuple(
        (r.doc_id, len(s)) for r, s in zip(records, sequences, strict=True) if len(s) > max_length
    )
    return TokenizedCorpus(tokens, lengths, list(records), pad_id, False, len(truncated), truncated)


def _pack(
    sequences: list[np.ndarray],
    records: list[Record],
    tokenizer: Tokenizer,
    pad_id: int,
    max_length: int,
) -> TokenizedCorpus:
    """Concatenate the wrapped documents and cut the stream into rows of max_length."""
    stream = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
    num_rows = -(-len(stream) // max_length)
    flat = np.full(num_rows * max_length, pad_id, dtype=np.int32)
    flat[: len(stream)] = stream
    tokens = flat.reshape(num_rows, max_length)
    row_starts = np.arange(num_rows) * max_length
    lengths = np.minimum(len(stream) - row_starts, max_length).astype(np.int32)
    ends = np.cumsum([len(s) for s in sequences])
    rows = [row[:n].tolist() for row, n in zip(tokens, lengths, strict=True)]
    texts = tokenizer.decode_batch(rows, skip_special_tokens=True)
    documents = [
        _packed_record(records, ends, int(start), int(start + n), text)
        for start, n, text in zip(row_starts, lengths, texts, strict=True)
    ]
    return TokenizedCorpus(tokens, lengths, documents, pad_id, True, 0)


def _packed_record(
    records: list[Record], ends: np.ndarray, row_start: int, row_stop: int, text: str
) -> Record:
    """The table entry of one packed row: joined ids/sources and the pieces it holds."""
    first = int(np.searchsorted(ends, row_start, side="right"))
    last = int(np.searchsorted(ends, row_stop, side="left"))
    segments = []
    for k in range(first, min(last, len(records) - 1) + 1):
        doc_start = int(ends[k - 1]) if k else 0
        segments.append(
            {
                "doc_id": records[k].doc_id,
                "source": records[k].source,
                "start": max(doc_start, row_start) - row_start,
                "stop": min(int(ends[k]), row_stop) - row_start,
            }
        )
    return Record(
        doc_id="+".join(s["doc_id"] for s in segments),
        source="+".join(dict.fromkeys(s["source"] for s in segments)),
        text=text,
        extra={SEGMENTS_KEY: segments},
    )


# ----------------------------------------------------------------------------- storage


def save_corpus(directory: str | Path, corpus: TokenizedCorpus) -> Path:
    """Write the corpus to `directory` (created if needed); meta.json goes last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)  # an old meta would vouch for new files
    np.save(directory / TOKENS_FILE, np.ascontiguousarray(corpus.tokens, dtype=np.int32))
    np.save(directory / LENGTHS_FILE, np.asarray(corpus.lengths, dtype=np.int32))
    _write_documents(directory / DOCUMENTS_FILE, corpus.documents)
    meta = _meta(corpus)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory


def _write_documents(path: Path, documents: Sequence[Record]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in documents:
            row = {"doc_id": record.doc_id, "source": record.source, "text": record.text}
            try:
                line = json.dumps({**row, **record.extra}, ensure_ascii=False)
            except (TypeError, ValueError) as e:
                raise CorpusError(
                    f"document {record.doc_id!r}: extra fields are not JSON-serialisable ({e}); "
                    "convert them to str/int/float/list/dict before tokenising"
                ) from e
            f.write(line + "\n")


def _meta(corpus: TokenizedCorpus) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "max_length": corpus.max_length,
        "num_documents": corpus.num_documents,
        "num_tokens": corpus.num_tokens,
        "num_truncated": corpus.num_truncated,
        "packing": corpus.packing,
        "pad_id": corpus.pad_id,
        "source_counts": dict(sorted(Counter(corpus.sources).items())),
    }


def load_corpus(directory: str | Path, mmap: bool = True) -> TokenizedCorpus:
    """Read a corpus written by `save_corpus`; with `mmap`, tokens stay on disk (np.memmap).

    Raises:
      FileNotFoundError: `directory` does not exist.
      CorpusError: a file is missing or the files disagree (an interrupted or mixed write).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenised corpus directory {str(directory)!r} does not exist")
    missing = [name for name in CORPUS_FILES if not (directory / name).is_file()]
    if missing:
        raise CorpusError(
            f"tokenised corpus in {str(directory)!r} is incomplete (missing {', '.join(missing)}); "
            "re-run the tokenisation stage with overwrite"
        )
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    tokens = np.load(directory / TOKENS_FILE, mmap_mode="r" if mmap else None)
    lengths = np.load(directory / LENGTHS_FILE)
    documents = _read_documents(directory / DOCUMENTS_FILE)
    _check_consistent(directory, meta, tokens, documents)
    return TokenizedCorpus(
        tokens=tokens,
        lengths=lengths,
        documents=documents,
        pad_id=meta["pad_id"],
        packing=meta["packing"],
        num_truncated=meta["num_truncated"],
    )


def _read_documents(path: Path) -> list[Record]:
    documents = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            doc_id, source, text = row.pop("doc_id"), row.pop("source"), row.pop("text")
            documents.append(Record(doc_id=doc_id, source=source, text=text, extra=row))
    return documents


def _check_consistent(
    directory: Path, meta: dict[str, Any], tokens: np.ndarray, documents: list[Record]
) -> None:
    expected = (meta["num_documents"], meta["max_length"])
    if tokens.shape != expected or len(documents) != meta["num_documents"]:
        raise CorpusError(
            f"tokenised corpus in {str(directory)!r} is inconsistent: meta.json says {expected}, "
            f"tokens.npy is {tokens.shape}, documents.jsonl has {len(documents)} lines; "
            "re-run the tokenisation stage with overwrite"
        )


# ----------------------------------------------------------------------------- reading


def iter_batches(
    corpus: TokenizedCorpus,
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
    pad_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, tokens, lengths)`` for rows ``start..stop-1`` in order.

    rows: [B] int64 row indices; tokens: [B, T] int32 (in memory, copied from a memmap);
    lengths: [B] int32. With `pad_last`, the last batch is filled up to `batch_size` with rows of
    index -1, length 0 and PAD tokens, so jitted consumers see one shape; a zero-length row must
    (and, masked by length, does) contribute nothing.
    """
    stop = corpus.num_documents if stop is None else stop
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= start <= stop <= corpus.num_documents:
        raise ValueError(
            f"need 0 <= start <= stop <= {corpus.num_documents}, got start={start}, stop={stop}"
        )
    for begin in range(start, stop, batch_size):
        end = min(begin + batch_size, stop)
        rows = np.arange(begin, end, dtype=np.int64)
        tokens = np.array(corpus.tokens[begin:end], dtype=np.int32)
        lengths = np.array(corpus.lengths[begin:end], dtype=np.int32)
        if pad_last and end - begin < batch_size:
            rows, tokens, lengths = _pad_batch(rows, tokens, lengths, batch_size, corpus.pad_id)
        yield rows, tokens, lengths


def read_rows(corpus: TokenizedCorpus, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [len(rows), T] int32, lengths [len(rows)] int32)`` of the given rows, read (from
    a memmap: only these rows) in memory; a row index of -1 gives an empty row (PAD, length 0),
    the filler of a last batch."""
    rows = np.asarray(rows, np.int64)
    tokens = np.full((len(rows), corpus.max_length), corpus.pad_id, np.int32)
    lengths = np.zeros(len(rows), np.int32)
    real = rows >= 0
    tokens[real], lengths[real] = corpus.tokens[rows[real]], corpus.lengths[rows[real]]
    return tokens, lengths


def _pad_batch(
    rows: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, batch_size: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    extra = batch_size - len(rows)
    rows = np.concatenate([rows, np.full(extra, -1, dtype=np.int64)])
    filler = np.full((extra, tokens.shape[1]), pad_id, dtype=np.int32)
    tokens = np.concatenate([tokens, filler])
    lengths = np.concatenate([lengths, np.zeros(extra, dtype=np.int32)])
    return rows, tokens, lengths


# ----------------------------------------------------------------------------- statistics


def corpus_stats(corpus: TokenizedCorpus) -> dict[str, Any]:
    """Size, source mix and the unigram entropy of a corpus (plain JSON-serialisable values).

    ``unigram_entropy_nats`` is the entropy (nats/token) of the empirical distribution of the
    *predicted* tokens (positions 1..len-1 of each row, i.e. after BOS through EOS): the loss of
    the best context-free model, the baseline a trained model's held-out loss is compared with.
    It is NaN when no row has a predicted token.
    """
    n = corpus.num_documents
    counts = Counter(corpus.sources)
    source_tokens = Counter()
    for source, length in zip(corpus.sources, corpus.lengths.tolist(), strict=True):
        source_tokens[source] += length
    total = max(corpus.num_tokens, 1)
    sources = {
        s: {
            "documents": c,
            "fraction": c / n,
            "tokens": source_tokens[s],
            "token_fraction": source_tokens[s] / total,
        }
        for s, c in sorted(counts.items())
    }
    entropy, predicted = unigram_entropy(corpus.tokens, corpus.lengths)
    return {
        "documents": n,
        "tokens": corpus.num_tokens,
        "mean_length": corpus.num_tokens / n if n else 0.0,
        "max_length": corpus.max_length,
        "num_truncated": corpus.num_truncated,
        "packing": corpus.packing,
        "sources": sources,
        "predicted_tokens": predicted,
        "unigram_entropy_nats": entropy,
    }


def unigram_entropy(tokens: np.ndarray, lengths: np.ndarray) -> tuple[float, int]:
    """(entropy in nats/token, count) of the tokens at positions 1..len-1 of each row.

    tokens: [N, T] int; lengths: [N]. Scans `_STATS_CHUNK` rows at a time so a memory-mapped
    corpus is never loaded whole.
    """
    counts = np.zeros(0, dtype=np.int64)
    positions = np.arange(tokens.shape[1])
    for begin in range(0, tokens.shape[0], _STATS_CHUNK):
        chunk = np.asarray(tokens[begin : begin + _STATS_CHUNK])
        chunk_lengths = np.asarray(lengths[begin : begin + _STATS_CHUNK])
        mask = (positions >= 1) & (positions < chunk_lengths[:, None])
        chunk_counts = np.bincount(chunk[mask], minlength=len(counts))
        counts = np.pad(counts, (0, len(chunk_counts) - len(counts))) + chunk_counts
    predicted = int(counts.sum())
    if predicted == 0:
        return math.nan, 0
    p = counts[counts > 0] / predicted
    return float(-(p * np.log(p)).sum()), predicted
