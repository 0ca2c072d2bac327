"""Thin per-architecture converters: a Hugging Face config and tensor names -> the decoder family.

Each `Architecture` says which `DecoderConfig` options a ``model_type`` needs and where every
parameter of the infljax `Decoder` comes from (a tensor name in the checkpoint and a transform:
torch's Linear weights are [d_out, d_in], infljax kernels are [d_in, d_out]). The loader in
`infljax.models.convert` reads the tensors one at a time and checks names, shapes and dtypes.

Fused projections are split into the decoder's q/k/v: GPT-2's ``c_attn`` ([d, 3d], q|k|v along
the output axis) and GPT-NeoX's ``query_key_value`` ([3d, d], q|k|v interleaved per head). The
forward pass is unchanged; only an opt-in attention influence would see three layers, not one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from infljax.models.decoder import DecoderConfig, RopeScaling

Transform = Callable[[np.ndarray], np.ndarray]


class CheckpointError(ValueError):
    """A checkpoint cannot be converted; the message says what is wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one decoder parameter comes from: a checkpoint tensor and how to reshape it."""

    name: str
    transform: Transform = lambda x: x


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How one Hugging Face ``model_type`` maps onto the decoder family.

    Attributes:
      options: HF config -> `DecoderConfig` keyword arguments (all but max_length/param_dtype).
      tensors: (decoder config, HF config, checkpoint names) -> {decoder param path: Source}.
      ignore: regexes of checkpoint tensors that are buffers, not parameters (causal masks,
        cached rotary frequencies, a tied head saved twice).
    """

    options: Callable[[Any], dict]
    tensors: Callable[[DecoderConfig, Any, set[str]], dict[str, Source]]
    ignore: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Shared pieces

ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


def activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise CheckpointError(
            f"activation {name!r} is not supported; supported: {list(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def transpose(x: np.ndarray) -> np.ndarray:
    return x.T


def linear(src: str, dst: str, bias: bool) -> dict[str, Source]:
    """A torch ``nn.Linear`` (weight [d_out, d_in]) -> a TrackedLinear (kernel [d_in, d_out])."""
    out = {f"{dst}.kernel": Source(f"{src}.weight", transpose)}
    if bias:
        out[f"{dst}.bias"] = Source(f"{src}.bias")
    return out


def norm(src: str, dst: str, bias: bool) -> dict[str, Source]:
    out = {f"{dst}.scale": Source(f"{src}.weight")}
    if bias:
        out[f"{dst}.bias"] = Source(f"{src}.bias")
    return out


def rope_options(hf: Any, head_dim: int) -> dict:
    """`rope_theta`, `rope_scaling` and `rotary_dim` from HF's standardised ``rope_parameters``."""
    params = dict(hf.rope_parameters or {})
    kind = params.get("rope_type", "default")
    fraction = params.get("partial_rotary_factor", 1.0)
    rotary = int(head_dim * fraction)  # transformers truncates the same way
    options = {
        "rope_theta": float(params.get("rope_theta", 10000.0)),
        "rotary_dim": None if rotary == head_dim else rotary,
    }
    if kind in ("default", "dynamic"):
        # dynamic NTK changes nothing up to max_position_embeddings, which caps max_length
        return options
    if kind == "linear":
        return options | {"rope_scaling": RopeScaling("linear", float(params["factor"]))}
    if kind == "llama3":
        scaling = RopeScaling(
            "llama3",
            float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_length=int(params["original_max_position_embeddings"]),
        )
        return options | {"rope_scaling": scaling}
    if kind == "yarn":
        return options | {"rope_scaling": _yarn(hf, params)}
    raise CheckpointError(
        f"RoPE scaling {kind!r} is not supported; supported: default, linear, dynamic, llama3, yarn"
    )


def _yarn(hf: Any, params: Mapping) -> RopeScaling:
    """transformers' ``_compute_yarn_parameters`` defaults, resolved once."""
    original = int(params["original_max_position_embeddings"])
    factor = params.get("factor") or hf.max_position_embeddings / original
    attention = params.get("attention_factor")
    if attention is None:
        mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")
        attention = (
            _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all)
            if mscale and mscale_all
            else _yarn_mscale(factor)
        )
    return RopeScaling(
        "yarn",
        float(factor),
        original_max_length=original,
        beta_fast=float(params.get("beta_fast") or 32),
        beta_slow=float(params.get("beta_slow") or 1),
        truncate=bool(params.get("truncate", True)),
        attention_factor=float(attention),
    )


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def head(cfg: DecoderConfig, names: set[str], candidates: tuple[str, ...]) -> dict[str, Source]:
    """The untied output head (first candidate name present; the first one if none is)."""
    if cfg.tie_embeddings:
        return {}
    name = next((c for c in candidates if c in names), candidates[0])
    return {"lm_head": Source(name, transpose)}


def base_prefix(names: set[str], prefix: str, embed: str) -> str:
    """`prefix` when the checkpoint was saved from the *ForCausalLM class, "" when from the bare
    model (e.g. the original ``gpt2`` files name ``wte.weight``, not ``transformer.wte.weight``)."""
    return "" if prefix + embed not in names and embed in names else prefix


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckpointError(message)


