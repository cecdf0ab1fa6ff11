"""
Per-volume intensity scaling whose factor travels with the image (``meta["intensity_scale"]``), so that the
network's output can be returned to the input's units exactly: for modalities without physical units (MRI) a robust
high percentile of the volume is mapped to ``target`` (:class:`ScaleToPercentile`); for units a header converts
(PET activity concentration to SUV) the reader's factor is applied (:class:`ScaleFromMeta`).

Values a model's range cannot hold (a CT scanner's padding outside its field of view, metal on an extended HU scale)
can be handed through unchanged: :class:`KeepOutside` gives the restored image the input's value wherever the input
lies outside ``(low, high)``.

Why not a fixed range: a fixed window such as the paper's MRI range [0, 4095] assumes every scanner exports the same
units; real MR exports range from [0, 1] to tens of thousands. Dividing by a high percentile of the volume itself is
invariant to a global gain (``a * x`` is restored as ``a * restore(x)``), and a high percentile rather than the
maximum ignores a few hot voxels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

__all__ = [
    "SCALE_KEY",
    "KeepOutside",
    "KeepOutsided",
    "ScaleFromMeta",
    "RestoreIntensityScale",
    "RestoreIntensityScaled",
    "ScaleToPercentile",
    "ScaleToPercentiled",
    "percentile_scale",
]

#: where :class:`ScaleToPercentile` records its factor in a MetaTensor's meta.
SCALE_KEY = "intensity_scale"


def percentile_scale(image: torch.Tensor, percentile: float = 99.5, target: float = 1.0, nonzero: bool = True) -> float:
    """
    The factor ``target / p`` where ``p`` is the ``percentile`` of the image's finite voxels (only those > 0 when
    ``nonzero``: the zero background of masked or padded volumes does not count). An image with no positive
    percentile (all zeros, all negative, all NaN) gets the factor 1.

    Args:
        image: any shape, any real dtype.
        percentile: in (0, 100].
        target: value ``p`` is mapped to (> 0).
        nonzero: ignore voxels <= 0.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}.")
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target}.")
    values = image.detach().reshape(-1)
    values = values[torch.isfinite(values)] if values.is_floating_point() else values
    if nonzero:
        values = values[values > 0]
    if values.numel() == 0:
        return 1.0
    # torch.quantile is limited to 2**24 elements: kthvalue gives the same order statistic for any size
    rank = max(1, min(values.numel(), int(round(percentile / 100.0 * (values.numel() - 1))) + 1))
    p = float(values.double().kthvalue(rank).values)
    return float(target) / p if p > 0 else 1.0


