"""Tests for infljax.data.corpus: rows, truncation, storage, statistics, batching."""

import json
import math

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from infljax.data.corpus import (
    TokenizeArgs,
    TokenizedCorpus,
    corpus_stats,
    iter_batches,
    load_corpus,
    save_corpus,
    tokenize_corpus,
    unigram_entropy,
)
from infljax.data.readers import CorpusError, Record
from infljax.data.tokenization import tokenizer_info, train_bpe
from infljax.stages import corpus as stage

TEXTS = [
    "The capital of Velmora is Ostrin.",
    "x = 3 * 4 + 2\nprint(x)  # 14",
    "A much longer document that rambles on about rivers, mountains and numbers 12345 "
    "for long enough that it cannot fit in a short sequence at all.",
    "Ελληνικά και 漢字 🙂",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXTS * 5, vocab_size=300)


@pytest.fixture
def records():
    return [
        Record("fact", "wiki", TEXTS[0], {"states": [["Velmora", "capital", "Ostrin"]]}),
        Record("prog", "code", TEXTS[1], {"procedure": "two_step", "answers": ["14"]}),
        Record("long", "web", TEXTS[2], {}),
        Record("uni", "web", TEXTS[3], {"works": {"a": 1}}),
    ]


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_rows_bos_eos_pad_and_truncation(tokenizer, records):
    max_length = 32  # only the long document (85 tokens) is cut
    corpus, bad = tokenize_corpus(records, tokenizer, TokenizeArgs(max_length=max_length))
    assert bad == [] and corpus.tokens.shape == (4, max_length) and corpus.tokens.dtype == np.int32
    assert corpus.doc_ids == ["fact", "prog", "long", "uni"]
    assert corpus.sources == ["wiki", "code", "web", "web"]
    truncated = 0
    for row, record in enumerate(records):
        expected = [1, *_ids(tokenizer, record.text), 2]
        truncated += len(expected) > max_length
        expected = expected[:max_length]
        n = corpus.lengths[row]
        assert n == len(expected)
        assert corpus.tokens[row, :n].tolist() == expected
        assert (corpus.tokens[row, n:] == 0).all()  # PAD after the length
    assert truncated == 1 and corpus.num_truncated == 1
    assert corpus.tokens[2, -1] != 2  # a truncated document has no EOS
    assert corpus.num_tokens == int(corpus.lengths.sum())


def test_without_bos_eos(tokenizer, records):
    info = tokenizer_info(tokenizer, add_bos=False, add_eos=False)
    corpus, _ = tokenize_corpus(records[:1], tokenizer, TokenizeArgs(max_length=64), info)
    ids = _ids(tokenizer, TEXTS[0])
    assert corpus.tokens[0, : len(ids)].tolist() == ids and corpus.lengths[0] == len(ids)


def test_special_strings_in_text_are_not_special(tokenizer):
    corpus, _ = tokenize_corpus([Record("x", "web", "a <|eos|> b")], tokenizer, TokenizeArgs(32))
    row = corpus.tokens[0, : corpus.lengths[0]].tolist()
    assert row[0] == 1 and row[-1] == 2 and 2 not in row[1:-1] and 1 not in row[1:]


def test_empty_after_tokenisation_reported_or_raised(records):
    # A word-level tokenizer drops what it cannot split into words: "  " encodes to nothing.
    vocab = {"<|pad|>": 0, "<|bos|>": 1, "<|eos|>": 2, "<unk>": 3}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    blank = [records[0], Record("blank", "web", "   \n "), records[1]]
    corpus, bad = tokenize_corpus(blank, word_level, TokenizeArgs(max_length=16))
    assert corpus.doc_ids == ["fact", "prog"]
    assert [(b.line_or_row, b.unit, b.doc_id) for b in bad] == [(1, "record", "blank")]
    assert "empty after tokenisation" in bad[0].reason
    with pytest.raises(CorpusError, match="'blank'.*empty after tokenisation"):
        tokenize_corpus(blank, word_level, TokenizeArgs(max_length=16, on_bad="error"))


def test_args_validate():
    with pytest.raises(ValueError, match="max_length"):
        TokenizeArgs(max_length=1)
    with pytest.raises(TypeError, match="max_length"):
        TokenizeArgs(max_length=8.0)
    with pytest.raises(ValueError, match="on_bad"):
        TokenizeArgs(max_length=8, on_bad="drop")


def test_packing_rows_and_segments(tokenizer, records):
    args = TokenizeArgs(max_length=16, packing=True)
    corpus, _ = tokenize_corpus(records, tokenizer, args)
    stream = np.concatenate([[1, *_ids(tokenizer, r.text), 2] for r in records])
    n_rows = math.ceil(len(stream) / 16)
    assert corpus.tokens.shape == (n_rows, 16)
    assert corpus.num_tokens == len(stream)
    flat = np.concatenate([corpus.tokens[i, : corpus.lengths[i]] for i in range(n_rows)])
    np.testing.assert_array_equal(flat, stream)
    assert (corpus.lengths[:-1] == 16).all()
    # Every row's segments tile it exactly, and every document's pieces add up to its length.
    pieces = {r.doc_id: 0 for r in records}
    for row, segments in enumerate(corpus.segments):
        assert segments[0]["start"] == 0 and segments[-1]["stop"] == corpus.lengths[row]
        assert all(a["stop"] == b["start"] for a, b in zip(segments, segments[1:], strict=False))
        assert corpus.doc_ids[row] == "+".join(s["doc_id"] for s in segments)
        for s in segments:
            pieces[s["doc_id"]] += s["stop"] - s["start"]
    assert pieces == {r.doc_id: len(_ids(tokenizer, r.text)) + 2 for r in records}


