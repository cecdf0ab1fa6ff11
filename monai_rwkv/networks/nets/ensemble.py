"""
Geometric self-ensemble: a restoration network averaged over symmetries of its input grid (test-time augmentation
without randomness; the "self-ensemble" of Lim et al., EDSR, CVPR-W 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["SelfEnsemble", "grid_symmetries"]

Symmetry = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def grid_symmetries(spatial_dims: int) -> Iterator[Symmetry]:
    """
    The 8 ``(forward, inverse)`` pairs :class:`SelfEnsemble` averages over, for tensors ``(B, C, *spatial)``.

    2D: the symmetries of the square on ``(H, W)``: rotations by 0, 90, 180 and 270 degrees, each with and without
    a transpose (a 90-degree rotation swaps ``H`` and ``W``: the network must accept both shapes). 3D: the flips of
    any subset of the three axes (the shape is kept, so patches need not be cubes). The identity comes first.
    """
    if spatial_dims == 2:
        for transpose in (False, True):
            for k in range(4):

                def forward(x: torch.Tensor, k: int = k, transpose: bool = transpose) -> torch.Tensor:
                    return torch.rot90(x.transpose(-1, -2) if transpose else x, k, (-2, -1))

                def inverse(y: torch.Tensor, k: int = k, transpose: bool = transpose) -> torch.Tensor:
                    y = torch.rot90(y, -k, (-2, -1))
                    return y.transpose(-1, -2) if transpose else y

                yield forward, inverse
    elif spatial_dims == 3:
        for mask in range(8):
            dims = [-3 + a for a in range(3) if mask >> a & 1]

            def flip(x: torch.Tensor, dims: list[int] = dims) -> torch.Tensor:
                return torch.flip(x, dims) if dims else x

            yield flip, flip
    else:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")


class SelfEnsemble(nn.Module):
    """
    ``network`` averaged over the 8 grid symmetries of :func:`grid_symmetries`: each symmetry is applied to the
    input, the network runs, the inverse is applied to its output, and the 8 outputs are averaged. For a network
    trained with random rotations and flips this removes part of its orientation-dependent error at 8 times the
    compute; it changes no weights.

    Input ``(B, C_in, *spatial)``, output ``(B, C_out, *spatial)`` as ``network`` gives it (float32 sums).

    Args:
        network: an image-to-image network whose output has the input's spatial shape (2D networks must accept
            ``(W, H)`` patches as well as ``(H, W)``).
        spatial_dims: 2 or 3.

    Example::

        net = SelfEnsemble(RestoreRWKV(spatial_dims=2, in_channels=1, out_channels=1), spatial_dims=2).eval()
        y = net(torch.rand(2, 1, 64, 96))  # (2, 1, 64, 96)
    """

    def __init__(self, network: nn.Module, spatial_dims: int = 2) -> None:
        super().__init__()
        self.symmetries = list(grid_symmetries(spatial_dims))
        self.network = network
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected (B, C, *spatial) with {self.spatial_dims} spatial dims, got {tuple(x.shape)}.")
        total = None
        for forward, inverse in self.symmetries:
            out = inverse(self.network(forward(x).contiguous())).float()
            total = out.clone() if total is None else total.add_(out)  # never the input's own memory
        return total / len(self.symmetries)
