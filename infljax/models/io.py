"""Saving and loading a decoder: ``model.json`` (its `DecoderConfig`) + ``params/`` (orbax)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
from flax import nnx

from infljax.checkpoints import restore_pytree, save_pytree
from infljax.models.decoder import Decoder, DecoderConfig
from infljax.multihost import on_main

CONFIG_FILE = "model.json"
PARAMS_DIR = "params"


def save_model(directory: str | Path, model: Decoder) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_pytree(directory / PARAMS_DIR, nnx.state(model, nnx.Param))
    text = json.dumps(dataclasses.asdict(model.cfg), indent=2)
    on_main((directory / CONFIG_FILE).write_text, text)


def read_model_config(directory: str | Path) -> DecoderConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not an infljax model directory")
    return DecoderConfig(**json.loads(path.read_text()))


def load_model(directory: str | Path, param_dtype: str | None = None) -> Decoder:
    """The decoder saved in `directory`, optionally cast to another parameter dtype."""
    cfg = read_model_config(directory)
    if param_dtype is not None:
        cfg = dataclasses.replace(cfg, param_dtype=param_dtype)
    abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, like = nnx.split(abstract)
    params = restore_pytree(Path(directory) / PARAMS_DIR, like)
    params = jax.tree.map(lambda x: x.astype(cfg.param_dtype), params)
    return nnx.merge(graphdef, params)
