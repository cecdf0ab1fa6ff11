"""
Scaling a simulated degradation: ``reference + f * (degraded - reference)``, for any modality whose training pairs
are a clean reference and its degraded copy.

A simulator covers a range of degradations (a dose range, view counts, ...); a scanner outside that range gives
stronger noise and artefacts of the same kind. Scaling the simulated difference by a random ``f > 1`` widens the
range of artefact strength the network sees without changing their structure (a view-aliasing streak pattern stays
that view count's pattern, only brighter), so it is the knob for "the same artefacts, stronger" where extending the
simulator's own range would change their kind or overlap a held-out test setting.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from ._util import value_range
from .wrappers import RandArrayWrapperd

__all__ = ["RandDegradationScale", "RandDegradationScaled", "scale_degradation"]


def scale_degradation(degraded: torch.Tensor, reference: torch.Tensor, factor: float) -> torch.Tensor:
    """
    ``reference + factor * (degraded - reference)``: the degradation of ``degraded`` scaled by ``factor``.

    Args:
        degraded: the degraded image, any shape.
        reference: its clean reference, the same shape.
        factor: the scale of the difference (1 keeps ``degraded``, 0 gives ``reference``).

    Returns:
        a tensor of ``degraded``'s shape, in the promoted dtype of the two inputs.
    """
    if tuple(degraded.shape) != tuple(reference.shape):
        raise ValueError(
            f"the degraded image and its reference must have the same shape, got {tuple(degraded.shape)} and "
            f"{tuple(reference.shape)}: scale the degradation before cropping or resampling only one of them."
        )
    return reference + factor * (degraded - reference)


class RandDegradationScale(RandomizableTransform):
    """
    Array transform: scale the difference between an image and its clean reference by a factor drawn uniformly from
    ``factor`` (:func:`scale_degradation`).

    Args:
        factor: the range ``[low, high]`` the factor is drawn from (or one number), ``0 <= low <= high``.
        prob: probability of scaling (else the image is returned unchanged).

    Call with the ``(C, spatial...)`` degraded image and its reference of the same shape; the result has the image's
    type (a MetaTensor keeps its metadata).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, factor: Sequence[float] | float = (1.0, 2.0), prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob)
        self.factor_range = value_range(factor, "factor", 0.0, strict=False)
        self.factor = 1.0

    def randomize(self, data: object = None) -> None:
        """Decide whether to scale, and draw the factor from ``self.R``."""
        super().randomize(None)
        self.factor = float(self.R.uniform(*self.factor_range))

    def __call__(self, img: NdarrayOrTensor, reference: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """``img`` with its degradation scaled (``randomize=False``: by the factor drawn last)."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        data = convert_to_tensor(img, track_meta=False)
        ref = convert_to_tensor(reference, track_meta=False, device=data.device)
        out = scale_degradation(data, ref, self.factor)
        return convert_to_dst_type(out, img, dtype=data.dtype)[0]


class RandDegradationScaled(RandArrayWrapperd):
    """
    Dictionary version of :class:`RandDegradationScale`: the degraded images under ``keys``, their clean reference
    under ``reference_key``; one factor per call, shared by every key.

    Args:
        keys: keys of the degraded images.
        reference_key: key of the clean reference (unchanged).
        factor, prob: as for :class:`RandDegradationScale` (``prob`` decides for all keys at once).
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = RandDegradationScale.backend

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: Hashable = "label",
        factor: Sequence[float] | float = (1.0, 2.0),
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.reference_key = reference_key
        self.transform = RandDegradationScale(factor, prob=1.0)

    def call_args(self, data: Mapping[Hashable, NdarrayOrTensor]) -> tuple:
        """The clean reference, the array transform's second argument."""
        return (data[self.reference_key],)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Scale the degradation of every key against the reference (a copy is returned); without the reference,
        a ``KeyError``, or the data unchanged with ``allow_missing_keys``."""
        if self.reference_key not in data:
            if self.allow_missing_keys:
                return dict(data)
            raise KeyError(f"RandDegradationScaled: the reference key {self.reference_key!r} is not in the data.")
        return super().__call__(data)
