"""Study a real checkpoint: a local Hugging Face model directory, your corpus, your queries.

    python experiments/run.py --config=configs/hf.py --workdir=runs/pythia \\
        --config.model.path=/models/pythia-160m --config.corpus.path=corpus.jsonl
    python experiments/run.py --config=configs/hf.py:pair --workdir=runs/pair \\
        --config.model.path=/models/pythia-160m --config.model.large_path=/models/pythia-410m \\
        --config.corpus.path=corpus.parquet
    python experiments/run.py --config=configs/hf.py:jsonl --workdir=runs/mine \\
        --config.model.path=... --config.corpus.path=... \\
        --config.queries.families.file.path=queries.jsonl
    python experiments/run.py --config=configs/hf.py:checkpoints2 --workdir=runs/family \
        --config.model.path=/models/pythia-160m/step143000 --config.model.weight=0.2 \
        --config.model.checkpoint_1=/models/pythia-160m/step50000 --config.model.weight_1=0.4 \
        --config.model.checkpoint_2=/models/pythia-160m/step100000 --config.model.weight_2=0.4 \
        --config.corpus.path=corpus.jsonl
    python experiments/run.py --config=configs/hf.py:smoke --workdir=/tmp/hf_smoke   (tests)

Supported ``model_type``: gpt2, llama, gpt_neox, cohere (`infljax.models.convert`). Nothing is
downloaded: ``model.path`` is a directory with ``config.json``, ``model.safetensors`` (or a
sharded index) and the tokenizer, e.g. from ``huggingface-cli download <repo> --local-dir``.
Nothing is trained: the pretrain stage converts the checkpoint into ``<workdir>/models/<name>/``
(``model.dtype``: float32 or bfloat16; ``model.shard``: replicated or fsdp over the mesh's
``data`` axis while converting; ``model.max_length``: 0 = the checkpoint's context, lower it
to bound generation buffers). The corpus is tokenised with the checkpoint's own tokenizer.
``mesh.params=fsdp`` keeps the parameters split over the devices in the factors and scores
stages too (gathered inside each step); ``param_dtype=bfloat16`` runs them in mixed precision.

Tracked layers: the MLP projections of every block, for every architecture (the decoder family
names them alike: ``mlp.fc_in``/``mlp.fc_out`` for GPT-2 and GPT-NeoX, ``mlp.gate_proj``/
``up_proj``/``down_proj`` for Llama and Cohere), so one regex serves all; add attention with
``--config.factors.layers='("blocks\\.\\d+\\.(mlp|attn)\\..*",)'``.
Variants (comma-separated): ``pair`` (two models, small and large, as the study's 7B and 35B),
``jsonl`` (queries from a file instead of the built-in fresh-problem families), ``checkpoints<C>``
(multi-checkpoint EK-FAC: C intermediate checkpoints of the model's family,
``model.checkpoint_<i>``, become models ``checkpoint_<i>``, each fitted and scored; the
baselines stage writes
``baselines/model/checkpoints/`` = Σ weight_c · scores_c with ``model.weight_<i>`` and
``model.weight`` for the final one: the learning rate the family's schedule spent in each
checkpoint's segment of training, which checkpoints do not record), ``smoke`` (a tiny fixture
checkpoint shipped in tests/fixtures/hf/smoke).
"""

from pathlib import Path

from ml_collections import ConfigDict, FieldReference, config_dict

from infljax.config import section_of
from infljax.influence.run import ScoresArgs

VARIANTS = ("", "pair", "jsonl", "smoke")
SMOKE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf" / "smoke"
MLP_LAYERS = (r"blocks\.\d+\.mlp\..*",)


