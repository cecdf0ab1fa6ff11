"""
Sliding-window inferers for restoration networks: a 2D network over the slices of a volume, or a 3D network over
3D patches, in MONAI's ``Inferer`` form (``inferer(inputs, network)``), so that a bundle's config, MONAI Label and
this package's own runner call the same object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

from monai_rwkv.networks.nets.classical import NonLocalMeansDenoiser
from monai_rwkv.transforms._util import gaussian_blur, sobel_magnitude

__all__ = [
    "CoarseFusionInferer",
    "CoarseScaleFusion",
    "ResidualSmoothing",
    "ResidualSmoothingInferer",
    "RestorationInferer",
    "SliceRestorationInferer",
    "fit_roi",
    "flat_region",
    "network_call",
]


def fit_roi(roi_size: Sequence[int], image_size: Sequence[int]) -> tuple[int, ...]:
    """
    ``roi_size`` shrunk to ``image_size`` along every axis where the image is smaller (non-positive components, which
    MONAI reads as "the image's size", are kept). A sliding window never pads the image then: a window larger than
    the image would pad it with a constant, an edge that the network never saw in training and that costs it
    accuracy near the border (the network pads its own input to the size it needs).

    Args:
        roi_size: the configured window, one value per axis of ``image_size``.
        image_size: the spatial size of the image (or slice) the window slides over.
    """
    if len(roi_size) != len(image_size):
        raise ValueError(f"roi_size {tuple(roi_size)} and image size {tuple(image_size)} differ in dimensions.")
    return tuple(int(min(r, s)) if r > 0 else int(r) for r, s in zip(roi_size, image_size))


def flat_region(
    images: torch.Tensor, max_gradient: float | None = None, value_range: Sequence[float] | None = None
) -> torch.Tensor:
    """
    Where ``(N, C, H, W)`` images are flat: their Sobel gradient (:func:`monai_rwkv.transforms._util.sobel_magnitude`,
    each channel on its own) below ``max_gradient`` and their values strictly inside ``value_range``; a bound that is
    None is not checked. Returns a bool tensor of the images' shape.
    """
    flat = torch.ones_like(images, dtype=torch.bool)
    if max_gradient is not None:
        flat &= sobel_magnitude(images.reshape(-1, 1, *images.shape[-2:])).reshape(images.shape) < max_gradient
    if value_range is not None:
        flat &= (images > value_range[0]) & (images < value_range[1])
    return flat


def _flat_region_bounds(
    max_gradient: float | None, value_range: Sequence[float] | None
) -> tuple[float | None, tuple[float, float] | None]:
    """:func:`flat_region`'s bounds checked (a gradient > 0, ``low < high``; None: unbounded) and as floats."""
    if max_gradient is not None and not max_gradient > 0:
        raise ValueError(f"flat_gradient must be > 0 or None, got {max_gradient!r}.")
    if value_range is not None and not (len(value_range) == 2 and value_range[0] < value_range[1]):
        raise ValueError(f"value_range must be (low, high) with low < high, or None, got {value_range!r}.")
    return (
        None if max_gradient is None else float(max_gradient),
        None if value_range is None else (float(value_range[0]), float(value_range[1])),
    )


