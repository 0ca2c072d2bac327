"""One model's resumable scoring: every query against every document, into a score directory.

`ScoringRun` composes the library's pieces (query preparation, the scoring pass, prefilter,
re-scoring, per-token scores) with the disk: it resumes from the query gradients and the
finished partitions it finds, and marks the directory complete at the end (DESIGN §4). The
scores stage runs one per model; the baselines stage runs it with other strategies.

``<out>/`` holds (`infljax.workdir.ScoreFiles`):

* ``scores.npy`` float32 [Q, N] raw scores, ``query_nats.npy`` [Q] (completion NLL),
  ``doc_grad_norms.npy`` [N]; optionally ``per_layer.npy`` [L, Q, N] (sums to the scores),
  ``self_influence.npy`` [N] and ``top_k.npz`` (each query's top-k document indices with their
  low-rank and full-rank scores);
* ``per_token.json``: for each query's top ``per_token_top`` documents, per-token scores that
  sum to the document's score (list of {query_id, doc_id, tokens, scores, ...});
* ``scored.npy`` bool [Q, N], only with ``prefilter_k`` > 0 (absent = every entry scored):
  True where the entry was computed, i.e. the document is among the query's top-k TF-IDF
  candidates (`infljax.influence.prefilter`; unscored entries are 0, never-streamed documents
  have doc_grad_norm and self-influence 0);
* ``queries.jsonl`` (the query records in score-row order), ``query_grads.npz`` (the
  preconditioned, compressed query gradients: a rerun reuses them), ``partitions/`` (one file
  per finished document range: an interrupted run resumes there) and ``meta.json``
  (layers, the contraction chosen per layer, timings, documents/s, documents streamed).

    ScoringRun(name, ModelInputs.of_workdir(workdir, name, corpus, tokenizer), args,
               Placement(mesh), scores_dir(workdir, name)).run()
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from absl import logging
from flax import nnx
from ml_collections import ConfigDict
from tokenizers import Tokenizer
from tqdm import tqdm

from infljax import planning
from infljax.checkpoints import begin_stage, check_finite, finish_stage
from infljax.config import read, recorded, section, settings
from infljax.curvature import STRATEGIES, DampingArgs, Factors, open_factors
from infljax.curvature.fit import factors_section
from infljax.data.corpus import TokenizedCorpus
from infljax.data.tokenization import TokenizerInfo, read_tokenizer_info, tokenizer_info
from infljax.distributed import Placement, round_up
from infljax.influence import attribution, baselines, prefilter, query_grads, scoring
from infljax.influence.measurement import (
    MeasurementArgs,
    QueryText,
    QueryTokens,
    QueryTruncationWarning,
    encode_queries,
    query_nats,
    read_query_records,
    records_sha256,
)
from infljax.models.capture import select_layers
from infljax.models.io import load_model
from infljax.multihost import is_main, on_main
from infljax.workdir import (
    ScoreFiles,
    corpus_dir,
    factors_dir,
    model_dir,
    queries_dir,
    queries_path,
    recorded_args,
    tokenizer_info_path,
    upgrade_scores_record,
    write_json,
    write_jsonl,
)

PARTITIONS_DIR = "partitions"


@dataclasses.dataclass(frozen=True)
class ScoresArgs:
    """Everything the scores stage does for one model: ``config.scores`` (`infljax.config`),
    with the factors' `layers` and the config's `param_dtype`.

    Attributes:
      layers: regexes of the tracked layers (the factors' layers).
      strategy: one of STRATEGIES, with `damping` (unused by "identity").
      measurement: how the queries are tokenised and measured.
      query_grads: how the query gradients are prepared and compressed.
      scoring: the scoring pass.
      per_layer: write per_layer.npy.
      rescore_top_k: re-score each query's top k documents with full-rank gradients (0: off).
      per_token_top: per-token scores for each query's top documents (0: off).
      prefilter_k: score only each query's top k documents by TF-IDF, streaming only their
        union (0: every document). A biased shortcut for corpora too large to score in full
        (`infljax.influence.prefilter`); re-scoring and per-token scores pick among the
        scored entries only.
      param_dtype: the dtype the model runs in ("" = as stored; "bfloat16" = mixed precision:
        bfloat16 parameters, activations and gradients, float32 statistics and factors,
        float64 eigendecompositions).
    """

    layers: tuple[str, ...]
    strategy: str = "ekfac"
    damping: DampingArgs = DampingArgs()
    measurement: MeasurementArgs = MeasurementArgs()
    query_grads: query_grads.QueryArgs = query_grads.QueryArgs()
    scoring: scoring.ScoreArgs = scoring.ScoreArgs()
    per_layer: bool = True
    rescore_top_k: int = 0
    per_token_top: int = 3
    prefilter_k: int = 0
    param_dtype: str = ""

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}; valid: {STRATEGIES}")
        if min(self.rescore_top_k, self.per_token_top, self.prefilter_k) < 0:
            raise ValueError("rescore_top_k, per_token_top and prefilter_k must be >= 0")

    @classmethod
    def from_config(cls, config: ConfigDict) -> ScoresArgs:
        """``config.scores`` with ``config.factors.layers`` and ``config.param_dtype``."""
        layers = factors_section(config.factors)[2].layers
        dtype = settings(config).param_dtype
        return read(cls, section(config, "scores"), "scores", layers=layers, param_dtype=dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelInputs:
    """What one model's scoring reads: its directories, the corpus, tokenizer and queries;
    `read_from`: where the corpus and queries were read (`infljax.checkpoints.begin_stage`)."""

    model_dir: Path
    factors_dir: Path
    corpus: TokenizedCorpus
    tokenizer: Tokenizer
    records: list[dict]
    read_from: dict[str, Path] = dataclasses.field(default_factory=dict)
    info: TokenizerInfo | None = None  # the corpus's (default: found in `tokenizer`)

    @classmethod
    def of_workdir(cls, workdir: Path, name: str, corpus, tokenizer: Tokenizer) -> ModelInputs:
        """Model `name`'s inputs as the workdir holds them (DESIGN §4)."""
        return cls(
            model_dir(workdir, name),
            factors_dir(workdir, name),
            corpus,
            tokenizer,
            read_query_records(queries_path(workdir), model=name),
            read_from={"corpus": corpus_dir(workdir), "queries": queries_dir(workdir)},
            info=read_tokenizer_info(tokenizer_info_path(workdir), tokenizer),
        )

    def inputs(self, strategy: str) -> dict[str, Path]:
        """Every input of a scoring with `strategy` (the factors unless "identity")."""
        found = {"model": self.model_dir} | self.read_from
        return found | ({} if strategy == "identity" else {"factors": self.factors_dir})


@dataclasses.dataclass(frozen=True)
class _Model:
    """The scored model as the steps take it: placed state, tracked layers, host factors."""

    graphdef: nnx.GraphDef
    state: nnx.State
    layers: tuple[str, ...]
    factors: Factors | None  # read a layer at a time as used; None for "identity"


@dataclasses.dataclass(frozen=True)
class _Work:
    """What the scoring pass needs, prepared once per run."""

    model: _Model
    tokens: QueryTokens
    plan: scoring.Plan  # placed
    choices: dict[str, str]  # the contraction per layer
    score_fn: Callable  # `scoring.make_score_fn`
    self_factors: Factors | None  # placed, for self-influence only
    prefilter: prefilter.Prefilter | None
    parts: list  # each partition's corpus rows (`_partitions`)


@dataclasses.dataclass(frozen=True)
class ScoringRun:
    """Score every query of `inputs` against every corpus row with model `name`, into `out`.

    `placement`: the mesh and where the parameters live (config.mesh.params); the results do
    not depend on it. With `args.prefilter_k`, only each query's top-k TF-IDF candidates are
    scored (the union of candidates is streamed; `infljax.influence.prefilter`). Complete
    outputs with the same arguments are kept (`overwrite` recomputes them; other arguments
    conflict, `infljax.checkpoints.begin_stage`).
    """

    name: str
    inputs: ModelInputs
    args: ScoresArgs
    placement: Placement
    out: Path
    overwrite: bool = False

    @property
    def files(self) -> ScoreFiles:
        return ScoreFiles(Path(self.out))

    def run(self) -> None:
        """Score what is not on disk yet and write the score files (nothing when complete)."""
        for _ in self.partitions():
            pass

    def partitions(self) -> Iterator[Path]:
        """Score the unfinished partitions, yielding each one's file once it is on disk; after
        the last, write the score files, breakdowns and meta.json and mark `out` complete.

        Stopping the iteration early (a time-sliced job) loses nothing: a later run resumes
        from the query gradients and the partitions on disk.
        """
        out, name = Path(self.out), self.name
        record = _record(self.inputs, self.args)
        inputs = self.inputs.inputs(self.args.strategy)
        upgrade = upgrade_scores_record
        if begin_stage(out, record, inputs=inputs, overwrite=self.overwrite, upgrade=upgrade):
            logging.info("scores %s: up to date in %s", name, out)
            return
        started = time.perf_counter()
        work = self._prepare()
        throughput = yield from self._score(work)
        result, streamed = _assemble(out, self.args, work.prefilter)
        extras = self._breakdowns(work, result)
        extras.update(throughput, seconds=round(time.perf_counter() - started, 2))
        pre = work.prefilter
        extras.update(prefilter_k=0 if pre is None else pre.k, documents_streamed=streamed)
        _write_meta(out, name, work.model.layers, work.choices, work.tokens, self.corpus, extras)
        finish_stage(out)
        logging.info("scores %s: %d x %d in %s", name, *result.scores.shape, out)

    @property
    def corpus(self) -> TokenizedCorpus:
        return self.inputs.corpus

    def _prepare(self) -> _Work:
        """Load the model, write the measured queries' records, prepare (or read back) their
        gradients and the scoring plan, and check both steps' memory."""
        args, name, placement = self.args, self.name, self.placement
        loaded = load_model(self.inputs.model_dir, args.param_dtype or None)
        tokens = _encode(name, self.inputs, args, loaded.cfg.max_length)
        measured = set(tokens.query_ids)  # all of them, unless on_too_long="skip" left some out
        measured_records = [r for r in self.inputs.records if r["id"] in measured]
        on_main(write_jsonl, self.files.queries, measured_records)
        graphdef, state = nnx.split(loaded)
        layers = select_layers(loaded, args.layers)
        factors = _factors(self.inputs, args, layers)  # placed a group of layers at a time
        model = _Model(graphdef, placement.place(state), layers, factors)
        layout = planning.Layout.of(placement)
        shapes = planning.ModelShapes.of(loaded, layers)
        _check_query_memory(name, shapes, args, tokens.tokens.shape[1], layout)
        queries = self._stored_queries(model, tokens)
        check_finite(f"the query gradients of model {name!r} ({self.files.query_grads})", queries)
        plan, choices = scoring.make_plan(queries, args.scoring, self.corpus.max_length)
        logging.info("scores %s: contraction per layer %s", name, choices)
        _check_memory(name, shapes, plan, args, self.corpus.max_length, layout)
        self_influence = (
            scoring.SelfInfluence(args.strategy, args.damping)
            if args.scoring.self_influence
            else None
        )
        score_fn = scoring.make_score_fn(graphdef, layers, placement, self_influence)
        self_factors = None  # the factors, on the devices only when self-influence needs them
        if self_influence is not None and factors is not None:
            self_factors = placement.place({p: factors[p] for p in layers})
        pre = _prefilter(name, self.inputs, args, tokens)
        parts = _partitions(self.corpus.num_documents, args.scoring.partitions, pre)
        plan = placement.place(plan)
        return _Work(model, tokens, plan, choices, score_fn, self_factors, pre, parts)

    def _queries(self, model: _Model, tokens: QueryTokens, rank: int) -> dict:
        """The preconditioned query gradients of `tokens`, compressed to `rank` (0: full)."""
        q_args = dataclasses.replace(self.args.query_grads, rank=rank)
        return query_grads.prepare_queries(
            model.graphdef, model.layers, model.state, tokens, q_args, self.placement,
            self.args.strategy, model.factors, self.args.damping,
        )  # fmt: skip

    def _stored_queries(self, model: _Model, tokens: QueryTokens) -> dict:
        """The query gradients at the configured rank: read back when written, else prepared
        and written with query_nats.npy."""
        path = self.files.query_grads
        if on_main(path.is_file):
            return query_grads.load_queries(path)
        queries = self._queries(model, tokens, self.args.query_grads.rank)
        batch_size, mesh = self.args.query_grads.batch_size, self.placement.mesh
        nats = query_nats(model.graphdef, model.state, tokens, batch_size, mesh)
        on_main(_save_query_plan, Path(self.out), nats, queries)
        return queries

    def _score(self, work: _Work) -> Iterator[Path]:
        """Score every unfinished partition, yielding its file once saved; returns this
        run's throughput."""
        out, parts = Path(self.out), work.parts
        (out / PARTITIONS_DIR).mkdir(exist_ok=True)
        todo = on_main(_unscored, out, len(parts))  # decided once, by process 0
        remaining = sum(_num_rows(parts[i]) for i in todo)
        total = sum(_num_rows(rows) for rows in parts)
        started = time.perf_counter()
        with tqdm(
            total=total,
            initial=total - remaining,
            desc=f"scores {self.name}",
            unit="doc",
            mininterval=2.0,
            disable=not is_main(),
        ) as bar:
            for i in todo:
                result = scoring.score_documents(
                    work.score_fn,
                    work.model.state,
                    work.plan,
                    self.corpus,
                    parts[i],
                    self.args.scoring.batch_size,
                    self.placement.mesh,
                    work.self_factors,
                    bar.update,
                )
                on_main(_save_part, _part_path(out, i), result)
                yield _part_path(out, i)
        seconds = time.perf_counter() - started
        return {
            "scoring_seconds": round(seconds, 2),
            "documents_per_second": round(remaining / max(seconds, 1e-9), 1),
        }

    def _breakdowns(self, work: _Work, result: scoring.BatchScores) -> dict:
        """Optional full-rank re-scoring of the top k and per-token scores of the top
        documents, chosen among the scored entries."""
        args, model, mesh = self.args, work.model, self.placement.mesh
        scored = None if work.prefilter is None else work.prefilter.scored
        extras = {}
        batch_size = args.scoring.batch_size
        if args.rescore_top_k and args.query_grads.rank:
            top = _top_scored(result.scores, scored, args.rescore_top_k)
            score_fn = scoring.make_score_fn(model.graphdef, model.layers, self.placement)
            full_model = model
            if model.factors is not None and args.query_grads.layer_groups == 1:
                # Read and placed once for every chunk (with several groups each chunk reads
                # each group's factors again: holding them all is what the groups avoid).
                placed = self.placement.place({p: model.factors[p] for p in model.layers})
                full_model = dataclasses.replace(model, factors=placed)
            rescored = []
            for start in range(0, work.tokens.num_queries, args.query_grads.batch_size):
                # One chunk of queries' full-rank gradients at a time: [chunk, d_out, d_in].
                rows = slice(start, start + args.query_grads.batch_size)
                full = self._queries(full_model, work.tokens.select(rows), rank=0)
                rescored.append(
                    attribution.rescore(
                        score_fn, model.state, full, self.corpus, top[rows], batch_size, mesh
                    )
                )
            rescored = np.concatenate(rescored)
            low = np.take_along_axis(result.scores, top, axis=1)
            top_k = dict(indices=top, scores=low, full_rank_scores=rescored)
            on_main(np.savez, self.files.top_k, **top_k)
            extras["top_k_pearson"] = float(np.corrcoef(low.ravel(), rescored.ravel())[0, 1])
        if args.per_token_top:
            top = _top_scored(result.scores, scored, args.per_token_top)
            fn = attribution.make_token_scores_fn(model.graphdef, model.layers, mesh)
            rows = np.unique(top)
            per_token = attribution.token_scores(
                fn, model.state, work.plan, self.corpus, rows, batch_size, mesh
            )
            records = attribution.token_attributions(per_token, rows, top, self.corpus)
            _label(records, work.tokens, self.inputs)
            on_main(write_json, self.files.per_token, records)
        return extras


def _record(inputs: ModelInputs, args: ScoresArgs) -> dict:
    """The stage's arguments (`infljax.config.recorded`), plus what it reads unless
    `inputs.read_from` records where it was read (then a changed upstream stage makes this one
    recompute instead of conflict: `infljax.checkpoints.begin_stage`)."""
    own = recorded(args)
    for key in ("prefilter_k", "param_dtype"):
        if not own[key]:
            del own[key]  # so that records written before these options existed match
    if inputs.read_from:
        return own
    return own | {
        "queries_sha256": records_sha256(inputs.records),
        "model": recorded_args(inputs.model_dir),
        "factors": recorded_args(inputs.factors_dir) if args.strategy != "identity" else None,
        "corpus": {"documents": inputs.corpus.num_documents, "tokens": inputs.corpus.num_tokens},
    }


def _encode(name: str, inputs: ModelInputs, args: ScoresArgs, max_length: int) -> QueryTokens:
    queries = [QueryText.from_record(r) for r in inputs.records]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QueryTruncationWarning)
        tokens = encode_queries(
            queries,
            inputs.tokenizer,
            inputs.info or tokenizer_info(inputs.tokenizer),
            max_length,
            args.measurement,
        )
    for w in caught:
        logging.warning("scores %s: %s", name, w.message)
    return tokens


