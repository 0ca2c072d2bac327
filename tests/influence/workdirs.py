"""Tiny workdirs for the scores-stage tests: a BPE-tokenised corpus and a model's EK-FAC factors."""

from pathlib import Path

from infljax.curvature import FactorArgs, fit_factors, save_factors
from infljax.data.corpus import TokenizeArgs, TokenizedCorpus, save_corpus, tokenize_corpus
from infljax.data.readers import Record
from infljax.data.tokenization import save_tokenizer, train_bpe
from infljax.distributed import Placement
from infljax.models.capture import select_layers
from infljax.models.losses import Batch
from infljax.workdir import corpus_dir, factors_dir, tokenizer_path


def write_corpus(workdir: Path, texts: list[str], max_length: int):
    """corpus/ and its tokenizer (BPE, vocabulary 300) from `texts`, one web document each."""
    tokenizer = train_bpe(texts * 10, vocab_size=300)
    records = [Record(doc_id=f"d{i}", source="web", text=t) for i, t in enumerate(texts)]
    corpus, _ = tokenize_corpus(records, tokenizer, TokenizeArgs(max_length=max_length))
    save_corpus(corpus_dir(workdir), corpus)
    save_tokenizer(tokenizer, tokenizer_path(workdir))
    return corpus, tokenizer


def write_factors(workdir: Path, name: str, model, corpus: TokenizedCorpus, mesh) -> None:
    """factors/<name>: EK-FAC of the MLP layers fitted on the whole corpus in one batch."""
    batches = [Batch.from_documents(corpus.tokens, corpus.lengths)]
    factors = fit_factors(model, select_layers(model), batches, FactorArgs(), Placement(mesh))
    save_factors(factors_dir(workdir, name), factors)
