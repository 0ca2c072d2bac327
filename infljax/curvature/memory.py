"""Memory estimate of a factor fit (DESIGN §7b), printed before the stage starts.

Per device: the parameters (replicated), the running sums of every layer (A, S, lambdas,
diagonal), the captured `a` and `g` of the local batch, and the lambda pass's per-sequence
gradients for one chunk (plain and rotated). The model's own activations for the backward pass
are not counted; the estimate is a floor, and the stage refuses a plan whose floor already
exceeds the device's memory.
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device."""

    params: int
    factor_sums: int
    captured: int
    lambda_chunk: int

    @property
    def total(self) -> int:
        return self.params + self.factor_sums + self.captured + self.lambda_chunk

    def lines(self) -> list[str]:
        return [
            f"parameters          {_gib(self.params)}",
            f"factor sums         {_gib(self.factor_sums)}  (A, S, lambdas, diagonal)",
            f"captured a and g    {_gib(self.captured)}  (local batch x length x (d_in + d_out))",
            f"lambda chunk        {_gib(self.lambda_chunk)}  (2 x chunk x d_out x d_in)",
            f"total (floor)       {_gib(self.total)}",
        ]


def _gib(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:8.2f} {unit}"
    return f"{n:8d} B  "


def estimate_memory(
    shapes: dict[str, tuple[int, int]],
    *,
    param_bytes: int,
    local_batch: int,
    length: int,
    lambda_chunk: int,
    itemsize: int,
) -> MemoryEstimate:
    """shapes: {layer: (d_out, d_in)}; local_batch: sequences per device; itemsize: bytes of
    the statistics dtype."""
    sums = sum(i * i + o * o + 2 * o * i for o, i in shapes.values())
    captured = sum(local_batch * length * (i + o) for o, i in shapes.values())
    chunk = min(lambda_chunk, local_batch)
    chunk_grads = max((2 * chunk * o * i for o, i in shapes.values()), default=0)
    return MemoryEstimate(
        params=param_bytes,
        factor_sums=sums * itemsize,
        captured=captured * itemsize,
        lambda_chunk=chunk_grads * itemsize,
    )


def device_memory_limit() -> int | None:
    """Bytes the first local device can hold, or None when the backend does not say (CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else stats.get("bytes_limit")


def check_fits(estimate: MemoryEstimate, limit: int | None) -> None:
    """Raise MemoryError with the numbers when the estimate exceeds `limit` bytes."""
    if limit is not None and estimate.total > limit:
        raise MemoryError(
            "the factor fit will not fit in device memory:\n  "
            + "\n  ".join(estimate.lines())
            + f"\n  device limit        {_gib(limit)}\n"
            "Lower config.factors.batch_size or lambda_chunk, track fewer layers, or use more "
            "devices along the data axis."
        )
