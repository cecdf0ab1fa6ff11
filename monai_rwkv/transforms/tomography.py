"""
Parallel-beam tomography in pure PyTorch (CPU and CUDA): the forward projector and filtered back-projection that
every modality measuring line integrals shares. A line integral of linear attenuation (transmission CT) and one of
activity or emission density (emission tomography such as PET and SPECT, before attenuation, scatter and randoms)
are the same operation here: the image holds a quantity ``f`` and the sinogram its integrals ``integral f dl`` along
straight rays, lengths ``l`` in mm.

- :func:`radon`: forward projection with Joseph's method; :func:`ramp_filter` then :func:`backproject` is
  :func:`iradon`, filtered back-projection (FBP);
- :class:`Project` and :class:`FilteredBackProject` (and their dictionary versions ``...d``): the same as MONAI
  transforms of channel-first 2-D images ``(C, H, W)`` or volumes ``(C, H, W, D)`` read slice by slice.

Geometry (see :class:`ParallelBeamGeometry`): the image is a grid of ``H x W`` pixels of size
``spacing = (dy, dx)`` mm whose centre is the rotation centre. ``x`` runs along the columns (last axis), ``y`` along
the rows. View ``i`` has angle ``theta_i = i * pi / n_views`` (parallel beam needs only 180 degrees); its rays are
perpendicular to ``(cos theta, sin theta)`` and detector bin ``j`` measures the ray at signed distance
``u_j = (j - (n_det - 1) / 2) * det_spacing`` from the centre. The default detector covers the image diagonal, so
every pixel of the image is inside the reconstructed field of view. A sinogram is ``(..., n_views, n_det)``: views
along its rows, detector bins along its columns.

Backends (``backend=`` of :func:`radon`, :func:`backproject` and :func:`iradon`, :data:`TOMOGRAPHY_BACKENDS`):
``"torch"`` vectorises with :func:`torch.nn.functional.grid_sample` (views in chunks of 16 to bound memory) and runs
on any device; ``"numba"`` runs the same interpolation in the single-threaded loops of
:mod:`monai_rwkv.transforms._numba_tomography` (CPU tensors, float64 sums, no temporary grid); ``"auto"`` takes
numba for CPU tensors that need no gradient when numba loads, else torch. Both agree to float32 rounding
(tested against a float64 run of the torch path).

Speed: benchmarks/RESULTS.md ("Tomography"). Project whole slices, so that every ray crosses the whole object,
then crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Union

import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .wrappers import ArrayWrapperd

__all__ = [
    "FILTER_WINDOWS",
    "TOMOGRAPHY_BACKENDS",
    "filter_window",
    "ParallelBeamGeometry",
    "radon",
    "ramp_filter",
    "backproject",
    "iradon",
    "Project",
    "Projectd",
    "FilteredBackProject",
    "FilteredBackProjectd",
]

FILTER_WINDOWS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
"""Windows for the ramp filter. With ``g = f / (2 f_c)``, ``f`` the frequency and ``f_c`` the cutoff (``cutoff``
times the detector Nyquist frequency), the ramp is multiplied by: ``ram-lak`` 1, ``shepp-logan``
sin(pi g)/(pi g), ``cosine`` cos(pi g), ``hamming`` 0.54 + 0.46 cos(2 pi g), ``hann`` 0.5 + 0.5 cos(2 pi g), and by
0 above ``f_c``."""

TOMOGRAPHY_BACKENDS = ("auto", "torch", "numba")
"""Values of ``backend=`` (see the module docstring)."""

_VIEW_CHUNK = 16  # views per grid_sample call: bounds the temporary grid to about 16 * L * n_det * 8 bytes


_NUMBA_MODULE: list = []  # [module or None], filled on first use


def _numba_kernels() -> Optional[object]:
    """:mod:`monai_rwkv.transforms._numba_tomography`, or None when numba cannot be imported or initialised."""
    if not _NUMBA_MODULE:
        try:
            from . import _numba_tomography

            _NUMBA_MODULE.append(_numba_tomography)
        except Exception:  # ImportError, or a numba/llvmlite that fails to initialise
            _NUMBA_MODULE.append(None)
    return _NUMBA_MODULE[0]


def _use_numba(tensor: torch.Tensor, backend: str) -> bool:
    """Whether ``backend`` runs the numba kernels on ``tensor`` (raises for an unknown or impossible choice)."""
    if backend not in TOMOGRAPHY_BACKENDS:
        raise ValueError(f"backend must be one of {TOMOGRAPHY_BACKENDS}, got {backend!r}.")
    if backend == "torch":
        return False
    fits = tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)
    fits = fits and not (tensor.requires_grad and torch.is_grad_enabled())
    if backend == "numba":
        if not fits:
            raise ValueError(
                "backend='numba' needs a float32 or float64 CPU tensor that needs no gradient; "
                f"got {tensor.dtype} on {tensor.device} (requires_grad={tensor.requires_grad}). Use backend='auto'."
            )
        if _numba_kernels() is None:
            raise ValueError("backend='numba' needs numba, which cannot be imported here; use backend='auto'.")
        return True
    return fits and _numba_kernels() is not None


def _pair(value: Union[float, Sequence[float]], name: str) -> tuple[float, float]:
    """Return ``(value, value)`` for a scalar, or the two entries of a length-2 sequence, as positive floats."""
    if isinstance(value, (int, float)):
        pair = (float(value), float(value))
    else:
        vals = [float(v) for v in value]
        if len(vals) != 2:
            raise ValueError(f"{name} must be a number or a pair, got {value!r}.")
        pair = (vals[0], vals[1])
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    return pair


@dataclass(frozen=True)
class ParallelBeamGeometry:
    """A 2-D parallel-beam tomography geometry (see the module docstring for the coordinate conventions).

    Attributes:
        image_shape: ``(H, W)`` in pixels, both at least 2.
        spacing: ``(dy, dx)`` pixel size in mm (rows, columns).
        n_views: number of projection angles, evenly spaced over ``[0, pi)``.
        n_det: number of detector bins.
        det_spacing: detector bin width in mm (at the rotation centre).
    """

    image_shape: tuple[int, int]
    spacing: tuple[float, float]
    n_views: int
    n_det: int
    det_spacing: float

    @classmethod
    def create(
        cls,
        image_shape: Sequence[int],
        spacing: Union[float, Sequence[float]] = 1.0,
        n_views: Optional[int] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
    ) -> ParallelBeamGeometry:
        """Build a geometry with sensible defaults.

        Args:
            image_shape: ``(H, W)`` of the image in pixels.
            spacing: pixel size in mm, a number or ``(dy, dx)``.
            n_views: number of views; default ``ceil(pi / 2 * max(H, W))`` rounded up to a multiple of 8
                (the angular sampling that matches the detector sampling, e.g. 408 for 256 x 256).
            n_det: number of detector bins; default: enough bins to cover the image diagonal plus one bin
                either side, so the whole square image lies in the field of view.
            det_spacing: bin width in mm; default ``min(dy, dx) / 2``. Half-pixel bins halve the blur of the
                projector/back-projector pair (noise-free FBP RMSE on a real 256 x 256 head CT slice: less than half
                that with one bin per pixel, see :mod:`monai_rwkv.transforms.ct`) for about 1.5x the run time.
        """
        if len(image_shape) != 2 or min(image_shape) < 2:
            raise ValueError(f"image_shape must be (H, W) with H, W >= 2, got {image_shape!r}.")
        h, w = int(image_shape[0]), int(image_shape[1])
        dy, dx = _pair(spacing, "spacing")
        tau = float(det_spacing) if det_spacing is not None else min(dy, dx) / 2
        if tau <= 0:
            raise ValueError(f"det_spacing must be positive, got {det_spacing!r}.")
        if n_det is None:
            n_det = int(math.ceil(math.hypot(h * dy, w * dx) / tau)) + 2
        if n_views is None:
            n_views = 8 * int(math.ceil(math.pi / 2 * max(h, w) / 8))
        if n_views < 2 or n_det < 2:
            raise ValueError(f"n_views and n_det must be >= 2, got {n_views} and {n_det}.")
        return cls((h, w), (dy, dx), int(n_views), int(n_det), tau)

    def angles(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """View angles ``i * pi / n_views`` in radians, float64 tensor of shape ``(n_views,)``."""
        return torch.arange(self.n_views, dtype=torch.float64, device=device) * (math.pi / self.n_views)

    def detector_positions(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """Bin centres ``u_j`` in mm, float64 tensor of shape ``(n_det,)``."""
        j = torch.arange(self.n_det, dtype=torch.float64, device=device)
        return (j - (self.n_det - 1) / 2) * self.det_spacing

    def pixel_coordinates(self, device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel centre coordinates in mm: ``y`` of shape ``(H,)`` (rows) and ``x`` of shape ``(W,)`` (columns)."""
        (h, w), (dy, dx) = self.image_shape, self.spacing
        y = (torch.arange(h, dtype=torch.float64, device=device) - (h - 1) / 2) * dy
        x = (torch.arange(w, dtype=torch.float64, device=device) - (w - 1) / 2) * dx
        return y, x