class ScaleToPercentile(Transform):
    """
    Array transform: ``image * s`` with ``s = target / percentile(image)`` (:func:`percentile_scale`), computed over
    the whole input (all channels, all slices: apply it to a volume, not slice by slice). NaN voxels become 0.

    Returns a float32 :class:`~monai.data.MetaTensor` (the input's meta kept) with ``meta["intensity_scale"] = s``
    for :class:`RestoreIntensityScale`.

    Args:
        percentile: the robust maximum, in (0, 100] (99.5: a few hot voxels do not set the scale).
        target: value the percentile is mapped to.
        nonzero: ignore voxels <= 0 (zero background of masked volumes) when computing the percentile.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, percentile: float = 99.5, target: float = 1.0, nonzero: bool = True) -> None:
        percentile_scale(torch.ones(1), percentile, target)  # validates the arguments
        self.percentile, self.target, self.nonzero = float(percentile), float(target), bool(nonzero)

    def __call__(self, img: NdarrayOrTensor, scale: float | None = None) -> MetaTensor:
        """``img`` scaled by its own percentile, or by ``scale`` when given (e.g. another image's factor)."""
        data = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        if scale is None:
            scale = percentile_scale(data, self.percentile, self.target, self.nonzero)
        out = torch.nan_to_num(data * scale, nan=0.0)
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        meta[SCALE_KEY] = scale
        return MetaTensor(out, meta=meta)


class ScaleFromMeta(Transform):
    """
    Array transform: ``image * s`` with ``s`` a factor the reader recorded in the image's meta (e.g. the body-weight
    SUV factor of a DICOM PET series, ``meta["pet_suv_factor"]``), recorded again as ``meta["intensity_scale"]`` so
    that :class:`RestoreIntensityScale` returns the result to the input's units. Returns a float32
    :class:`~monai.data.MetaTensor`.

    Args:
        meta_key: where the factor is.
        problem_key: where the reader explains why it could not compute the factor; when present (and the factor is
            not), the call raises ``ValueError`` with that explanation.
        default: the factor when neither key is present (e.g. 1 for inputs already in the right units, such as a
            NIfTI file); None raises ``ValueError`` instead.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, meta_key: str, problem_key: str | None = None, default: float | None = None) -> None:
        if default is not None and not float(default) > 0:
            raise ValueError(f"default must be > 0 (or None), got {default!r}.")
        self.meta_key, self.problem_key = meta_key, problem_key
        self.default = None if default is None else float(default)

    def __call__(self, img: NdarrayOrTensor) -> MetaTensor:
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        scale = meta.get(self.meta_key)
        if scale is None:
            if self.problem_key is not None and meta.get(self.problem_key):
                raise ValueError(str(meta[self.problem_key]))
            if self.default is None:
                raise ValueError(f"the image's meta has no {self.meta_key!r} (set by the reader).")
            scale = self.default
        scale = float(scale)
        if not scale > 0 or not torch.isfinite(torch.tensor(scale)):
            raise ValueError(f"{self.meta_key} must be a positive number, got {scale!r}.")
        data = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        meta[SCALE_KEY] = scale
        return MetaTensor(data * scale, meta=meta)


class RestoreIntensityScale(Transform):
    """
    Array transform: the inverse of :class:`ScaleToPercentile`, ``image / meta["intensity_scale"]``, optionally
    clipped below (``clip_min``: magnitude images are never negative).

    Args:
        scale: the factor to undo; None (default) reads it from the input's ``meta["intensity_scale"]``.
        clip_min: lower bound of the result (None: no clipping).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, scale: float | None = None, clip_min: float | None = 0.0) -> None:
        self.scale = None if scale is None else float(scale)
        self.clip_min = clip_min

    def __call__(self, img: NdarrayOrTensor, scale: float | None = None) -> NdarrayOrTensor:
        scale = scale if scale is not None else self.scale
        if scale is None:
            scale = img.meta.get(SCALE_KEY) if isinstance(img, MetaTensor) else None
        if scale is None or not float(scale) > 0:
            raise ValueError(
                f"no intensity scale to undo: pass scale= or an image whose meta holds {SCALE_KEY!r} "
                "(set by ScaleToPercentile)."
            )
        out = img.float() / float(scale) if isinstance(img, torch.Tensor) else convert_to_tensor(img) / float(scale)
        if self.clip_min is not None:
            out = out.clamp_min(float(self.clip_min))
        return out


class ScaleToPercentiled(MapTransform):
    """
    Dictionary version of :class:`ScaleToPercentile`.

    Args:
        keys: the items to scale.
        reference_key: the item whose percentile sets one factor for every key (e.g. a degraded ``"image"`` and its
            clean ``"label"`` scaled alike, as the network will see them at inference); None: each key its own.
        percentile, target, nonzero: see :class:`ScaleToPercentile`.
    """

    backend = ScaleToPercentile.backend

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = None,
        percentile: float = 99.5,
        target: float = 1.0,
        nonzero: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.scaler = ScaleToPercentile(percentile, target, nonzero)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        scale = None
        if self.reference_key is not None:
            reference = convert_to_tensor(d[self.reference_key], track_meta=False, dtype=torch.float32)
            scale = percentile_scale(reference, self.scaler.percentile, self.scaler.target, self.scaler.nonzero)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], scale=scale)
        return d


