"""Validation of the embedded study: do the scores predict retraining? (`infljax.stages.validate`)

    python experiments/validate.py --workdir=runs/validate                      (~45 min, 2 CPUs)
    python experiments/validate.py --config=configs/validate.py:smoke --workdir=/tmp/v  (tests)

The demo's world, corpus and small model (configs/demo.py), the influence scores, every baseline
(K-FAC, gradient dot product and cosine, TF-IDF, random), then the `validate` stage: LDS over
`num_subsets` retrainings on random halves of the training documents, and counterfactual
removal of each method's top-k documents for a few factual and reasoning queries (one
retraining each), then the analysis and the report with a validation section.

Every retraining is cached under ``validate/<model>/units/``; an interrupted run resumes, and
several processes may run the same command on one workdir to share the retrainings.
"""

import importlib.util
from pathlib import Path

from ml_collections import ConfigDict

from infljax.pipeline import STAGE_ORDER

VARIANTS = ("", "smoke")


def _demo():
    path = Path(__file__).resolve().parent / "demo.py"
    spec = importlib.util.spec_from_file_location("configs_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str | None = None) -> ConfigDict:
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"configs/validate.py: unknown variant {arg!r}; valid: {VARIANTS}")
    smoke = arg == "smoke"
    config = _demo().get_config(arg)
    config.unlock()
    config.stages = STAGE_ORDER  # the demo's stages plus validate
    config.models = ConfigDict({"small": config.models.small})
    config.baselines.methods = ("tfidf", "random", "grad_dot", "grad_cosine", "kfac")
    config.validation = validation(smoke)
    config.lock()
    return config


def validation(smoke: bool) -> ConfigDict:
    """`infljax.stages.validate.ValidateArgs`; sized so the full run takes ~45 min on 2 CPUs
    (one retraining of the small model ≈ 48 s): at most 12 + 6 x 6 = 48 retrainings."""
    return ConfigDict(
        {
            "model": "small",
            "methods": ("ekfac", "kfac", "grad_dot", "grad_cosine", "tfidf", "random"),
            "num_subsets": 3 if smoke else 12,  # LDS: retrainings on random subsets
            "fraction": 0.5,  # LDS: share of the training documents each subset keeps
            "seed": 0,
            "k": 2 if smoke else 10,  # counterfactual: top documents removed per query
            "factual_queries": 1 if smoke else 3,
            "reasoning_queries": 1 if smoke else 3,
        }
    )
