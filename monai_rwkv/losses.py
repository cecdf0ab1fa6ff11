"""Training losses for restoration networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["L1SSIMLoss"]


class L1SSIMLoss(torch.nn.Module):
    """``L1(pred, target) + window_l1_weight * L1(clip(pred), clip(target)) + ssim_weight * (1 - SSIM)``, the
    second and third terms inside an intensity window.

    The first L1 term covers the whole intensity range; the windowed L1 term (off by default) clips both images to
    ``window`` in their own units, so a pixel whose two values lie inside the window counts ``1 + window_l1_weight``
    times. The SSIM term clips both images to ``window`` and rescales the window to [0, 1], so that it scores
    structure where the evaluation looks (e.g. a soft-tissue window of CT) with the evaluation's SSIM settings:
    Gaussian window ``win_size`` x ``win_size``, sigma ``sigma``, K1 = 0.01, K2 = 0.03. It equals
    :func:`monai_rwkv.metrics.slice_metrics`' SSIM of the windowed images shifted so that the window starts at 0
    (SSIM's luminance term depends on the origin of the intensities). Pixels clipped in the prediction get no
    gradient from the windowed terms, only from the first L1 term.

    Args:
        spatial_dims: 2 for ``(B, C, H, W)`` batches, 3 for ``(B, C, D, H, W)``.
        window: ``(low, high)`` in the units of ``pred`` and ``target`` (the network's normalised intensities),
            None for the whole of ``[0, 1]``.
        ssim_weight: weight of ``1 - SSIM``; 0 gives plain L1.
        window_l1_weight: weight of the L1 term between the images clipped to ``window`` (>= 0).
        win_size: side of the SSIM window in pixels.
        sigma: standard deviation of the Gaussian SSIM window in pixels.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        window: Sequence[float] | None = None,
        ssim_weight: float = 0.1,
        win_size: int = 11,
        sigma: float = 1.5,
        window_l1_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        low, high = (0.0, 1.0) if window is None else (float(window[0]), float(window[1]))
        if not high > low:
            raise ValueError(f"window must be (low, high) with high > low, got {window!r}.")
        if not ssim_weight >= 0:
            raise ValueError(f"ssim_weight must be >= 0, got {ssim_weight!r}.")
        self.spatial_dims, self.low, self.high = spatial_dims, low, high
        if not window_l1_weight >= 0:
            raise ValueError(f"window_l1_weight must be >= 0, got {window_l1_weight!r}.")
        self.ssim_weight, self.win_size, self.sigma = float(ssim_weight), int(win_size), float(sigma)
        self.window_l1_weight = float(window_l1_weight)

    def ssim(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean SSIM of the batch inside the window, a scalar tensor."""
        scale = self.high - self.low
        pred = (pred.float().clamp(self.low, self.high) - self.low) / scale
        target = (target.float().clamp(self.low, self.high) - self.low) / scale
        ssim, _ = compute_ssim_and_cs(
            pred,
            target,
            spatial_dims=self.spatial_dims,
            kernel_size=(self.win_size,) * self.spatial_dims,
            kernel_sigma=(self.sigma,) * self.spatial_dims,
            data_range=1.0,
            kernel_type="gaussian",
            k1=0.01,
            k2=0.03,
        )
        return ssim.mean()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}.")
        loss = torch.nn.functional.l1_loss(pred, target)
        if self.window_l1_weight > 0:
            clipped = torch.nn.functional.l1_loss(pred.clamp(self.low, self.high), target.clamp(self.low, self.high))
            loss = loss + self.window_l1_weight * clipped
        if self.ssim_weight > 0:
            loss = loss + self.ssim_weight * (1.0 - self.ssim(pred, target))
        return loss