class RestoreIntensityScaled(MapTransform):
    """
    Dictionary version of :class:`RestoreIntensityScale`: the factor is read from ``data[scale_from].meta`` (the
    preprocessed input, e.g. ``"image"``), so a prediction without meta (``"pred"``) can be returned to the input's
    units.

    Args:
        keys: the items to rescale, e.g. ``"pred"``.
        scale_from: the item whose meta holds the factor; None reads each key's own meta.
        clip_min: lower bound of the result (None: no clipping).
    """

    backend = RestoreIntensityScale.backend

    def __init__(
        self,
        keys: KeysCollection,
        scale_from: str | None = "image",
        clip_min: float | None = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale_from = scale_from
        self.restore = RestoreIntensityScale(clip_min=clip_min)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        scale = None
        if self.scale_from is not None:
            source = d.get(self.scale_from)
            scale = source.meta.get(SCALE_KEY) if isinstance(source, MetaTensor) else None
            if scale is None:
                raise ValueError(
                    f"{self.scale_from!r} carries no {SCALE_KEY!r} in its meta (ScaleToPercentiled sets it)."
                )
        for key in self.key_iterator(d):
            d[key] = self.restore(d[key], scale=scale)
        return d


class KeepOutside(Transform):
    """
    Array transform: the restored image, but the input's own value wherever the input lies below ``low`` or above
    ``high`` (finite values only; NaN and infinite input voxels keep the restored value). For values the model's
    normalisation clips and that no restoration should change: a CT scanner's padding outside its reconstruction
    circle (-2048 or -3024 HU), metal on an extended HU scale (above 3071 HU). Choose the bounds beyond the values
    noise can reach in the modality's range (air in a low-dose scan falls some way below -1024 HU), or noisy voxels
    are handed through unrestored.

    Args:
        low: input values below it are kept (None: no lower bound).
        high: input values above it are kept (None: no upper bound).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        if low is not None and high is not None and not float(low) < float(high):
            raise ValueError(f"need low < high, got low={low!r}, high={high!r}.")
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def mask(self, source: NdarrayOrTensor) -> torch.Tensor:
        """Where ``source`` (any shape) is kept: a bool tensor of its shape."""
        values = convert_to_tensor(source, track_meta=False)
        keep = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
        if self.low is not None:
            keep |= values < self.low
        if self.high is not None:
            keep |= values > self.high
        return keep & torch.isfinite(values) if values.is_floating_point() else keep

    def __call__(self, restored: NdarrayOrTensor, source: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            restored: the restored image, in the input's units.
            source: the input image, of ``restored``'s shape.

        Returns:
            ``restored`` as a tensor (a MetaTensor keeps its meta), with the input's values where they lie outside
            the bounds; ``restored`` itself is not changed.
        """
        if tuple(restored.shape) != tuple(source.shape):
            raise ValueError(
                f"the restored image {tuple(restored.shape)} and its input {tuple(source.shape)} differ in shape: "
                "values outside the bounds can only be kept on the input's grid."
            )
        values = convert_to_tensor(source, track_meta=False)
        keep = self.mask(values)
        if not bool(keep.any()):
            return restored
        out = restored.clone() if isinstance(restored, torch.Tensor) else convert_to_tensor(restored)
        out[keep.to(out.device)] = values[keep].to(device=out.device, dtype=out.dtype)
        return out


class KeepOutsided(MapTransform):
    """
    Dictionary version of :class:`KeepOutside`: ``data[key]`` (e.g. ``"pred"``, in the input's units) takes the
    values of ``data[source_key]`` (the input as read, before normalisation: copy it with ``CopyItemsd``) where those
    lie outside the bounds.

    Args:
        keys: the restored items.
        source_key: the input as read.
        low, high: see :class:`KeepOutside`.
    """

    backend = KeepOutside.backend

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str,
        low: float | None = None,
        high: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.keep = KeepOutside(low, high)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.keep(d[key], d[self.source_key])
        return d
