"""Validation of the embedded study: do the scores predict retraining? (`infljax.stages.validate`)

    python experiments/validate.py --workdir=runs/validate                      (~60 min, 2 CPUs)
    python experiments/validate.py --config=configs/validate.py:smoke --workdir=/tmp/v  (tests)

The demo's world, corpus and small model (configs/demo.py), the influence scores, every baseline
(K-FAC, gradient dot product and cosine, TF-IDF, random), then the `validate` stage: the model
retrained on `num_subsets` random halves of the training documents from `seeds` seeds each,
the training-aware methods (multi-checkpoint and seed-ensemble EK-FAC, exact metagradients),
and the LDS of every method with bootstrap intervals and the ceiling; then the analysis and the
report with a validation section.

Retrainings are cached in chunks under ``retrainings/<model>/``; an interrupted run resumes,
and several processes may run the same command on one workdir to share the chunks.
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
    """`infljax.validation.run.ValidateArgs`, sized for ~60 min on 2 CPU cores: 100 subsets x 2
    seeds = 200 retrainings of the small model (300 steps; 8 per call, split over one device
    per core), EK-FAC at 3 checkpoints and over 3 seeds, metagradients of 8 queries, and the
    single-model protocol: 16 subsets dropping 5% at weight reductions 0.01, 0.1 and 1 (48
    retrainings; the linearity curve)."""
    return ConfigDict(
        {
            "model": "small",
            "methods": ("ekfac", "kfac", "grad_dot", "grad_cosine", "tfidf", "random"),
            "num_subsets": 3 if smoke else 100,  # LDS: random subsets of the training documents
            "fraction": 0.5,  # share of the training documents each subset keeps
            "seed": 0,  # of the subsets and the bootstrap
            "seeds": 2,  # retrainings per subset (>= 2: the ceiling)
            "fixed_init": False,  # True: every retraining from the original initialisation
            "models_per_call": 4 if smoke else 8,  # retrainings trained together
            "checkpoints": 2 if smoke else 3,  # multi-checkpoint EK-FAC (0: off)
            "ensemble": 2 if smoke else 3,  # seed-ensemble EK-FAC (0: off)
            "metagradient_queries": 2 if smoke else 8,  # exact metagradients (0: off)
            "metagradient_chunk": 2 if smoke else 8,  # queries per backward pass
            "bootstrap": 50 if smoke else 1000,
            # the single-model protocol: retrained from the original seed alone, dropping 5%
            # of the documents, or lowering their weight by each scale (the linearity curve)
            "single_model_subsets": 3 if smoke else 16,
            "single_model_fraction": 0.95,
            "single_model_scales": (0.1, 1.0) if smoke else (0.01, 0.1, 1.0),
        }
    )
