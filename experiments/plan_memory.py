"""Per-device memory of every device-heavy step, on paper (DESIGN §7b, `infljax.planning`).

    python experiments/plan_memory.py --paper        # Command R 35B on TPU v5e-64 and 8×H100
    python experiments/plan_memory.py --shape=command-r-35b --devices=8 --device_gib=74.5
    python experiments/plan_memory.py --hf_config=/models/pythia-160m/config.json \\
        --dtype=float32 --devices=1 --device_gib=16 --steps=pretrain,covariance,scores

For each step (`infljax.planning`) it finds the first layout that fits (10% of the device kept
free), trying in order: everything replicated; `config.mesh.params="fsdp"` (parameters, factors
and the query plan split over all devices at rest; each step gathers one block's parameters and
one layer's eigenbasis or query plan at a time, and forms one layer's batch statistics at a
time); then the tracked layers handled in 2, 4, 8, ... groups (`config.factors.layer_groups`:
one covariance and one lambda pass per group; `config.scores.query_grads.layer_groups`: one
capture of the queries per group). `*` marks what the pipeline does not do yet (groups for the
scores step). It prints the largest batch per device that fits and the per-device breakdown
there, or, when nothing fits, the breakdown at one sequence per device (queries: a chunk of one
query).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from absl import app, flags

from infljax import planning
from infljax.models.capture import DEFAULT_LAYERS
from infljax.models.convert import ConvertArgs, decoder_config

# c4ai-command-r-v01's config.json (CohereForAI/c4ai-command-r-v01 on the Hugging Face hub).
SHAPES = {
    "command-r-35b": {
        "model_type": "cohere",
        "vocab_size": 256000,
        "hidden_size": 8192,
        "intermediate_size": 22528,
        "num_hidden_layers": 40,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "max_position_embeddings": 8192,
        "hidden_act": "silu",
        "layer_norm_eps": 1e-05,
        "logit_scale": 0.0625,
        "rope_theta": 8000000.0,
        "attention_bias": False,
        "use_qk_norm": False,
        "tie_word_embeddings": True,
    },
}
# The two platforms: (label, devices, bytes per device).
PAPER = (("TPU v5e-64 (16 GiB per chip)", 64, 16 * 2**30), ("8×H100 (80 GB each)", 8, 80 * 10**9))
STEPS = ("covariance", "lambdas", "queries", "scores")
# config.factors.layer_groups (covariance, lambdas) and config.scores.query_grads.layer_groups
GROUPED_STEPS = ("covariance", "lambdas", "queries")

_SHAPE = flags.DEFINE_string("shape", "command-r-35b", f"A built-in shape: {sorted(SHAPES)}.")
_HF_CONFIG = flags.DEFINE_string("hf_config", None, "A Hugging Face config.json (or its dir).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Parameter dtype.")
_SEQ = flags.DEFINE_integer("seq", 512, "Tokens per sequence (the study: 512).")
_LAYERS = flags.DEFINE_list("layers", list(DEFAULT_LAYERS), "Tracked-layer regexes.")
_QUERIES = flags.DEFINE_integer("queries", 100, "Queries scored in one pass.")
_RANK = flags.DEFINE_integer("rank", 32, "Rank of the query gradients (0 = dense).")
_SVD = flags.DEFINE_enum("svd", "exact", ["exact", "randomized"], "Query-gradient SVD.")
_CHUNK = flags.DEFINE_integer("lambda_chunk", 1, "Lambda-pass chunk (sequences per device).")
_DEVICES = flags.DEFINE_integer("devices", 8, "Devices (all along the mesh's data axis).")
_DEVICE_GIB = flags.DEFINE_float("device_gib", 80 * 10**9 / 2**30, "Memory per device, GiB.")
_HEADROOM = flags.DEFINE_float("headroom", planning.HEADROOM, "Fraction kept free.")
_STEPS = flags.DEFINE_list("steps", list(STEPS), f"Of {planning.STEPS}.")
_PAPER = flags.DEFINE_bool("paper", False, "Print the issue's two on-paper tables.")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One layout to try: its label, the layout and the number of tracked-layer groups."""

    label: str
    layout: planning.Layout
    groups: int = 1


