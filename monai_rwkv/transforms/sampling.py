"""
Training-sample selection: one 2D slice of a channel-first volume, cut along an axis chosen at random (axial,
coronal and sagittal slices of the same volume all become training images, :class:`RandSliced`), and a random
resampling of a slice to a new pixel size (:class:`RandPixelSized`), so that a network sees anatomy and noise at more
scales than the data's own.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

__all__ = ["RandSliced", "RandPixelSized", "slice_candidates"]


def _slice_meta(volume: NdarrayOrTensor, axis: int) -> torch.Tensor | None:
    """A 2D affine ``diag(sa, sb, 1)`` holding the pixel size of slices cut across ``axis`` of a MetaTensor volume."""
    if not isinstance(volume, MetaTensor):
        return None
    spacing = [float(p) for p in volume.pixdim[:3]]
    if len(spacing) != 3:
        return None
    in_plane = [spacing[a] for a in range(3) if a != axis]
    return torch.diag(torch.tensor([*in_plane, 1.0], dtype=torch.float64))


def slice_candidates(volume: torch.Tensor, axis: int, min_foreground: float = 0.0) -> np.ndarray:
    """
    Indices along spatial ``axis`` of a channel-first volume ``(C, i, j, k)`` whose slices have more than
    ``min_foreground`` of their voxels > 0 (all indices when none qualifies).
    """
    data = convert_to_tensor(volume, track_meta=False)
    dims = tuple(d for d in range(data.ndim) if d != axis + 1)
    fraction = (data > 0).float().mean(dim=dims)
    keep = torch.nonzero(fraction > min_foreground).flatten().numpy()
    return keep if keep.size else np.arange(data.shape[axis + 1])


class RandSliced(RandomizableTransform, MapTransform):
    """
    Cut the same random 2D slice out of every key's volume ``(C, i, j, k)``: the axis is drawn from
    ``spatial_axes``, the index from the slices of the ``reference_key`` volume with more than ``min_foreground``
    of their voxels > 0. The result is ``(C, a, b)`` with ``(a, b)`` the two remaining spatial axes in their order.

    Args:
        keys: items to slice (volumes of one shape).
        spatial_axes: axes to draw from (0, 1, 2: sagittal, coronal and axial slices of an RAS volume).
        reference_key: the item whose foreground decides the candidate slices (default: the first key).
        min_foreground: fraction of voxels > 0 a slice needs to be drawn (empty edge slices teach nothing).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_axes: Sequence[int] = (0, 1, 2),
        reference_key: str | None = None,
        min_foreground: float = 0.05,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        axes = tuple(int(a) for a in spatial_axes)
        if not axes or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"spatial_axes must be a non-empty subset of (0, 1, 2), got {spatial_axes}.")
        if not 0 <= min_foreground < 1:
            raise ValueError(f"min_foreground must be in [0, 1), got {min_foreground}.")
        self.spatial_axes = axes
        self.reference_key = reference_key if reference_key is not None else self.keys[0]
        self.min_foreground = float(min_foreground)
        self._axis, self._index = 0, 0

    def randomize(self, volume: torch.Tensor) -> None:
        self._axis = int(self.R.choice(self.spatial_axes))
        self._index = int(self.R.choice(slice_candidates(volume, self._axis, self.min_foreground)))

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        reference = d[self.reference_key]
        if reference.ndim != 4:
            raise ValueError(
                f"RandSliced needs channel-first volumes (C, i, j, k), got shape {tuple(reference.shape)}."
            )
        self.randomize(reference)
        for key in self.key_iterator(d):
            if tuple(d[key].shape) != tuple(reference.shape):
                raise ValueError(
                    f"{key!r} has shape {tuple(d[key].shape)}, {self.reference_key!r} {tuple(reference.shape)}."
                )
            plane = convert_to_tensor(d[key], track_meta=False).select(self._axis + 1, self._index).clone()
            affine = _slice_meta(d[key], self._axis)
            d[key] = plane if affine is None else MetaTensor(plane, affine=affine)
        return d


class RandPixelSized(RandomizableTransform, MapTransform):
    """
    Resample every key's 2D slice ``(C, H, W)`` to one random square pixel size drawn uniformly from
    ``pixel_size`` (mm): the anatomy (and, once a scan is simulated on it, the noise grain) appears at a new scale.
    The input's pixel size comes from its MetaTensor ``pixdim`` (:class:`RandSliced` keeps it), else ``spacing``.
    Downsampling is antialiased bilinear interpolation, upsampling bilinear; the output is a MetaTensor whose 2D
    affine holds the new pixel size (the size actually reached after rounding the matrix to whole pixels).

    Args:
        keys: items to resample (slices of one shape and pixel size).
        pixel_size: ``(low, high)`` range of the new pixel size in mm.
        spacing: pixel size ``(dy, dx)`` of inputs that carry none (plain tensors or arrays).
        max_size: upper bound on the new matrix in pixels per side: a larger one gets the coarsest pixel that
            fits (bounds the cost of what follows, e.g. a simulated scan).
        prob: probability of resampling (otherwise the keys are returned as they are).
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixel_size: Sequence[float] = (0.7, 1.3),
        spacing: Sequence[float] | None = None,
        max_size: int = 512,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        low, high = (float(p) for p in pixel_size)
        if not 0 < low <= high:
            raise ValueError(f"pixel_size must be a (low, high) range of mm with 0 < low <= high, got {pixel_size}.")
        if max_size < 2:
            raise ValueError(f"max_size must be at least 2 pixels, got {max_size}.")
        self.pixel_range = (low, high)
        self.spacing = None if spacing is None else (float(spacing[0]), float(spacing[1]))
        self.max_size = int(max_size)
        self._pixel = low

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._pixel = float(self.R.uniform(*self.pixel_range))

    def _spacing(self, img: NdarrayOrTensor) -> tuple[float, float]:
        if isinstance(img, MetaTensor) and len(img.pixdim) >= 2 and min(float(p) for p in img.pixdim[:2]) > 0:
            return float(img.pixdim[0]), float(img.pixdim[1])
        if self.spacing is None:
            raise ValueError(
                "RandPixelSized needs the slice's pixel size: give a MetaTensor (e.g. from RandSliced of a loaded "
                "volume) or spacing=(dy, dx)."
            )
        return self.spacing

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 3:
                raise ValueError(
                    f"RandPixelSized needs channel-first slices (C, H, W), {key!r} has {tuple(img.shape)}."
                )
            (dy, dx), (h, w) = self._spacing(img), img.shape[-2:]
            pixel = max(self._pixel, h * dy / self.max_size, w * dx / self.max_size)
            size = (max(2, round(h * dy / pixel)), max(2, round(w * dx / pixel)))
            data_t = convert_to_tensor(img, track_meta=False)
            work = data_t if data_t.is_floating_point() else data_t.float()
            down = size[0] < h or size[1] < w
            out = F.interpolate(work[None], size=size, mode="bilinear", align_corners=False, antialias=down)[0]
            affine = torch.diag(torch.tensor([h * dy / size[0], w * dx / size[1], 1.0], dtype=torch.float64))
            d[key] = MetaTensor(out, affine=affine)
        return d
