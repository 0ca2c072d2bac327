"""The query measurement: summed NLL of the completion tokens only, given the prompt (DESIGN §2).

A query is tokenised as ``[BOS] + tokens(prompt) + tokens(completion)``, prompt and completion
encoded *separately* with the model's tokenizer (special-token strings in either are plain
text), so the completion's tokens are exactly those of the completion text. No EOS is appended
by default: the measurement is how likely the completion's text is, not whether the model stops
after it (``add_eos=True`` also scores the EOS prediction). The batch weights are 1 exactly on
the positions that predict a completion token, so prompt tokens are context but never labels.

A chat template is a hook: a format string with ``{prompt}`` (``MeasurementArgs.chat_template``)
or any callable passed as `format_prompt`, applied to the prompt text before tokenisation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from infljax.data.tokenization import TokenizerInfo, text_only
from infljax.distributed import replicate, to_host
from infljax.models.losses import Batch, token_nll

ON_TOO_LONG = ("error", "truncate", "skip")


class QueryError(ValueError):
    """A query cannot be measured as given; the message names the query and what to change."""


class QueryTruncationWarning(UserWarning):
    """A query was too long for the model: its prompt was cut from the left, or it was skipped."""


@dataclasses.dataclass(frozen=True)
class QueryText:
    """What the measurement needs from a query record (DESIGN §3): its id, prompt, completion."""

    query_id: str
    prompt: str
    completion: str

    @classmethod
    def from_record(cls, record: dict, where: str = "query record") -> QueryText:
        missing = [k for k in ("id", "prompt", "completion") if not isinstance(record.get(k), str)]
        if missing:
            raise QueryError(f"{where}: fields {missing} are missing or not strings")
        return cls(record["id"], record["prompt"], record["completion"])


@dataclasses.dataclass(frozen=True)
class MeasurementArgs:
    """How queries become token sequences.

    Attributes:
      on_too_long: for a query longer than the model's max_length: "error" (raise, naming the
        query), "truncate" (drop the oldest prompt tokens after BOS; a completion that does not
        fit even with an empty prompt is still an error) or "skip" (leave the query out; the
        scores stage lists it and writes only the measured queries). Both warn with a
        `QueryTruncationWarning`.
      add_eos: append EOS to the completion (its prediction is then measured too).
      chat_template: "" (the raw prompt) or a format string containing ``{prompt}``.
      add_bos: start the prompt with BOS (None: as the corpus's documents start,
        `TokenizerInfo.add_bos`).
    """

    on_too_long: str = "error"
    add_eos: bool = False
    chat_template: str = ""
    add_bos: bool | None = None

    def __post_init__(self):
        if self.on_too_long not in ON_TOO_LONG:
            raise ValueError(
                f"MeasurementArgs.on_too_long={self.on_too_long!r}; valid: {ON_TOO_LONG}"
            )
        if self.chat_template and "{prompt}" not in self.chat_template:
            raise ValueError(
                f"MeasurementArgs.chat_template={self.chat_template!r} has no '{{prompt}}' "
                "placeholder; write e.g. 'User: {prompt}\\nAssistant:'"
            )

    def format_prompt(self, prompt: str) -> str:
        return self.chat_template.replace("{prompt}", prompt) if self.chat_template else prompt

    def prefix(self, info: TokenizerInfo) -> list[int]:
        """The tokens before every prompt: [BOS] or none."""
        add_bos = info.add_bos if self.add_bos is None else self.add_bos
        return [info.bos_id] if add_bos else []


@dataclasses.dataclass(frozen=True, eq=False)
class QueryTokens:
    """Tokenised queries.

    Attributes:
      tokens: [Q, T] int32, PAD after `lengths`.
      prompt_lengths: [Q] int32, BOS + prompt tokens (after any truncation).
      lengths: [Q] int32, prompt_lengths + completion tokens (+ EOS).
      query_ids: Q ids, in order.
      truncated: ids of the queries whose prompt was cut.
      skipped: ids of the queries left out (too long, on_too_long="skip"); not in query_ids.
    """

    tokens: np.ndarray
    prompt_lengths: np.ndarray
    lengths: np.ndarray
    query_ids: tuple[str, ...]
    truncated: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def num_queries(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows: slice | np.ndarray) -> QueryTokens:
        """The queries `rows` (same padded length)."""
        ids = np.asarray(self.query_ids, dtype=object)[rows].tolist()
        truncated = tuple(i for i in ids if i in self.truncated)
        return QueryTokens(
            self.tokens[rows], self.prompt_lengths[rows], self.lengths[rows], tuple(ids), truncated
        )

    def batch(self, rows: slice | np.ndarray = slice(None)) -> Batch:
        """The measurement batch: weight 1 on positions prompt_length-1 .. length-2, which
        predict the completion tokens (targets[:, t] = tokens[:, t+1])."""
        return completion_batch(self.tokens[rows], self.prompt_lengths[rows], self.lengths[rows])


def completion_batch(tokens: np.ndarray, prompt_lengths: np.ndarray, lengths: np.ndarray) -> Batch:
    """tokens [Q, T]; prompt_lengths, lengths [Q] -> Batch weighting only completion predictions.

    A row with length 0 (batch padding) has no weight anywhere.
    """
    tokens = np.asarray(tokens, np.int32)
    targets = np.concatenate([tokens[:, 1:], np.zeros_like(tokens[:, :1])], axis=1)
    positions = np.arange(tokens.shape[1])[None, :]
    first, stop = np.asarray(prompt_lengths)[:, None] - 1, np.asarray(lengths)[:, None] - 1
    weights = ((positions >= first) & (positions < stop)).astype(np.float32)
    return Batch(jnp.asarray(tokens), jnp.asarray(targets), jnp.asarray(weights))


def records_sha256(records: Sequence[dict]) -> str:
    """What stage records keep of a list of query records: the sha256 of their sorted JSON."""
    return hashlib.sha256(json.dumps(list(records), sort_keys=True).encode()).hexdigest()


def read_query_records(path: str | Path, model: str | None = None) -> list[dict]:
    """Query records of a JSONL file (DESIGN §3), in file order, as dicts (every field kept).

    With `model`, records that carry a ``model`` field (per-model generated completions) are
    kept only when it names `model`. Each kept record is checked by `QueryText.from_record`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no queries file at {str(path)!r}; run the queries stage first or write one "
            "(JSON lines with id, prompt, completion)"
        )
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                records.append(_parse_line(path, number, line))
    if model is not None:
        records = [r for r in records if r.get("model", model) == model]
    if not records:
        raise QueryError(f"{path} holds no queries" + (f" for model {model!r}" if model else ""))
    ids = [r["id"] for r in records]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise QueryError(f"{path}: duplicate query ids {duplicates}")
    return records


