"""Resolution changes of the Restore-RWKV U-Net: convolution plus N-D pixel (un)shuffle."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from monai.networks.utils import pixelshuffle, pixelunshuffle
from torch import nn

__all__ = ["Downsample", "PixelShuffle", "PixelUnshuffle", "Upsample"]


class PixelUnshuffle(nn.Module):
    """Space-to-depth by ``factor`` along every spatial axis: (B, C, *S) -> (B, C f^d, *S / f)."""

    def __init__(self, spatial_dims: int, factor: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.factor = spatial_dims, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixelunshuffle(x, self.spatial_dims, self.factor)


class PixelShuffle(nn.Module):
    """Depth-to-space by ``factor`` along every spatial axis: (B, C f^d, *S) -> (B, C, *S f)."""

    def __init__(self, spatial_dims: int, factor: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.factor = spatial_dims, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixelshuffle(x, self.spatial_dims, self.factor)


class Downsample(nn.Module):
    """Halve every spatial size and double the channels: 3-wide conv to 2C / 2^d, then pixel unshuffle.

    Shapes: (B, C, *S) -> (B, 2C, *S / 2). In 2D this is the published conv C -> C/2 + PixelUnshuffle(2).
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        reduced = _exact_div(2 * channels, 2**spatial_dims, "Downsample")
        conv = Conv[Conv.CONV, spatial_dims](channels, reduced, 3, padding=1, bias=False)
        self.body = nn.Sequential(conv, PixelUnshuffle(spatial_dims, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double every spatial size and halve the channels: 3-wide conv to C 2^d / 2, then pixel shuffle.

    Shapes: (B, C, *S) -> (B, C / 2, *S x 2). In 2D this is the published conv C -> 2C + PixelShuffle(2).
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        expanded = _exact_div(channels * 2**spatial_dims, 2, "Upsample")
        conv = Conv[Conv.CONV, spatial_dims](channels, expanded, 3, padding=1, bias=False)
        self.body = nn.Sequential(conv, PixelShuffle(spatial_dims, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _exact_div(a: int, b: int, name: str) -> int:
    if a % b:
        raise ValueError(f"{name}: {a} channels cannot be split into {b} groups; choose dim divisible by {b}.")
    return a // b