# ---------------------------------------------------------------------------------------------
# GPT-2


def gpt2_options(hf: Any) -> dict:
    _check(hf.scale_attn_weights, "GPT-2 with scale_attn_weights=False is not supported")
    _check(
        not hf.scale_attn_by_inverse_layer_idx,
        "GPT-2 with scale_attn_by_inverse_layer_idx=True is not supported",
    )
    _check(not hf.add_cross_attention, "GPT-2 with cross-attention is not a decoder-only model")
    return dict(
        vocab_size=hf.vocab_size,
        d_model=hf.n_embd,
        num_layers=hf.n_layer,
        num_heads=hf.n_head,
        d_ff=hf.n_inner or 4 * hf.n_embd,
        norm="layernorm",
        mlp="gelu",
        positions="learned",
        use_bias=True,
        tie_embeddings=bool(hf.tie_word_embeddings),
        norm_eps=hf.layer_norm_epsilon,
        activation=activation(hf.activation_function),
    )


def _split(part: int) -> Transform:
    """Part `part` of 3 along the last axis (GPT-2's fused c_attn: Conv1D is already [in, out])."""
    return lambda x: np.split(x, 3, axis=-1)[part]


def gpt2_tensors(cfg: DecoderConfig, hf: Any, names: set[str]) -> dict[str, Source]:
    p = base_prefix(names, "transformer.", "wte.weight")
    positions = Source(f"{p}wpe.weight", lambda x: x[: cfg.max_length])  # max_length may cut
    out = {"embed": Source(f"{p}wte.weight"), "pos_embed": positions}
    out |= norm(f"{p}ln_f", "ln_f", True) | head(cfg, names, ("lm_head.weight",))
    for i in range(cfg.num_layers):
        src, dst = f"{p}h.{i}", f"blocks.{i}"
        out |= norm(f"{src}.ln_1", f"{dst}.ln1", True) | norm(f"{src}.ln_2", f"{dst}.ln2", True)
        for part, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{dst}.attn.{proj}.kernel"] = Source(f"{src}.attn.c_attn.weight", _split(part))
            out[f"{dst}.attn.{proj}.bias"] = Source(f"{src}.attn.c_attn.bias", _split(part))
        for hf_name, ours in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.fc_in")):
            out[f"{dst}.{ours}.kernel"] = Source(f"{src}.{hf_name}.weight")
            out[f"{dst}.{ours}.bias"] = Source(f"{src}.{hf_name}.bias")
        out[f"{dst}.mlp.fc_out.kernel"] = Source(f"{src}.mlp.c_proj.weight")
        out[f"{dst}.mlp.fc_out.bias"] = Source(f"{src}.mlp.c_proj.bias")
    return out


# ---------------------------------------------------------------------------------------------
# Llama


def _sizes(hf: Any) -> dict:
    """The shape fields every HF config (but GPT-2's) names alike."""
    return dict(
        vocab_size=hf.vocab_size,
        d_model=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
    )


def llama_options(hf: Any) -> dict:
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    return dict(
        **_sizes(hf),
        num_kv_heads=hf.num_key_value_heads,
        d_ff=hf.intermediate_size,
        norm="rmsnorm",
        mlp="swiglu",
        positions="rope",
        use_bias=False,
        attn_bias=bool(hf.attention_bias),
        mlp_bias=bool(hf.mlp_bias),
        tie_embeddings=bool(hf.tie_word_embeddings),
        norm_eps=hf.rms_norm_eps,
        activation=activation(hf.hidden_act),
        attn_head_dim=None if head_dim * hf.num_attention_heads == hf.hidden_size else head_dim,
    ) | rope_options(hf, head_dim)


def llama_layer(cfg: DecoderConfig, src: str, dst: str) -> dict[str, Source]:
    """The attention and gated-MLP projections shared by Llama and Cohere."""
    out = {}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        out |= linear(f"{src}.self_attn.{proj}", f"{dst}.attn.{proj}", cfg.bias("attn"))
    for proj in ("gate_proj", "up_proj", "down_proj"):
        out |= linear(f"{src}.mlp.{proj}", f"{dst}.mlp.{proj}", cfg.bias("mlp"))
    return out


def llama_tensors(cfg: DecoderConfig, hf: Any, names: set[str]) -> dict[str, Source]:
    p = base_prefix(names, "model.", "embed_tokens.weight")
    out = {"embed": Source(f"{p}embed_tokens.weight")}
    out |= norm(f"{p}norm", "ln_f", False) | head(cfg, names, ("lm_head.weight",))
    for i in range(cfg.num_layers):
        src, dst = f"{p}layers.{i}", f"blocks.{i}"
        out |= norm(f"{src}.input_layernorm", f"{dst}.ln1", False)
        out |= norm(f"{src}.post_attention_layernorm", f"{dst}.ln2", False)
        out |= llama_layer(cfg, src, dst)
    return out


# ---------------------------------------------------------------------------------------------
# GPT-NeoX (Pythia)


