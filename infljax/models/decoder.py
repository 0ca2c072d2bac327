"""One decoder family (GPT-2 style by default) whose block options cover the common variants.

Every linear layer is a `TrackedLinear`, so any of them can be selected for influence by a regex
over its module path (e.g. ``blocks.0.mlp.fc_in``). Pads sit at the end of each row and attention
is causal, so real tokens never attend to pads and no padding mask is needed.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from infljax.models.tracked import TrackedLinear

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Shape and variant of a decoder. Validated on construction."""

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

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"DecoderConfig.{name} must be positive, got {getattr(self, name)}"
                )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"DecoderConfig.d_model={self.d_model} is not divisible by num_heads="
                f"{self.num_heads}"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} not divisible by num_kv_heads")
        for name, valid in (("norm", NORMS), ("mlp", MLPS), ("positions", POSITIONS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"DecoderConfig.{name}={getattr(self, name)!r}; valid: {valid}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


class Norm(nnx.Module):
    """LayerNorm (with bias when the model has biases) or RMSNorm over the last axis."""

    def __init__(self, cfg: DecoderConfig):
        dtype = jnp.dtype(cfg.param_dtype)
        self.kind, self.eps = cfg.norm, cfg.norm_eps
        self.scale = nnx.Param(jnp.ones((cfg.d_model,), dtype))
        has_bias = cfg.norm == "layernorm" and cfg.use_bias
        self.bias = nnx.Param(jnp.zeros((cfg.d_model,), dtype)) if has_bias else None

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


class Attention(nnx.Module):
    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        kv = cfg.kv_heads * cfg.head_dim
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        lin = dict(use_bias=cfg.use_bias, rngs=rngs, param_dtype=dtype)
        self.q_proj = TrackedLinear(cfg.d_model, cfg.d_model, **lin)
        self.k_proj = TrackedLinear(cfg.d_model, kv, **lin)
        self.v_proj = TrackedLinear(cfg.d_model, kv, **lin)
        self.o_proj = TrackedLinear(cfg.d_model, cfg.d_model, init_std=out_std, **lin)
        self.cfg = cfg

    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, (b, t, _) = self.cfg, x.shape
        q = self.q_proj(x).reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, t, cfg.kv_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, t, cfg.kv_heads, cfg.head_dim)
        if cfg.positions == "rope":
            q, k = rotate(q, cfg.rope_theta), rotate(k, cfg.rope_theta)
        repeat = cfg.num_heads // cfg.kv_heads
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.head_dim)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, cfg.d_model)
        return self.o_proj(out)


class MLP(nnx.Module):
    """GELU (fc_in → gelu → fc_out) or SwiGLU (silu(gate) * up → down)."""

    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.param_dtype)
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        lin = dict(use_bias=cfg.use_bias, rngs=rngs, param_dtype=dtype)
        self.kind = cfg.mlp
        if cfg.mlp == "gelu":
            self.fc_in = TrackedLinear(cfg.d_model, cfg.d_ff, **lin)
            self.fc_out = TrackedLinear(cfg.d_ff, cfg.d_model, init_std=out_std, **lin)
        else:
            self.gate_proj = TrackedLinear(cfg.d_model, cfg.d_ff, **lin)
            self.up_proj = TrackedLinear(cfg.d_model, cfg.d_ff, **lin)
            self.down_proj = TrackedLinear(cfg.d_ff, cfg.d_model, init_std=out_std, **lin)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "gelu":
            return self.fc_out(jax.nn.gelu(self.fc_in(x), approximate=True))
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        self.ln1, self.ln2 = Norm(cfg), Norm(cfg)
        self.attn = Attention(cfg, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


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
        t = tokens.shape[1]
        if t > self.cfg.max_length:
            raise ValueError(f"sequence length {t} exceeds max_length {self.cfg.max_length}")
        x = self.embed[...][tokens]
        if self.pos_embed is not None:
            x = x + self.pos_embed[...][:t][None]
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        head = self.embed[...].T if self.lm_head is None else self.lm_head[...]
        return x @ head.astype(x.dtype)


def num_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