def _factors(inputs: ModelInputs, args: ScoresArgs, layers):
    """The fitted factors, read from disk a layer at a time as they are used (None for the
    identity strategy)."""
    if args.strategy == "identity":
        return None
    factors = open_factors(inputs.factors_dir)
    missing = [p for p in layers if p not in factors]
    if missing:
        raise ValueError(
            f"the factors in {inputs.factors_dir} lack layers {missing}; fit factors for the "
            "same layers (config.factors.layers) or use strategy='identity'"
        )
    return factors


def _save_query_plan(out: Path, nats: np.ndarray, queries) -> None:
    files = ScoreFiles(out)
    files.save(query_nats=nats)
    query_grads.save_queries(files.query_grads, queries)


def _check_query_memory(name: str, shapes, args: ScoresArgs, seq: int, layout) -> None:
    """Log the query preparation's per-device estimate for its largest group of layers; refuse,
    with the numbers, one the device cannot hold (not checked on CPU), naming the query batch
    size or the number of query layer groups that would fit."""
    q = args.query_grads
    work = planning.Workload(seq=seq, rank=q.rank, svd=q.svd, oversample=q.oversample)
    chunk = round_up(q.batch_size, layout.data)
    group, memory = planning.largest_group("queries", shapes, q.layer_groups, work, layout, chunk)
    of_groups = f" (the largest of {q.layer_groups} layer groups)" if q.layer_groups > 1 else ""
    logging.info("scores %s: %s%s", name, memory.summary(), of_groups)
    device = planning.device_memory_bytes()
    knobs = ("config.scores.query_grads.batch_size", "config.scores.query_grads.layer_groups")
    planning.check_groups(memory, group, shapes, q.layer_groups, work, layout, device, knobs)


