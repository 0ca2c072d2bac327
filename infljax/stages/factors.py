"""Stage `factors`: fit EK-FAC factors for every trained model in the config.

Per model, one `infljax.curvature.fit.FactorFit` into ``<workdir>/factors/<name>/`` (the files
and the grouping of layers are described there); a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
from absl import logging
from ml_collections import ConfigDict

from infljax.config import mesh_args, settings
from infljax.curvature.fit import FactorFit, FactorLayers, FitPlan, check_batch, factors_section
from infljax.curvature.passes import FactorArgs
from infljax.data.corpus import load_corpus
from infljax.distributed import MeshArgs, make_placement
from infljax.models.capture import select_layers
from infljax.models.io import CONFIG_FILE, load_model
from infljax.workdir import corpus_dir, factors_dir, model_dir, recorded_args


def stage_args(config: ConfigDict) -> tuple[FactorArgs, FitPlan, FactorLayers, MeshArgs]:
    """``config.factors`` (the passes' arguments, the plan, the layers) and ``config.mesh``,
    typed and checked: also the batch against the devices."""
    args, plan, tracked = factors_section(config.factors)
    mesh = mesh_args(config)
    check_batch(plan, mesh.data_size(jax.device_count()))
    return args, plan, tracked, mesh


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    stage_args(config)


def run(config: ConfigDict, workdir: Path) -> None:
    args, plan, tracked, mesh = stage_args(config)
    dtype = settings(config).param_dtype
    corpus = load_corpus(corpus_dir(workdir))
    placement = make_placement(mesh)
    for name in config.models:
        directory = model_dir(workdir, name)
        if not (directory / CONFIG_FILE).exists():
            logging.warning(
                "factors %s: no trained model in %s (run pretrain); skipped", name, directory
            )
            continue
        model = load_model(directory, dtype or None)
        layers = select_layers(model, tracked.layers)
        FactorFit(
            name,
            model,
            tuple(layers),
            corpus,
            plan,
            args,
            placement,
            factors_dir(workdir, name),
            overwrite=settings(config).overwrite,
            model_record=model_record(directory) | ({"param_dtype": dtype} if dtype else {}),
            inputs={"model": directory, "corpus": corpus_dir(workdir)},
        ).run()


def model_record(directory: Path) -> dict:
    """What identifies a model directory's parameters: its config and its pretrain arguments."""
    record = {"config": json.loads((Path(directory) / CONFIG_FILE).read_text())}
    if (pretrain := recorded_args(directory)) is not None:
        record["pretrain"] = pretrain
    return record
