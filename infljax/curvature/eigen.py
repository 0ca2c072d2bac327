"""Eigendecomposition of the Kronecker factors: symmetrise, `eigh` in float64, fixed signs.

Where it runs (DESIGN §2): on GPUs, on the devices in float64 (`jax.enable_x64` for the call
alone), each local device taking its share of the factors; on CPUs and TPUs (no native float64)
on the host in numpy, unless float64 is enabled for the whole process (then on the devices, as
tests do). With several processes each process decomposes its share and broadcasts it.
Eigenvector signs are fixed (largest-magnitude entry positive) so that factors fitted twice on
the same data compare entry by entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from infljax.curvature.state import CovarianceSums, Eigenbasis, Statistics


class NonFiniteFactorError(FloatingPointError):
    """A Kronecker factor holds NaN or inf (a non-finite parameter, activation or gradient)."""


def safe_eigh(matrix, name: str, on_host: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(eigvals [n] ascending, eigvecs [n, n] columns) of the symmetrised `matrix`, float64.

    `on_host`: numpy on the host, or the first local device (default: `eigh_on_host()`).
    Raises NonFiniteFactorError naming `name` when the matrix holds NaN or inf.
    """
    host = np.asarray(jax.device_get(matrix))
    _check_finite(host, name)
    on_host = eigh_on_host() if on_host is None else on_host
    return _finish(_start(host, None if on_host else jax.local_devices()[0]))


def eigh_on_host() -> bool:
    """Whether factors are decomposed on the host: yes unless the devices are GPUs or float64 is
    enabled for the whole process."""
    return not (jax.config.jax_enable_x64 or jax.local_devices()[0].platform == "gpu")


def _start(host: np.ndarray, device) -> tuple:
    """Start the decomposition of `host` (float64) on `device` (returns at once: JAX dispatches
    asynchronously), or compute it in numpy when `device` is None."""
    host = host.astype(np.float64)
    if device is None:
        return np.linalg.eigh(0.5 * (host + host.T))
    with jax.enable_x64(True):
        return _symmetric_eigh(jax.device_put(host, device))


@jax.jit
def _symmetric_eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.linalg.eigh(0.5 * (m + m.T))


def _finish(started: tuple) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = (np.asarray(x) for x in jax.device_get(started))
    return vals, _fix_signs(vecs)


def _check_finite(host: np.ndarray, name: str) -> None:
    bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
    if bad:
        raise NonFiniteFactorError(
            f"{name} has {bad} non-finite entries (of {host.size}): the layer's inputs or output "
            "gradients overflowed or a parameter is NaN/inf. Check the model's parameters and "
            "the fitting data (try a wider param_dtype)."
        )


def _fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive."""
    rows = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[rows, np.arange(vecs.shape[1])])
    return vecs * np.where(signs == 0, 1.0, signs)


def eigendecompose(
    covariance: Statistics[CovarianceSums], on_host: bool | None = None
) -> dict[str, Eigenbasis]:
    """Eigenbases of A = a_sum / tokens and S = s_sum / tokens for every layer.

    The eigvecs and eigvals come back in the dtype of the sums (float64 math inside). With
    several processes the decompositions are shared out: factor j (A then S of each layer, in
    order) is decomposed by process j mod P only and broadcast to the others. On the devices
    (`on_host` False; default `eigh_on_host()`), a process's factors go out in waves of one per
    local device, so a device holds one factor's decomposition at a time.
    """
    tokens = covariance.counts.tokens
    if tokens == 0:
        raise ValueError("no real token was seen in the covariance pass; the data is empty")
    jobs = [  # (layer, "a" | "s", matrix, name for errors)
        (path, key, matrix, f"layer {path}: {what}")
        for path, sums in covariance.sums.items()
        for key, matrix, what in (
            ("a", sums.a_sum, "activation factor A"),
            ("s", sums.s_sum, "gradient factor S"),
        )
    ]
    for *_, matrix, name in jobs:  # every process checks every factor, so all fail alike
        _check_finite(np.asarray(jax.device_get(matrix)), name)
    count, index = jax.process_count(), jax.process_index()
    on_host = eigh_on_host() if on_host is None else on_host
    devices = [None] if on_host else jax.local_devices()
    queue = [j for j in range(len(jobs)) if j % count == index]
    mine = {}
    for start in range(0, len(queue), len(devices)):
        wave = queue[start : start + len(devices)]
        hosts = [np.asarray(jax.device_get(jobs[j][2])) for j in wave]
        started = [_start(h, d) for h, d in zip(hosts, devices, strict=False)]
        mine.update(zip(wave, map(_finish, started), strict=True))
    parts: dict[str, dict[str, np.ndarray]] = {}
    for j, (path, key, matrix, _) in enumerate(jobs):
        vals, vecs = mine.get(j) or (np.zeros(matrix.shape[:1]), np.zeros(matrix.shape))
        vals, vecs = np.asarray(vals / tokens, matrix.dtype), np.asarray(vecs, matrix.dtype)
        if count > 1:
            vals, vecs = multihost_utils.broadcast_one_to_all((vals, vecs), j % count == index)
        parts.setdefault(path, {}).update({f"{key}_eigvals": vals, f"{key}_eigvecs": vecs})
    return {
        path: Eigenbasis(**{k: jnp.asarray(v) for k, v in p.items()}) for path, p in parts.items()
    }