def _check_memory(name: str, shapes, plan, args: ScoresArgs, seq: int, layout) -> None:
    """Log the scoring step's per-device estimate (DESIGN §7b, `infljax.planning`); refuse,
    with the numbers, a plan the device cannot hold (not checked where the backend does not
    say how much memory it has, e.g. CPU)."""
    choices = {
        p: "dense" if isinstance(q, query_grads.DenseQueries) else "lowrank"
        for p, q in plan.items()
    }
    work = planning.Workload(
        seq=seq,
        queries=next(iter(plan.values())).shape[0],
        rank=args.query_grads.rank,
        contraction=args.scoring.contraction,
        max_dense_plan_bytes=args.scoring.max_dense_plan_bytes,
        self_influence=args.scoring.self_influence,
    )
    memory = planning.estimate("scores", shapes, work, layout, args.scoring.batch_size, choices)
    logging.info("scores %s: %s", name, memory.summary())
    device = planning.device_memory_bytes()
    setting = "config.scores.scoring.batch_size"
    planning.check_step(memory, shapes, work, layout, device, setting, choices)


def _prefilter(
    name: str, inputs: ModelInputs, args: ScoresArgs, tokens: QueryTokens
) -> prefilter.Prefilter | None:
    """Each measured query's top-k TF-IDF candidates (None without `args.prefilter_k`)."""
    if not args.prefilter_k:
        return None
    by_id = {r["id"]: r for r in inputs.records}
    texts = [baselines.query_text(QueryText.from_record(by_id[q])) for q in tokens.query_ids]
    docs = [d.text for d in inputs.corpus.documents]
    pre = prefilter.make_prefilter(texts, docs, args.prefilter_k)
    logging.info(
        "scores %s: prefilter: %s of %s documents (top %d TF-IDF per query)",
        name,
        f"{len(pre.rows):,}",
        f"{pre.num_documents:,}",
        pre.k,
    )
    return pre


