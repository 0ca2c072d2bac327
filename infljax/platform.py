"""Process-level set-up shared by every launcher: logging, float64 where asked, quiet libraries."""

from __future__ import annotations

import logging as py_logging
import os

import jax
from absl import logging


def setup(enable_x64: bool = False) -> None:
    """Call once at launcher start, before any JAX computation."""
    logging.set_verbosity(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("orbax", "jax._src.xla_bridge"):
        py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
    if enable_x64:
        jax.config.update("jax_enable_x64", True)
    logging.info(
        "JAX %s on %s (%d devices)", jax.__version__, jax.default_backend(), jax.device_count()
    )
