"""The token order of a Bi-WKV scan over a grid stored in raster order, as the Triton kernels take it."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["check_scan", "scan_layout"]


def check_scan(seq_len: int, grid: Sequence[int], order: Sequence[int]) -> None:
    """Raises ValueError unless ``order`` is a permutation of the axes of ``grid`` and ``grid`` holds ``seq_len``
    tokens."""
    if sorted(order) != list(range(len(grid))) or math.prod(grid) != seq_len:
        raise ValueError(f"order {tuple(order)} is not a scan of a grid {tuple(grid)} of {seq_len} tokens.")


def scan_layout(seq_len: int, grid: Sequence[int] | None = None, order: Sequence[int] | None = None) -> tuple[int, ...]:
    """The Triton kernels' ``(n1, n2, s0, s1, s2)`` for tokens stored in raster order of the spatial ``grid`` (last
    axis fastest) and scanned with the axes ``order`` (slowest to fastest varying; a permutation of
    ``range(len(grid))``, at most three axes): scan position ``t`` has the digits ``(t // (n1 n2), t // n2 % n1,
    t % n2)`` in the scan's grid, whose axes lie ``s0, s1, s2`` tokens apart in storage. None, or an order that is
    the storage order: ``(1, T, 0, 0, 1)``.

    Raises:
        ValueError: ``order`` is not a permutation of the axes of a grid of ``seq_len`` tokens (:func:`check_scan`),
            or the grid has more than three axes.
    """
    if grid is None or order is None or list(order) == sorted(order):
        return (1, seq_len, 0, 0, 1)
    check_scan(seq_len, grid, order)
    if not 1 <= len(grid) <= 3:
        raise ValueError(f"order {tuple(order)} is not a scan of a grid {tuple(grid)} of {seq_len} tokens.")
    strides = [math.prod(grid[axis + 1 :]) for axis in range(len(grid))]
    sizes = [1] * (3 - len(order)) + [grid[axis] for axis in order]
    steps = [0] * (3 - len(order)) + [strides[axis] for axis in order]
    return (sizes[1], sizes[2], *steps)
