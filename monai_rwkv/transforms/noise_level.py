"""
Noise level of an image estimated from the image itself, per slice, and appended as a constant input channel, so
that a network can adapt its strength to the noise it is given (a noise-level map as in FFDNet, Zhang et al., IEEE
TIP 2018) without the user having to know or state it.

The estimator is robust to edges: the image is filtered with the 3x3 kernel ``[[1, -2, 1], [-2, 4, -2], [1, -2,
1]]`` (the product of two second differences; it removes constants, ramps and bilinear shading, and turns white
noise of standard deviation ``sigma`` into noise of standard deviation ``6 sigma``), and the median absolute
response is taken (``sigma = median|r| / (6 * 0.6745)``, the lower median of an even count): the kernel's large
responses at edges are a minority of the pixels and leave the median where the noise puts it (Immerkaer, "Fast
noise variance estimation", CVIU 1996, uses the mean instead; the median is the usual robust variant). Pixels whose
3x3 neighbourhood is constant or touches the slice's minimum or maximum are left out: padding, masks and
intensities clipped by a normalisation carry no noise. For correlated noise (reconstructed CT, MRI, PET) the value
measures the noise's fine grain, not its variance; it is a consistent input for a network trained with the same
estimator, not a calibrated standard deviation.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

__all__ = ["NoiseLevelMap", "NoiseLevelMapd", "estimate_noise_level", "noise_level_channel"]

#: the second-difference kernel of the estimator (sum of squares 36: white noise ``sigma`` -> ``6 sigma``).
_KERNEL = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
#: median absolute deviation -> standard deviation for Gaussian noise, divided by the kernel's norm (6).
_MAD_TO_SIGMA = 1.0 / (6.0 * 0.6744897501960817)


def estimate_noise_level(slices: torch.Tensor) -> torch.Tensor:
    """
    Estimated noise standard deviation of each 2D image (see the module's description).

    Args:
        slices: ``(N, H, W)`` real images, ``H, W >= 3``.

    Returns:
        ``(N,)`` float32, in the images' units; 0 for an image with no usable pixel (constant, or all at its
        extremes). Non-finite pixels count as unusable.
    """
    if slices.ndim != 3 or min(slices.shape[-2:]) < 3:
        raise ValueError(f"expected (N, H, W) images of at least 3 x 3 pixels, got shape {tuple(slices.shape)}.")
    x = slices.detach().float()
    finite = torch.isfinite(x)
    x = torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device))
    big = torch.finfo(x.dtype).max
    low = torch.where(finite, x, big).amin(dim=(-2, -1), keepdim=True)
    high = torch.where(finite, x, -big).amax(dim=(-2, -1), keepdim=True)
    kernel = torch.tensor(_KERNEL, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    response = F.conv2d(x[:, None], kernel)[:, 0].abs()
    # a neighbourhood is usable when all its pixels are finite, strictly between the extremes, and not all equal
    bad = ~finite | (x <= low) | (x >= high)
    touched = F.max_pool2d(bad[:, None].float(), 3, stride=1)[:, 0] > 0
    spread = F.max_pool2d(x[:, None], 3, stride=1)[:, 0] + F.max_pool2d(-x[:, None], 3, stride=1)[:, 0]
    usable = ~touched & (spread > 0)
    values = torch.where(usable, response, torch.full_like(response, float("nan"))).flatten(1)
    level = torch.nanmedian(values, dim=1).values * _MAD_TO_SIGMA
    return torch.nan_to_num(level, nan=0.0)


def noise_level_channel(level: torch.Tensor, reference: float, floor: float = 2.0**-8) -> torch.Tensor:
    """
    The value a network is given for an estimated noise level: ``log2(max(level, floor * reference) / reference)``,
    so 0 at ``reference``, +1 for twice as much noise, and at least ``log2(floor)`` (-8 by default: noise-free and
    constant images get a finite value).
    """
    if not (reference > 0 and 0 < floor <= 1):
        raise ValueError(f"reference must be > 0 and floor in (0, 1], got reference={reference}, floor={floor}.")
    return torch.log2(level.float().clamp_min(floor * reference) / reference)


class NoiseLevelMap(Transform):
    """
    Append to a channel-first image one channel per image channel holding the noise level estimated on each slice
    (:func:`estimate_noise_level`, then :func:`noise_level_channel`), constant over the slice.

    A 2D image ``(C, H, W)`` is one slice; a volume ``(C, i, j, k)`` is cut into slices along ``slice_dim`` (an axis
    of ``(i, j, k)``), the axis along which a 2D network restores it (``SliceRestorationInferer(spatial_dim=...)``).
    The level is measured on whole slices, before any sliding window or crop, so every patch of a slice gets the
    same value in training and inference.

    Args:
        reference: the noise level that maps to 0, in the image's units (e.g. 0.01 for CT normalised to [0, 1] over
            4096 HU: about 40 HU).
        slice_dim: the slice axis of a volume, 0, 1 or 2 (ignored for 2D images).

    Returns:
        ``(2C, *spatial)`` float32: the image's channels, then their level channels (a MetaTensor keeps its meta).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, reference: float = 0.01, slice_dim: int = 2) -> None:
        noise_level_channel(torch.ones(1), reference)  # validates reference
        if slice_dim not in (0, 1, 2):
            raise ValueError(f"slice_dim must be 0, 1 or 2 (an axis of (i, j, k)), got {slice_dim}.")
        self.reference = float(reference)
        self.slice_dim = int(slice_dim)

    def levels(self, img: torch.Tensor) -> torch.Tensor:
        """The level channels alone: ``(C, *spatial)`` float32 on ``img``'s device."""
        if img.ndim == 3:
            values = estimate_noise_level(img)  # each channel is one slice
            return noise_level_channel(values, self.reference).view(-1, 1, 1).expand(img.shape)
        if img.ndim == 4:
            axis = self.slice_dim + 1
            moved = img.movedim(axis, 1)  # (C, S, a, b)
            values = estimate_noise_level(moved.reshape(-1, *moved.shape[-2:])).view(moved.shape[:2])
            shape = [img.shape[0], 1, 1, 1]
            shape[axis] = img.shape[axis]
            return noise_level_channel(values, self.reference).view(shape).expand(img.shape)
        raise ValueError(f"expected a channel-first 2D image (C, H, W) or volume (C, i, j, k), got {tuple(img.shape)}.")

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        image = convert_to_tensor(img, track_meta=True)
        data = image.as_tensor() if isinstance(image, MetaTensor) else image
        out = torch.cat([data.float(), self.levels(data)], dim=0)
        return MetaTensor(out, meta=image.meta) if isinstance(image, MetaTensor) else out


class NoiseLevelMapd(MapTransform):
    """Dictionary version of :class:`NoiseLevelMap`: appends the level channels to each of ``keys``."""

    backend = NoiseLevelMap.backend

    def __init__(
        self, keys: KeysCollection, reference: float = 0.01, slice_dim: int = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NoiseLevelMap(reference, slice_dim)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
