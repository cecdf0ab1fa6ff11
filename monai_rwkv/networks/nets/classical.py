"""
Classical image denoisers as parameter-free ``nn.Module`` s, for baselines that run through the same pipeline as
the networks (:class:`~monai_rwkv.inference.SliceWiseRestorer`, :func:`~monai_rwkv.apps.evaluate.evaluate_low_dose`).

All filters take ``(B, C, H, W)`` images (the restorers give ``(B, 1, H, W)`` in [0, 1]) and return the same
shape and dtype; channels are filtered independently. Borders use reflect padding (``d c b | a b c d``, the edge
sample is not repeated; numpy ``"reflect"``, scipy.ndimage ``"mirror"``), extended periodically so that any
padding width works, even wider than the image. The filters are pure torch (CPU or CUDA, no gradients needed),
compute in at least float32 with autocast disabled, and have no weights (empty ``state_dict``).

Intensity parameters (``sigma_range``, ``h``) are in the units of the input. For the CT restorers, which map
[-1024, 3072] HU to [0, 1] (:data:`~monai_rwkv.inference.CT_INTENSITY_RANGE`), a value in HU converts with
``value_hu / 4096`` (e.g. 20 HU -> 0.0048828125).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BilateralDenoiser", "GaussianDenoiser", "NonLocalMeansDenoiser", "gaussian_kernel1d", "reflect_pad2d"]


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices ``-pad .. size + pad - 1`` mapped into ``[0, size)`` by whole-sample reflection (period 2 (size-1))."""
    idx = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def reflect_pad2d(x: torch.Tensor, pad_h: int, pad_w: int | None = None) -> torch.Tensor:
    """
    Reflect-pad the last two dimensions (``d c b | a b c d | c b a``), any width (periodic beyond the image).

    Args:
        x: ``(..., H, W)``.
        pad_h: rows added above and below.
        pad_w: columns added left and right (default ``pad_h``).

    Returns:
        ``(..., H + 2 pad_h, W + 2 pad_w)``.
    """
    pad_w = pad_h if pad_w is None else pad_w
    if pad_h:
        x = x.index_select(-2, _reflect_index(x.shape[-2], pad_h, x.device))
    if pad_w:
        x = x.index_select(-1, _reflect_index(x.shape[-1], pad_w, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """
    Normalised 1D Gaussian, ``exp(-x^2 / (2 sigma^2))`` for ``|x| <= int(truncate * sigma + 0.5)``, as
    ``scipy.ndimage.gaussian_filter``; ``sigma == 0`` gives ``[1]``.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}.")
    radius = int(truncate * float(sigma) + 0.5)
    if sigma == 0 or radius == 0:
        return torch.ones(1, dtype=dtype)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype)


class _Filter(nn.Module):
    """Shared plumbing: shape check, computation dtype (>= float32, no autocast), result in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``, same dtype and device."""
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}.")
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self._filter(work.contiguous())
        return out.to(x.dtype)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianDenoiser(_Filter):
    """
    Separable Gaussian smoothing with reflect padding.

    ``out = x * g_sigma`` along rows then columns, with the kernel of :func:`gaussian_kernel1d` (radius
    ``int(truncate * sigma + 0.5)``); equals ``scipy.ndimage.gaussian_filter(x, sigma, mode="mirror",
    truncate=truncate)`` on each image.

    Args:
        sigma: standard deviation in pixels (0: identity).
        truncate: kernel radius in standard deviations.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, sigma: float, truncate: float = 4.0) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.sigma = float(sigma)
        self.truncate = float(truncate)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        k = gaussian_kernel1d(self.sigma, self.truncate, x.dtype).to(x.device)
        r = (k.numel() - 1) // 2
        if r == 0:
            return x.clone()
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, w)
        y = F.conv2d(reflect_pad2d(y, r, 0), k.view(1, 1, -1, 1))
        y = F.conv2d(reflect_pad2d(y, 0, r), k.view(1, 1, 1, -1))
        return y.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, truncate={self.truncate}"


