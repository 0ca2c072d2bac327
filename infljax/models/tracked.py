"""The tracked linear layer: the one place where a layer exposes `a` and `g` (DESIGN §2, §6).

`y = a · kernel (+ bias)`. Inside `nnx.capture` the layer sows its input `a` into
`nnx.Intermediate` under the name ``"a"`` and adds a zero perturbation named ``"g"`` to its
output, so the gradient of the loss w.r.t. that perturbation is `g = ∂loss/∂y`. Outside a capture
call it is a plain linear layer: nothing is stored and nothing is perturbed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def flat_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., d_in] @ w [d_in, d_out] as one 2-D product: XLA:CPU forms the weight gradient of a
    3-D product [B, T, d_in] far more slowly (0.28 ms vs 0.08 ms per MFLOP measured for the
    demo's tied head), the same result otherwise."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def _capturing(module: nnx.Module) -> bool:
    # flax 0.12 marks modules inside `nnx.capture` with a `__captures__` attribute; sow/perturb
    # outside capture are deprecated (and would store state), so the layer only calls them here.
    # tests/models/test_capture.py guards this against flax changes.
    return hasattr(module, "__captures__")


class TrackedLinear(nnx.Module):
    """A linear layer whose input and output gradient can be captured.

    Attributes:
      kernel: [d_in, d_out] (flax layout; the per-sequence gradient `G = Σ_t g_t a_tᵀ` is its
        transpose, [d_out, d_in(+1)] with the bias column last).
      bias: [d_out] or None.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        use_bias: bool,
        rngs: nnx.Rngs,
        init_std: float = 0.02,
        param_dtype: jnp.dtype = jnp.float32,
    ):
        init = jax.nn.initializers.normal(init_std)
        self.kernel = nnx.Param(init(rngs.params(), (d_in, d_out), param_dtype))
        self.bias = nnx.Param(jnp.zeros((d_out,), param_dtype)) if use_bias else None
        self.d_in, self.d_out = d_in, d_out

    def __call__(self, a: jax.Array) -> jax.Array:
        """a: [..., d_in] -> y: [..., d_out]."""
        y = flat_matmul(a, self.kernel[...].astype(a.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(a.dtype)
        if _capturing(self):
            self.sow(nnx.Intermediate, "a", a)
            y = self.perturb("g", y)
        return y