def neox_options(hf: Any) -> dict:
    head_dim = hf.hidden_size // hf.num_attention_heads
    return dict(
        **_sizes(hf),
        d_ff=hf.intermediate_size,
        norm="layernorm",
        mlp="gelu",
        positions="rope",
        use_bias=True,
        attn_bias=bool(hf.attention_bias),
        residual="parallel" if hf.use_parallel_residual else "sequential",
        tie_embeddings=bool(hf.tie_word_embeddings),
        norm_eps=hf.layer_norm_eps,
        activation=activation(hf.hidden_act),
    ) | rope_options(hf, head_dim)


def _neox_qkv(part: int, heads: int) -> Transform:
    """Part `part` (q, k, v) of the fused query_key_value: rows are [heads, 3, head_dim]."""

    def take(x: np.ndarray) -> np.ndarray:
        y = x.reshape(heads, 3, x.shape[0] // (3 * heads), *x.shape[1:])[:, part]
        y = y.reshape(-1, *x.shape[1:])
        return y.T if y.ndim == 2 else y

    return take


def neox_tensors(cfg: DecoderConfig, hf: Any, names: set[str]) -> dict[str, Source]:
    p = base_prefix(names, "gpt_neox.", "embed_in.weight")
    out = {"embed": Source(f"{p}embed_in.weight")}
    out |= norm(f"{p}final_layer_norm", "ln_f", True)
    out |= head(cfg, names, ("embed_out.weight", "lm_head.weight"))
    for i in range(cfg.num_layers):
        src, dst = f"{p}layers.{i}", f"blocks.{i}"
        out |= norm(f"{src}.input_layernorm", f"{dst}.ln1", True)
        out |= norm(f"{src}.post_attention_layernorm", f"{dst}.ln2", True)
        fused = f"{src}.attention.query_key_value"
        for part, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            take = _neox_qkv(part, cfg.num_heads)
            out[f"{dst}.attn.{proj}.kernel"] = Source(f"{fused}.weight", take)
            if cfg.bias("attn"):
                out[f"{dst}.attn.{proj}.bias"] = Source(f"{fused}.bias", take)
        out |= linear(f"{src}.attention.dense", f"{dst}.attn.o_proj", cfg.bias("attn"))
        out |= linear(f"{src}.mlp.dense_h_to_4h", f"{dst}.mlp.fc_in", True)
        out |= linear(f"{src}.mlp.dense_4h_to_h", f"{dst}.mlp.fc_out", True)
    return out


# ---------------------------------------------------------------------------------------------
# Cohere (Command R)


def cohere_options(hf: Any) -> dict:
    head_dim = hf.hidden_size // hf.num_attention_heads
    return dict(
        **_sizes(hf),
        num_kv_heads=hf.num_key_value_heads,
        d_ff=hf.intermediate_size,
        norm="layernorm",
        mlp="swiglu",
        positions="rope",
        use_bias=False,
        attn_bias=bool(hf.attention_bias),
        residual="parallel_shared_norm",
        qk_norm=bool(hf.use_qk_norm),
        rope_layout="interleaved",
        tie_embeddings=bool(hf.tie_word_embeddings),
        norm_eps=hf.layer_norm_eps,
        activation=activation(hf.hidden_act),
        logit_scale=float(hf.logit_scale if hf.logit_scale is not None else 1.0),
    ) | rope_options(hf, head_dim)


def cohere_tensors(cfg: DecoderConfig, hf: Any, names: set[str]) -> dict[str, Source]:
    p = base_prefix(names, "model.", "embed_tokens.weight")
    out = {"embed": Source(f"{p}embed_tokens.weight")}
    out |= norm(f"{p}norm", "ln_f", False) | head(cfg, names, ("lm_head.weight",))
    for i in range(cfg.num_layers):
        src, dst = f"{p}layers.{i}", f"blocks.{i}"
        out |= norm(f"{src}.input_layernorm", f"{dst}.ln1", False)
        if cfg.qk_norm:
            out |= norm(f"{src}.self_attn.q_norm", f"{dst}.attn.q_norm", False)
            out |= norm(f"{src}.self_attn.k_norm", f"{dst}.attn.k_norm", False)
        out |= llama_layer(cfg, src, dst)
    return out


ROTARY_BUFFERS = r"(.*\.)?rotary_emb\.inv_freq"
TIED_HEAD = r"lm_head\.weight"  # some tied checkpoints store the head as well

ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(gpt2_options, gpt2_tensors, (r"(.*\.)?attn\.(masked_)?bias", TIED_HEAD)),
    "llama": Architecture(llama_options, llama_tensors, (ROTARY_BUFFERS, TIED_HEAD)),
    "gpt_neox": Architecture(
        neox_options,
        neox_tensors,
        (ROTARY_BUFFERS, r"(.*\.)?attention\.(masked_)?bias", r"(embed_out|lm_head)\.weight"),
    ),
    "cohere": Architecture(cohere_options, cohere_tensors, (ROTARY_BUFFERS, TIED_HEAD)),
}


def architecture(model_type: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"model_type {model_type!r} is not supported; supported: {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[model_type]
