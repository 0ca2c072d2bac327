"""Built-in stages, one module each, named as in `infljax.pipeline.STAGE_ORDER`;
`load_builtin()` imports them so they register."""

import importlib


def load_builtin() -> None:
    from infljax.pipeline import STAGE_ORDER

    for name in STAGE_ORDER:
        importlib.import_module(f"infljax.stages.{name}")