def _flatten_images(image: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """Reshape ``(..., H, W)`` to ``(1, N, H, W)`` for grid_sample; return it and the leading shape."""
    if image.ndim < 2:
        raise ValueError(f"expected an image of shape (..., H, W), got shape {tuple(image.shape)}.")
    lead = image.shape[:-2]
    return image.reshape(1, -1, *image.shape[-2:]), lead


def _joseph_views(
    images: torch.Tensor, geom: ParallelBeamGeometry, theta: torch.Tensor, along_rows: bool
) -> torch.Tensor:
    """Line integrals for a group of views whose rays advance mostly along one image axis.

    Joseph's method: the ray is sampled once per pixel row (``along_rows``, used when ``|cos theta| >=
    |sin theta|``) or once per pixel column, exactly on the pixel centres of that axis and linearly interpolated
    along the other axis; each sample is weighted by the ray length per row (``dy / |cos theta|``) or per column
    (``dx / |sin theta|``). The image is zero outside its pixels.

    Args:
        images: ``(1, N, H, W)`` images.
        geom: the geometry.
        theta: ``(V,)`` float64 view angles of this group.
        along_rows: which axis the rays advance along.

    Returns:
        ``(N, V, n_det)`` line integrals.
    """
    (h, w), (dy, dx) = geom.image_shape, geom.spacing
    device, dtype = images.device, images.dtype
    u = geom.detector_positions(device)
    y, x = geom.pixel_coordinates(device)
    cos, sin = torch.cos(theta), torch.sin(theta)
    if along_rows:  # sample at every row y_k: x = (u - y_k sin) / cos
        steps, major, major_half = y, y / dy, (h - 1) / 2
        a, b, minor_scale, step_len = cos, sin, dx * (w - 1) / 2, dy / cos.abs()
    else:  # sample at every column x_k: y = (u - x_k cos) / sin
        steps, major, major_half = x, x / dx, (w - 1) / 2
        a, b, minor_scale, step_len = sin, cos, dy * (h - 1) / 2, dx / sin.abs()
    n_views, n_steps = theta.numel(), steps.numel()
    # minor coordinate, normalised for grid_sample: (u - s_k * b) / (a * minor_scale) = A[v, j] + B[v, k]
    coef_u = (u[None, :] / (a[:, None] * minor_scale)).to(dtype)
    coef_k = (-steps[None, :] * b[:, None] / (a[:, None] * minor_scale)).to(dtype)
    major_norm = (major / major_half).to(dtype)
    minor_ch, major_ch = (0, 1) if along_rows else (1, 0)
    shadow = _shadow_bins(geom, theta)
    out = torch.zeros(images.shape[1], n_views, geom.n_det, device=device, dtype=dtype)
    for start in range(0, n_views, _VIEW_CHUNK):
        stop = min(start + _VIEW_CHUNK, n_views)
        lo, hi = int(shadow[start:stop, 0].min()), int(shadow[start:stop, 1].max())  # bins whose rays can hit
        grid = torch.empty(stop - start, n_steps, hi - lo, 2, device=device, dtype=dtype)
        torch.add(coef_u[start:stop, None, lo:hi], coef_k[start:stop, :, None], out=grid[..., minor_ch])
        grid[..., major_ch] = major_norm[None, :, None]
        samples = F.grid_sample(
            images.expand(stop - start, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )  # (v, N, n_steps, hi - lo)
        out[:, start:stop, lo:hi] = samples.sum(dim=2).transpose(0, 1) * step_len[start:stop, None].to(dtype)
    return out


def _shadow_bins(geom: ParallelBeamGeometry, theta: torch.Tensor) -> torch.Tensor:
    """Per view, the half-open range ``[lo, hi)`` of detector bins whose rays can meet the image (CPU int64, (V, 2)).

    The image (plus one pixel of interpolation support) projects onto ``|u| <= (W dx / 2 + dx) |cos| + (H dy / 2 +
    dy) |sin|``; rays outside that only sample zeros, so they are skipped (about 10 % of the work).
    """
    (h, w), (dy, dx) = geom.image_shape, geom.spacing
    cos, sin = torch.cos(theta).abs().cpu(), torch.sin(theta).abs().cpu()
    half = ((w * dx / 2 + dx) * cos + (h * dy / 2 + dy) * sin) / geom.det_spacing
    centre = (geom.n_det - 1) / 2
    lo = torch.floor(centre - half).clamp(0, geom.n_det - 1)
    hi = torch.ceil(centre + half).clamp(0, geom.n_det - 1) + 1
    return torch.stack([lo, hi], dim=1).long()


def _radon_numba(images: torch.Tensor, geometry: ParallelBeamGeometry, theta: torch.Tensor) -> torch.Tensor:
    """:func:`radon` of ``(N, H, W)`` CPU images through the numba kernel; ``(N, n_views, n_det)`` float64."""
    kernels = _numba_kernels()
    (dy, dx), n = geometry.spacing, images.shape[0]
    arr = images.detach().numpy()
    u = geometry.detector_positions().numpy()
    y, x = (c.numpy() for c in geometry.pixel_coordinates())
    cos, sin = torch.cos(theta).numpy(), torch.sin(theta).numpy()
    shadow = _shadow_bins(geometry, theta).numpy()
    along_rows = abs(cos) >= abs(sin)
    out = torch.zeros(n, geometry.n_views, geometry.n_det, dtype=torch.float64)
    for rows_first in (True, False):
        idx = (along_rows == rows_first).nonzero()[0]
        if idx.size == 0:
            continue
        if rows_first:  # rays advance along the rows: lines are image rows, sampled along x
            lines, steps, a, b, minor, step_len = arr, y, cos[idx], sin[idx], dx, dy / abs(cos[idx])
        else:  # along the columns: lines are image columns, sampled along y
            lines, steps, a, b, minor, step_len = arr.transpose(0, 2, 1), x, sin[idx], cos[idx], dy, dx / abs(sin[idx])
        part = torch.zeros(n, idx.size, geometry.n_det, dtype=torch.float64)
        kernels.forward_project(lines, steps, u, a, b, minor, shadow[idx, 0], shadow[idx, 1], step_len, part.numpy())
        out[:, torch.from_numpy(idx)] = part
    return out


def radon(image: torch.Tensor, geometry: ParallelBeamGeometry, backend: str = "auto") -> torch.Tensor:
    """Parallel-beam forward projection (line integrals) with Joseph's method.

    Args:
        image: ``(..., H, W)`` tensor of a quantity ``f`` (linear attenuation in 1/mm, an activity concentration,
            ...), any float dtype, any device; ``(H, W)`` must equal ``geometry.image_shape``.
        geometry: the scan geometry.
        backend: one of :data:`TOMOGRAPHY_BACKENDS` (see the module docstring).

    Returns:
        Sinogram ``(..., n_views, n_det)`` of line integrals ``integral f dl`` (lengths in mm: dimensionless for
        attenuation in 1/mm), of ``image``'s dtype.
    """
    if tuple(image.shape[-2:]) != geometry.image_shape:
        raise ValueError(f"image shape {tuple(image.shape[-2:])} does not match geometry {geometry.image_shape}.")
    images, lead = _flatten_images(image)
    theta = geometry.angles(image.device)
    if _use_numba(image, backend):
        sino = _radon_numba(images[0], geometry, theta).to(image.dtype)
        return sino.reshape(*lead, geometry.n_views, geometry.n_det)
    along_rows = torch.cos(theta).abs() >= torch.sin(theta).abs()
    sino = torch.empty(images.shape[1], geometry.n_views, geometry.n_det, device=image.device, dtype=image.dtype)
    for rows_first, group in ((True, along_rows), (False, ~along_rows)):
        idx = torch.nonzero(group).flatten()
        if idx.numel() > 0:
            sino[:, idx] = _joseph_views(images, geometry, theta[idx], along_rows=rows_first)
    return sino.reshape(*lead, geometry.n_views, geometry.n_det)


@lru_cache(maxsize=32)
def _ramp_response(n_det: int, det_spacing: float, window: str, cutoff: float) -> tuple[torch.Tensor, int]:
    """Windowed ramp filter as an rfft response (float64, CPU) and the zero-padded length it applies to.

    The ramp is the FFT of the band-limited spatial Ram-Lak kernel ``h[0] = 1 / (4 tau^2)``,
    ``h[n odd] = -1 / (pi n tau)^2``, ``h[n even] = 0`` (which has the correct DC value, unlike sampling ``|f|``),
    times ``tau`` for the convolution integral. The padded length is the next power of two ``>= 2 * n_det``, so the
    circular convolution has no wrap-around. ``cutoff`` is a fraction of the detector Nyquist frequency.
    """
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1], got {cutoff!r}.")
    size = 1 << int(math.ceil(math.log2(2 * n_det)))
    n = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)  # integer offsets 0, 1, ..., -1
    kernel = torch.zeros(size, dtype=torch.float64)
    kernel[0] = 1.0 / (4.0 * det_spacing**2)
    odd = n.remainder(2) == 1
    kernel[odd] = -1.0 / (math.pi * n[odd] * det_spacing) ** 2
    response = torch.fft.rfft(kernel).real * det_spacing
    f = torch.fft.rfftfreq(size, dtype=torch.float64)  # cycles per bin, 0 .. 0.5
    return response * filter_window(f, window, cutoff), size


