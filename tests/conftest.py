"""Test set-up: 8 virtual CPU devices (multi-device tests) and float64 (exactness tests).

Both must be set before JAX initialises its backend, so they live here.
Tolerances used across the suite (float64 unless stated): exactness 1e-10 relative,
device/batch/partition invariance 1e-10 relative.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
