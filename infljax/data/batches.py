"""Fixed-shape batches of corpus rows: what every pass over a corpus reads (the factor passes,
scoring, per-token scores).

A batch always holds `batch_size` sequences, so a pass compiles once: the last batch of a range
of rows is filled with zero-length sequences of row -1. With several processes each reads only
its rows of every global batch (`local`, `infljax.distributed.process_rows`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import jax
import numpy as np

from infljax.data.corpus import TokenizedCorpus, read_rows
from infljax.models.losses import Batch


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RowBatch:
    """A batch and the corpus row of each of its sequences.

    rows: [B] int, -1 for padding rows; the row seeds the sequence's sampled labels.
    """

    rows: jax.Array
    batch: Batch


def row_batches(
    corpus: TokenizedCorpus,
    rows: tuple[int, int] | np.ndarray,
    batch_size: int,
    local: slice = slice(None),
    progress: Callable[[int], None] | None = None,
) -> Iterator[RowBatch]:
    """Fixed-shape batches of corpus `rows` (a (start, stop) range or explicit indices); the
    last is filled with zero-length rows of index -1.

    Each batch holds only the `local` rows of the global batch of `batch_size` (this process's;
    default all), and only those are read from the corpus. `progress(n)` gets each global
    batch's number of real rows once the batch was taken.
    """
    rows = np.arange(*rows) if isinstance(rows, tuple) else np.asarray(rows, np.int64)
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        chunk = np.full(batch_size, -1, np.int64)
        chunk[: len(part)] = part
        ids = chunk[local]
        yield RowBatch(ids.astype(np.int32), Batch.from_documents(*read_rows(corpus, ids)))
        if progress is not None:
            progress(len(part))


def real_rows(num_rows: int, batch_size: int) -> Iterator[int]:
    """The number of real (not padding) rows in each batch `row_batches` yields for
    `num_rows` rows."""
    for start in range(0, num_rows, batch_size):
        yield min(batch_size, num_rows - start)
