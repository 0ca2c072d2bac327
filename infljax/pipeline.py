"""The stage registry: each stage is `fn(config, workdir)`, run in `STAGE_ORDER`.

A stage module (``infljax/stages/<name>.py``) turns its config section into typed arguments,
calls the pure library functions and handles disk, logging and progress. `experiments/run.py`
runs every registered stage the config enables; each stage skips itself when its outputs exist
with the same arguments (see `infljax.checkpoints`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
from absl import logging
from ml_collections import ConfigDict

from infljax.multihost import on_main, process_count
from infljax.workdir import local_workdir

StageFn = Callable[[ConfigDict, Path], None]
CheckFn = Callable[[ConfigDict], None]

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
_STAGES: dict[str, StageFn] = {}
_CHECKS: dict[str, CheckFn] = {}


class ConfigError(ValueError):
    """A config value a stage refuses, found before any stage runs."""


# How a stage runs when several processes take part (DESIGN §7): on every process, each with its
# share of every batch and writing through process 0 (`infljax.multihost.on_main`), or on
# process 0 alone while the others wait (host work; models small enough for its first device).
EVERY_PROCESS = frozenset({"pretrain", "factors", "scores", "baselines"})
MAIN_PROCESS = frozenset({"world", "corpus", "queries", "analysis", "report"})


def stage(name: str, check: CheckFn | None = None) -> Callable[[StageFn], StageFn]:
    """Register `fn` as the stage `name` (one of STAGE_ORDER). `check(config)` builds the
    stage's typed arguments (raising on an invalid value) without doing any work: it runs for
    every wanted stage before the first one starts."""
    if name not in STAGE_ORDER:
        raise ValueError(f"unknown stage {name!r}; stages are {STAGE_ORDER}")

    def register(fn: StageFn) -> StageFn:
        _STAGES[name] = fn
        if check is not None:
            _CHECKS[name] = check
        return fn

    return register


def registered_stages() -> list[str]:
    from infljax.stages import load_builtin

    load_builtin()
    return [name for name in STAGE_ORDER if name in _STAGES]


def run_stages(config: ConfigDict, workdir: str | Path, only: list[str] | None = None) -> None:
    """Run the enabled stages in order. `only` restricts to named stages (validated).

    Float32 matrix products run at ``config.matmul_precision`` (default "highest": true float32;
    JAX's own default is TF32 on recent NVIDIA GPUs and one bfloat16 pass on TPUs)."""
    workdir = local_workdir(workdir)
    available = registered_stages()
    wanted = list(config.stages) if only is None else only
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; available: {available}")
    if process_count() > 1:
        _check_multiprocess(wanted)
    check_config(config, wanted)
    workdir.mkdir(parents=True, exist_ok=True)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    on_main((workdir / "config.json").write_text, text)
    with jax.default_matmul_precision(config.get("matmul_precision", "highest")):
        for name in available:
            if name in wanted:
                logging.info("stage %s", name)
                if name in MAIN_PROCESS:
                    on_main(_STAGES[name], config, workdir)
                else:
                    _STAGES[name](config, workdir)


def check_config(config: ConfigDict, wanted: list[str]) -> None:
    """Every wanted stage's `check`: raises ConfigError naming the stage and the value."""
    for name in STAGE_ORDER:
        if name in wanted and name in _CHECKS:
            try:
                _CHECKS[name](config)
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


def write_json(path: str | Path, obj) -> None:
    """Write `obj` as JSON (process 0 writes; every process waits for it)."""
    on_main(_write_json, Path(path), obj)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))