def get_config(arg: str | None = None) -> ConfigDict:
    flags = [f for f in (arg or "").split(",") if f]
    unknown = [f for f in flags if f not in VARIANTS and not _checkpoint_count(f)]
    if unknown:
        raise ValueError(f"configs/hf.py: unknown variant(s) {unknown}; valid: {VARIANTS[1:]}")
    smoke = "smoke" in flags
    config = ConfigDict()
    config.stages = ("corpus", "pretrain", "factors", "queries", "scores", "analysis", "report")
    config.overwrite = False
    config.mesh = ConfigDict({"data": -1, "model": 1, "params": "replicated"})  # or "fsdp"
    # The dtype factors and scores run the model in: "" = as stored, "bfloat16" = mixed precision
    # (bfloat16 parameters and activations; float32 statistics; float64 eigendecompositions).
    config.param_dtype = ""
    # float32 matrix products: "highest" = true float32; "default" = the backend's fast mode
    # (TF32 on recent NVIDIA GPUs, one bfloat16 pass on TPUs; CPUs are float32 either way).
    config.matmul_precision = "highest"
    config.model = model(smoke, "pair" in flags)
    config.corpus = corpus(smoke, config.model)
    config.models = models(config.model, "pair" in flags)
    if count := max((_checkpoint_count(f) for f in flags), default=0):
        if "pair" in flags:
            raise ValueError("configs/hf.py: checkpoints<C> studies one model family, not a pair")
        checkpoints(config, count, smoke)
    config.factors = factors(smoke)
    config.queries = queries(smoke, "jsonl" in flags)
    config.scores = scores(smoke)
    config.analysis = analysis(smoke)
    config.lock()
    return config


def model(smoke: bool, pair: bool) -> ConfigDict:
    """The checkpoint(s) and how to convert them; `models` and `corpus` refer to these fields."""
    section = {
        "path": FieldReference(str(SMOKE) if smoke else ""),
        "dtype": FieldReference("float32"),  # bfloat16 halves parameter memory
        "shard": FieldReference("replicated"),
        "max_length": FieldReference(0),
    }
    if pair:
        section["large_path"] = FieldReference(str(SMOKE) if smoke else "")
    return ConfigDict(section)


def _checkpoint_count(flag: str) -> int:
    """C of a ``checkpoints<C>`` variant (0: another flag)."""
    digits = flag.removeprefix("checkpoints")
    return int(digits) if flag.startswith("checkpoints") and digits.isdigit() else 0


def checkpoints(config: ConfigDict, count: int, smoke: bool) -> None:
    """Models ``checkpoint_1`` .. ``checkpoint_<count>`` from ``model.checkpoint_<i>``,
    converted like the final ``model``, and its checkpoint sum (the baselines stage)."""
    weights = {}
    for i in range(1, count + 1):
        config.model[f"checkpoint_{i}"] = str(SMOKE) if smoke else ""
        config.model[f"weight_{i}"] = 1.0 / (count + 1)
        config.models[f"checkpoint_{i}"] = converted(config.model, f"checkpoint_{i}")
        weights[f"checkpoint_{i}"] = config.model.get_ref(f"weight_{i}")
    config.model.weight = 1.0 / (count + 1)
    weights["model"] = config.model.get_ref("weight")
    config.models.model.checkpoints = weights
    stages = config.stages
    config.stages = (
        *stages[: stages.index("analysis")],
        "baselines",
        *stages[stages.index("analysis") :],
    )


def follow(section: ConfigDict, key: str) -> FieldReference:
    """A field that takes `section.key`'s value (also when overridden on the command line) until
    it is set itself; setting it does not change `section.key` (a derived reference)."""
    ref = section.get_ref(key)
    return ref + ("" if isinstance(section[key], str) else 0)


def models(section: ConfigDict, pair: bool) -> ConfigDict:
    """config.models.<name>: ``checkpoint`` (converted by the pretrain stage) and ``convert``."""

    if pair:
        return ConfigDict(
            {"small": converted(section, "path"), "large": converted(section, "large_path")}
        )
    return ConfigDict({"model": converted(section, "path")})


def converted(section: ConfigDict, path_field: str) -> dict:
    """A model converted from the checkpoint at `section.<path_field>`, as `section` says."""
    convert = {k: follow(section, k) for k in ("dtype", "shard", "max_length")}
    return {"checkpoint": follow(section, path_field), "convert": convert}


