"""Stage `corpus`: read records, get a tokenizer, write fixed-length sequences to ``corpus/``.

Input is ``config.corpus.path`` (JSONL/Parquet) or, when empty, the world's ``corpus.jsonl``.
The tokenizer is trained here (byte-level BPE, ``config.corpus.tokenizer.train``) and saved as
``corpus/tokenizer.json``, or loaded from ``config.corpus.tokenizer.path``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from absl import logging
from ml_collections import ConfigDict

from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import recorded, settings
from infljax.data.corpus import (
    CorpusSource,
    corpus_args,
    corpus_stats,
    save_corpus,
    tokenize_corpus,
)
from infljax.data.readers import BadRecord, CorpusError, read_corpus
from infljax.data.tokenization import (
    Tokenizer,
    TokenizerInfo,
    load_tokenizer,
    save_tokenizer,
    tokenizer_info,
    train_bpe,
    wrapping,
)
from infljax.workdir import (
    corpus_dir,
    stored_path,
    tokenizer_info_path,
    tokenizer_path,
    world_dir,
    write_json,
)


def _input_path(source: CorpusSource, workdir: Path) -> Path:
    return Path(source.path) if source.path else world_dir(workdir) / "corpus.jsonl"


BAD_RECORDS_FILE = "bad_records.jsonl"
SHOWN = 5  # bad or truncated records named in a message


def _write_bad(out: Path, bad: list[BadRecord]) -> None:
    """Every rejected record, one JSON line each (file, line/row/record, doc_id, reason)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / BAD_RECORDS_FILE, "w", encoding="utf-8") as f:
        for record in bad:
            f.write(json.dumps(dataclasses.asdict(record), ensure_ascii=False) + "\n")


def _refuse_empty(source: Path, bad: list[BadRecord], out: Path, when: str) -> None:
    _write_bad(out, bad)
    if bad:
        first = "; ".join(str(b) for b in bad[:SHOWN])
        detail = f"{len(bad)} bad records (all in {out / BAD_RECORDS_FILE}), first: {first}"
    else:
        detail = "the input holds no records"
    raise CorpusError(f"corpus {source}: 0 documents {when}; {detail}")


def conventions(tokenizer: Tokenizer, corpus: CorpusSource) -> TokenizerInfo:
    """The special ids and the BOS/EOS wrapping of the `corpus`: as configured, else BOS and
    EOS for a tokenizer trained here, else what the loaded tokenizer adds itself."""
    own = (True, True) if corpus.tokenizer.train else wrapping(tokenizer)
    add_bos, add_eos = (own[i] if v is None else bool(v)
                        for i, v in enumerate((corpus.add_bos, corpus.add_eos)))  # fmt: skip
    t = corpus.tokenizer
    names = {"bos_token": t.bos_token, "eos_token": t.eos_token, "pad_token": t.pad_token}
    names = {k: v or None for k, v in names.items()}
    return tokenizer_info(tokenizer, **names, add_bos=add_bos, add_eos=add_eos)


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    corpus_args(config.corpus)


def _corpus_record(section) -> dict:
    """What the stage records of ``config.corpus``: its typed arguments, flat as the section
    is; the same for the section as given and for a record of it (`_upgrade`)."""
    tokenize, source = corpus_args(section)
    return {**recorded(tokenize), **recorded(source)}


def _upgrade(saved: dict) -> dict:
    """A record of the section as given (before the stage recorded typed arguments) as
    today's; today's stays as it is."""
    return {**saved, "corpus": _corpus_record(saved["corpus"])}


def run(config: ConfigDict, workdir: Path) -> None:
    out = corpus_dir(workdir)
    tokenize, corpus_source = corpus_args(config.corpus)
    source = _input_path(corpus_source, workdir)
    args = {"input": stored_path(source, workdir), "corpus": _corpus_record(config.corpus)}
    inputs = {"source": source}
    tok_cfg = corpus_source.tokenizer
    if not tok_cfg.train:
        inputs["tokenizer"] = tok_cfg.path
    overwrite = settings(config).overwrite
    if begin_stage(out, args, inputs=inputs, overwrite=overwrite, resumes=False, upgrade=_upgrade):
        logging.info("corpus: up to date in %s", out)
        return
    start = time.perf_counter()
    read = read_corpus(source, on_bad=tokenize.on_bad)
    if read.bad:
        shown = [str(b) for b in read.bad[:SHOWN]]
        logging.warning(
            "corpus: %d bad records skipped (all in %s); first: %s",
            len(read.bad), out / BAD_RECORDS_FILE, shown,
        )  # fmt: skip
    if not read.records:
        _refuse_empty(source, read.bad, out, "after reading")
    if tok_cfg.train:
        tokenizer = train_bpe((r.text for r in read.records), vocab_size=tok_cfg.vocab_size)
    else:
        tokenizer = load_tokenizer(tok_cfg.path)
    save_tokenizer(tokenizer, tokenizer_path(workdir))
    info = conventions(tokenizer, corpus_source)
    write_json(tokenizer_info_path(workdir), info.to_json())
    corpus, bad = tokenize_corpus(read.records, tokenizer, tokenize, info)
    if bad:
        logging.warning(
            "corpus: %d records empty after tokenisation (in %s)", len(bad), out / BAD_RECORDS_FILE
        )
    if not corpus.num_documents:
        _refuse_empty(source, read.bad + bad, out, "after tokenisation")
    if corpus.truncated:
        logging.warning(
            "corpus: %d documents longer than max_length=%d were truncated (they lack EOS): %s%s",
            len(corpus.truncated), tokenize.max_length,
            ", ".join(f"{d!r} ({n} tokens)" for d, n in corpus.truncated[:SHOWN]),
            " ..." if len(corpus.truncated) > SHOWN else "",
        )  # fmt: skip
    _write_bad(out, read.bad + bad)
    save_corpus(out, corpus)
    stats = corpus_stats(corpus)
    stats.update(
        add_bos=info.add_bos,
        add_eos=info.add_eos,
        truncated=[d for d, _ in corpus.truncated[:1000]],  # the first 1000 ids
        bad_records=len(read.bad) + len(bad),
        vocab_size=tokenizer.get_vocab_size(),
        seconds=round(time.perf_counter() - start, 2),
    )
    write_json(out / "stats.json", stats)
    finish_stage(out)
    logging.info("corpus: %s", stats)
