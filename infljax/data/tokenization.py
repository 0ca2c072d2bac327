"""Tokenizers: train a byte-level BPE offline, or load a local Hugging Face tokenizer.

Everything here works on `tokenizers.Tokenizer` (the Rust backend), whichever way it was made,
and never touches the network. A trained tokenizer reserves its special tokens first, so that
``PAD = 0``, ``BOS = 1`` and ``EOS = 2``; for a loaded tokenizer `tokenizer_info` finds its
special ids by name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD = "<|pad|>"
BOS = "<|bos|>"
EOS = "<|eos|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # in id order: PAD=0, BOS=1, EOS=2
TOKENIZER_FILE = "tokenizer.json"
NUM_BYTES = 256

# Names under which common tokenizers (GPT-2, Llama, GPT-NeoX, Cohere, T5/BERT-style) spell their
# special tokens, most specific first.
BOS_CANDIDATES = (
    BOS, "<s>", "<|begin_of_text|>", "<BOS_TOKEN>", "<bos>", "<|startoftext|>", "<|endoftext|>",
)  # fmt: skip
EOS_CANDIDATES = (EOS, "</s>", "<|end_of_text|>", "<EOS_TOKEN>", "<eos>", "<|endoftext|>")
PAD_CANDIDATES = (PAD, "<pad>", "<PAD>", "[PAD]", "<|padding|>")


class TokenizerError(ValueError):
    """A tokenizer cannot be loaded or lacks a token the pipeline needs; the message says which."""


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """The ids the pipeline needs from a tokenizer, and how a document is wrapped.

    `pad_id` only fills positions past a sequence's length; every consumer masks by length, so
    its value never reaches a loss. That is why a tokenizer without a pad token may reuse EOS.
    `add_bos` / `add_eos`: every corpus document starts with BOS / ends with EOS, and every
    query starts with BOS (unless its measurement says otherwise): the convention the model was
    trained with (`wrapping`), recorded by the corpus stage in ``corpus/tokenizer_info.json``.
    """

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    add_bos: bool = True
    add_eos: bool = True

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> TokenizerInfo:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


def wrapping(tokenizer: Tokenizer) -> tuple[bool, bool]:
    """(adds BOS, adds EOS): what `tokenizer` itself puts around a text (its post-processor;
    Llama's adds BOS, GPT-2's and GPT-NeoX's nothing), found by encoding a probe text with and
    without special tokens."""
    probe = "the probe text"
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    start = next((i for i in range(len(full)) if full[i : i + len(bare)] == bare), 0)
    return start > 0, len(full) - start - len(bare) > 0


def train_bpe(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, show_progress: bool = False
) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) on `texts`.

    The 256 byte symbols are always in the vocabulary, so every string encodes and
    ``decode(encode(t).ids) == t`` exactly. Training has no randomness: the same texts give the
    same tokenizer.

    Args:
      texts: training texts (any iterable; consumed once).
      vocab_size: total size including the 3 special tokens and the 256 bytes (>= 259).
      min_frequency: a pair must occur this often to be merged.
      show_progress: show the trainer's progress bar.
    """
    minimum = len(SPECIAL_TOKENS) + NUM_BYTES
    if vocab_size < minimum:
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
            f"{minimum} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write `tokenizer` as JSON; `path` is a ``.json`` file or a directory. Returns the file."""
    path = Path(path)
    target = path if path.suffix == ".json" else path / TOKENIZER_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target))
    return target


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` file or a local Hugging Face directory.

    A directory with ``tokenizer.json`` is read directly; otherwise `transformers` converts what
    the directory holds (e.g. ``vocab.json`` + ``merges.txt``) with ``local_files_only=True``.
    A hub name is not accepted: download the tokenizer first and pass its directory.
    """
    path = Path(path)
    if path.is_file():
        return _from_file(path)
    if path.is_dir():
        if (path / TOKENIZER_FILE).is_file():
            return _from_file(path / TOKENIZER_FILE)
        return _from_transformers(path)
    raise TokenizerError(
        f"tokenizer path {str(path)!r} does not exist; pass a tokenizer.json file or a local "
        "Hugging Face tokenizer directory (hub names are not downloaded)"
    )


def _from_file(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception for malformed JSON
        raise TokenizerError(f"cannot load tokenizer file {str(path)!r}: {e}") from e


def _from_transformers(path: Path) -> Tokenizer:
    from transformers import AutoTokenizer  # slow import; only needed for this fallback

    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types (OSError, ValueError, KeyError, ...)
        raise TokenizerError(
            f"no loadable tokenizer in directory {str(path)!r}: it has no {TOKENIZER_FILE} and "
            f"transformers could not load it ({type(e).__name__}: {e})"
        ) from e
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise TokenizerError(
            f"the tokenizer in {str(path)!r} has no fast (Rust) backend; convert it to "
            f"{TOKENIZER_FILE} with transformers and pass that file"
        )
    return backend


@dataclasses.dataclass(frozen=True)
class TokenizerArgs:
    """``config.corpus.tokenizer``: where the corpus's tokenizer comes from.

    Attributes:
      train: train a byte-level BPE of `vocab_size` ids on the corpus; else load `path` (a
        tokenizer.json or a directory holding one, e.g. a Hugging Face checkpoint's).
      bos_token, eos_token, pad_token: the special tokens' names ("" = found by common names).
    """

    train: bool = True
    vocab_size: int = 512
    path: str = ""
    bos_token: str = ""
    eos_token: str = ""
    pad_token: str = ""


def tokenizer_info(
    tokenizer: Tokenizer,
    pad_token: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_bos: bool = True,
    add_eos: bool = True,
) -> TokenizerInfo:
    """Find the pad/bos/eos ids of `tokenizer`, by the given names or by common names.

    Fallbacks (for tokenizers such as GPT-2 that define fewer special tokens): a missing BOS
    reuses EOS (GPT-2's own convention), a missing PAD reuses EOS, then BOS, then id 0 (pad
    positions are always masked, see `TokenizerInfo`). A token that is added (`add_bos`,
    `add_eos`) must exist.
    """
    eos_id = _find_id(tokenizer, eos_token, EOS_CANDIDATES)
    bos_id = _find_id(tokenizer, bos_token, BOS_CANDIDATES)
    bos_id = eos_id if bos_id is None else bos_id
    checks = ((add_eos, eos_id, "end-of-document", "eos_token"),
              (add_bos, bos_id, "beginning-of-document", "bos_token"))  # fmt: skip
    for wanted, found, what, field in checks:
        if wanted and found is None:
            raise TokenizerError(
                f"tokenizer has no {what} token among {EOS_CANDIDATES + BOS_CANDIDATES}; name "
                f"it with config.corpus.tokenizer.{field}, or set config.corpus.add_"
                f"{field[:3]}=False"
            )
    pad_id = _find_id(tokenizer, pad_token, PAD_CANDIDATES)
    fallback = next((i for i in (eos_id, bos_id) if i is not None), 0)
    return TokenizerInfo(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        pad_id=fallback if pad_id is None else pad_id,
        bos_id=fallback if bos_id is None else bos_id,
        eos_id=fallback if eos_id is None else eos_id,
        add_bos=add_bos,
        add_eos=add_eos,
    )


def read_tokenizer_info(path: str | Path, tokenizer: Tokenizer) -> TokenizerInfo:
    """The TokenizerInfo the corpus stage wrote to `path` (``corpus/tokenizer_info.json``); for
    a workdir written before that file, `tokenizer_info(tokenizer)` (BOS and EOS)."""
    path = Path(path)
    if path.is_file():
        return TokenizerInfo.from_json(json.loads(path.read_text()))
    return tokenizer_info(tokenizer)


def _find_id(tokenizer: Tokenizer, name: str | None, candidates: tuple[str, ...]) -> int | None:
    """The id of `name` (which must exist) or of the first candidate that exists."""
    if name is not None:
        token_id = tokenizer.token_to_id(name)
        if token_id is None:
            raise TokenizerError(f"token {name!r} is not in the tokenizer's vocabulary")
        return token_id
    for candidate in candidates:
        token_id = tokenizer.token_to_id(candidate)
        if token_id is not None:
            return token_id
    return None


def text_only(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of `tokenizer` that encodes special-token strings found in text as plain text.

    A document that happens to contain ``"<|eos|>"`` must not end early or inject a control
    token; the copy leaves the caller's tokenizer untouched.
    """
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.encode_special_tokens = True
    return copy
