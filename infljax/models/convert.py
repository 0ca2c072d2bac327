"""Load a local Hugging Face checkpoint into the infljax `Decoder` (GPT-2, Llama, GPT-NeoX, Cohere).

    model = load_hf("path/to/hf_dir", ConvertArgs(dtype="bfloat16"), mesh)

The directory holds ``config.json`` (read with ``transformers.AutoConfig``, offline) and
``model.safetensors`` or a sharded ``model.safetensors.index.json``. Tensors are read with
`safetensors` (no torch) one at a time, reshaped by the architecture's thin converter
(`infljax.models.architectures`), cast, checked and placed straight into their sharding on the
mesh, so host memory holds the converted model once plus one tensor in flight. The tokenizer is
the directory's own (`infljax.data.tokenization.load_tokenizer(path)`).

`convert_checkpoint` writes the result as an infljax model directory (``model.json`` +
``params/``), with the skip/refuse/resume bookkeeping of a stage; the pretrain stage calls it for
models whose config section sets ``checkpoint``, so every later stage reads the model unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from infljax.distributed import PLACEMENTS, param_spec
from infljax.models.architectures import (
    ARCHITECTURES,
    Architecture,
    CheckpointError,
    Source,
    architecture,
)
from infljax.models.capture import at_path, path_keys
from infljax.models.decoder import Decoder, DecoderConfig, num_params

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "check_corpus_fits",
    "ConvertArgs",
    "convert_checkpoint",
    "decoder_config",
    "load_hf",
    "read_hf_config",
]

DTYPES = ("float32", "bfloat16", "float64")
SHARDS = PLACEMENTS
FLOAT_TENSORS = ("F64", "F32", "F16", "BF16")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_LISTED = 20  # names shown in an error before "... and N more"


@dataclasses.dataclass(frozen=True)
class ConvertArgs:
    """Attributes:
    dtype: parameter dtype of the converted model (float32 or bfloat16; float64 for tests).
    shard: "replicated" (every device holds every tensor) or "fsdp" (each tensor split over the
      mesh's ``data`` axis along its largest divisible dimension, `infljax.distributed.Placement`).
    max_length: longest sequence the model accepts; 0 = the checkpoint's
      ``max_position_embeddings``. Lower it to bound generation buffers (GPT-2's learned
      positions are cut to it).
    """

    dtype: str = "float32"
    shard: str = "replicated"
    max_length: int = 0

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise CheckpointError(
                f"ConvertArgs.dtype={self.dtype!r} cannot hold a checkpoint's weights; "
                f"valid: {DTYPES}"
            )
        if self.shard not in SHARDS:
            raise CheckpointError(f"ConvertArgs.shard={self.shard!r}; valid: {SHARDS}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise CheckpointError(f"ConvertArgs.max_length must be an integer: {self.max_length!r}")
        if self.max_length < 0:
            raise CheckpointError(f"ConvertArgs.max_length must be >= 0, got {self.max_length}")


def read_hf_config(path: str | Path):
    """The checkpoint's ``transformers`` config (offline). Raises CheckpointError if the
    directory, its config.json or a supported ``model_type`` is missing."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a directory; pass a local Hugging Face model "
            "directory (download it first: hub names are not fetched)"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(f"no config.json in checkpoint directory {str(path)!r}")
    raw = json.loads((path / "config.json").read_text())
    architecture(raw.get("model_type", "<none>"))  # an unsupported model_type lists the valid
    from transformers import AutoConfig  # slow import; only needed here

    return AutoConfig.from_pretrained(str(path), local_files_only=True)


def decoder_config(hf, args: ConvertArgs = ConvertArgs()) -> DecoderConfig:
    """The `DecoderConfig` of a transformers config (see `infljax.models.architectures`)."""
    options = architecture(hf.model_type).options(hf)
    limit = hf.max_position_embeddings
    if args.max_length > limit:
        raise CheckpointError(
            f"max_length={args.max_length} exceeds the checkpoint's max_position_embeddings="
            f"{limit}; use at most {limit} (or 0 for that)"
        )
    max_length = args.max_length or limit
    return DecoderConfig(max_length=max_length, param_dtype=args.dtype, **options)


class SafetensorsReader:
    """Tensors of a checkpoint directory, read one at a time (as numpy, on the host).

    bfloat16 tensors (the format most large checkpoints ship in) go through safetensors' flax
    backend on the CPU device, because its numpy backend has no bfloat16."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.files = _weight_files(self.directory)
        self._stack = contextlib.ExitStack()
        self._handles: dict[tuple[Path, str], object] = {}

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def names(self) -> set[str]:
        return set(self.files)

    def _handle(self, name: str, framework: str):
        from safetensors import safe_open

        key = (self.files[name], framework)
        if key not in self._handles:
            try:  # pread, not mmap: pages of the file do not stay in this process's memory
                opened = safe_open(str(key[0]), framework, backend="pread")
            except TypeError:  # safetensors < 0.8 has only mmap
                opened = safe_open(str(key[0]), framework)
            self._handles[key] = self._stack.enter_context(opened)
        return self._handles[key]

    def dtype(self, name: str) -> str:
        return self._handle(name, "numpy").get_slice(name).get_dtype()

    def get(self, name: str) -> np.ndarray:
        """The tensor `name`; refused (CheckpointError) when it holds NaN or inf."""
        if self.dtype(name) != "BF16":
            tensor = self._handle(name, "numpy").get_tensor(name)
        else:
            with jax.default_device(jax.devices("cpu")[0]):  # numpy has no bfloat16
                tensor = np.asarray(self._handle(name, "flax").get_tensor(name))
        if tensor.dtype.kind not in "iub" and not np.isfinite(tensor).all():
            raise CheckpointError(
                f"tensor {name!r} in {self.files[name]} holds NaN or inf; the checkpoint is "
                "damaged (or was saved after a diverged step): refusing to convert it"
            )
        return tensor


def _weight_files(directory: Path) -> dict[str, Path]:
    """{tensor name: file} from model.safetensors or the sharded index."""
    from safetensors import safe_open

    if (directory / SINGLE_FILE).is_file():
        with safe_open(str(directory / SINGLE_FILE), "numpy") as f:
            return {name: directory / SINGLE_FILE for name in f.keys()}
    if (directory / INDEX_FILE).is_file():
        weight_map = json.loads((directory / INDEX_FILE).read_text()).get("weight_map", {})
        files = {name: directory / file for name, file in weight_map.items()}
        absent = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if absent:
            raise CheckpointError(f"{INDEX_FILE} in {str(directory)!r} names missing {absent}")
        return files
    present = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(
        f"no weights in checkpoint directory {str(directory)!r}: expected {SINGLE_FILE} or "
        f"{INDEX_FILE} (it holds {present}); convert .bin/.pt weights to safetensors with "
        "transformers (save_pretrained) first"
    )


def _listing(names) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def check_names(arch: Architecture, sources: dict[str, Source], names: set[str]) -> None:
    """Every tensor the decoder needs is present and every present tensor is used (or a known
    buffer); otherwise a CheckpointError lists the missing and unexpected names."""
    used = {s.name for s in sources.values()}
    missing = used - names
    unexpected = {n for n in names - used if not any(re.fullmatch(pat, n) for pat in arch.ignore)}
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {_listing(unexpected)}")
    if problems:
        raise CheckpointError(
            "the checkpoint's tensors do not match its config.json: "
            + "; ".join(problems)
            + " (is config.json from the same model? are these weights quantised or adapters?)"
        )


def _read(reader: SafetensorsReader, source: Source, like, target: str) -> np.ndarray:
    """One decoder parameter: read, transform, check shape, cast (checking it still fits)."""
    stored = reader.dtype(source.name)
    if stored not in FLOAT_TENSORS:
        raise CheckpointError(
            f"tensor {source.name!r} is {stored}, not a float: quantised checkpoints are not "
            f"supported; convert from the unquantised weights ({FLOAT_TENSORS})"
        )
    x = source.transform(reader.get(source.name))
    if x.shape != like.shape:
        raise CheckpointError(
            f"tensor {source.name!r} gives {target} shape {x.shape}, but config.json implies "
            f"{like.shape}"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        y = x.astype(like.dtype, copy=False)
    if not np.all(np.isfinite(y)) and np.all(np.isfinite(x)):
        raise CheckpointError(
            f"tensor {source.name!r} overflows {like.dtype} (largest |value| "
            f"{float(np.max(np.abs(x.astype(np.float64)))):.3g}); convert to float32"
        )
    return y


def load_hf(
    path: str | Path, args: ConvertArgs = ConvertArgs(), mesh: Mesh | None = None
) -> Decoder:
    """The checkpoint in local directory `path` as a `Decoder` with parameters placed on `mesh`
    (default: the first device). Raises CheckpointError with what to fix."""
    path = Path(path)
    hf = read_hf_config(path)
    arch = architecture(hf.model_type)
    cfg = decoder_config(hf, args)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
    targets = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}
    pure = nnx.to_pure_dict(state)
    with SafetensorsReader(path) as reader:
        sources = arch.tensors(cfg, hf, reader.names)
        if set(sources) != set(targets):  # a converter bug, not a user error
            raise AssertionError(f"{hf.model_type}: {sorted(set(sources) ^ set(targets))}")
        check_names(arch, sources, reader.names)
        for target, like in targets.items():
            x = _read(reader, sources[target], like, target)
            where = (
                None if mesh is None else NamedSharding(mesh, param_spec(x.shape, mesh, args.shard))
            )
            _assign(pure, target, jax.device_put(x, where))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def _assign(tree: dict, dotted: str, value) -> None:
    keys = path_keys(dotted)
    at_path(tree, keys[:-1])[keys[-1]] = value


def check_corpus_fits(source: str | Path, args: ConvertArgs, tokens: np.ndarray) -> None:
    """Raise (before converting anything) when corpus rows `tokens` [N, T] are longer than the
    checkpoint's context or hold ids beyond its vocabulary (another tokenizer's corpus)."""
    cfg = decoder_config(read_hf_config(source), args)
    if tokens.shape[1] > cfg.max_length:
        raise CheckpointError(
            f"corpus rows are {tokens.shape[1]} tokens but the context of {str(source)!r} is "
            f"{cfg.max_length}; lower config.corpus.max_length"
        )
    top = int(tokens.max(initial=0))
    if top >= cfg.vocab_size:
        raise CheckpointError(
            f"the corpus has token id {top} but {str(source)!r} has vocab_size "
            f"{cfg.vocab_size}; tokenise with its tokenizer (config.corpus.tokenizer.path)"
        )


def convert_checkpoint(
    source: str | Path,
    out: str | Path,
    args: ConvertArgs = ConvertArgs(),
    mesh: Mesh | None = None,
    *,
    overwrite: bool = False,
) -> bool:
    """Convert the checkpoint in `source` into the infljax model directory `out` (``model.json``,
    ``params/``, ``metrics.json``). Skips when `out` holds this conversion already (returns
    False); refuses other arguments unless `overwrite` (`infljax.checkpoints`)."""
    from infljax.checkpoints import begin_stage, finish_stage
    from infljax.models.io import save_model

    out = Path(out)
    record = {"checkpoint": str(Path(source).resolve()), "convert": dataclasses.asdict(args)}
    if begin_stage(out, record, inputs={"checkpoint": source}, overwrite=overwrite, resumes=False):
        return False
    start = time.perf_counter()
    model = load_hf(source, args, mesh)
    save_model(out, model)
    metrics = {
        "num_params": num_params(model),
        "checkpoint": record["checkpoint"],
        "model_type": read_hf_config(source).model_type,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    finish_stage(out)
    return True
