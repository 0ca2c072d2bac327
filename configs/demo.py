"""The embedded study: a procedural world, two tiny decoders trained on it, the whole pipeline.

    python experiments/run.py --config=configs/demo.py --workdir=runs/demo        (make demo)
    python experiments/run.py --config=configs/demo.py:smoke --workdir=/tmp/smoke  (tests)

Override any field on the command line, e.g. ``--config.models.small.train.steps=200``.
The two models play the roles of the reference study's 7B and 35B: same corpus, two sizes.
"""

from ml_collections import ConfigDict

VARIANTS = ("", "smoke")


def get_config(arg: str | None = None) -> ConfigDict:
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"configs/demo.py: unknown variant {arg!r}; valid: {VARIANTS}")
    smoke = arg == "smoke"
    config = ConfigDict()
    config.stages = ("world", "corpus", "pretrain")
    config.overwrite = False
    config.mesh = ConfigDict({"data": -1, "model": 1})
    config.world = world(smoke)
    config.corpus = corpus(smoke)
    config.models = ConfigDict({"small": small_model(smoke), "large": large_model(smoke)})
    config.lock()
    return config


def world(smoke: bool) -> ConfigDict:
    """Sizes of the procedural world (`infljax.data.world.WorldArgs`)."""
    return ConfigDict(
        {
            "seed": 0,
            "num_entities": 8 if smoke else 30,
            "fact_docs_per_fact": 2 if smoke else 4,
            "num_arithmetic": 6 if smoke else 40,
            "num_slope": 6 if smoke else 40,
            "num_linear": 6 if smoke else 40,
            "held_out_fraction": 0.5,
            "planted_answers_per_instance": 2,
            "planted_fraction": 0.5,
            "code_docs": 20 if smoke else 300,
            "math_docs": 20 if smoke else 300,
            "stackexchange_docs": 20 if smoke else 300,
            "web_docs": 20 if smoke else 300,
        }
    )


def corpus(smoke: bool) -> ConfigDict:
    """Reading and tokenising; an empty `path` means the world's generated corpus."""
    return ConfigDict(
        {
            "path": "",
            "on_bad": "skip",
            "max_length": 32 if smoke else 96,
            "packing": False,
            "tokenizer": {"train": True, "vocab_size": 300 if smoke else 512, "path": ""},
        }
    )


def _train(smoke: bool, steps: int, lr: float) -> dict:
    return {
        "steps": 20 if smoke else steps,
        "batch_size": 8 if smoke else 32,
        "learning_rate": lr,
        "warmup_steps": 2 if smoke else 100,
        "final_lr_fraction": 0.05,
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "seed": 0,
        "held_out_fraction": 0.05,
        "eval_every": 10 if smoke else 250,
        "checkpoint_every": 10 if smoke else 500,
    }


def small_model(smoke: bool) -> ConfigDict:
    model = {
        "d_model": 16 if smoke else 64,
        "num_layers": 2,
        "num_heads": 2,
        "d_ff": 32 if smoke else 256,
    }
    return ConfigDict({"checkpoint": "", "model": model, "train": _train(smoke, 1500, 1e-2)})


def large_model(smoke: bool) -> ConfigDict:
    model = {
        "d_model": 24 if smoke else 128,
        "num_layers": 2 if smoke else 3,
        "num_heads": 2 if smoke else 4,
        "d_ff": 48 if smoke else 512,
    }
    return ConfigDict({"checkpoint": "", "model": model, "train": _train(smoke, 1500, 5e-3)})
