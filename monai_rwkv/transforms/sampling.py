"""
Training-sample selection: one 2D slice of a channel-first volume, cut along an axis chosen at random (axial,
coronal and sagittal slices of the same volume all become training images).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

__all__ = ["RandSliced", "slice_candidates"]


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
            d[key] = convert_to_tensor(d[key], track_meta=False).select(self._axis + 1, self._index).clone()
        return d
