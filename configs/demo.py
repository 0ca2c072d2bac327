"""The embedded study: a procedural world, two tiny decoders trained on it, the whole pipeline.

    python experiments/run.py --config=configs/demo.py --workdir=runs/demo        (make demo)
    python experiments/run.py --config=configs/demo.py:smoke --workdir=/tmp/smoke  (tests)

Override any field on the command line, e.g. ``--config.models.small.train.steps=200``.
The two models play the roles of the reference study's 7B and 35B: same corpus, two sizes.
"""

from ml_collections import ConfigDict, config_dict

from infljax.config import section_of
from infljax.influence.run import ScoresArgs
from infljax.pipeline import STAGE_ORDER

VARIANTS = ("", "smoke")


def get_config(arg: str | None = None) -> ConfigDict:
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"configs/demo.py: unknown variant {arg!r}; valid: {VARIANTS}")
    smoke = arg == "smoke"
    config = ConfigDict()
    # every stage (world → … → report) but validate, which retrains (configs/validate.py)
    config.stages = tuple(s for s in STAGE_ORDER if s != "validate")
    config.overwrite = False
    config.mesh = ConfigDict({"data": -1, "model": 1, "params": "replicated"})  # or "fsdp"
    # The dtype factors and scores run the model in: "" = as stored, "bfloat16" = mixed precision
    # (bfloat16 parameters and activations; float32 statistics; float64 eigendecompositions).
    config.param_dtype = ""
    # float32 matrix products: "highest" = true float32; "default" = the backend's fast mode
    # (TF32 on recent NVIDIA GPUs, one bfloat16 pass on TPUs; CPUs are float32 either way).
    config.matmul_precision = "highest"
    config.world = world(smoke)
    config.corpus = corpus(smoke)
    config.models = ConfigDict({"small": small_model(smoke), "large": large_model(smoke)})
    config.factors = factors(smoke)
    config.queries = queries(smoke)
    config.scores = scores(smoke)
    config.baselines = baselines()
    config.analysis = analysis(smoke)
    config.lock()
    return config


def world(smoke: bool) -> ConfigDict:
    """Sizes of the procedural world (`infljax.data.world.WorldArgs`)."""
    return ConfigDict(
        {
            "seed": 0,
            "num_entities": 8 if smoke else 12,
            "fact_docs_per_fact": 2 if smoke else 10,
            "num_arithmetic": 6 if smoke else 40,
            "num_slope": 6 if smoke else 40,
            "num_linear": 6 if smoke else 40,
            "held_out_fraction": 0.5,
            "planted_answers_per_instance": 2,
            "planted_fraction": 0.5,
            "code_docs": 20 if smoke else 200,
            "math_docs": 20 if smoke else 200,
            "stackexchange_docs": 20 if smoke else 200,
            "web_docs": 20 if smoke else 200,
        }
    )


def corpus(smoke: bool) -> ConfigDict:
    """Reading and tokenising; an empty `path` means the world's generated corpus.

    ``add_bos`` / ``add_eos``: wrap every document in BOS / EOS (unset: the tokenizer's own
    convention, `infljax.data.tokenization.wrapping`; a tokenizer trained here: both).
    ``tokenizer.{bos,eos,pad}_token``: name the special tokens ("" = found by common names)."""
    return ConfigDict(
        {
            "path": "",
            "on_bad": "skip",
            "max_length": 160,
            "packing": False,
            "add_bos": config_dict.placeholder(bool),
            "add_eos": config_dict.placeholder(bool),
            "tokenizer": special_tokens(
                {"train": True, "vocab_size": 300 if smoke else 512, "path": ""}
            ),
        }
    )


def special_tokens(section: dict) -> dict:
    """A tokenizer section with its special-token names ("" = found by common names)."""
    return section | {"bos_token": "", "eos_token": "", "pad_token": ""}


def factors(smoke: bool) -> ConfigDict:
    """EK-FAC fitting (`infljax.curvature.FactorArgs` + `infljax.stages.factors.FitPlan`).

    batch_size must be divisible by the mesh's data axis; results do not depend on batch_size,
    partitions, layer_groups or the number of devices (only on the rows fitted, the labels and
    the seed). layer_groups > 1 runs both passes once per group of tracked layers, so a step
    holds 1/layer_groups of the factor state (for models whose factors outgrow a device).
    """
    return ConfigDict(
        {
            "layers": (r"blocks\.\d+\.mlp\..*",),
            "fisher": "true",  # "true": labels sampled from the model; "empirical": real labels
            "num_documents": 0,  # 0 = every corpus document
            "batch_size": 8 if smoke else 64,
            "lambda_chunk": 0,  # sequences per per-sequence-gradient chunk; 0 = auto
            "partitions": 2 if smoke else 4,  # resume granularity
            # contiguous groups of tracked layers, each fitted in its own passes (less memory)
            "layer_groups": 1,
            "seed": 0,
        }
    )


