"""Built-in stages, one module each; `load_builtin()` imports them so they register."""

import importlib

BUILTIN = (
    "world",
    "corpus",
    "pretrain",
    "factors",
    "queries",
    "scores",
    "baselines",
    "analysis",
    "report",
)


def load_builtin() -> None:
    for name in BUILTIN:
        importlib.import_module(f"infljax.stages.{name}")