def corpus(smoke: bool, section: ConfigDict) -> ConfigDict:
    """JSONL or Parquet records (``text``, optional ``id`` and ``source``), tokenised with the
    checkpoint's tokenizer into rows of ``max_length`` tokens (512 for real models, DESIGN §3).

    BOS / EOS around each document as the checkpoint's tokenizer adds them (Llama: BOS; GPT-2,
    GPT-NeoX: nothing), unless ``add_bos`` / ``add_eos`` say otherwise; the special tokens are
    found by common names unless ``tokenizer.{bos,eos,pad}_token`` name them."""
    return ConfigDict(
        {
            "path": str(SMOKE / "corpus.jsonl") if smoke else "",
            "on_bad": "skip",
            "max_length": 32 if smoke else 512,
            "packing": False,
            "add_bos": config_dict.placeholder(bool),
            "add_eos": config_dict.placeholder(bool),
            "tokenizer": {
                "train": False,
                "vocab_size": 0,
                "path": follow(section, "path"),
                "bos_token": "",
                "eos_token": "",
                "pad_token": "",
            },
        }
    )


def factors(smoke: bool) -> ConfigDict:
    """EK-FAC fitting; see configs/demo.py. ``num_documents`` > 0 fits on a random subset."""
    return ConfigDict(
        {
            "layers": MLP_LAYERS,
            "fisher": "true",
            "num_documents": 0,
            "batch_size": 8 if smoke else 32,
            "lambda_chunk": 8,
            "partitions": 2 if smoke else 16,
            "layer_groups": 1,
            "seed": 0,
        }
    )


def queries(smoke: bool, from_file: bool) -> ConfigDict:
    """Fresh problems of the study's reasoning families (no procedural world needed), or a JSONL
    file of query records (``id``, ``prompt``, ``completion``, optional ``family``, ``answer``,
    ``steps``, ``control``; DESIGN §3)."""
    n = lambda full, tiny: tiny if smoke else full  # noqa: E731
    fresh = {"source": "fresh"}
    if from_file:
        path = str(SMOKE / "queries.jsonl") if smoke else ""
        families = {"file": {"type": "jsonl", "count": 0, "path": path, "family": "custom"}}
    else:
        families = {
            "arithmetic": {"type": "arithmetic", "count": n(10, 1), **fresh},
            "slope": {"type": "slope", "count": n(10, 1), **fresh},
            "linear": {"type": "linear", "count": n(10, 1), **fresh},
            "reasoning_control": {"type": "reasoning_control", "count": n(10, 1)},
        }
    return ConfigDict(
        {
            "seed": 0,
            "families": families,
            "completions": {
                "mode": "template",  # "generated": each model's greedy answer, graded
                "models": (),
                "max_new_tokens": 64,
                "batch_size": 8,
                "stop": (),
            },
        }
    )


def scores(smoke: bool) -> ConfigDict:
    """Influence scoring; see configs/demo.py (layers are ``factors.layers``). Queries longer
    than the context are truncated (their prompt's start) rather than refused."""
    return section_of(
        ScoresArgs,
        exclude=("layers", "param_dtype"),
        scoring={
            "batch_size": 8 if smoke else 32,
            "partitions": 2 if smoke else 16,
            "self_influence": True,
        },
        rescore_top_k=3 if smoke else 10,
        per_token_top=2 if smoke else 3,
        measurement={"on_too_long": "truncate"},
    )


def analysis(smoke: bool) -> ConfigDict:
    """The study's analyses; see configs/demo.py. Without a procedural world the ground-truth
    retrieval numbers are absent; everything else is computed."""
    return ConfigDict(
        {
            "models": (),
            "normalise": True,
            "answer_k": 5 if smoke else 10,
            "procedure_k": 5 if smoke else 20,
            "power_law_k": 10 if smoke else 500,
            "magnitude_k": 5 if smoke else 100,
            "source_ks": (3, 10) if smoke else (10, 50, 100, 500),
            "dependency_percents": (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
            "top_documents": 3 if smoke else 5,
            "bottom_documents": 1 if smoke else 2,
            "snippet_chars": 500,
        }
    )
