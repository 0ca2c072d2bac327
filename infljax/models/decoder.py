"""One decoder family (GPT-2 style by default) whose block options cover the common variants.

Every linear layer is a `TrackedLinear`, so any of them can be selected for influence by a regex
over its module path (e.g. ``blocks.0.mlp.fc_in``). Pads sit at the end of each row and attention
is causal, so real tokens never attend to pads and no padding mask is needed.

The options are the ones real checkpoints need (`infljax.models.convert` maps each Hugging Face
architecture onto them):

=============  ========  =========  ===========  =============================================
architecture   norm      mlp        positions    other options
=============  ========  =========  ===========  =============================================
GPT-2          layernorm gelu       learned      tied head, biases, gelu_tanh
Llama          rmsnorm   swiglu     rope (half)  GQA, rope_scaling, attn/mlp bias, head_dim
GPT-NeoX       layernorm gelu       rope (half)  residual="parallel", rotary_dim, untied head
Cohere         layernorm swiglu     rope (inter- residual="parallel_shared_norm", no norm bias,
                                    leaved)      qk_norm, logit_scale, tied head
=============  ========  =========  ===========  =============================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from infljax.models.tracked import TrackedLinear, flat_matmul

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")
ACTIVATIONS = ("gelu_tanh", "gelu", "silu", "relu")
RESIDUALS = ("sequential", "parallel", "parallel_shared_norm")
ROPE_LAYOUTS = ("half", "interleaved")
ROPE_SCALINGS = ("none", "linear", "llama3", "yarn")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling, as Hugging Face's ``rope_parameters`` define it.

    Attributes:
      kind: "none", "linear" (frequencies ÷ factor), "llama3" (Llama 3.1: low frequencies ÷
        factor, high ones kept, a smooth ramp between) or "yarn" (ramp between interpolation and
        extrapolation, cos/sin scaled by `attention_factor`).
      factor: the context extension factor.
      low_freq_factor, high_freq_factor: llama3's wavelength thresholds.
      original_max_length: the pretraining context (llama3, yarn).
      beta_fast, beta_slow, truncate: yarn's ramp bounds (in rotations) and their rounding.
      attention_factor: yarn's cos/sin scale.
    """

    kind: str = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_length: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention_factor: float = 1.0

    def __post_init__(self):
        if self.kind not in ROPE_SCALINGS:
            raise ValueError(f"RopeScaling.kind={self.kind!r}; valid: {ROPE_SCALINGS}")
        if self.kind != "none" and not self.factor > 0:
            raise ValueError(f"RopeScaling.factor must be positive, got {self.factor}")
        if self.kind in ("llama3", "yarn") and self.original_max_length <= 0:
            raise ValueError(f"RopeScaling(kind={self.kind!r}) needs original_max_length > 0")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError("RopeScaling: llama3 needs high_freq_factor > low_freq_factor")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Shape and variant of a decoder. Validated on construction.

    Fields after `param_dtype` select the variants of converted checkpoints; their defaults keep
    the GPT-2-style block (and every ``model.json`` written before they existed) unchanged.
    `None` for `activation`, `attn_bias`, `mlp_bias` and `norm_bias` means "follow `mlp` /
    `use_bias`".
    """

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    max_length: int
    num_kv_heads: int | None = None  # grouped-query attention when < num_heads
    norm: str = "layernorm"
    mlp: str = "gelu"
    positions: str = "learned"
    rope_theta: float = 10000.0
    use_bias: bool = True
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    param_dtype: str = "float32"
    attn_head_dim: int | None = None  # head size when it is not d_model / num_heads
    activation: str | None = None  # gelu mlp: gelu_tanh; swiglu: silu (the gate)
    residual: str = "sequential"  # parallel: GPT-NeoX; parallel_shared_norm: Cohere
    attn_bias: bool | None = None
    mlp_bias: bool | None = None
    norm_bias: bool | None = None  # LayerNorm only
    qk_norm: bool = False  # per-head norm (kind `norm`, no bias) of q and k before RoPE
    rotary_dim: int | None = None  # rotate only the first rotary_dim of each head (GPT-NeoX)
    rope_layout: str = "half"  # half: x[:d/2] with x[d/2:] (Llama, NeoX); interleaved: pairs
    rope_scaling: RopeScaling = RopeScaling()
    logit_scale: float = 1.0  # logits are multiplied by this (Cohere)

    def __post_init__(self):
        if isinstance(self.rope_scaling, dict):  # read back from model.json
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"DecoderConfig.{name} must be positive, got {getattr(self, name)}"
                )
        if self.attn_head_dim is None and self.d_model % self.num_heads:
            raise ValueError(
                f"DecoderConfig.d_model={self.d_model} is not divisible by num_heads="
                f"{self.num_heads}"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} not divisible by num_kv_heads")
        for name, valid in (
            ("norm", NORMS),
            ("mlp", MLPS),
            ("positions", POSITIONS),
            ("residual", RESIDUALS),
            ("rope_layout", ROPE_LAYOUTS),
            ("act", ACTIVATIONS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(f"DecoderConfig.{name}={getattr(self, name)!r}; valid: {valid}")
        self._check_rotary()

    def _check_rotary(self):
        if self.attn_head_dim is not None and self.attn_head_dim <= 0:
            raise ValueError(f"DecoderConfig.attn_head_dim must be positive: {self.attn_head_dim}")
        if self.positions == "rope" and (self.rotary % 2 or not 2 <= self.rotary <= self.head_dim):
            raise ValueError(
                f"DecoderConfig.rotary_dim={self.rotary_dim} (head_dim={self.head_dim}): RoPE "
                "rotates an even number of dimensions, at least 2 and at most head_dim"
            )

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim or self.d_model // self.num_heads

    @property
    def act(self) -> str:
        return self.activation or ("gelu_tanh" if self.mlp == "gelu" else "silu")

    @property
    def rotary(self) -> int:
        """Dimensions of each head that RoPE rotates."""
        return self.rotary_dim or self.head_dim

    def bias(self, part: str) -> bool:
        """Whether the `part` ("attn", "mlp" or "norm") has biases."""
        own = getattr(self, f"{part}_bias")
        return self.use_bias if own is None else own


class Norm(nnx.Module):
    """LayerNorm (with bias when the model has norm biases) or RMSNorm over the last axis.

    `shape` is the scale's shape ([d_model] by default; [heads, head_dim] for QK-norm)."""

    def __init__(self, cfg: DecoderConfig, shape: tuple[int, ...] | None = None, bias=None):
        dtype = jnp.dtype(cfg.param_dtype)
        shape = shape or (cfg.d_model,)
        self.kind, self.eps = cfg.norm, cfg.norm_eps
        self.scale = nnx.Param(jnp.ones(shape, dtype))
        bias = cfg.bias("norm") if bias is None else bias
        has_bias = cfg.norm == "layernorm" and bias
        self.bias = nnx.Param(jnp.zeros(shape, dtype)) if has_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "layernorm":
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        x = x * self.scale[...].astype(x.dtype)
        return x if self.bias is None else x + self.bias[...].astype(x.dtype)