def choices(step: str, devices: int, num_layers: int) -> list[Choice]:
    """The layouts to try, cheapest change first (see the module docstring)."""
    fsdp = planning.Layout(devices, param_shards=devices, factor_shards=devices)
    out = [Choice("replicated", planning.Layout(devices)), Choice("fsdp", fsdp)]
    star = "" if step in GROUPED_STEPS else "*"
    groups = 2
    while groups < num_layers:
        out.append(Choice(f"fsdp, {groups} layer groups{star}", fsdp, groups))
        groups *= 2
    return out + [Choice(f"fsdp, one layer at a time{star}", fsdp, num_layers)]


@dataclasses.dataclass(frozen=True)
class Row:
    step: str
    choice: str
    memory: planning.StepMemory
    fits: bool


def plan_step(step, shapes, work, devices: int, device_bytes: int, headroom: float) -> Row:
    """The first choice under which `step` fits, at its largest batch; else the last choice
    at one sequence per device."""
    cap = work.queries if step == "queries" else 4096 * devices
    for choice in choices(step, devices, len(shapes.layers)):
        # the group that needs the most, judged at one sequence per device
        group, _ = planning.largest_group(step, shapes, choice.groups, work, choice.layout, devices)
        args = (step, group, work, choice.layout)
        try:
            batch = planning.largest_batch(*args, device_bytes, headroom, max_batch=cap)
        except planning.PlanError:
            continue
        return Row(step, choice.label, planning.estimate(*args, batch), True)
    smallest = 1 if step == "queries" else devices
    return Row(step, choice.label, planning.estimate(*args, smallest), False)


def print_table(title: str, rows: list[Row], device_bytes: int) -> None:
    """A Markdown table: step, what it needs, batch per device, total, largest parts."""
    print(f"\n{title}: {planning.format_bytes(device_bytes)} per device\n")
    print("| step | needs | batch / device (queries: chunk) | per device | largest parts |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        m = row.memory
        parts = sorted((p for p in m.parts if p[1]), key=lambda p: -p[1])[:4]
        listed = ", ".join(f"{name} {planning.format_bytes(n)}" for name, n in parts)
        batch = str(m.batch if m.step == "queries" else m.local_batch)
        batch = batch if row.fits else f"does not fit at {batch}"
        print(
            f"| {m.step} | {row.choice} | {batch} | {planning.format_bytes(m.total)} | {listed} |"
        )


def model_shapes() -> planning.ModelShapes:
    from transformers import AutoConfig  # slow import; only needed here

    if _HF_CONFIG.value:
        path = Path(_HF_CONFIG.value)
        raw = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    else:
        raw = SHAPES[_SHAPE.value]
    hf = AutoConfig.for_model(**raw)
    cfg = decoder_config(hf, ConvertArgs(dtype=_DTYPE.value, max_length=_SEQ.value))
    return planning.ModelShapes.from_config(cfg, _LAYERS.value)


def main(argv):
    del argv
    shapes = model_shapes()
    work = planning.Workload(
        seq=_SEQ.value,
        queries=_QUERIES.value,
        rank=_RANK.value,
        svd=_SVD.value,
        lambda_chunk=_CHUNK.value,
    )
    cfg = shapes.cfg
    print(
        f"model: {shapes.params / 1e9:.2f}B parameters ({cfg.param_dtype}), d_model {cfg.d_model},"
        f" {cfg.num_layers} blocks, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}; {len(shapes.layers)}"
        f" tracked layers; seq {work.seq}, {work.queries} queries at rank {work.rank} "
        f"({work.svd} SVD), lambda chunk {work.lambda_chunk}; {_HEADROOM.value:.0%} kept free"
    )
    platforms = PAPER if _PAPER.value else (("devices", _DEVICES.value, _DEVICE_GIB.value * 2**30),)
    for title, devices, device_bytes in platforms:
        device_bytes = int(device_bytes)
        rows = [
            plan_step(step, shapes, work, devices, device_bytes, _HEADROOM.value)
            for step in _STEPS.value
        ]
        print_table(f"{title}, {devices} devices", rows, device_bytes)


if __name__ == "__main__":
    app.run(main)