def _planes(x: torch.Tensor, slice_axis: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, C, *spatial)`` with slices along ``slice_axis`` -> ``(B * n, C, rows, columns)`` and ``(B, n)``."""
    moved = x.movedim(slice_axis, 1)
    return moved.reshape(-1, *moved.shape[2:]), tuple(moved.shape[:2])


def _volume(planes: torch.Tensor, lead: tuple[int, int], slice_axis: int) -> torch.Tensor:
    """The inverse of :func:`_planes`."""
    return planes.reshape(*lead, *planes.shape[1:]).movedim(1, slice_axis)


def network_call(
    network: Callable[[torch.Tensor], torch.Tensor], patches: torch.Tensor, amp: bool = False
) -> torch.Tensor:
    """
    ``network(patches)`` as a float32 result that never shares memory with ``patches``: MONAI scales the prediction
    in place by the blending weights, and with one patch per call the patch is a view of the image, so a network
    that returns its input (``nn.Identity``) would otherwise corrupt the image where windows overlap.

    Args:
        network: any image-to-image module or callable.
        patches: ``(B, C, *spatial)``.
        amp: float16 autocast (CUDA tensors only).
    """
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and patches.is_cuda else nullcontext()
    memory_format = torch.channels_last if patches.ndim == 4 else torch.channels_last_3d
    with autocast:
        out = network(patches.contiguous(memory_format=memory_format))
    out = out.float()
    if out.untyped_storage().data_ptr() == patches.untyped_storage().data_ptr():
        out = out.clone()
    return out


class RestorationInferer(SlidingWindowInferer):
    """
    MONAI's :class:`~monai.inferers.SlidingWindowInferer` for an image-to-image network whose patches have the
    input's dimensionality (a 3D network on ``(B, C, i, j, k)`` with a 3D ``roi_size``), with float16 autocast on
    CUDA when ``amp`` and the in-place safety of :func:`network_call`.

    An image smaller than ``roi_size`` along an axis gets windows of its own size along that axis
    (:func:`fit_roi`), never constant padding.

    Args:
        roi_size: patch size, one value per spatial dimension.
        amp: float16 autocast for CUDA inputs.
        kwargs: the other :class:`~monai.inferers.SlidingWindowInferer` arguments (``sw_batch_size``, ``overlap``,
            ``mode``, ``sw_device``, ``device``, ``progress``, ...).
    """

    def __init__(self, roi_size: Sequence[int] | int, amp: bool = False, **kwargs: Any) -> None:
        super().__init__(roi_size=roi_size, **kwargs)
        self.amp = bool(amp)
        #: the configured window (one value: the same along every axis); each call slides ``fit_roi`` of it.
        self.patch_size = (int(roi_size),) if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        spatial = inputs.shape[2:]
        roi = self.patch_size * len(spatial) if len(self.patch_size) == 1 else self.patch_size
        self.roi_size = fit_roi(roi, spatial)
        return super().__call__(inputs, lambda x: network_call(network, x, self.amp), *args, **kwargs)


class SliceRestorationInferer(SliceInferer):
    """
    A 2D image-to-image network over every slice of a volume ``(B, C, i, j, k)`` along ``spatial_dim`` (MONAI's
    :class:`~monai.inferers.SliceInferer`: one sliding window of ``roi_size`` patches per slice, patches of several
    slices batched together), with this project's slice convention.

    Slice convention: the volume is indexed ``(i, j, k)`` as MONAI's readers return it (``i`` along the image
    rows' direction, i.e. columns; ``j`` down the rows). With ``transpose`` (default) each slice is given to the
    network as an image of ``(rows, columns) = (j, i)``, the orientation in which it is displayed and in which the
    training slices were cut; ``roi_size`` is ``(rows, columns)`` of the network's patches. A slice smaller than
    ``roi_size`` along an axis gets patches of its own size along that axis (:func:`fit_roi`), never constant
    padding.

    Args:
        roi_size: ``(rows, columns)`` of a patch.
        spatial_dim: the axis of ``(i, j, k)`` along which slices are taken (2: axial slices of an axial series).
        transpose: present slices as ``(j, i)`` (see above); False: as ``(i, j)``.
        amp: float16 autocast for CUDA inputs.
        kwargs: the other :class:`~monai.inferers.SlidingWindowInferer` arguments.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        spatial_dim: int = 2,
        transpose: bool = True,
        amp: bool = False,
        **kwargs: Any,
    ) -> None:
        roi = (int(roi_size),) * 2 if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
        if len(roi) != 2:
            raise ValueError(f"roi_size must be (rows, columns) of a 2D patch, got {roi_size}.")
        self.transpose = bool(transpose)
        self.amp = bool(amp)
        #: ``(rows, columns)`` of a patch as the network sees it.
        self.patch_size = roi
        super().__init__(spatial_dim=spatial_dim, roi_size=roi[::-1] if self.transpose else roi, **kwargs)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """
        Args:
            inputs: ``(B, C, i, j, k)``, or ``(B, C, i, j)`` for one slice.
            network: 2D network ``(N, C, rows, columns) -> (N, C_out, rows, columns)``.

        Returns:
            ``(B, C_out, i, j, k)`` (or ``(B, C_out, i, j)``).
        """
        planar = inputs.ndim == 4
        volume = inputs[..., None] if planar else inputs
        slice_size = [s for axis, s in enumerate(volume.shape[2:]) if axis != self.spatial_dim]
        self.orig_roi_size = fit_roi(self.patch_size[::-1] if self.transpose else self.patch_size, slice_size)
        out = super().__call__(volume, network, *args, **kwargs)
        return out[..., 0] if planar else out

    def network_wrapper(self, network: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any):
        """One batch of 2D patches: drop the slice axis, present as (rows, columns), call, restore the layout."""
        x = x.squeeze(dim=self.spatial_dim + 2)
        if self.transpose:
            x = x.transpose(-1, -2)
        out = network_call(lambda p: network(p, *args, **kwargs), x, self.amp)
        if self.transpose:
            out = out.transpose(-1, -2)
        return out.unsqueeze(dim=self.spatial_dim + 2)


