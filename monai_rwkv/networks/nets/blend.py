"""
Restoration strength: a network's output blended with its own input, ``x + strength * (network(x) - x)``.

Clinical denoisers offer the same choice as a percentage or a "level" (iterative reconstructions are commonly
blended with the filtered back-projection they start from): a partial restoration keeps more of the input's noise
and with it more of its fine texture.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BlendWithInput", "check_strength"]


def check_strength(strength: float) -> float:
    """``strength`` as a float; a ``ValueError`` saying what is allowed unless it is a number in [0, 1]."""
    problem = ValueError(f"strength must be a number in [0, 1] (1: the full restoration), got {strength!r}.")
    if isinstance(strength, bool):
        raise problem
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise problem from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise problem
    return value


class BlendWithInput(nn.Module):
    """
    ``x + strength * (network(x) - x)``: ``strength`` 1 is the network, 0 the input, 0.5 half of the change the
    network makes to each pixel. Computed in float32 (also when the network returns half precision under AMP).

    Input ``(B, C, *spatial)``; the network's output must have the same shape (an image-to-image network on its
    own grid, e.g. a denoiser; not an upsampling network), or fewer channels when the input's last channels
    condition the network (e.g. a noise-level map, ``RestoreRWKV(conditioning_channels=...)``): the output is
    blended with the input's first channels.

    Args:
        network: an image-to-image module (or :class:`~monai_rwkv.networks.nets.SelfEnsemble` of one).
        strength: the fraction of the network's change kept, in [0, 1].

    Example::

        net = BlendWithInput(RestoreRWKV(spatial_dims=2, in_channels=1, out_channels=1), strength=0.5).eval()
        y = net(torch.rand(2, 1, 64, 64))  # (2, 1, 64, 64)
    """

    def __init__(self, network: nn.Module, strength: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.strength = check_strength(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.network(x)
        if y.shape[2:] == x.shape[2:] and y.shape[:1] == x.shape[:1] and y.shape[1] < x.shape[1]:
            x = x[:, : y.shape[1]]  # the image channels of a conditioned input
        if y.shape != x.shape:
            raise ValueError(
                f"strength < 1 blends the network's output with its input, which needs the input's shape: input "
                f"{tuple(x.shape)}, output {tuple(y.shape)}; use strength 1 with this network."
            )
        x = x.float()
        return x + self.strength * (y.float() - x)
