"""The stage registry: the stages in `STAGE_ORDER`, one module each, ``infljax.stages.<name>``.

A stage module defines `run(config, workdir)` and, when its config section can be invalid,
`check(config)`, which builds the stage's typed arguments (raising on an invalid value) without
doing any work. A stage module turns its config section into typed arguments, calls the library
(which handles disk, logging and progress) and never imports this module: the registry imports
the stages, not the other way round. `experiments/run.py` runs every stage the config enables;
each stage skips itself when its outputs exist with the same arguments (see
`infljax.checkpoints`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import jax
from absl import logging
from ml_collections import ConfigDict

from infljax.config import settings
from infljax.multihost import on_main, process_count
from infljax.workdir import local_workdir

STAGE_ORDER = (
    "world",
    "corpus",
    "pretrain",
    "factors",
    "queries",
    "scores",
    "baselines",
    "validate",
    "analysis",
    "report",
)


class ConfigError(ValueError):
    """A config value a stage refuses, found before any stage runs."""


# How a stage runs when several processes take part (DESIGN §7): on every process, each with its
# share of every batch and writing through process 0 (`infljax.multihost.on_main`), or on
# process 0 alone while the others wait (host work; models small enough for its first device).
EVERY_PROCESS = frozenset({"pretrain", "factors", "scores", "baselines"})
MAIN_PROCESS = frozenset({"world", "corpus", "queries", "analysis", "report"})


def stage_module(name: str) -> ModuleType:
    """The module of stage `name`: ``infljax.stages.<name>``, with `run` and maybe `check`."""
    if name not in STAGE_ORDER:
        raise ValueError(f"unknown stage {name!r}; stages are {STAGE_ORDER}")
    return importlib.import_module(f"infljax.stages.{name}")


def run_stages(config: ConfigDict, workdir: str | Path, only: list[str] | None = None) -> None:
    """Run the enabled stages in order. `only` restricts to named stages (validated).

    Float32 matrix products run at ``config.matmul_precision`` (default "highest": true float32;
    JAX's own default is TF32 on recent NVIDIA GPUs and one bfloat16 pass on TPUs)."""
    workdir = local_workdir(workdir)
    wanted = list(config.stages) if only is None else only
    unknown = [s for s in wanted if s not in STAGE_ORDER]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; available: {list(STAGE_ORDER)}")
    if process_count() > 1:
        _check_multiprocess(wanted)
    check_config(config, wanted)
    precision = settings(config).matmul_precision
    workdir.mkdir(parents=True, exist_ok=True)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    on_main((workdir / "config.json").write_text, text)
    with jax.default_matmul_precision(precision):
        for name in STAGE_ORDER:
            if name in wanted:
                logging.info("stage %s", name)
                run = stage_module(name).run
                if name in MAIN_PROCESS:
                    on_main(run, config, workdir)
                else:
                    run(config, workdir)


def check_config(config: ConfigDict, wanted: list[str]) -> None:
    """The top-level settings and every wanted stage's `check`: raises ConfigError naming the
    stage and the value."""
    try:
        settings(config)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    for name in STAGE_ORDER:
        check = getattr(stage_module(name), "check", None) if name in wanted else None
        if check is not None:
            try:
                check(config)
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise ConfigError(f"stage {name}: {error}") from error


def _check_multiprocess(wanted: list[str]) -> None:
    alone = [s for s in wanted if s not in EVERY_PROCESS | MAIN_PROCESS]
    if alone:
        others = [s for s in wanted if s not in alone]
        raise ValueError(
            f"stage(s) {alone} do not run on several processes yet: run them in a single "
            f"process (--stages={','.join(alone)}, in pipeline order with the others) and "
            f"only the others on several (--stages={','.join(others) or '...'})"
        )