def filter_window(freq: torch.Tensor, window: str, cutoff: float) -> torch.Tensor:
    """The window that multiplies the ramp at frequencies ``freq`` in cycles per detector bin (Nyquist 0.5).

    Zero above ``cutoff`` times the detector Nyquist frequency; "ram-lak" is 1 below it. Same dtype and device as
    ``freq``.
    """
    if window not in FILTER_WINDOWS:
        raise ValueError(f"unknown filter window {window!r}, expected one of {FILTER_WINDOWS}.")
    g = freq / cutoff  # 0 .. 0.5 up to the cutoff
    if window == "shepp-logan":
        w = torch.sinc(g)
    elif window == "cosine":
        w = torch.cos(math.pi * g)
    elif window == "hamming":
        w = 0.54 + 0.46 * torch.cos(2 * math.pi * g)
    elif window == "hann":
        w = 0.5 + 0.5 * torch.cos(2 * math.pi * g)
    else:
        w = torch.ones_like(g)
    return w * (g.abs() <= 0.5)


def ramp_filter(
    sinogram: torch.Tensor, det_spacing: float, window: str = "ram-lak", cutoff: float = 1.0
) -> torch.Tensor:
    """Apply the windowed ramp filter along the detector axis (FFT with zero padding).

    Args:
        sinogram: ``(..., n_views, n_det)`` line integrals.
        det_spacing: bin width in mm.
        window: one of :data:`FILTER_WINDOWS`.
        cutoff: cutoff frequency as a fraction of the detector Nyquist frequency ``1 / (2 det_spacing)``, in (0, 1].

    Returns:
        Filtered sinogram of the same shape, in 1/mm (per unit of the input).
    """
    n_det = sinogram.shape[-1]
    response, size = _ramp_response(n_det, float(det_spacing), window, float(cutoff))
    response = response.to(device=sinogram.device, dtype=sinogram.dtype)
    spectrum = torch.fft.rfft(sinogram, n=size, dim=-1) * response
    return torch.fft.irfft(spectrum, n=size, dim=-1)[..., :n_det]


