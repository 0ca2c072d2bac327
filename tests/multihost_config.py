"""The multi-process tests' config (tests/test_multihost.py): configs/demo.py:smoke with only the
small model, trained for 10 steps, whose factors and scores run in float64 on batches of 32 rows,
without the full-rank re-scoring of the top documents (the same scoring pass again).

    python experiments/run.py --config=tests/multihost_config.py --workdir=/tmp/mh
"""

import importlib.util
from pathlib import Path

from ml_collections import ConfigDict


def get_config(arg: str | None = None) -> ConfigDict:
    del arg
    path = Path(__file__).resolve().parents[1] / "configs" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo_config", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = demo.get_config("smoke")
    with config.unlocked():
        del config.models["large"]
        config.param_dtype = "float64"  # with JAX_ENABLE_X64=1: float64 factors and scores
        config.models.small.train.steps = 10
        config.factors.batch_size = config.scores.scoring.batch_size = 32
        config.scores.rescore_top_k = 0
    return config