def test_save_load_round_trip_memmaps_and_keeps_extras(tokenizer, records, tmp_path):
    corpus, _ = tokenize_corpus(records, tokenizer, TokenizeArgs(max_length=32))
    save_corpus(tmp_path / "corpus", corpus)
    loaded = load_corpus(tmp_path / "corpus")
    assert isinstance(loaded.tokens, np.memmap)
    np.testing.assert_array_equal(loaded.tokens, corpus.tokens)
    np.testing.assert_array_equal(loaded.lengths, corpus.lengths)
    assert loaded.documents == records  # ids, sources, full texts and extras, in order
    assert (loaded.num_truncated, loaded.pad_id, loaded.packing) == (1, 0, False)
    meta = json.loads((tmp_path / "corpus" / "meta.json").read_text())
    assert meta["num_tokens"] == corpus.num_tokens
    assert meta["source_counts"] == {"code": 1, "web": 2, "wiki": 1}
    assert not isinstance(load_corpus(tmp_path / "corpus", mmap=False).tokens, np.memmap)


def test_load_errors(tokenizer, records, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "none")
    corpus, _ = tokenize_corpus(records, tokenizer, TokenizeArgs(max_length=24))
    save_corpus(tmp_path / "c", corpus)
    (tmp_path / "c" / "lengths.npy").unlink()
    with pytest.raises(CorpusError, match="incomplete.*lengths.npy"):
        load_corpus(tmp_path / "c")
    save_corpus(tmp_path / "c", corpus)
    with open(tmp_path / "c" / "documents.jsonl", "a") as f:
        f.write(json.dumps({"doc_id": "extra", "source": "s", "text": "t"}) + "\n")
    with pytest.raises(CorpusError, match="inconsistent"):
        load_corpus(tmp_path / "c")


def _hand_corpus():
    tokens = np.array([[1, 5, 5, 2, 0], [1, 6, 2, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int32)
    lengths = np.array([4, 3, 1], dtype=np.int32)
    docs = [Record("a", "x", "t"), Record("b", "y", "t"), Record("c", "x", "t")]
    return TokenizedCorpus(tokens, lengths, docs, pad_id=0, num_truncated=0)


def test_unigram_entropy_matches_hand_computation():
    # Predicted tokens (positions 1..len-1): 5, 5, 2 | 6, 2 | (none). p(5)=p(2)=0.4, p(6)=0.2.
    expected = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
    stats = corpus_stats(_hand_corpus())
    assert stats["unigram_entropy_nats"] == pytest.approx(expected, rel=1e-12)
    assert stats["predicted_tokens"] == 5
    assert (stats["documents"], stats["tokens"]) == (3, 8)
    assert stats["mean_length"] == pytest.approx(8 / 3)
    assert stats["sources"]["x"] == {
        "documents": 2,
        "fraction": 2 / 3,
        "tokens": 5,
        "token_fraction": 5 / 8,
    }
    json.dumps(stats)  # plain values only


def test_unigram_entropy_is_chunk_invariant(monkeypatch):
    import infljax.data.corpus as corpus_module

    corpus = _hand_corpus()
    full = unigram_entropy(corpus.tokens, corpus.lengths)
    monkeypatch.setattr(corpus_module, "_STATS_CHUNK", 1)
    assert unigram_entropy(corpus.tokens, corpus.lengths) == pytest.approx(full, rel=1e-12)


@pytest.mark.parametrize("batch_size,start,stop", [(2, 0, None), (4, 1, 8), (3, 2, 2), (16, 0, 9)])
def test_iter_batches_covers_rows_once_with_fixed_shapes(batch_size, start, stop):
    n, t = 9, 5
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 50, size=(n, t), dtype=np.int32)
    lengths = rng.integers(1, t + 1, size=n).astype(np.int32)
    corpus = TokenizedCorpus(tokens, lengths, [Record(str(i), "s", "t") for i in range(n)])
    seen = []
    for rows, batch_tokens, batch_lengths in iter_batches(corpus, batch_size, start, stop):
        assert rows.dtype == np.int64 and rows.shape == (batch_size,)
        assert batch_tokens.shape == (batch_size, t) and batch_lengths.shape == (batch_size,)
        real = rows >= 0
        np.testing.assert_array_equal(batch_tokens[real], tokens[rows[real]])
        np.testing.assert_array_equal(batch_lengths[real], lengths[rows[real]])
        assert (batch_lengths[~real] == 0).all() and (rows[~real] == -1).all()
        seen.extend(rows[real].tolist())
    stop = n if stop is None else stop
    assert seen == list(range(start, stop))


def test_iter_batches_without_padding_and_bad_range():
    corpus = _hand_corpus()
    shapes = [rows.shape for rows, _, _ in iter_batches(corpus, 2, pad_last=False)]
    assert shapes == [(2,), (1,)]
    with pytest.raises(ValueError, match="start <= stop"):
        next(iter_batches(corpus, 2, start=2, stop=5))


def test_a_record_of_the_corpus_section_as_given_stays_up_to_date():
    """The stage recorded ``config.corpus`` as given before it recorded typed arguments: such a
    record (a field left out) reads as today's, and a changed field is still a change."""
    given = {"max_length": 160, "tokenizer": {"vocab_size": 512}}
    today = stage._corpus_record(given)
    assert "packing" in today and today["tokenizer"]["train"] is True
    assert stage._upgrade({"input": "x", "corpus": given}) == {"input": "x", "corpus": today}
    assert stage._corpus_record(today) == today
    assert stage._corpus_record({**given, "max_length": 150}) != today