def backproject(sinogram: torch.Tensor, geometry: ParallelBeamGeometry, backend: str = "auto") -> torch.Tensor:
    """Pixel-driven back-projection with linear interpolation on the detector, scaled by ``pi / n_views``.

    ``f(x, y) = pi / n_views * sum_i q_i(x cos theta_i + y sin theta_i)``; applied to a ramp-filtered sinogram this
    is filtered back-projection.

    Args:
        sinogram: ``(..., n_views, n_det)``.
        geometry: the scan geometry.
        backend: one of :data:`TOMOGRAPHY_BACKENDS` (see the module docstring).

    Returns:
        ``(..., H, W)`` image of ``sinogram``'s dtype.
    """
    n_views, n_det = geometry.n_views, geometry.n_det
    if tuple(sinogram.shape[-2:]) != (n_views, n_det):
        raise ValueError(f"sinogram shape {tuple(sinogram.shape[-2:])} does not match ({n_views}, {n_det}).")
    device, dtype = sinogram.device, sinogram.dtype
    lead = sinogram.shape[:-2]
    h, w = geometry.image_shape
    if _use_numba(sinogram, backend):
        y, x = (c.numpy() for c in geometry.pixel_coordinates())
        flat = sinogram.detach().reshape(-1, n_views, n_det).numpy()
        image = _numba_kernels().back_project(flat, geometry.angles().numpy(), y, x, geometry.det_spacing)
        return (torch.from_numpy(image) * (math.pi / n_views)).to(dtype).reshape(*lead, h, w)
    # views become the grid_sample batch: input (V, N, 1, n_det), one detector row per view
    views = sinogram.reshape(-1, n_views, n_det).transpose(0, 1).unsqueeze(2)
    y, x = geometry.pixel_coordinates(device)
    theta = geometry.angles(device)
    det_half = geometry.det_spacing * (n_det - 1) / 2
    cos, sin = (torch.cos(theta) / det_half).to(dtype), (torch.sin(theta) / det_half).to(dtype)
    xs, ys = x.to(dtype), y.to(dtype)
    image = torch.zeros(views.shape[1], h * w, device=device, dtype=dtype)
    for start in range(0, n_views, _VIEW_CHUNK):
        stop = min(start + _VIEW_CHUNK, n_views)
        grid = torch.zeros(stop - start, h, w, 2, device=device, dtype=dtype)  # channel 1 (the view row) stays 0
        torch.add(
            xs[None, None, :] * cos[start:stop, None, None],
            ys[None, :, None] * sin[start:stop, None, None],
            out=grid[..., 0],
        )
        samples = F.grid_sample(
            views[start:stop], grid.reshape(stop - start, 1, h * w, 2), align_corners=True, padding_mode="zeros"
        )  # (v, N, 1, H*W)
        image += samples.sum(dim=0).squeeze(1)
    return (image * (math.pi / n_views)).reshape(*lead, h, w)


