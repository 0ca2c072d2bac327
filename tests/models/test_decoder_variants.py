"""The converted-checkpoint variants of the decoder family: capture stays exact (float64) and the
options do what they say (RoPE layouts, partial rotary, scaling, config round trip)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from infljax.models.capture import layer_paths
from infljax.models.decoder import (
    DecoderConfig,
    RopeScaling,
    apply_rope,
    rope_frequencies,
    rotate,
)
from tests.models.test_capture import assert_capture_exact, tiny, tiny_batch

VARIANTS = {
    # GPT-NeoX: parallel residual, partial rotary, exact GELU, LayerNorm biases, biased MLP only,
    # untied head, yarn scaling
    "neox_yarn": dict(
        positions="rope",
        residual="parallel",
        rotary_dim=2,
        activation="gelu",
        attn_bias=False,
        tie_embeddings=False,
        rope_scaling=RopeScaling("yarn", 2.0, original_max_length=4, attention_factor=1.07),
    ),
    # Cohere: one shared bias-free LayerNorm, QK-norm, interleaved RoPE, GQA, logit scale, a head
    # size that is not d_model / heads, biased attention, llama3 scaling
    "cohere_llama3": dict(
        positions="rope",
        mlp="swiglu",
        use_bias=False,
        attn_bias=True,
        residual="parallel_shared_norm",
        qk_norm=True,
        rope_layout="interleaved",
        num_kv_heads=1,
        attn_head_dim=6,
        logit_scale=0.5,
        rope_scaling=RopeScaling(
            "llama3", 4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_length=4
        ),
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sum_of_outer_products_equals_kernel_gradient(variant):
    assert_capture_exact(tiny(num_layers=1, **VARIANTS[variant]), tiny_batch())


def test_default_options_keep_paths_and_the_old_rope():
    cfg = DecoderConfig(16, 8, 1, 2, 8, 6, positions="rope", param_dtype="float64")
    x = jax.random.normal(jax.random.key(0), (2, 6, 2, 4), jnp.float64)
    ours, old = jax.jit(lambda x: (apply_rope(x, cfg), rotate(x, cfg.rope_theta)))(x)
    np.testing.assert_allclose(ours, old, rtol=1e-6)
    default = nnx.eval_shape(lambda: tiny())
    assert "blocks.0.mlp.fc_in" in layer_paths(default) and default.blocks[0].ln2 is not None
    cohere = nnx.eval_shape(lambda: tiny(residual="parallel_shared_norm"))
    assert cohere.blocks[0].ln2 is None


def test_rope_layouts_rotate_pairs_by_the_same_angles():
    """Interleaved pairs (x0,x1),(x2,x3) == the half layout after moving pair members apart."""
    half = DecoderConfig(16, 8, 1, 1, 8, 5, positions="rope", rotary_dim=6)
    inter = dataclasses.replace(half, rope_layout="interleaved")
    x = jax.random.normal(jax.random.key(1), (1, 5, 1, 8))
    order = np.array([0, 2, 4, 1, 3, 5, 6, 7])  # interleaved -> half-split positions
    rotated = jax.jit(lambda x: (apply_rope(x, inter), apply_rope(x[..., order], half)))
    ours, reordered = rotated(x)
    np.testing.assert_allclose(ours[..., order], reordered, atol=1e-6)
    np.testing.assert_array_equal(reordered[..., 6:], x[..., 6:])  # not rotated


def test_rope_scalings_change_only_what_they_should():
    base = DecoderConfig(16, 8, 1, 1, 8, 5, positions="rope", rope_theta=100.0)
    plain = rope_frequencies(base)
    linear = rope_frequencies(dataclasses.replace(base, rope_scaling=RopeScaling("linear", 4.0)))
    np.testing.assert_allclose(linear, plain / 4, rtol=1e-6)
    scaling = RopeScaling("llama3", 8.0, original_max_length=64)
    llama3 = rope_frequencies(dataclasses.replace(base, rope_scaling=scaling))
    assert llama3[0] == plain[0] and np.isclose(llama3[-1], plain[-1] / 8)  # high kept, low /8


def test_config_round_trips_through_json_and_rejects_bad_options():
    cfg = DecoderConfig(16, 8, 1, 2, 8, 6, **VARIANTS["cohere_llama3"])
    back = DecoderConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and hash(back) == hash(cfg)
    with pytest.raises(ValueError, match="residual"):
        DecoderConfig(16, 8, 1, 2, 8, 6, residual="sideways")
    with pytest.raises(ValueError, match="rotary_dim=3"):
        DecoderConfig(16, 8, 1, 2, 8, 6, positions="rope", rotary_dim=3)
    with pytest.raises(ValueError, match="original_max_length"):
        RopeScaling("yarn", 2.0)
    with pytest.raises(ValueError, match="act"):
        DecoderConfig(16, 8, 1, 2, 8, 6, activation="tanh")
