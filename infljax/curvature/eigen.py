"""Eigendecomposition of the Kronecker factors: symmetrise, `eigh` in float64, fixed signs.

On a backend with float64 enabled the decomposition runs on the device; otherwise on the host in
numpy (DESIGN §2). Eigenvector signs are fixed (largest-magnitude entry positive) so that factors
fitted twice on the same data compare entry by entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from infljax.curvature.state import CovarianceSums, Eigenbasis, Statistics


class NonFiniteFactorError(FloatingPointError):
    """A Kronecker factor holds NaN or inf (a non-finite parameter, activation or gradient)."""


def safe_eigh(matrix, name: str, on_host: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(eigvals [n] ascending, eigvecs [n, n] columns) of the symmetrised `matrix`, float64.

    Raises NonFiniteFactorError naming `name` when the matrix holds NaN or inf.
    """
    on_host = not jax.config.jax_enable_x64 if on_host is None else on_host
    host = np.asarray(jax.device_get(matrix))
    bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
    if bad:
        raise NonFiniteFactorError(
            f"{name} has {bad} non-finite entries (of {host.size}): the layer's inputs or output "
            "gradients overflowed or a parameter is NaN/inf. Check the model's parameters and "
            "the fitting data (try a wider param_dtype)."
        )
    if on_host:
        host = host.astype(np.float64)
        vals, vecs = np.linalg.eigh(0.5 * (host + host.T))
    else:
        m = jnp.asarray(matrix, jnp.float64)
        vals, vecs = (np.asarray(x) for x in jnp.linalg.eigh(0.5 * (m + m.T)))
    return vals, _fix_signs(vecs)


def _fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive."""
    rows = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[rows, np.arange(vecs.shape[1])])
    return vecs * np.where(signs == 0, 1.0, signs)


def eigendecompose(
    covariance: Statistics[CovarianceSums], on_host: bool | None = None
) -> dict[str, Eigenbasis]:
    """Eigenbases of A = a_sum / tokens and S = s_sum / tokens for every layer.

    The eigvecs and eigvals come back in the dtype of the sums (float64 math inside).
    """
    tokens = covariance.counts.tokens
    if tokens == 0:
        raise ValueError("no real token was seen in the covariance pass; the data is empty")
    bases = {}
    for path, sums in covariance.sums.items():
        dtype = sums.a_sum.dtype
        a_vals, a_vecs = safe_eigh(sums.a_sum, f"layer {path}: activation factor A", on_host)
        s_vals, s_vecs = safe_eigh(sums.s_sum, f"layer {path}: gradient factor S", on_host)
        bases[path] = Eigenbasis(
            a_eigvecs=jnp.asarray(a_vecs, dtype),
            a_eigvals=jnp.asarray(a_vals / tokens, dtype),
            s_eigvecs=jnp.asarray(s_vecs, dtype),
            s_eigvals=jnp.asarray(s_vals / tokens, dtype),
        )
    return bases
