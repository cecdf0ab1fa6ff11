"""Image-quality metrics with the Restore-RWKV evaluation protocol (physical units, per-slice data range)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ssim_and_cs

from monai_rwkv.transforms._util import sobel_magnitude

__all__ = ["CT_EVAL_WINDOW", "CT_FLAT_GRADIENT", "edge_band_rmse", "flat_region_rmse", "slice_metrics"]

#: Hounsfield window the paper truncates CT to before computing metrics.
CT_EVAL_WINDOW = (-160.0, 240.0)
#: HU per pixel: the Sobel gradient below which CT soft tissue counts as flat in :func:`flat_region_rmse` reports
#: (where residual noise and streaks show; edges are steeper).
CT_FLAT_GRADIENT = 20.0


def slice_metrics(
    pred: torch.Tensor, label: torch.Tensor, window: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and RMSE of each 2D slice, as in the paper's protocol.

    Both images are in physical units (e.g. HU) and optionally truncated to ``window`` first. The data
    range of each slice is ``max(label) - min(label)`` of that slice (after truncation). SSIM uses an
    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03. RMSE is in physical units.

    Args:
        pred: (N, H, W) or (N, 1, H, W) restored slices.
        label: reference slices of the same shape.
        window: optional (low, high) truncation, e.g. :data:`CT_EVAL_WINDOW`.

    Returns:
        dict with "psnr" (dB), "ssim" and "rmse", each a float64 tensor of shape (N,).
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred and label shapes differ: {tuple(pred.shape)} vs {tuple(label.shape)}.")
    pred, label = pred.double(), label.double()
    if pred.dim() == 3:
        pred, label = pred.unsqueeze(1), label.unsqueeze(1)
    if window is not None:
        pred, label = pred.clamp(*window), label.clamp(*window)
    data_range = (label.amax(dim=(1, 2, 3)) - label.amin(dim=(1, 2, 3))).clamp_min(1e-12)
    mse = ((pred - label) ** 2).mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
    ssim = torch.stack(
        [
            compute_ssim_and_cs(
                p[None],
                t[None],
                spatial_dims=2,
                kernel_size=(11, 11),
                kernel_sigma=(1.5, 1.5),
                data_range=float(r),
                kernel_type="gaussian",
                k1=0.01,
                k2=0.03,
            )[0].mean()
            for p, t, r in zip(pred, label, data_range)
        ]
    )
    return {"psnr": psnr, "ssim": ssim, "rmse": mse.sqrt()}


def flat_region_rmse(
    pred: torch.Tensor, label: torch.Tensor, window: Sequence[float], max_gradient: float
) -> torch.Tensor:
    """RMSE of each 2D slice over its flat region: where residual noise and streaks are most visible.

    The flat region of a slice holds the pixels whose label lies strictly inside ``window`` and whose Sobel
    gradient magnitude (per pixel, the Sobel responses divided by 8, replicated edges) is below ``max_gradient``;
    both are in the label's units (e.g. HU and HU per pixel). Nothing is truncated: the error is the full one.

    Args:
        pred: (N, H, W) or (N, 1, H, W) restored slices.
        label: reference slices of the same shape.
        window: ``(low, high)`` range of the label values that count (e.g. :data:`CT_EVAL_WINDOW`).
        max_gradient: gradient threshold of the flat region.

    Returns:
        float64 tensor (N,): the RMSE per slice, NaN where a slice has no flat pixel.
    """
    pred, label = _slice_batch(pred, label)
    if not max_gradient > 0:
        raise ValueError(f"max_gradient must be > 0, got {max_gradient!r}.")
    flat = (label > window[0]) & (label < window[1]) & (sobel_magnitude(label) < max_gradient)
    return _masked_rmse(pred, label, flat)


def edge_band_rmse(
    pred: torch.Tensor, label: torch.Tensor, window: Sequence[float], threshold: float, width: float
) -> torch.Tensor:
    """RMSE of each 2D slice over the band of soft tissue next to dense structure (e.g. brain and scalp along the
    skull), where edges blur and streaks leave the dense structure.

    The band of a slice holds the pixels whose label lies strictly inside ``window`` and below ``threshold``, and
    whose centre lies within ``width`` pixels (Euclidean distance between pixel centres) of a pixel whose label is
    at or above ``threshold``; ``window`` and ``threshold`` are in the label's units (e.g. HU). Nothing is
    truncated: the error is the full one.

    Args:
        pred: (N, H, W) or (N, 1, H, W) restored slices.
        label: reference slices of the same shape.
        window: ``(low, high)`` range of the label values that count (e.g. :data:`CT_EVAL_WINDOW`).
        threshold: label value from which a pixel is dense (e.g. 300 HU for bone).
        width: band width in pixels (> 0; 1.5 gives the 8 neighbours of dense pixels).

    Returns:
        float64 tensor (N,): the RMSE per slice, NaN where a slice has no band pixel.
    """
    pred, label = _slice_batch(pred, label)
    if not width > 0:
        raise ValueError(f"width must be > 0 pixels, got {width!r}.")
    radius = int(math.floor(width))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    disk = (torch.hypot(offsets[:, None], offsets[None, :]) <= width).double()[None, None]
    dense = (label >= threshold).double()
    near = torch.nn.functional.conv2d(dense, disk, padding=radius) > 0
    band = near & (label < threshold) & (label > window[0]) & (label < window[1])
    return _masked_rmse(pred, label, band)


def _slice_batch(pred: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W)`` or ``(N, 1, H, W)`` slices of one shape as float64 ``(N, 1, H, W)``."""
    if pred.shape != label.shape:
        raise ValueError(f"pred and label shapes differ: {tuple(pred.shape)} vs {tuple(label.shape)}.")
    pred, label = pred.double(), label.double()
    if pred.dim() == 3:
        pred, label = pred.unsqueeze(1), label.unsqueeze(1)
    return pred, label


def _masked_rmse(pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMSE over the ``mask`` pixels of each ``(N, 1, H, W)`` slice, ``(N,)``; NaN for a slice without one."""
    squared = torch.where(mask, (pred - label) ** 2, torch.zeros_like(pred)).sum(dim=(1, 2, 3))
    count = mask.sum(dim=(1, 2, 3))
    return torch.where(count > 0, (squared / count.clamp_min(1)).sqrt(), torch.full_like(squared, math.nan))
