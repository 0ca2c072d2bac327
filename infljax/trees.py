"""Pytrees with a leading stacked axis: one tree per model, layer or step, stacked leaf by leaf."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def stack(trees: Sequence):
    """The trees (same structure and shapes) stacked leaf by leaf along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def take(tree, k):
    """The k-th tree along the leading axis of a stacked `tree` (k may be traced)."""
    return jax.tree.map(lambda x: x[k], tree)


def unstack(tree, n: int) -> list:
    """The `n` trees along the leading axis of `tree` (`stack` undone)."""
    return [take(tree, j) for j in range(n)]
