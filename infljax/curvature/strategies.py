"""Preconditioning strategies behind one interface: the damped inverse-curvature product.

For a layer's gradient V [d_out, d_in] (DESIGN §2):

* ``identity``: V (the plain gradient dot product).
* ``diagonal``: V ⊘ (D + λ), D = mean over sequences of G².
* ``kfac``: Q_S [(Q_Sᵀ V Q_A) ⊘ (n̄ · s ⊗ a + λ)] Q_Aᵀ, s and a the eigenvalues of S and A and
  n̄ the mean tokens per sequence (tokens treated as independent).
* ``ekfac``: the same with the fitted eigenvalues Λ in place of n̄ · s ⊗ a.

Damping λ is `DampingArgs.absolute` when positive, else `scale` × the mean of the eigenvalues the
strategy uses (D, n̄ · s ⊗ a or Λ).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from infljax.curvature.state import LayerFactors

STRATEGIES = ("identity", "diagonal", "kfac", "ekfac")


@dataclasses.dataclass(frozen=True)
class DampingArgs:
    """scale: λ = scale × mean(curvature eigenvalues) per layer; absolute > 0 overrides it."""

    scale: float = 0.1
    absolute: float = 0.0

    def __post_init__(self):
        if self.scale < 0 or self.absolute < 0:
            raise ValueError(f"damping must be non-negative, got {self}")
        if self.scale == 0 and self.absolute == 0:
            raise ValueError(
                "damping scale and absolute are both 0: the inverse may not exist; "
                "set DampingArgs.scale (e.g. 0.1) or DampingArgs.absolute"
            )


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {STRATEGIES}")


def curvature_eigenvalues(strategy: str, factors: LayerFactors) -> jax.Array:
    """[d_out, d_in] undamped eigenvalues of the strategy's curvature (diagonal: its entries)."""
    check_strategy(strategy)
    if strategy == "diagonal":
        return factors.diagonal
    if strategy == "kfac":
        return factors.tokens_per_sequence * jnp.outer(factors.s_eigvals, factors.a_eigvals)
    if strategy == "ekfac":
        return factors.lambdas
    raise ValueError("the identity strategy has no curvature eigenvalues")


def damping_value(eigenvalues: jax.Array, damping: DampingArgs) -> jax.Array:
    """λ: absolute when set, else scale × mean(eigenvalues)."""
    if damping.absolute > 0:
        return jnp.asarray(damping.absolute, eigenvalues.dtype)
    return damping.scale * jnp.mean(eigenvalues)


def precondition(
    strategy: str, factors: LayerFactors | None, grads: jax.Array, damping: DampingArgs
) -> jax.Array:
    """grads [..., d_out, d_in] -> the damped inverse-curvature product, same shape. Jit-able.

    The identity strategy returns `grads` (factors may be None). Raises ValueError listing the
    valid strategies for an unknown one.
    """
    check_strategy(strategy)
    if strategy == "identity":
        return grads
    if factors is None:
        raise ValueError(f"strategy {strategy!r} needs fitted factors, got None")
    eigenvalues = curvature_eigenvalues(strategy, factors)
    denominator = eigenvalues + damping_value(eigenvalues, damping)
    if strategy == "diagonal":
        return grads / denominator
    q_s, q_a = factors.s_eigvecs, factors.a_eigvecs
    rotated = jnp.swapaxes(q_s, 0, 1) @ grads @ q_a
    return q_s @ (rotated / denominator) @ jnp.swapaxes(q_a, 0, 1)


def curvature_matrix(
    strategy: str, factors: LayerFactors | None, damping: DampingArgs
) -> np.ndarray:
    """The explicit damped curvature [d_out·d_in, d_out·d_in] (tiny layers only, for tests).

    Vectors are row-major over [d_out, d_in] (`grads.reshape(-1)`), so that
    `curvature_matrix(...) @ precondition(..., V).reshape(-1) == V.reshape(-1)`.
    """
    check_strategy(strategy)
    if factors is None:
        raise ValueError("curvature_matrix needs factors (for the layer's shape)")
    d_out, d_in = factors.shape
    if strategy == "identity":
        return np.eye(d_out * d_in)
    eigenvalues = np.asarray(curvature_eigenvalues(strategy, factors))
    diag = (eigenvalues + np.asarray(damping_value(jnp.asarray(eigenvalues), damping))).ravel()
    if strategy == "diagonal":
        return np.diag(diag)
    # vec(Q_S X Q_Aᵀ) = (Q_S ⊗ Q_A) vec(X) for row-major vec.
    q = np.kron(np.asarray(factors.s_eigvecs), np.asarray(factors.a_eigvecs))
    return (q * diag) @ q.T
