"""
MRI k-space truncation: the degradation of the paper's MRI super-resolution task.

A slice's 2D discrete Fourier transform (its k-space) is cut to the central ``1/factor x 1/factor`` block of
frequencies (``factor`` 4 keeps 6.25 % of the samples), the rest is set to zero, and the inverse transform's magnitude
is the degraded image: the same matrix size and field of view, with the resolution of a ``factor``-times smaller
acquisition (and its ringing). Conventions:

- the two in-plane axes are ``spatial_axes`` of the channel-first image (default the first two spatial axes, i.e.
  ``(i, j)`` of a ``(C, i, j[, k])`` volume read slice-wise along ``k``);
- along an axis of ``n`` samples, ``keep = max(1, round(n / factor))`` frequencies are kept: after ``fftshift`` the
  zero frequency sits at index ``n // 2`` and the kept block is indices ``n // 2 - keep // 2`` to
  ``n // 2 - keep // 2 + keep - 1`` (centred on the zero frequency for odd ``keep``; one more negative than positive
  frequency for even ``keep``, as a scanner's even matrix samples them);
- the result is the magnitude ``|ifft2(truncated)|``: real, non-negative (a magnitude MR image in, a magnitude image
  out; ``factor`` 1 returns ``|image|``).

:class:`KSpaceZeroFill` is the inverse view of the same acquisition: a genuinely low-resolution image (small matrix)
has its k-space placed in the centre of a ``factor``-times larger matrix of zeros, which puts it on the fine grid the
restoration network works on (band-limited interpolation; the affine's in-plane voxel size is divided by ``factor``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .wrappers import ArrayWrapperd

__all__ = [
    "KSpaceTruncate",
    "KSpaceTruncated",
    "KSpaceZeroFill",
    "KSpaceZeroFilld",
    "kspace_keep",
    "truncate_kspace",
    "zero_fill_kspace",
]


def kspace_keep(n: int, factor: float) -> slice:
    """The kept frequencies of an axis of ``n`` samples after ``fftshift``: a slice of ``max(1, round(n / factor))``."""
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1 (the fraction 1/factor of k-space is kept per axis), got {factor}.")
    keep = max(1, int(round(n / float(factor))))
    start = n // 2 - keep // 2
    return slice(start, start + keep)


def truncate_kspace(image: torch.Tensor, factor: float, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """
    Keep the central ``1/factor`` of k-space along each of the two axes ``dims`` of ``image``, zero the rest and
    return the magnitude of the inverse transform.

    Args:
        image: real tensor, any shape; ``dims`` are the two in-plane axes.
        factor: acceleration per axis (>= 1; 4 keeps 1/16 of the samples).
        dims: the two axes of each 2D slice.

    Returns:
        float tensor of ``image``'s shape (float64 for float64 input, else float32), non-negative.
    """
    if len(dims) != 2:
        raise ValueError(f"dims must name the two in-plane axes, got {dims}.")
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    dims = tuple(d % image.ndim for d in dims)
    spectrum = torch.fft.fftshift(torch.fft.fftn(image.to(dtype), dim=dims), dim=dims)
    mask = torch.zeros(spectrum.shape[dims[0]], spectrum.shape[dims[1]], dtype=torch.bool, device=image.device)
    mask[kspace_keep(mask.shape[0], factor), kspace_keep(mask.shape[1], factor)] = True
    shape = [1] * image.ndim
    shape[dims[0]], shape[dims[1]] = mask.shape
    spectrum = spectrum * mask.reshape(shape)
    return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=dims), dim=dims).abs()


class KSpaceTruncate(Transform):
    """
    Array transform: :func:`truncate_kspace` of a channel-first image ``(C, *spatial)``, slice by slice over the
    two in-plane ``spatial_axes``.

    Args:
        factor: acceleration per in-plane axis (4: the paper's x4 task, 6.25 % of k-space kept).
        spatial_axes: the two in-plane axes, counted among the spatial axes (default ``(0, 1)``).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, factor: float = 4.0, spatial_axes: Sequence[int] = (0, 1)) -> None:
        kspace_keep(1, factor)  # validates factor
        if len(spatial_axes) != 2 or spatial_axes[0] == spatial_axes[1]:
            raise ValueError(f"spatial_axes must be two different spatial axes, got {spatial_axes}.")
        self.factor = float(factor)
        self.spatial_axes = tuple(int(a) for a in spatial_axes)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        data = convert_to_tensor(img, track_meta=False)
        if data.ndim < 3:
            raise ValueError(
                f"expected a channel-first image (C, *spatial) with 2 or 3 spatial axes, got {data.shape}."
            )
        out = truncate_kspace(data, self.factor, dims=[a + 1 for a in self.spatial_axes])
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class KSpaceTruncated(ArrayWrapperd):
    """Dictionary version of :class:`KSpaceTruncate` (metadata such as the affine is kept: the grid is unchanged)."""

    backend = KSpaceTruncate.backend

    def __init__(
        self,
        keys: KeysCollection,
        factor: float = 4.0,
        spatial_axes: Sequence[int] = (0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KSpaceTruncate(factor, spatial_axes)


def zero_fill_kspace(image: torch.Tensor, factor: int, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """
    Band-limited interpolation onto a ``factor``-times finer grid along the two axes ``dims``: the image's centred
    k-space (zero frequency at ``n // 2``) is placed with its zero frequency at ``(factor * n) // 2`` of a zero
    matrix, transformed back and scaled by ``factor ** 2`` so that intensities keep their units; the magnitude is
    returned. Fine sample ``m`` lies at coarse coordinate ``m / factor`` (sample 0 stays where it was); every
    ``factor``-th fine sample is the input where the interpolation is real (odd matrix sizes, whose spectrum has no
    unpaired Nyquist sample, and positive images).

    Args:
        image: real tensor, any shape; ``dims`` are the two in-plane axes.
        factor: integer >= 1 (1 returns ``|image|``).
        dims: the two axes of each 2D slice.

    Returns:
        float tensor (float64 for float64 input, else float32) with the two axes ``factor`` times longer.
    """
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1 (the grid becomes factor times finer), got {factor}.")
    if len(dims) != 2:
        raise ValueError(f"dims must name the two in-plane axes, got {dims}.")
    factor = int(factor)
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    dims = tuple(d % image.ndim for d in dims)
    spectrum = torch.fft.fftshift(torch.fft.fftn(image.to(dtype), dim=dims), dim=dims)
    shape = list(spectrum.shape)
    index = [slice(None)] * image.ndim
    for d in dims:
        n = shape[d]
        start = (factor * n) // 2 - n // 2
        index[d] = slice(start, start + n)
        shape[d] = factor * n
    padded = torch.zeros(shape, dtype=spectrum.dtype, device=spectrum.device)
    padded[tuple(index)] = spectrum
    return torch.fft.ifftn(torch.fft.ifftshift(padded, dim=dims), dim=dims).abs() * factor**2


class KSpaceZeroFill(Transform):
    """
    Array transform: :func:`zero_fill_kspace` of a channel-first image ``(C, *spatial)`` over two in-plane
    ``spatial_axes``. A :class:`~monai.data.MetaTensor` gets the finer grid's affine: the two axes' columns of the
    affine are divided by ``factor``, the position of voxel 0 is kept. ``factor`` 1 returns the input unchanged.

    Args:
        factor: integer grid refinement per in-plane axis (4: a 64 x 64 acquisition onto 256 x 256).
        spatial_axes: the two in-plane axes, counted among the spatial axes (default ``(0, 1)``).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, factor: int = 4, spatial_axes: Sequence[int] = (0, 1)) -> None:
        zero_fill_kspace(torch.zeros(1, 1), factor)  # validates factor
        if len(spatial_axes) != 2 or spatial_axes[0] == spatial_axes[1]:
            raise ValueError(f"spatial_axes must be two different spatial axes, got {spatial_axes}.")
        self.factor = int(factor)
        self.spatial_axes = tuple(int(a) for a in spatial_axes)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.factor == 1:
            return img
        data = convert_to_tensor(img, track_meta=False)
        if data.ndim < 3:
            raise ValueError(
                f"expected a channel-first image (C, *spatial) with 2 or 3 spatial axes, got {data.shape}."
            )
        out = zero_fill_kspace(data, self.factor, dims=[a + 1 for a in self.spatial_axes])
        if isinstance(img, MetaTensor):
            affine = img.affine.clone().to(torch.float64)
            for a in self.spatial_axes:
                affine[:-1, a] = affine[:-1, a] / self.factor
            return MetaTensor(out, affine=affine, meta={k: v for k, v in img.meta.items() if k != "affine"})
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class KSpaceZeroFilld(ArrayWrapperd):
    """Dictionary version of :class:`KSpaceZeroFill`."""

    backend = KSpaceZeroFill.backend

    def __init__(
        self,
        keys: KeysCollection,
        factor: int = 4,
        spatial_axes: Sequence[int] = (0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KSpaceZeroFill(factor, spatial_axes)