class CoarseScaleFusion:
    """
    Restore 2D slices on their own grid and on a grid ``factor`` times coarser, and keep the coarse result's low
    spatial frequencies with the fine result's high ones::

        fine = inferer(x, network)
        coarse = upsample(inferer(downsample(x), network))
        out = fine + gaussian_sigma(coarse - fine)

    A network trained on pixels of a given size sees, on a finer grid, noise grain and streaks that are larger in
    pixels than any it learned; restored on the coarser grid they are back at the scale it knows, while the detail
    that the coarser grid cannot hold comes from the fine pass. Whether a slice gets the coarse pass at all is decided
    from its pixel size (:meth:`applies`), by the caller, which knows the geometry
    (:class:`~monai_rwkv.inference.Restorer`).

    Downsampling averages ``factor`` x ``factor`` pixels (area interpolation onto ``ceil(size / factor)``); upsampling
    is bicubic back onto the input's grid; the Gaussian (``sigma`` pixels of the fine grid, radius ``ceil(3 sigma)``,
    edges replicated: :func:`monai_rwkv.transforms._util.gaussian_blur`) splits the bands. A constant image is
    returned unchanged by the fusion itself.

    With ``min_change`` each slice keeps the fused result only if the coarse pass changes its flat region enough:
    the root mean square of ``gaussian_sigma(coarse - fine)`` over the pixels where ``fine`` lies strictly inside
    ``value_range`` and its Sobel gradient (:func:`monai_rwkv.transforms._util.sobel_magnitude`) is below
    ``flat_gradient`` must be at least ``min_change``; other slices (and slices without such pixels) keep ``fine``.
    The coarse pass removes a large-scale mottle, such as the streaks of a sparse-view scan, which the fine pass
    leaves in flat tissue; where there is none it changes little there, and what it changes elsewhere is detail.

    Args:
        factor: how many times coarser the second grid is (an integer >= 2).
        sigma: the Gaussian's standard deviation in pixels of the input's grid (> 0): below about ``1 / (2 pi
            sigma)`` cycles per pixel the coarse pass decides, above it the fine pass.
        max_pixel_size: the largest in-plane pixel size (mm, or the affine's unit) that gets the coarse pass.
        min_size: slices whose coarse grid would be smaller than this along an axis keep the fine pass alone.
        min_change: the per-slice gate above, in the network's input units (0: every slice keeps the fused result).
        flat_gradient: the gate's flat region: gradient below this, input units per pixel (None: no limit).
        value_range: the gate's flat region: ``(low, high)`` values of ``fine``, input units (None: all values).
    """

    def __init__(
        self,
        factor: int = 2,
        sigma: float = 1.5,
        max_pixel_size: float = 0.75,
        min_size: int = 16,
        min_change: float = 0.0,
        flat_gradient: float | None = None,
        value_range: Sequence[float] | None = None,
    ) -> None:
        if int(factor) != factor or factor < 2:
            raise ValueError(f"factor must be an integer >= 2, got {factor!r}.")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0 (pixels of the input's grid), got {sigma!r}.")
        if not max_pixel_size > 0:
            raise ValueError(f"max_pixel_size must be > 0, got {max_pixel_size!r}.")
        if not min_change >= 0:
            raise ValueError(f"min_change must be >= 0 (0: no gate), got {min_change!r}.")
        self.factor, self.sigma = int(factor), float(sigma)
        self.max_pixel_size, self.min_size = float(max_pixel_size), int(min_size)
        self.min_change = float(min_change)
        self.flat_gradient, self.value_range = _flat_region_bounds(flat_gradient, value_range)

    def describe(self) -> dict[str, Any]:
        """The settings, for logs and manifests."""
        return {
            "factor": self.factor,
            "sigma": self.sigma,
            "max_pixel_size": self.max_pixel_size,
            "min_change": self.min_change,
            "flat_gradient": self.flat_gradient,
            "value_range": None if self.value_range is None else list(self.value_range),
        }

    def applies(self, pixel_size: Sequence[float], slice_size: Sequence[int]) -> bool:
        """
        Whether slices of in-plane ``pixel_size`` (one value per in-plane axis) and ``slice_size`` pixels get the
        coarse pass: every pixel at most ``max_pixel_size`` and the coarse grid at least ``min_size`` across.
        """
        return max(float(p) for p in pixel_size) <= self.max_pixel_size and all(
            math.ceil(int(s) / self.factor) >= self.min_size for s in slice_size
        )

    def applies_to(self, image: torch.Tensor, slice_axis: int) -> bool:
        """
        Whether the slices of ``image`` along spatial axis ``slice_axis`` get the coarse pass (:meth:`applies`).

        Args:
            image: ``(C, i, j, k)``; a :class:`~monai.data.MetaTensor` whose affine gives the pixel size (the norm of
                each in-plane axis' column). A plain tensor has no geometry, so it never gets the coarse pass.
            slice_axis: 0, 1 or 2, the spatial axis the slices lie along (a slice inferer's ``spatial_dim``).
        """
        if not isinstance(image, MetaTensor) or image.ndim != 4:
            return False
        affine = torch.as_tensor(image.affine, dtype=torch.float64)
        if affine.ndim != 2:  # a batch's affines
            return False
        in_plane = [a for a in range(3) if a != int(slice_axis)]
        pixel = [float(torch.linalg.norm(affine[:3, a])) for a in in_plane]
        return self.applies(pixel, [int(image.shape[a + 1]) for a in in_plane])

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], inferer: SliceRestorationInferer
    ) -> torch.Tensor:
        """
        Args:
            inputs: ``(B, C, i, j, k)`` normalised volume whose slices lie along ``inferer.spatial_dim``.
            network: the 2D network.
            inferer: the slice inferer that runs both passes.

        Returns:
            ``(B, C_out, i, j, k)`` float32, where the inferer puts its output.
        """
        slice_axis = int(inferer.spatial_dim) + 2
        fine = inferer(inputs, network).float()
        planes, lead = _planes(inputs.float(), slice_axis)
        size = tuple(planes.shape[-2:])
        coarse_size = tuple(math.ceil(s / self.factor) for s in size)
        small = _volume(F.interpolate(planes, size=coarse_size, mode="area"), lead, slice_axis)
        coarse, _ = _planes(inferer(small, network).float().to(fine.device), slice_axis)
        up = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
        fine_planes, lead = _planes(fine, slice_axis)
        change = gaussian_blur(up - fine_planes, (self.sigma, self.sigma))
        if self.min_change > 0:
            keep = (self.flat_change(fine_planes, change) >= self.min_change).to(change.dtype)  # NaN: False
            change = change * keep.view(-1, *([1] * (change.ndim - 1)))
        return _volume(fine_planes + change, lead, slice_axis)

    def flat_change(self, fine: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """
        The gate's statistic: the root mean square of ``change`` over the flat region of ``fine`` (class docstring),
        per slice.

        Args:
            fine: ``(N, C, H, W)`` the fine pass's slices.
            change: ``(N, C, H, W)`` what the fusion adds to them.

        Returns:
            ``(N,)`` float32, NaN for a slice without a flat pixel.
        """
        flat = flat_region(fine, self.flat_gradient, self.value_range)
        dims = tuple(range(1, fine.ndim))
        count = flat.sum(dim=dims)
        squared = torch.where(flat, change.float() ** 2, torch.zeros_like(change, dtype=torch.float32)).sum(dim=dims)
        return torch.where(count > 0, (squared / count.clamp_min(1)).sqrt(), torch.full_like(squared, math.nan))


class CoarseFusionInferer(Inferer):
    """
    A slice inferer run through a :class:`CoarseScaleFusion`, as an ``Inferer`` (``inferer(inputs, network)``) for
    callers that take one, e.g. MONAI Label. Every input gets the coarse pass: choose it for a volume with
    :meth:`CoarseScaleFusion.applies_to`, and use ``inferer`` itself for the others.

    Args:
        inferer: a slice inferer (one with a ``spatial_dim``, e.g. :class:`SliceRestorationInferer`).
        fusion: the coarse-scale fusion.
    """

    def __init__(self, inferer: SliceInferer, fusion: CoarseScaleFusion) -> None:
        if getattr(inferer, "spatial_dim", None) is None:
            raise ValueError(
                f"coarse-scale fusion needs a slice inferer (one with a spatial_dim), got {type(inferer).__name__}."
            )
        self.inferer, self.fusion = inferer, fusion

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``inputs``: ``(B, C, i, j, k)`` normalised; returns ``(B, C_out, i, j, k)`` float32."""
        call = (lambda x: network(x, *args, **kwargs)) if args or kwargs else network
        return self.fusion(inputs, call, self.inferer)


class ResidualSmoothing:
    """
    Smooth restored 2D slices with non-local means, each slice as strongly as the restoration's own change to its
    flat region suggests::

        removed = std over the flat region of (inputs - restored)       (one value per slice and channel)
        h       = scale * max(removed - threshold, 0)
        out     = NLM_h(restored)  where h > 0, else restored

    A network that had to remove much noise from a slice (a very noisy or sparse-view scan, further from its training
    data) tends to leave part of it, a mottle that non-local means on the restored slice removes while keeping its
    edges; a slice the network changed little in flat tissue keeps the network's result exactly. ``threshold`` is the
    change below which nothing is smoothed, ``scale`` how the filter strength grows above it.

    The flat region holds the pixels where ``restored`` lies strictly inside ``value_range`` and its Sobel gradient
    (:func:`monai_rwkv.transforms._util.sobel_magnitude`) is below ``flat_gradient``; a slice with fewer than
    ``min_pixels`` such pixels is not smoothed. The filter is
    :class:`~monai_rwkv.networks.nets.NonLocalMeansDenoiser` (``patch_radius``, ``search_radius``).

    Args:
        scale: filter strength per unit of removed change above ``threshold`` (> 0).
        threshold: removed change (standard deviation, input units) below which a slice is left as restored (>= 0).
        patch_radius: half-width of the non-local means patches.
        search_radius: half-width of its search window.
        flat_gradient: the flat region's gradient limit, input units per pixel (None: no limit).
        value_range: the flat region's ``(low, high)`` values of ``restored``, input units (None: all values).
        min_pixels: fewest flat pixels a slice needs to be smoothed (>= 2).
    """

    def __init__(
        self,
        scale: float = 1.0,
        threshold: float = 0.0,
        patch_radius: int = 2,
        search_radius: int = 5,
        flat_gradient: float | None = None,
        value_range: Sequence[float] | None = None,
        min_pixels: int = 100,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}.")
        if not threshold >= 0:
            raise ValueError(f"threshold must be >= 0 (input units), got {threshold!r}.")
        if int(patch_radius) < 0 or int(search_radius) < 1:
            raise ValueError(f"need patch_radius >= 0 and search_radius >= 1, got {patch_radius!r}, {search_radius!r}.")
        if int(min_pixels) < 2:
            raise ValueError(f"min_pixels must be >= 2, got {min_pixels!r}.")
        self.scale, self.threshold = float(scale), float(threshold)
        self.patch_radius, self.search_radius = int(patch_radius), int(search_radius)
        self.flat_gradient, self.value_range = _flat_region_bounds(flat_gradient, value_range)
        self.min_pixels = int(min_pixels)

    def describe(self) -> dict[str, Any]:
        """The settings, for logs and manifests."""
        return {
            "scale": self.scale,
            "threshold": self.threshold,
            "patch_radius": self.patch_radius,
            "search_radius": self.search_radius,
            "flat_gradient": self.flat_gradient,
            "value_range": None if self.value_range is None else list(self.value_range),
            "min_pixels": self.min_pixels,
        }

    def strengths(self, inputs: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        """
        The filter strength ``h`` of each slice (class docstring; 0: left as restored).

        Args:
            inputs: ``(N, 1, H, W)`` the slices the network was given.
            restored: ``(N, 1, H, W)`` its result.

        Returns:
            ``(N,)`` float32.
        """
        restored = restored.float()
        flat = flat_region(restored, self.flat_gradient, self.value_range)
        removed = (inputs.float() - restored).double()
        count = flat.sum(dim=(1, 2, 3))
        mean = torch.where(flat, removed, 0.0).sum(dim=(1, 2, 3)) / count.clamp_min(1)
        squares = torch.where(flat, (removed - mean.view(-1, 1, 1, 1)) ** 2, 0.0).sum(dim=(1, 2, 3))
        std = (squares / (count - 1).clamp_min(1)).sqrt()  # the sample standard deviation
        h = self.scale * (std - self.threshold).clamp_min(0.0)
        return torch.where(count >= self.min_pixels, h, torch.zeros_like(h)).float()

    def __call__(self, inputs: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        """
        Args:
            inputs: ``(N, C, H, W)`` the slices the network was given (``C`` channels are smoothed independently).
            restored: ``(N, C, H, W)`` its result.

        Returns:
            ``(N, C, H, W)`` float32: ``restored`` smoothed where its strength is above 0.
        """
        if inputs.shape != restored.shape or restored.ndim != 4:
            raise ValueError(
                f"expected inputs and restored slices of one shape (N, C, H, W), got {tuple(inputs.shape)} and "
                f"{tuple(restored.shape)}."
            )
        n, c, rows, columns = restored.shape
        planes = restored.float().reshape(n * c, 1, rows, columns)
        strengths = self.strengths(inputs.reshape(n * c, 1, rows, columns).to(planes.device), planes)
        out = planes.clone()
        for index in torch.nonzero(strengths > 0).flatten().tolist():
            nlm = NonLocalMeansDenoiser(float(strengths[index]), self.patch_radius, self.search_radius)
            out[index] = nlm(planes[index : index + 1])[0]
        return out.reshape(n, c, rows, columns)

    def apply(self, inputs: torch.Tensor, restored: torch.Tensor, slice_axis: int) -> torch.Tensor:
        """
        :meth:`__call__` on the slices of volumes.

        Args:
            inputs: ``(B, C, i, j, k)`` the volume the network was given.
            restored: ``(B, C, i, j, k)`` its result.
            slice_axis: 2, 3 or 4, the axis of these tensors that the slices lie along.

        Returns:
            ``(B, C, i, j, k)`` float32.
        """
        planes, lead = _planes(restored.float(), slice_axis)
        return _volume(self(_planes(inputs, slice_axis)[0], planes), lead, slice_axis)


class ResidualSmoothingInferer(Inferer):
    """
    A slice inferer (or a :class:`CoarseFusionInferer`) followed by a :class:`ResidualSmoothing` of its result, as an
    ``Inferer`` (``inferer(inputs, network)``) for callers that take one, e.g. MONAI Label.

    Args:
        inferer: the inferer to run first; it or the inferer it wraps must have a ``spatial_dim`` (the slice axis).
        smoothing: the residual smoothing.
    """

    def __init__(self, inferer: Inferer, smoothing: ResidualSmoothing) -> None:
        axis = getattr(inferer, "spatial_dim", getattr(getattr(inferer, "inferer", None), "spatial_dim", None))
        if axis is None:
            raise ValueError(
                f"residual smoothing needs a slice inferer (one with a spatial_dim), got {type(inferer).__name__}."
            )
        self.inferer, self.smoothing, self.spatial_dim = inferer, smoothing, int(axis)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``inputs``: ``(B, C, i, j, k)`` normalised; returns ``(B, C_out, i, j, k)`` float32."""
        restored = self.inferer(inputs, network, *args, **kwargs)
        return self.smoothing.apply(inputs.to(restored.device), restored, self.spatial_dim + 2)
