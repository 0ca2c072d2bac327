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

from absl import logging
from ml_collections import ConfigDict

StageFn = Callable[[ConfigDict, Path], None]

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


def stage(name: str) -> Callable[[StageFn], StageFn]:
    """Register `fn` as the stage `name` (one of STAGE_ORDER)."""
    if name not in STAGE_ORDER:
        raise ValueError(f"unknown stage {name!r}; stages are {STAGE_ORDER}")

    def register(fn: StageFn) -> StageFn:
        _STAGES[name] = fn
        return fn

    return register


def registered_stages() -> list[str]:
    from infljax.stages import load_builtin

    load_builtin()
    return [name for name in STAGE_ORDER if name in _STAGES]


def run_stages(config: ConfigDict, workdir: str | Path, only: list[str] | None = None) -> None:
    """Run the enabled stages in order. `only` restricts to named stages (validated)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    available = registered_stages()
    wanted = list(config.stages) if only is None else only
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; available: {available}")
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    for name in available:
        if name in wanted:
            logging.info("stage %s", name)
            _STAGES[name](config, workdir)


def write_json(path: str | Path, obj) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True))
