"""Stage `corpus`: read records, get a tokenizer, write fixed-length sequences to ``corpus/``.

Input is ``config.corpus.path`` (JSONL/Parquet) or, when empty, the world's ``corpus.jsonl``.
The tokenizer is trained here (byte-level BPE, ``config.corpus.tokenizer.train``) and saved as
``corpus/tokenizer.json``, or loaded from ``config.corpus.tokenizer.path``.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import logging
from ml_collections import ConfigDict

from infljax.checkpoints import begin_stage, finish_stage
from infljax.data.corpus import TokenizeArgs, corpus_stats, save_corpus, tokenize_corpus
from infljax.data.readers import read_corpus
from infljax.data.tokenization import load_tokenizer, save_tokenizer, train_bpe
from infljax.pipeline import stage, write_json
from infljax.workdir import corpus_dir, stored_path, tokenizer_path, world_dir


def _input_path(config: ConfigDict, workdir: Path) -> Path:
    return Path(config.corpus.path) if config.corpus.path else world_dir(workdir) / "corpus.jsonl"


def _report_bad(bad: list, what: str) -> None:
    if bad:
        logging.warning("corpus: %d bad records %s; first: %s", len(bad), what, bad[:5])


def _tokenize_args(config: ConfigDict) -> TokenizeArgs:
    return TokenizeArgs(
        max_length=config.corpus.max_length,
        packing=config.corpus.packing,
        on_bad=config.corpus.on_bad,
    )


@stage("corpus", check=_tokenize_args)
def run(config: ConfigDict, workdir: Path) -> None:
    out = corpus_dir(workdir)
    source = _input_path(config, workdir)
    args = {"input": stored_path(source, workdir), "corpus": config.corpus.to_dict()}
    inputs = {"source": source}
    if not config.corpus.tokenizer.train:
        inputs["tokenizer"] = config.corpus.tokenizer.path
    if begin_stage(out, args, inputs=inputs, overwrite=config.overwrite):
        logging.info("corpus: up to date in %s", out)
        return
    start = time.perf_counter()
    read = read_corpus(source, on_bad=config.corpus.on_bad)
    _report_bad(read.bad, f"in {source} (on_bad={config.corpus.on_bad})")
    tok_cfg = config.corpus.tokenizer
    if tok_cfg.train:
        tokenizer = train_bpe((r.text for r in read.records), vocab_size=tok_cfg.vocab_size)
    else:
        tokenizer = load_tokenizer(tok_cfg.path)
    save_tokenizer(tokenizer, tokenizer_path(workdir))
    corpus, bad = tokenize_corpus(read.records, tokenizer, _tokenize_args(config))
    _report_bad(bad, "empty after tokenisation")
    save_corpus(out, corpus)
    stats = corpus_stats(corpus)
    stats.update(
        bad_records=len(read.bad) + len(bad),
        vocab_size=tokenizer.get_vocab_size(),
        seconds=round(time.perf_counter() - start, 2),
    )
    write_json(out / "stats.json", stats)
    finish_stage(out)
    logging.info("corpus: %s", stats)