def iradon(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry,
    window: str = "ram-lak",
    cutoff: float = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Filtered back-projection: :func:`ramp_filter` then :func:`backproject`.

    With the default half-pixel detector, ``cutoff=1`` keeps frequencies up to twice the image Nyquist frequency
    (sharpest edges, but Gibbs ringing away from sharp edges and aliased, whiter noise); ``cutoff=0.5`` stops at the
    image Nyquist frequency (blurrier edges, less than half the ringing, about half the noise std; numbers for a CT
    head phantom in :mod:`monai_rwkv.transforms.ct`).

    Args:
        sinogram: ``(..., n_views, n_det)`` line integrals.
        geometry: the scan geometry.
        window: ramp filter window, one of :data:`FILTER_WINDOWS`.
        cutoff: filter cutoff as a fraction of the detector Nyquist frequency, in (0, 1].
        backend: the back-projection's, one of :data:`TOMOGRAPHY_BACKENDS` (see the module docstring).

    Returns:
        ``(..., H, W)`` image of the quantity ``f`` whose line integrals (lengths in mm) ``sinogram`` holds: linear
        attenuation in 1/mm for a CT sinogram.
    """
    return backproject(ramp_filter(sinogram, geometry.det_spacing, window, cutoff), geometry, backend)


def _spatial_axes(spatial_axes: Sequence[int]) -> tuple[int, int]:
    """Validate the two in-plane axes (row axis, column axis), counted among the spatial axes."""
    axes = tuple(int(a) for a in spatial_axes)
    if len(axes) != 2 or axes[0] == axes[1] or not all(a in (0, 1, 2) for a in axes):
        raise ValueError(
            "spatial_axes must be two different spatial axes out of 0, 1, 2 (the row axis, then the column axis of "
            f"each slice), got {tuple(spatial_axes)!r}."
        )
    return axes[0], axes[1]


class _SliceWiseTomography(Transform):
    """Shared plumbing of :class:`Project` and :class:`FilteredBackProject`: geometry arguments, the channel-first
    slice layout, dtypes and conversion back to the input's kind."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    _input = "image"  # what the transform takes, for error messages
    _layout = "(C, H, W) or (C, H, W, D)"

    def __init__(
        self,
        geometry: Optional[ParallelBeamGeometry],
        image_shape: Optional[Sequence[int]],
        spacing: Union[float, Sequence[float], None],
        n_views: Optional[int],
        n_det: Optional[int],
        det_spacing: Optional[float],
        spatial_axes: Sequence[int],
    ) -> None:
        name = type(self).__name__
        if geometry is not None:
            if not isinstance(geometry, ParallelBeamGeometry):
                raise TypeError(
                    f"{name}: geometry must be a ParallelBeamGeometry (e.g. ParallelBeamGeometry.create(...)), "
                    f"got {type(geometry).__name__}."
                )
            args = {"image_shape": image_shape, "spacing": spacing, "n_views": n_views, "n_det": n_det}
            args["det_spacing"] = det_spacing
            given = [key for key, value in args.items() if value is not None]
            if given:
                raise ValueError(
                    f"{name}: give either geometry or its arguments, not both (got geometry and {', '.join(given)})."
                )
        else:  # check the arguments now, not at the first call
            ParallelBeamGeometry.create(
                (2, 2) if image_shape is None else image_shape,
                1.0 if spacing is None else spacing,
                n_views,
                n_det,
                det_spacing,
            )
        self.geometry = geometry
        self.image_shape = None if image_shape is None else (int(image_shape[0]), int(image_shape[1]))
        self.spacing = spacing
        self.n_views, self.n_det, self.det_spacing = n_views, n_det, det_spacing
        self.spatial_axes = _spatial_axes(spatial_axes)

    def _create(self, image_shape: Sequence[int], n_views: Optional[int], n_det: Optional[int]) -> ParallelBeamGeometry:
        spacing = 1.0 if self.spacing is None else self.spacing
        return ParallelBeamGeometry.create(image_shape, spacing, n_views, n_det, self.det_spacing)

    def _slices(self, img: NdarrayOrTensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``img`` as a tensor with the in-plane axes moved last: ``(C, a, b)`` or ``(C, D, a, b)``; and those axes."""
        data = convert_to_tensor(img, track_meta=False)
        shape = tuple(data.shape)
        if data.ndim < 3:
            raise ValueError(
                f"{type(self).__name__} expects a channel-first {self._input} {self._layout}, got shape {shape}: "
                "add a channel axis first (e.g. EnsureChannelFirst, or img[None])."
            )
        if data.ndim > 4:
            raise ValueError(
                f"{type(self).__name__} expects a channel-first {self._input} {self._layout}, got shape {shape}: "
                "apply it to each item of a batch, or fold extra axes into the channel axis."
            )
        axes = (self.spatial_axes[0] + 1, self.spatial_axes[1] + 1)
        if max(axes) >= data.ndim:
            raise ValueError(
                f"{type(self).__name__}: spatial_axes {self.spatial_axes} name spatial axis 2, which a 2-D "
                f"{self._input} of shape {shape} does not have; use spatial_axes (0, 1) or (1, 0)."
            )
        return data.movedim(axes, (-2, -1)), axes

    @staticmethod
    def _dtypes(data: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
        """Output dtype (the input's if float, else float32) and the dtype to compute in (float64 or float32)."""
        out_dtype = data.dtype if data.is_floating_point() else torch.float32
        return out_dtype, torch.float64 if out_dtype == torch.float64 else torch.float32

    @staticmethod
    def _output(out: torch.Tensor, axes: tuple[int, int], img: NdarrayOrTensor, dtype: torch.dtype) -> NdarrayOrTensor:
        """Move the in-plane axes back and convert to the kind of ``img`` (numpy, tensor or MetaTensor)."""
        result, *_ = convert_to_dst_type(out.movedim((-2, -1), axes).contiguous(), dst=img, dtype=dtype)
        return result


class Project(_SliceWiseTomography):
    """Parallel-beam forward projection (:func:`radon`) of a channel-first image, slice by slice.

    Input ``(C, H, W)`` or a volume ``(C, H, W, D)`` read as ``D`` slices of ``H`` rows and ``W`` columns (with the
    default ``spatial_axes=(0, 1)``); output the sinogram ``(C, n_views, n_det)`` or ``(C, n_views, n_det, D)``: the
    view axis takes the place of the row axis and the detector axis that of the column axis. The values are the
    line integrals ``integral f dl`` of the image ``f`` (lengths in mm). Numpy in, numpy out; a MetaTensor keeps its
    metadata, whose affine still describes the image grid (the sinogram axes are not spatial). Float64 input is
    projected in float64, other float dtypes in float32 and returned in their dtype; integer input gives float32.

    Args:
        geometry: the scan geometry; its ``image_shape`` must equal the slices' ``(H, W)``. Or None, and:
        image_shape: expected ``(H, W)`` of the slices (None: taken from each input).
        spacing: pixel size in mm, a number or ``(dy, dx)`` (None: 1 mm).
        n_views, n_det, det_spacing: as for :meth:`ParallelBeamGeometry.create` (None: its defaults).
        spatial_axes: the row axis and the column axis of each slice among the spatial axes; ``(1, 0)`` reads a
            ``(C, i, j, k)`` volume as slices of rows ``j`` and columns ``i``.

    Example::

        project = Project(spacing=0.957)
        sinogram = project(image)  # (1, 256, 256) -> (1, 408, 727)
    """

    def __init__(
        self,
        geometry: Optional[ParallelBeamGeometry] = None,
        image_shape: Optional[Sequence[int]] = None,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Optional[int] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        spatial_axes: Sequence[int] = (0, 1),
    ) -> None:
        super().__init__(geometry, image_shape, spacing, n_views, n_det, det_spacing, spatial_axes)

    def geometry_for(self, image_shape: Sequence[int]) -> ParallelBeamGeometry:
        """The geometry used for slices of ``image_shape = (H, W)`` pixels."""
        image_shape = tuple(int(s) for s in image_shape)
        expected = self.geometry.image_shape if self.geometry is not None else self.image_shape
        if expected is not None and image_shape != expected:
            raise ValueError(
                f"Project: the slices are {image_shape} pixels (rows, columns on spatial_axes {self.spatial_axes}) "
                f"but the geometry is for {expected}: crop or resize the image, or build the geometry for its size "
                "(leave geometry and image_shape None to take the size from each image)."
            )
        return self.geometry if self.geometry is not None else self._create(image_shape, self.n_views, self.n_det)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """The sinogram of ``img`` (see the class docstring for the shapes)."""
        slices, axes = self._slices(img)
        geometry = self.geometry_for(slices.shape[-2:])
        out_dtype, work_dtype = self._dtypes(slices)
        return self._output(radon(slices.to(work_dtype), geometry), axes, img, out_dtype)


class FilteredBackProject(_SliceWiseTomography):
    """Filtered back-projection (:func:`iradon`) of a channel-first sinogram, slice by slice.

    Input ``(C, n_views, n_det)`` or ``(C, n_views, n_det, D)`` (views on the first, detector bins on the second
    ``spatial_axes``, as :class:`Project` writes them); output the image ``(C, H, W)`` or ``(C, H, W, D)`` of the
    given size, rows and columns in place of views and bins, in the units of the quantity whose line integrals the
    sinogram holds (1/mm for attenuation). Kinds and dtypes as for :class:`Project`.

    Args:
        geometry: the scan geometry (it fixes the image size); its ``(n_views, n_det)`` must match the sinogram.
            Or None, and:
        image_shape: ``(H, W)`` of the image to reconstruct (required without ``geometry``).
        spacing: pixel size in mm, a number or ``(dy, dx)`` (None: 1 mm).
        n_views, n_det: expected sinogram size (None: taken from each sinogram).
        det_spacing: detector bin width in mm (None: half the smaller pixel size, as
            :meth:`ParallelBeamGeometry.create`).
        window: ramp filter window, one of :data:`FILTER_WINDOWS`.
        cutoff: filter cutoff as a fraction of the detector Nyquist frequency, in (0, 1] (see :func:`iradon`).
        spatial_axes: the view axis and the detector axis among the spatial axes (the row and column axes of the
            image).

    Example::

        fbp = FilteredBackProject(image_shape=(256, 256), spacing=0.957, window="hann")
        image = fbp(sinogram)  # (1, 408, 727) -> (1, 256, 256)
    """

    _input = "sinogram"
    _layout = "(C, n_views, n_det) or (C, n_views, n_det, D)"

    def __init__(
        self,
        geometry: Optional[ParallelBeamGeometry] = None,
        image_shape: Optional[Sequence[int]] = None,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Optional[int] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        window: str = "ram-lak",
        cutoff: float = 1.0,
        spatial_axes: Sequence[int] = (0, 1),
    ) -> None:
        if geometry is None and image_shape is None:
            raise ValueError(
                "FilteredBackProject needs the size of the image to reconstruct: give geometry or image_shape=(H, W)."
            )
        super().__init__(geometry, image_shape, spacing, n_views, n_det, det_spacing, spatial_axes)
        if window not in FILTER_WINDOWS:
            raise ValueError(f"unknown filter window {window!r}, expected one of {FILTER_WINDOWS}.")
        if not 0 < cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1], got {cutoff!r}.")
        self.window = window
        self.cutoff = float(cutoff)

    def geometry_for(self, sinogram_shape: Sequence[int]) -> ParallelBeamGeometry:
        """The geometry used for sinograms of ``sinogram_shape = (n_views, n_det)``."""
        sinogram_shape = tuple(int(s) for s in sinogram_shape)
        if self.geometry is not None:
            geometry = self.geometry
        else:
            n_views = sinogram_shape[0] if self.n_views is None else self.n_views
            n_det = sinogram_shape[1] if self.n_det is None else self.n_det
            geometry = self._create(self.image_shape, n_views, n_det)
        if sinogram_shape != (geometry.n_views, geometry.n_det):
            raise ValueError(
                f"FilteredBackProject: the sinogram has {sinogram_shape[0]} views x {sinogram_shape[1]} bins (on "
                f"spatial_axes {self.spatial_axes}) but the geometry expects {geometry.n_views} x {geometry.n_det}: "
                "reconstruct with the geometry that projected it (or leave n_views and n_det None to take them from "
                "the sinogram)."
            )
        return geometry

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """The FBP image of the sinogram ``img`` (see the class docstring for the shapes)."""
        views, axes = self._slices(img)
        geometry = self.geometry_for(views.shape[-2:])
        out_dtype, work_dtype = self._dtypes(views)
        image = iradon(views.to(work_dtype), geometry, self.window, self.cutoff)
        return self._output(image, axes, img, out_dtype)


class Projectd(ArrayWrapperd):
    """Dictionary version of :class:`Project`: every key is projected with the same settings.

    Args:
        keys: keys of the images to project (replaced by their sinograms).
        geometry, image_shape, spacing, n_views, n_det, det_spacing, spatial_axes: as for :class:`Project`.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = Project.backend

    def __init__(
        self,
        keys: KeysCollection,
        geometry: Optional[ParallelBeamGeometry] = None,
        image_shape: Optional[Sequence[int]] = None,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Optional[int] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        spatial_axes: Sequence[int] = (0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = Project(geometry, image_shape, spacing, n_views, n_det, det_spacing, spatial_axes)


class FilteredBackProjectd(ArrayWrapperd):
    """Dictionary version of :class:`FilteredBackProject`: every key is reconstructed with the same settings.

    Args:
        keys: keys of the sinograms to reconstruct (replaced by their images).
        geometry, image_shape, spacing, n_views, n_det, det_spacing, window, cutoff, spatial_axes: as for
            :class:`FilteredBackProject`.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = FilteredBackProject.backend

    def __init__(
        self,
        keys: KeysCollection,
        geometry: Optional[ParallelBeamGeometry] = None,
        image_shape: Optional[Sequence[int]] = None,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Optional[int] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        window: str = "ram-lak",
        cutoff: float = 1.0,
        spatial_axes: Sequence[int] = (0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = FilteredBackProject(
            geometry, image_shape, spacing, n_views, n_det, det_spacing, window, cutoff, spatial_axes
        )