def _partitions(
    num_documents: int, partitions: int, pre: prefilter.Prefilter | None
) -> list[tuple[int, int] | np.ndarray]:
    """Each partition's corpus rows: contiguous (start, stop) ranges of the corpus, or with a
    prefilter, contiguous slices of its streamed rows (explicit indices)."""
    if pre is None:
        return scoring.partition_bounds(num_documents, partitions)
    rows = pre.rows
    return [rows[a:b] for a, b in scoring.partition_bounds(len(rows), partitions)]


def _num_rows(rows: tuple[int, int] | np.ndarray) -> int:
    return rows[1] - rows[0] if isinstance(rows, tuple) else len(rows)


def _part_path(out: Path, index: int) -> Path:
    return out / PARTITIONS_DIR / f"part_{index:05d}.npz"


def _unscored(out: Path, count: int) -> list[int]:
    """Indices of the partitions (of `count`) not yet written."""
    return [i for i in range(count) if not _part_path(out, i).is_file()]


def _save_part(path: Path, result: scoring.BatchScores) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    # npz cannot hold bfloat16 (it reads back as raw bytes): store half precision as float32.
    arrays = {k: np.asarray(v) for k, v in dataclasses.asdict(result).items()}
    arrays = {k: v.astype(np.float32) if v.dtype.itemsize < 4 else v for k, v in arrays.items()}
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _assemble(
    out: Path, args: ScoresArgs, pre: prefilter.Prefilter | None
) -> tuple[scoring.BatchScores, int]:
    """Concatenate the partitions into the workdir's score files. Returns the [.., N] results
    (compute dtype) and the number of documents the partitions streamed."""
    count = on_main(_count_parts, out)
    parts = []
    for i in range(count):
        with np.load(_part_path(out, i)) as data:
            parts.append(scoring.BatchScores(**{k: data[k] for k in data.files}))
    result = scoring.BatchScores.concatenate(parts)
    streamed = int(result.sq_norms.shape[0])
    if pre is not None:
        result = prefilter.expand(result, pre)
    check_finite(
        f"the scores in {out} (rerun --stages=scores --config.overwrite=True)", result.scores
    )
    on_main(_write_results, out, args, result, pre)
    return result, streamed


