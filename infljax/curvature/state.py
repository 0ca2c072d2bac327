"""Factor state: sums and counts that merge exactly, and the fitted per-layer factors.

Every pass over data produces `Statistics`: per-layer sums (device arrays) plus `Counts` (Python
ints, exact). Partitions, devices and hosts merge by adding sums and counts, never by averaging
running means, so the result does not depend on how the data was split (DESIGN §2, §7).
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Counts:
    """tokens: non-pad tokens (they normalise A and S); sequences: sequences with at least one
    non-pad token (they normalise the lambdas and the diagonal)."""

    tokens: int = 0
    sequences: int = 0

    def __post_init__(self):
        if self.tokens < 0 or self.sequences < 0:
            raise ValueError(f"counts must be non-negative, got {self}")

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tokens + other.tokens, self.sequences + other.sequences)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CovarianceSums:
    """One layer's Kronecker-factor sums over non-pad tokens.

    a_sum: [d_in, d_in] Σ a aᵀ (d_in includes the bias coordinate); s_sum: [d_out, d_out] Σ g gᵀ.
    """

    a_sum: jax.Array
    s_sum: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LambdaSums:
    """One layer's per-sequence-gradient sums over sequences.

    lambda_sum: [d_out, d_in] Σ (Q_Sᵀ G Q_A)²; diagonal_sum: [d_out, d_in] Σ G².
    """

    lambda_sum: jax.Array
    diagonal_sum: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Eigenbasis:
    """Eigendecomposition of one layer's A and S (columns of the eigvecs are eigenvectors)."""

    a_eigvecs: jax.Array  # [d_in, d_in]
    a_eigvals: jax.Array  # [d_in]
    s_eigvecs: jax.Array  # [d_out, d_out]
    s_eigvals: jax.Array  # [d_out]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerFactors:
    """One tracked layer after fitting; everything a strategy needs to precondition.

    a_eigvecs: [d_in, d_in] Q_A (d_in includes the bias coordinate); a_eigvals: [d_in];
    s_eigvecs: [d_out, d_out] Q_S; s_eigvals: [d_out];
    lambdas: [d_out, d_in] EK-FAC eigenvalues, mean over sequences of (Q_Sᵀ G Q_A)²;
    diagonal: [d_out, d_in] mean over sequences of G²;
    tokens_per_sequence: [] mean non-pad tokens per sequence. K-FAC models a sequence's gradient
      covariance as tokens_per_sequence · (S ⊗ A), i.e. tokens treated as independent.
    """

    a_eigvecs: jax.Array
    a_eigvals: jax.Array
    s_eigvecs: jax.Array
    s_eigvals: jax.Array
    lambdas: jax.Array
    diagonal: jax.Array
    tokens_per_sequence: jax.Array | float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of the layer's gradient."""
        return self.lambdas.shape[-2], self.lambdas.shape[-1]


Factors = dict[str, LayerFactors]
SumsT = TypeVar("SumsT", CovarianceSums, LambdaSums)


@dataclasses.dataclass(frozen=True)
class Statistics(Generic[SumsT]):
    """The result of one pass (or part of one): per-layer sums (host numpy arrays, so that
    statistics from any mesh, partition or file merge) and the exact counts."""

    sums: dict[str, SumsT]
    counts: Counts

    def merge(self, other: Statistics[SumsT]) -> Statistics[SumsT]:
        if set(self.sums) != set(other.sums):
            raise ValueError(
                f"cannot merge statistics of different layers: {sorted(self.sums)} vs "
                f"{sorted(other.sums)}"
            )
        sums = jax.tree.map(np.add, self.sums, other.sums)
        return Statistics(sums, self.counts + other.counts)


def merge_all(parts: list[Statistics[SumsT]]) -> Statistics[SumsT]:
    """Sum of `parts` in the given order (fixed order: reproducible to the last bit)."""
    if not parts:
        raise ValueError("no statistics to merge: the fitting data is empty")
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


def zero_covariance(shapes: dict[str, tuple[int, int]], dtype) -> dict[str, CovarianceSums]:
    """Zero sums for layers {path: (d_out, d_in)}."""
    return {
        p: CovarianceSums(jnp.zeros((i, i), dtype), jnp.zeros((o, o), dtype))
        for p, (o, i) in shapes.items()
    }


def zero_lambdas(shapes: dict[str, tuple[int, int]], dtype) -> dict[str, LambdaSums]:
    return {
        p: LambdaSums(jnp.zeros((o, i), dtype), jnp.zeros((o, i), dtype))
        for p, (o, i) in shapes.items()
    }


def build_factors(
    covariance: Statistics[CovarianceSums],
    bases: dict[str, Eigenbasis],
    lambdas: Statistics[LambdaSums],
) -> Factors:
    """Fitted factors from the two passes: sums divided by their counts."""
    if lambdas.counts.sequences == 0 or covariance.counts.sequences == 0:
        raise ValueError("no sequence with a real token was seen; the fitting data is empty")
    n = lambdas.counts.sequences
    tokens_per_sequence = covariance.counts.tokens / covariance.counts.sequences
    return {
        path: LayerFactors(
            a_eigvecs=basis.a_eigvecs,
            a_eigvals=basis.a_eigvals,
            s_eigvecs=basis.s_eigvecs,
            s_eigvals=basis.s_eigvals,
            lambdas=jnp.asarray(lambdas.sums[path].lambda_sum / n),
            diagonal=jnp.asarray(lambdas.sums[path].diagonal_sum / n),
            tokens_per_sequence=jnp.asarray(tokens_per_sequence, basis.a_eigvals.dtype),
        )
        for path, basis in bases.items()
    }