def queries(smoke: bool) -> ConfigDict:
    """The study's query mix (STUDY.md "Setup"; `infljax.queries`), sized so scoring stays cheap.

    Each family entry's `type` picks a registered family (or 'package.module:Class', or
    'path/to/file.py:Class'); its other fields are the family's parameters. Reasoning families
    draw half their instances from the corpus (worked or answered there), half held out.
    Completions are the families' templates; mode="generated" has each model answer greedily.
    """
    n = lambda full, tiny: tiny if smoke else full  # noqa: E731
    half = {"source": "world", "in_corpus_fraction": 0.5}
    return ConfigDict(
        {
            "seed": 0,
            "families": {
                "factual": {"type": "factual", "count": n(10, 2), "variants": ("question",)},
                "arithmetic": {"type": "arithmetic", "count": n(6, 2), **half},
                "slope": {"type": "slope", "count": n(6, 2), **half},
                "linear": {"type": "linear", "count": n(6, 2), **half},
                "factual_control": {"type": "factual_control", "count": n(4, 1)},
                "reasoning_control": {"type": "reasoning_control", "count": n(6, 3)},
            },
            "completions": {
                "mode": "template",  # or "generated": each model's greedy answer, graded
                "models": (),  # generated: which models answer (empty = all)
                "max_new_tokens": 64,
                "batch_size": 8,
                "stop": (),
            },
        }
    )


def scores(smoke: bool) -> ConfigDict:
    """Influence scoring: every field of `infljax.influence.run.ScoresArgs` (its docstring and
    its parts' say what each does), at its default unless set here; layers are
    `factors.layers`. E.g. ``--config.scores.query_grads.rank=0`` (dense query gradients),
    ``--config.scores.strategy=kfac``, ``--config.scores.measurement.on_too_long=truncate``.

    prefilter_k > 0 scores only each query's top k documents by TF-IDF (Grosse et al. 2023) and
    streams only the union of those candidates, for corpora too large to score in full. It is a
    biased shortcut: a document sharing no words with the query is never scored, however
    influential. The files keep their [Q, N] shape; ``scored.npy`` [Q, N] marks the computed
    entries, the others are 0 ("no estimated influence"), and documents never streamed have
    doc_grad_norm 0 (ranked 0 when normalising). 0 = score every document.
    """
    return section_of(
        ScoresArgs,
        exclude=("layers", "param_dtype"),
        scoring={
            "batch_size": 8 if smoke else 64,
            "partitions": 2 if smoke else 4,
            "self_influence": True,
        },
        rescore_top_k=3 if smoke else 10,
        per_token_top=2 if smoke else 3,
    )


def baselines() -> ConfigDict:
    """Baseline score matrices beside the influence scores (`infljax.stages.baselines`).

    In the demo's stages (TF-IDF and random; configs/validate.py adds the gradient ones).
    "grad_dot" / "grad_cosine" rerun the scoring pass with strategy identity (as costly as the
    scores stage); "tfidf" and "random" take seconds.
    """
    return ConfigDict({"methods": ("tfidf", "random"), "seed": 0, "sublinear_tf": False})


def analysis(smoke: bool) -> ConfigDict:
    """The study's analyses (`infljax.analysis.study.AnalysisArgs`), k sized to the corpus: the
    study's top 500 / 100 of 5M documents are far below 1%; here ~1,300 documents."""
    return ConfigDict(
        {
            "models": (),  # empty = every model in config.models
            "normalise": True,  # rank by score / doc_grad_norm (False: raw scores)
            "answer_k": 5 if smoke else 10,  # F: top documents searched for the answer
            "procedure_k": 5 if smoke else 20,  # G/H: top documents labelled
            "power_law_k": 20 if smoke else 100,  # D
            "magnitude_k": 10 if smoke else 50,  # E: top/bottom documents per query
            "source_ks": (3, 10, 30) if smoke else (5, 10, 20, 50, 100, 200, 500),  # I
            "dependency_percents": (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
            "top_documents": 3 if smoke else 5,  # report: documents shown per query
            "bottom_documents": 1 if smoke else 2,
            "snippet_chars": 500,
        }
    )


def _train(smoke: bool, steps: int, lr: float, warmup: int) -> dict:
    """AdamW whose learning rate decays to 0, with weight decay: the final parameters are then
    a stable function of the data (what influence functions describe; configs/validate.py
    measures it), and eps_root > 0 keeps training differentiable for exact metagradients."""
    return {
        "steps": 20 if smoke else steps,
        "batch_size": 8 if smoke else 24,
        "learning_rate": lr,
        "warmup_steps": 2 if smoke else warmup,
        "final_lr_fraction": 0.0,
        "weight_decay": 0.1,
        "grad_clip": 1.0,
        "eps_root": 1e-12,
        "seed": 0,
        "held_out_fraction": 0.05,
        "packing": not smoke,
        "eval_every": 10 if smoke else 100,
        "checkpoint_every": 10 if smoke else 200,
    }


def small_model(smoke: bool) -> ConfigDict:
    model = {
        "d_model": 16 if smoke else 64,
        "num_layers": 2,
        "num_heads": 2,
        "d_ff": 32 if smoke else 256,
    }
    return ConfigDict({"checkpoint": "", "model": model, "train": _train(smoke, 300, 5e-3, 50)})


def large_model(smoke: bool) -> ConfigDict:
    model = {
        "d_model": 24 if smoke else 96,
        "num_layers": 2 if smoke else 3,
        "num_heads": 2 if smoke else 4,
        "d_ff": 48 if smoke else 384,
    }
    return ConfigDict({"checkpoint": "", "model": model, "train": _train(smoke, 500, 5e-3, 100)})
