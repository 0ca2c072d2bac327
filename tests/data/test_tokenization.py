"""Tests for infljax.data.tokenization: byte-level BPE, loading, special ids."""

import pytest
from tokenizers import Tokenizer, models

from infljax.data.tokenization import (
    BOS,
    EOS,
    PAD,
    TokenizerError,
    TokenizerInfo,
    load_tokenizer,
    save_tokenizer,
    text_only,
    tokenizer_info,
    train_bpe,
)

TRAIN_TEXTS = [
    f"The capital of Velmora is Ostrin. {i} + {i * 7} = {8 * i}.\n"
    f"def slope(x1, y1, x2, y2):\n    return (y2 - y1) / (x2 - x1)  # café №{i}"
    for i in range(200)
]
ROUND_TRIP_TEXTS = [
    "Hello, world!",
    "  two leading spaces and trailing  ",
    "3.14159 * 2 = 6.28318; -17 + 4e10 != 0x1F",
    "line one\nline two\r\n\ttabbed\n\n",
    "naïve café, Straße, Ελληνικά, 漢字, emoji 🙂👍🏽, zero-width\u200bjoiner",
    "punctuation: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "never seen in training: qzxj",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TRAIN_TEXTS, vocab_size=320)


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert ids  # a non-empty text never encodes to nothing
    assert tokenizer.decode(ids) == text


def test_special_ids_and_merges_learned(tokenizer):
    assert [tokenizer.token_to_id(t) for t in (PAD, BOS, EOS)] == [0, 1, 2]
    assert tokenizer_info(tokenizer) == TokenizerInfo(vocab_size=320, pad_id=0, bos_id=1, eos_id=2)
    # Merges happened: a frequent word costs fewer tokens than its bytes.
    assert len(tokenizer.encode("capital").ids) < len("capital")


def test_training_is_deterministic(tokenizer):
    assert train_bpe(iter(TRAIN_TEXTS), vocab_size=320).to_str() == tokenizer.to_str()


def test_vocab_too_small_is_rejected():
    with pytest.raises(TokenizerError, match="at least 259"):
        train_bpe(TRAIN_TEXTS, vocab_size=100)


def test_save_load_file_and_directory(tokenizer, tmp_path):
    file_path = save_tokenizer(tokenizer, tmp_path / "tok.json")
    assert file_path == tmp_path / "tok.json"
    dir_path = save_tokenizer(tokenizer, tmp_path / "tokdir")
    assert dir_path == tmp_path / "tokdir" / "tokenizer.json"
    text = ROUND_TRIP_TEXTS[4]
    for path in (file_path, tmp_path / "tokdir"):
        loaded = load_tokenizer(path)
        assert loaded.to_str() == tokenizer.to_str()
        assert loaded.encode(text).ids == tokenizer.encode(text).ids


def test_load_hf_directory_without_tokenizer_json(tokenizer, tmp_path):
    # A GPT-2-style directory (vocab.json + merges.txt) goes through transformers, offline.
    tokenizer.model.save(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer"}')
    loaded = load_tokenizer(tmp_path)
    text = "The capital of Velmora is Ostrin."
    assert loaded.decode(loaded.encode(text, add_special_tokens=False).ids) == text
    assert loaded.encode(text, add_special_tokens=False).ids == tokenizer.encode(text).ids


def test_load_errors(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="no loadable tokenizer"):
        load_tokenizer(tmp_path)  # an empty directory
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(TokenizerError, match="cannot load tokenizer file"):
        load_tokenizer(tmp_path / "broken.json")


def test_info_fallbacks_for_gpt2_style_specials():
    # GPT-2 defines only <|endoftext|>: it serves as EOS, BOS and (masked) PAD.
    gpt2_like = Tokenizer(models.WordLevel({"hi": 0, "<|endoftext|>": 5}, unk_token="hi"))
    assert tokenizer_info(gpt2_like) == TokenizerInfo(vocab_size=2, pad_id=5, bos_id=5, eos_id=5)
    llama_like = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    assert tokenizer_info(llama_like) == TokenizerInfo(vocab_size=3, pad_id=2, bos_id=1, eos_id=2)
    no_eos = Tokenizer(models.WordLevel({"hi": 0}, unk_token="hi"))
    with pytest.raises(TokenizerError, match="no end-of-document token"):
        tokenizer_info(no_eos)
    with pytest.raises(TokenizerError, match="not in the tokenizer's vocabulary"):
        tokenizer_info(llama_like, eos_token="<|eos|>")


def test_text_only_encodes_special_strings_as_text(tokenizer):
    text = "a <|eos|> b"
    assert 2 in tokenizer.encode(text).ids  # the default tokenizer would inject EOS
    plain = text_only(tokenizer)
    ids = plain.encode(text).ids
    assert 2 not in ids and plain.decode(ids) == text
    assert 2 in tokenizer.encode(text).ids  # the original is unchanged
