"""Small helpers shared by the degradation and phantom transforms (not part of the public API)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from monai.data import MetaTensor

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
"""Standard deviation of a Gaussian per unit of its full width at half maximum."""


def gaussian_blur(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of the last ``len(sigmas)`` axes of ``x``, edges replicated.

    ``sigmas`` are in samples, one per blurred axis in axis order (0 leaves that axis as it is). Each kernel has
    radius ``max(1, ceil(3 sigma))``, is normalised to sum 1 and computed in ``x.dtype``; the axes are blurred
    from the last to the first. ``x`` keeps its shape, dtype and device.
    """
    first = x.ndim - len(sigmas)
    if first < 0:
        raise ValueError(f"{len(sigmas)} sigmas for a tensor of {x.ndim} axes.")
    for offset in reversed(range(len(sigmas))):
        sigma = float(sigmas[offset])
        if sigma <= 0:
            continue
        radius = max(1, int(math.ceil(3.0 * sigma)))
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
        kernel = kernel / kernel.sum()
        moved = x.movedim(first + offset, -1)
        rows = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (radius, radius), mode="replicate")
        x = F.conv1d(rows, kernel.view(1, 1, -1)).reshape(moved.shape).movedim(-1, first + offset)
    return x


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel gradient magnitude of ``(N, 1, H, W)`` slices: the Sobel responses divided by 8 (a unit ramp along
    either axis gives 1), edges replicated; ``x``'s shape, dtype and device."""
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gy = F.conv2d(padded, torch.outer(diff, smooth)[None, None]) / 8
    gx = F.conv2d(padded, torch.outer(smooth, diff)[None, None]) / 8
    return torch.hypot(gy, gx)


def value_range(
    value: Union[float, Sequence[float]], name: str, low: float = 0.0, strict: bool = False
) -> tuple[float, float]:
    """``(value, value)`` for a number, else the ``(low, high)`` pair; checked: finite, ``low <= high`` and above
    ``low`` (``> low`` when ``strict``, else ``>= low``), or a ``ValueError`` naming ``name``."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    try:
        a, b = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}.") from None
    if not a <= b or not math.isfinite(b):
        raise ValueError(f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}.")
    if not (a > low if strict else a >= low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value!r}.")
    return a, b


def slice_size(value: Sequence[int], name: str) -> tuple[int, int]:
    """``(H, W)`` of a generated slice as ints, or a ``ValueError`` naming ``name`` unless both are 16 or more."""
    size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"{name} must be (H, W) with H, W >= 16, got {value!r}.")
    return size


def centred_grid_mm(shape: tuple[int, int], spacing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates (float64, mm) of every pixel of an ``(H, W)`` grid of ``spacing`` mm pixels,
    zero at the slice's centre: ``(yy, xx)``, each ``(H, W)``."""
    h, w = shape
    y = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) * spacing
    x = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) * spacing
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return yy, xx


def with_pixel_size(image: torch.Tensor, spacing: float) -> MetaTensor:
    """An ``(H, W)`` slice as a ``(1, H, W)`` MetaTensor whose affine holds its square pixel size (no orientation)."""
    affine = torch.diag(torch.tensor([spacing, spacing, 1.0], dtype=torch.float64))
    return MetaTensor(image[None], affine=affine)
