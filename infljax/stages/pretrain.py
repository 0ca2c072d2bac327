"""Stage `pretrain`: train each configured model on the corpus (the embedded default only).

Per model ``<workdir>/models/<name>/`` holds ``model.json`` + ``params/`` (the trained model),
``checkpoints/`` (orbax, every ``checkpoint_every`` steps; an interrupted run resumes exactly)
and ``metrics.json`` (losses, the corpus's unigram baseline, parameter count, wall time).
A model with ``checkpoint`` set (a local Hugging Face directory) is not trained: it is converted
into the same layout (`infljax.models.convert`; options in the section's ``convert``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from ml_collections import ConfigDict
from tqdm import tqdm

from infljax import training
from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import mesh_args, settings
from infljax.data.corpus import TokenizedCorpus, corpus_stats, load_corpus
from infljax.data.tokenization import load_tokenizer
from infljax.distributed import make_mesh, replicate, shard_batch
from infljax.models.convert import check_corpus_fits, convert_checkpoint
from infljax.models.decoder import Decoder, DecoderConfig, num_params
from infljax.models.io import save_model
from infljax.models.losses import Batch
from infljax.models.spec import ModelSpec, model_specs
from infljax.multihost import is_main, on_main, process_count
from infljax.workdir import corpus_dir, model_dir, tokenizer_path, write_json


def decoder_config(model: dict, corpus: TokenizedCorpus, vocab: int) -> DecoderConfig:
    """A `ModelSpec.model` as the decoder trained on `corpus` (its context, `vocab` ids)."""
    return DecoderConfig(vocab_size=vocab, max_length=corpus.tokens.shape[1], **model)


def check(config: ConfigDict) -> None:
    """Every model's typed spec (raises on an invalid value)."""
    model_specs(config)


def run(config: ConfigDict, workdir: Path) -> None:
    corpus = load_corpus(corpus_dir(workdir))
    vocab = int(_read_vocab_size(workdir))
    mesh = make_mesh(mesh_args(config))
    overwrite = settings(config).overwrite
    for name, spec in model_specs(config).items():
        out = model_dir(workdir, name)
        if not spec.trained:
            convert_model(name, spec, corpus, mesh, out, overwrite)
            continue
        cfg = decoder_config(spec.model, corpus, vocab)
        inputs = {"corpus": corpus_dir(workdir)}
        train_model(name, cfg, spec.train, corpus, mesh, out, overwrite, inputs=inputs)


def convert_model(name: str, spec: ModelSpec, corpus, mesh, out: Path, overwrite: bool) -> None:
    """Convert the spec's HF `checkpoint` into `out` (checked against the corpus first)."""
    if process_count() > 1:
        raise ValueError(
            f"pretrain {name}: converting a checkpoint runs in one process; run "
            "--stages=pretrain without the multi-process flags first (the conversion is done "
            "once), then the other stages on several processes"
        )
    check_corpus_fits(spec.checkpoint, spec.convert, corpus.tokens)
    done = convert_checkpoint(spec.checkpoint, out, spec.convert, mesh, overwrite=overwrite)
    what = "converted into" if done else "conversion up to date in"
    logging.info("pretrain %s: %s %s %s", name, spec.checkpoint, what, out)


def _read_vocab_size(workdir: Path) -> int:
    return load_tokenizer(tokenizer_path(workdir)).get_vocab_size()


