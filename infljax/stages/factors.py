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

from infljax.curvature.fit import FactorFit, FitPlan, check_batch
from infljax.curvature.passes import FactorArgs
from infljax.data.corpus import load_corpus
from infljax.distributed import MeshArgs, make_placement
from infljax.models.capture import select_layers
from infljax.models.io import CONFIG_FILE, load_model
from infljax.workdir import corpus_dir, factors_dir, model_dir, recorded_args


def stage_args(config: ConfigDict) -> tuple[FactorArgs, FitPlan, MeshArgs]:
    """The stage's typed arguments (checked: also the batch against the devices)."""
    section = config.factors
    args = FactorArgs(fisher=section.fisher, seed=section.seed, lambda_chunk=section.lambda_chunk)
    mesh_args = MeshArgs(**config.mesh.to_dict())
    plan = FitPlan(
        num_documents=section.num_documents,
        batch_size=section.batch_size,
        partitions=section.partitions,
        layer_groups=section.layer_groups,
    )
    check_batch(plan, mesh_args.data_size(jax.device_count()))
    return args, plan, mesh_args


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    stage_args(config)


def run(config: ConfigDict, workdir: Path) -> None:
    args, plan, mesh_args = stage_args(config)
    corpus = load_corpus(corpus_dir(workdir))
    placement = make_placement(mesh_args)
    for name in config.models:
        directory = model_dir(workdir, name)
        if not (directory / CONFIG_FILE).exists():
            logging.warning(
                "factors %s: no trained model in %s (run pretrain); skipped", name, directory
            )
            continue
        dtype = config.get("param_dtype", "")
        model = load_model(directory, dtype or None)
        layers = select_layers(model, tuple(config.factors.layers))
        FactorFit(
            name,
            model,
            tuple(layers),
            corpus,
            plan,
            args,
            placement,
            factors_dir(workdir, name),
            overwrite=config.overwrite,
            model_record=model_record(directory) | ({"param_dtype": dtype} if dtype else {}),
            inputs={"model": directory, "corpus": corpus_dir(workdir)},
        ).run()


def model_record(directory: Path) -> dict:
    """What identifies a model directory's parameters: its config and its pretrain arguments."""
    record = {"config": json.loads((Path(directory) / CONFIG_FILE).read_text())}
    if (pretrain := recorded_args(directory)) is not None:
        record["pretrain"] = pretrain
    return record