class BilateralDenoiser(_Filter):
    """
    Exact (brute-force) bilateral filter with reflect padding.

    For every pixel ``p`` and offsets ``d`` in the square ``[-radius, radius]^2``, with ``P`` the reflect-padded
    image::

        w(p, d) = exp(-|d|^2 / (2 sigma_spatial^2) - (P[p + d] - x[p])^2 / (2 sigma_range^2))
        out[p] = sum_d w(p, d) P[p + d] / sum_d w(p, d)

    computed with one shifted view of ``P`` per offset (memory ``O(B C H W)``, time ``O((2 radius + 1)^2 B C H W)``).

    Args:
        sigma_spatial: spatial standard deviation in pixels (> 0).
        sigma_range: intensity standard deviation in the units of the input (> 0). For the CT restorers
            (HU [-1024, 3072] -> [0, 1]) use ``sigma_hu / 4096``.
        radius: half-width of the square neighbourhood in pixels; None: ``ceil(2 sigma_spatial)``.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, sigma_spatial: float, sigma_range: float, radius: int | None = None) -> None:
        super().__init__()
        if not sigma_spatial > 0 or not sigma_range > 0:
            raise ValueError(f"sigma_spatial and sigma_range must be > 0, got {sigma_spatial}, {sigma_range}.")
        self.sigma_spatial = float(sigma_spatial)
        self.sigma_range = float(sigma_range)
        self.radius = math.ceil(2 * self.sigma_spatial) if radius is None else int(radius)
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}.")

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        r, (h, w) = self.radius, x.shape[-2:]
        padded = reflect_pad2d(x, r)
        num, den = torch.zeros_like(x), torch.zeros_like(x)
        inv_2sr2 = 1.0 / (2 * self.sigma_range**2)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                shifted = padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
                spatial = (dy * dy + dx * dx) / (2 * self.sigma_spatial**2)
                weight = torch.exp(-((shifted - x) ** 2) * inv_2sr2 - spatial)
                num.addcmul_(weight, shifted)
                den.add_(weight)
        return num / den

    def extra_repr(self) -> str:
        return f"sigma_spatial={self.sigma_spatial}, sigma_range={self.sigma_range}, radius={self.radius}"


class NonLocalMeansDenoiser(_Filter):
    """
    Pixel-wise non-local means (Buades et al. 2005) with square patches and a square search window.

    With ``P`` the image reflect-padded by ``search_radius + patch_radius``, for every pixel ``p`` and offset ``d``
    in ``[-search_radius, search_radius]^2``::

        D(p, d) = mean_{u in [-patch_radius, patch_radius]^2} (P[p + u] - P[p + d + u])^2
        w(p, d) = exp(-max(D(p, d) - 2 sigma^2, 0) / h^2)
        out[p]  = sum_d w(p, d) P[p + d] / sum_d w(p, d)

    (the centre offset has weight 1). One shifted view and one separable box filter per offset: memory
    ``O(B C H W)``, time ``O((2 search_radius + 1)^2 B C H W)``.

    Args:
        h: filtering strength, in the units of the input (> 0); for the CT restorers ``h_hu / 4096``.
        patch_radius: half-width of the compared patches (patches of ``2 patch_radius + 1`` pixels square).
        search_radius: half-width of the search window.
        sigma: noise standard deviation subtracted from the patch distance (``2 sigma^2``), input units; 0: none.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, h: float, patch_radius: int = 1, search_radius: int = 5, sigma: float = 0.0) -> None:
        super().__init__()
        if not h > 0:
            raise ValueError(f"h must be > 0, got {h}.")
        if patch_radius < 0 or search_radius < 0 or sigma < 0:
            raise ValueError("patch_radius, search_radius and sigma must be >= 0.")
        self.h = float(h)
        self.patch_radius = int(patch_radius)
        self.search_radius = int(search_radius)
        self.sigma = float(sigma)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        s, p, (h, w) = self.search_radius, self.patch_radius, x.shape[-2:]
        b, c = x.shape[:2]
        padded = reflect_pad2d(x.reshape(b * c, 1, h, w), s + p)  # (BC, 1, H + 2(s+p), W + 2(s+p))
        ref = padded[..., s : s + h + 2 * p, s : s + w + 2 * p]  # the patches around each pixel, offset 0
        num = torch.zeros(b * c, 1, h, w, dtype=x.dtype, device=x.device)
        den = torch.zeros_like(num)
        k = 2 * p + 1
        inv_h2, bias = 1.0 / self.h**2, 2 * self.sigma**2
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                shifted = padded[..., s + dy : s + dy + h + 2 * p, s + dx : s + dx + w + 2 * p]
                dist = (ref - shifted) ** 2
                if p:
                    dist = F.avg_pool2d(F.avg_pool2d(dist, (k, 1), stride=1), (1, k), stride=1)
                weight = torch.exp(-(dist - bias).clamp_min(0) * inv_h2)
                value = shifted[..., p : p + h, p : p + w]
                num.addcmul_(weight, value)
                den.add_(weight)
        return (num / den).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"h={self.h}, patch_radius={self.patch_radius}, search_radius={self.search_radius}, sigma={self.sigma}"