def train_model(
    name: str,
    cfg: DecoderConfig,
    args: training.TrainArgs,
    corpus: TokenizedCorpus,
    mesh: jax.sharding.Mesh,
    out: Path,
    overwrite: bool = False,
    stop_at: int | None = None,
    exclude_rows: np.ndarray | None = None,
    inputs: dict[str, Path] | None = None,
) -> None:
    """Train `cfg` on `corpus` with `args`, writing to `out`; resumes from `out/checkpoints`.
    `inputs`: where the corpus was read (`infljax.checkpoints.begin_stage`).

    `stop_at` ends the run after that step's checkpoint (time-sliced jobs; resume tests).
    `exclude_rows` (corpus rows) trains a counterfactual model: same initialisation, same steps,
    same data order with those documents deleted (`training.pack_rows`,
    `training.exclude_documents`); empty or None is the original run, bit for bit.
    """
    exclude_rows = _checked_exclusions(name, exclude_rows, corpus.num_documents)
    record = _record(cfg, args, corpus, exclude_rows)
    if inputs:  # the corpus is recorded by where it was read
        del record["corpus"]
    if begin_stage(out, record, inputs=inputs, overwrite=overwrite):
        logging.info("pretrain %s: up to date in %s", name, out)
        return
    data = _training_data(corpus, args, exclude_rows)
    model = Decoder(cfg, rngs=nnx.Rngs(args.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = training.make_optimizer(args)
    manager = ocp.CheckpointManager(
        (out / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
    )
    state = replicate({"params": params, "opt_state": tx.init(params)}, mesh)
    start_step, state = _restore(manager, state, name)
    params, opt_state = state["params"], state["opt_state"]
    step_fn = training.make_train_step(graphdef, tx)
    eval_fn = training.make_eval_fn(graphdef)
    evaluate = lambda p: training.held_out_loss(  # noqa: E731
        eval_fn, p, _batches(corpus, data.held_rows, args.batch_size, mesh)
    )
    logging.info("pretrain %s: %s parameters, %d steps", name, f"{num_params(model):,}", args.steps)
    history, t0, tokens = [], time.perf_counter(), 0
    bar = tqdm(
        range(start_step, args.steps),
        desc=f"pretrain {name}",
        initial=start_step,
        total=args.steps,
        mininterval=2.0,
        disable=not is_main(),
    )
    for step in bar:
        rows = training.batch_rows(data.rows, step, args.batch_size, args.seed)
        batch = shard_batch(Batch.from_documents(data.tokens[rows], data.lengths[rows]), mesh)
        params, opt_state, loss = step_fn(params, opt_state, batch)
        tokens += int(data.lengths[rows].sum())
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            history.append(
                {"step": done, "train_loss": float(loss), "held_out_loss": evaluate(params)}
            )
            bar.set_postfix(
                loss=f"{float(loss):.3f}",
                held_out=f"{history[-1]['held_out_loss']:.3f}",
                tok_s=f"{tokens / (time.perf_counter() - t0):.0f}",
            )
        if done % args.checkpoint_every == 0 or done == args.steps or done == stop_at:
            manager.save(
                done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state})
            )
            manager.wait_until_finished()
        if done == stop_at:
            return
    bar.close()
    seconds = time.perf_counter() - t0
    save_model(out, nnx.merge(graphdef, params))
    _write_metrics(out, model, corpus, data.held_rows, history, seconds, tokens)
    finish_stage(out)


def _checked_exclusions(name: str, rows: np.ndarray | None, num_documents: int):
    """Sorted unique corpus rows to leave out, or None; out-of-range rows are refused."""
    if rows is None or not len(rows):
        return None
    rows = np.unique(np.asarray(rows, np.int64))
    if rows[0] < 0 or rows[-1] >= num_documents:
        raise ValueError(
            f"pretrain {name}: exclude_rows must be corpus rows in [0, {num_documents}), got "
            f"{rows[[0, -1]].tolist()} (min, max)"
        )
    return rows


def _record(cfg, args, corpus: TokenizedCorpus, exclude_rows: np.ndarray | None) -> dict:
    """The stage's arguments (a counterfactual run records its excluded rows)."""
    record = {
        "model": dataclasses.asdict(cfg),
        "train": dataclasses.asdict(args),
        "corpus": {"documents": corpus.num_documents, "tokens": corpus.num_tokens},
    }
    if exclude_rows is not None:
        record["excluded_rows"] = exclude_rows.tolist()
    return record


@dataclasses.dataclass(frozen=True)
class _TrainingData:
    """tokens/lengths: the rows training draws from (packed or not); rows: their indices;
    held_rows: corpus rows kept out for the held-out loss."""

    tokens: np.ndarray
    lengths: np.ndarray
    rows: np.ndarray
    held_rows: np.ndarray


def _training_data(corpus: TokenizedCorpus, args, exclude_rows) -> _TrainingData:
    train_rows, held_rows = training.split_rows(
        corpus.num_documents, args.held_out_fraction, args.seed
    )
    if args.packing:
        tokens, lengths = training.pack_rows(
            corpus.tokens, corpus.lengths, train_rows, args.seed, exclude=exclude_rows
        )
        return _TrainingData(tokens, lengths, np.arange(len(lengths)), held_rows)
    tokens, lengths = training.exclude_documents(corpus.tokens, corpus.lengths, exclude_rows)
    return _TrainingData(tokens, lengths, train_rows, held_rows)


def _restore(manager: ocp.CheckpointManager, state: dict, name: str) -> tuple[int, dict]:
    """(step to start at, state): the latest checkpoint's, placed like `state` (replicated over
    the mesh, also across processes), or step 0 and `state` as given."""
    step = manager.latest_step() or 0
    if step:
        like = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(step, args=ocp.args.StandardRestore(like))
        logging.info("pretrain %s: resumed at step %d", name, step)
    return step, state


def _write_metrics(out, model, corpus, held_rows, history, seconds, tokens) -> None:
    on_main(
        write_json,
        out / "metrics.json",
        {
            "num_params": num_params(model),
            "history": history,
            "final_held_out_loss": history[-1]["held_out_loss"] if history else None,
            "unigram_entropy": corpus_stats(corpus)["unigram_entropy_nats"],
            "train_documents": int(corpus.num_documents - len(held_rows)),
            "held_out_documents": int(len(held_rows)),
            "seconds": round(seconds, 1),
            "tokens_per_second": round(tokens / max(seconds, 1e-9)),
        },
    )
    on_main(np.save, out / "held_out_rows.npy", held_rows)


def _batches(corpus: TokenizedCorpus, rows: np.ndarray, batch_size: int, mesh):
    """Held-out batches of fixed shape; the last is padded with zero-length rows."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        tokens = np.zeros((batch_size, corpus.tokens.shape[1]), np.int32)
        lengths = np.zeros((batch_size,), np.int32)
        tokens[: len(chunk)], lengths[: len(chunk)] = corpus.tokens[chunk], corpus.lengths[chunk]
        yield shard_batch(Batch.from_documents(tokens, lengths), mesh)