def rotate(x: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (half-split layout). x: [B, T, H, D]."""
    half = x.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * freqs[None, :]
    cos, sin = (f(angles)[None, :, None, :].astype(x.dtype) for f in (jnp.cos, jnp.sin))
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def rope_frequencies(cfg: DecoderConfig) -> np.ndarray:
    """Inverse frequencies [rotary / 2] float32, with `cfg.rope_scaling` applied.

    Follows transformers' ``modeling_rope_utils`` step by step in float32, so angles agree with
    theirs to rounding even at long positions."""
    dim, s = cfg.rotary, cfg.rope_scaling
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = np.float32(1.0) / (np.float32(cfg.rope_theta) ** exponents)
    if s.kind == "linear":
        return inv_freq / np.float32(s.factor)
    if s.kind == "llama3":
        return _llama3(inv_freq, s)
    if s.kind == "yarn":
        return _yarn(cfg, s)
    return inv_freq


def _llama3(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
    low_wavelen = s.original_max_length / s.low_freq_factor
    high_wavelen = s.original_max_length / s.high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(s.factor), inv_freq)
    smooth = (s.original_max_length / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / np.float32(s.factor) + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(cfg: DecoderConfig, s: RopeScaling) -> np.ndarray:
    dim, base = cfg.rotary, cfg.rope_theta

    def correction_dim(rotations: float) -> float:
        return (
            dim * math.log(s.original_max_length / (rotations * 2 * math.pi)) / (2 * math.log(base))
        )

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    high = high + 0.001 if low == high else high  # transformers' guard against a zero range
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (np.float32(s.factor) * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    keep = (1 - ramp).astype(np.float32)  # 1: extrapolate (high frequencies), 0: interpolate
    return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32)


def apply_rope(x: jax.Array, cfg: DecoderConfig) -> jax.Array:
    """Rotate the first `cfg.rotary` dimensions of each head of x [B, T, H, D] by position."""
    inv_freq = jnp.asarray(rope_frequencies(cfg))
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * inv_freq[None, :]
    rot, rest = x[..., : cfg.rotary], x[..., cfg.rotary :]
    if cfg.rope_layout == "half":
        angles = jnp.concatenate([angles, angles], axis=-1)
        half = cfg.rotary // 2
        turned = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    else:  # interleaved pairs (x0, x1), (x2, x3), ...
        angles = jnp.repeat(angles, 2, axis=-1)
        turned = jnp.stack([-rot[..., 1::2], rot[..., ::2]], axis=-1).reshape(rot.shape)
    scale = cfg.rope_scaling.attention_factor if cfg.rope_scaling.kind == "yarn" else 1.0
    cos, sin = ((f(angles) * scale)[None, :, None, :].astype(x.dtype) for f in (jnp.cos, jnp.sin))
    return jnp.concatenate([rot * cos + turned * sin, rest], axis=-1)


class Attention(nnx.Module):
    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        inner, kv = cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        lin = dict(use_bias=cfg.bias("attn"), rngs=rngs, param_dtype=dtype)
        self.q_proj = TrackedLinear(cfg.d_model, inner, **lin)
        self.k_proj = TrackedLinear(cfg.d_model, kv, **lin)
        self.v_proj = TrackedLinear(cfg.d_model, kv, **lin)
        self.o_proj = TrackedLinear(inner, cfg.d_model, init_std=out_std, **lin)
        if cfg.qk_norm:
            self.q_norm = Norm(cfg, (cfg.num_heads, cfg.head_dim), bias=False)
            self.k_norm = Norm(cfg, (cfg.kv_heads, cfg.head_dim), bias=False)
        self.cfg = cfg

    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, (b, t, _) = self.cfg, x.shape
        q = self.q_proj(x).reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, t, cfg.kv_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, t, cfg.kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if cfg.positions == "rope":
            q, k = apply_rope(q, cfg), apply_rope(k, cfg)
        repeat = cfg.num_heads // cfg.kv_heads
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.head_dim)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, cfg.num_heads * cfg.head_dim)
        return self.o_proj(out)


def activation(name: str, x: jax.Array) -> jax.Array:
    if name == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    return jax.nn.silu(x) if name == "silu" else jax.nn.relu(x)


class MLP(nnx.Module):
    """GELU-style (fc_in → act → fc_out) or gated (act(gate) * up → down; SwiGLU with silu)."""

    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        lin = dict(use_bias=cfg.bias("mlp"), rngs=rngs, param_dtype=dtype)
        self.kind, self.act = cfg.mlp, cfg.act
        if cfg.mlp == "gelu":
            self.fc_in = TrackedLinear(cfg.d_model, cfg.d_ff, **lin)
            self.fc_out = TrackedLinear(cfg.d_ff, cfg.d_model, init_std=out_std, **lin)
        else:
            self.gate_proj = TrackedLinear(cfg.d_model, cfg.d_ff, **lin)
            self.up_proj = TrackedLinear(cfg.d_model, cfg.d_ff, **lin)
            self.down_proj = TrackedLinear(cfg.d_ff, cfg.d_model, init_std=out_std, **lin)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "gelu":
            return self.fc_out(activation(self.act, self.fc_in(x)))
        return self.down_proj(activation(self.act, self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """A residual block; `cfg.residual` picks how attention and MLP combine:

    * sequential: x + attn(ln1(x)), then + mlp(ln2(·)) (GPT-2, Llama, NeoX without parallel);
    * parallel: x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX, Pythia);
    * parallel_shared_norm: x + attn(ln1(x)) + mlp(ln1(x)), no ln2 (Cohere).
    """

    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        self.residual = cfg.residual
        self.ln1 = Norm(cfg)
        self.ln2 = None if cfg.residual == "parallel_shared_norm" else Norm(cfg)
        self.attn = Attention(cfg, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.ln1(x)
        if self.residual == "sequential":
            x = x + self.attn(h)
            return x + self.mlp(self.ln2(x))
        mlp_in = h if self.ln2 is None else self.ln2(x)
        return x + self.attn(h) + self.mlp(mlp_in)


class Decoder(nnx.Module):
    """Token ids [B, T] -> next-token logits [B, T, vocab]."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        init = jax.nn.initializers.normal(0.02)
        self.cfg = cfg
        self.embed = nnx.Param(init(rngs.params(), (cfg.vocab_size, cfg.d_model), dtype))
        self.pos_embed = (
            nnx.Param(init(rngs.params(), (cfg.max_length, cfg.d_model), dtype) * 0.5)
            if cfg.positions == "learned"
            else None
        )
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.ln_f = Norm(cfg)
        self.lm_head = (
            None
            if cfg.tie_embeddings
            else nnx.Param(init(rngs.params(), (cfg.d_model, cfg.vocab_size), dtype))
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed_tokens(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)

    def embed_tokens(self, tokens: jax.Array, lookup: Callable | None = None) -> jax.Array:
        """Token ids [B, T] -> the first block's input [B, T, d_model]. `lookup(tokens)`
        replaces the embedding lookup (vocabulary-parallel under FSDP)."""
        t = tokens.shape[1]
        if t > self.cfg.max_length:
            raise ValueError(f"sequence length {t} exceeds max_length {self.cfg.max_length}")
        x = self.embed[...][tokens] if lookup is None else lookup(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed[...][:t][None]
        return x

    def unembed(self, x: jax.Array, head: jax.Array | None = None) -> jax.Array:
        """The last block's output [B, T, d_model] -> logits [B, T, vocab]. `head` [d_model, V']
        replaces the output embedding (a slice of the vocabulary under FSDP)."""
        x = self.ln_f(x)
        if head is None:
            head = self.embed[...].T if self.lm_head is None else self.lm_head[...]
        logits = flat_matmul(x, head.astype(x.dtype))
        return logits if self.cfg.logit_scale == 1.0 else logits * self.cfg.logit_scale


def num_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