def _parse_line(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise QueryError(f"{path}:{number}: not valid JSON ({e})") from e
    QueryText.from_record(record, f"{path}:{number}")
    return record


def encode_queries(
    queries: Sequence[QueryText],
    tokenizer: Tokenizer,
    info: TokenizerInfo,
    max_length: int,
    args: MeasurementArgs = MeasurementArgs(),
    format_prompt: Callable[[str], str] | None = None,
) -> QueryTokens:
    """Tokenise queries (prompt and completion separately) into rows padded to the longest.

    Raises:
      QueryError: a completion is empty after tokenisation; a query is longer than `max_length`
        (on_too_long="error") or its completion alone does not fit (on_too_long="truncate");
        every query was skipped (on_too_long="skip").
    """
    encoder = text_only(tokenizer)
    format_prompt = format_prompt or args.format_prompt
    eos = [info.eos_id] if args.add_eos else []
    prefix = args.prefix(info)
    rows, prompt_lengths, ids, truncated, skipped, empty = [], [], [], [], [], []
    if not queries:
        raise QueryError("no queries to measure (the query file or families give none)")
    for query in queries:
        prompt = encoder.encode(format_prompt(query.prompt), add_special_tokens=False).ids
        completion = encoder.encode(query.completion, add_special_tokens=False).ids + eos
        if len(completion) == len(eos):
            empty.append(query.query_id)
            continue
        kept = _fit_prompt(query.query_id, prefix, prompt, len(completion), max_length, args)
        if kept is None:
            skipped.append(query.query_id)
            continue
        truncated += [query.query_id] if len(kept) < len(prompt) else []
        if not prefix + kept:
            raise QueryError(
                f"query {query.query_id!r}: an empty prompt without BOS leaves nothing to "
                "predict its first completion token from; give it a prompt or set "
                "measurement.add_bos=True"
            )
        rows.append(prefix + kept + completion)
        prompt_lengths.append(len(prefix) + len(kept))
        ids.append(query.query_id)
    if empty:
        raise QueryError(
            f"queries {empty[:5]} ({len(empty)} in all): the completion is empty after "
            "tokenisation, so there is nothing to measure; give them a completion or drop them"
        )
    if not rows:
        raise QueryError(f"every query is longer than max_length={max_length}; none to measure")
    return _pack_rows(rows, prompt_lengths, info.pad_id, ids, truncated, skipped)


def _fit_prompt(
    query_id: str,
    prefix: list[int],
    prompt: list[int],
    completion_length: int,
    max_length: int,
    args,
) -> list[int] | None:
    """The prompt, cut from the left so prefix (BOS or nothing) + prompt + completion fits in
    max_length; None when the query is to be skipped."""
    total = len(prefix) + len(prompt) + completion_length
    if total <= max_length:
        return prompt
    bos = "BOS + " if prefix else ""
    where = (
        f"query {query_id!r} is {total} tokens ({bos}{len(prompt)} prompt + "
        f"{completion_length} completion) but the model's max_length is {max_length}"
    )
    if args.on_too_long == "skip":
        warnings.warn(f"{where}: skipped", QueryTruncationWarning, stacklevel=3)
        return None
    if len(prefix) + completion_length > max_length:
        raise QueryError(f"{where}; its completion alone does not fit: shorten the completion")
    if args.on_too_long == "error":
        raise QueryError(
            f"{where}; shorten it, or set measurement.on_too_long='truncate' (drop the oldest "
            "prompt tokens) or 'skip' (leave it out of this model's scores)"
        )
    keep = max_length - len(prefix) - completion_length
    warnings.warn(
        f"{where}: prompt cut to its last {keep} tokens", QueryTruncationWarning, stacklevel=3
    )
    return prompt[len(prompt) - keep :]


def _pack_rows(rows, prompt_lengths, pad_id, query_ids, truncated, skipped) -> QueryTokens:
    lengths = np.asarray([len(r) for r in rows], np.int32)
    tokens = np.full((len(rows), int(lengths.max())), pad_id, np.int32)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return QueryTokens(
        tokens,
        np.asarray(prompt_lengths, np.int32),
        lengths,
        tuple(query_ids),
        tuple(truncated),
        tuple(skipped),
    )


@functools.lru_cache(maxsize=32)
def make_nats_fn(graphdef: nnx.GraphDef) -> Callable[[nnx.State, Batch], jax.Array]:
    """A jitted `(state, batch) -> [Q]`: each query's measurement (completion NLL, nats)."""

    def nats(state, batch):
        logits = nnx.merge(graphdef, state)(batch.inputs)
        return jnp.sum(batch.weights * token_nll(logits, batch.targets), axis=1)

    return jax.jit(nats)


def query_nats(
    graphdef: nnx.GraphDef, state: nnx.State, tokens: QueryTokens, batch_size: int, mesh
) -> np.ndarray:
    """Every query's measurement [Q] (completion NLL, nats, host float), `batch_size` queries
    per call of `make_nats_fn`, each batch replicated over `mesh`."""
    nats_fn = make_nats_fn(graphdef)
    parts = []
    for start in range(0, tokens.num_queries, batch_size):
        batch = replicate(tokens.batch(slice(start, start + batch_size)), mesh)
        parts.append(to_host(nats_fn(state, batch)))
    return np.concatenate(parts)