def _count_parts(out: Path) -> int:
    return len(list((out / PARTITIONS_DIR).glob("part_*.npz")))


def _write_results(
    out: Path, args: ScoresArgs, result: scoring.BatchScores, pre: prefilter.Prefilter | None
) -> None:
    files = ScoreFiles(out)
    if pre is not None:
        files.save(scored=pre.scored)
    files.save(scores=result.scores, doc_grad_norms=scoring.doc_grad_norms(result.sq_norms))
    if args.per_layer:
        files.save(per_layer=result.per_layer)
    if args.scoring.self_influence:
        files.save(self_influence=result.self_influence)


def _top_scored(scores: np.ndarray, scored: np.ndarray | None, k: int) -> np.ndarray:
    """[Q, k'] each query's k best documents among its scored entries (`scored` [Q, N] bool;
    None: all), k' = min(k, the fewest entries any query scored)."""
    if scored is None:
        return attribution.top_documents(scores, k)
    k = min(k, int(scored.sum(axis=1).min()))
    return attribution.top_documents(np.where(scored, scores, -np.inf), k)


def _label(records: list[dict], tokens: QueryTokens, inputs: ModelInputs) -> None:
    """Add query/document ids and token strings to per-token records (for the report)."""
    decode = inputs.tokenizer.id_to_token
    for r in records:
        r["query_id"] = tokens.query_ids[r["query"]]
        r["doc_id"] = inputs.corpus.documents[r["document"]].doc_id
        r["token_ids"] = r["tokens"]
        r["tokens"] = [inputs.tokenizer.decode([t]) or decode(t) or "" for t in r["token_ids"]]


def _write_meta(out, name, layers, choices, tokens, corpus, extras) -> None:
    on_main(
        write_json,
        ScoreFiles(out).meta,
        {
            "model": name,
            "layers": list(layers),
            "contraction": choices,
            "query_ids": list(tokens.query_ids),
            "truncated_queries": list(tokens.truncated),
            "skipped_queries": list(tokens.skipped),
            "num_documents": corpus.num_documents,
            **extras,
        },
    )
