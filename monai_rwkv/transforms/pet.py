"""
PET in pure PyTorch (CPU and CUDA): an FDG brain phantom built from tissue probability maps, and a 2-D PET
acquisition simulator (attenuation, Poisson counts with a randoms/scatter background, OSEM reconstruction) built on
the shared parallel-beam tomography of :mod:`monai_rwkv.transforms.tomography`.

Phantom (:func:`fdg_phantom`, :class:`RandFDGPhantom`, :func:`attenuation_map`), BrainWeb style: the activity is a
weighted sum of grey matter, white matter and CSF probability maps, in SUV-like units. White matter is
:data:`WHITE_MATTER_SUV` (2 SUV) and grey matter 4 times that by default (8 SUV), CSF nearly cold; hot or cold
spheres (discs in 2-D) may be added as lesions, and the result is clipped to ``[0, 20]``
(:data:`MAX_SUV`, the paper's PET range). The attenuation map is water (:data:`MU_WATER_511KEV_PER_MM`) inside the
head (the brain plus a margin for skull and scalp), 0 outside, smoothed.

Acquisition (:func:`simulate_pet`, :class:`RandPETAcquisition`, :class:`PETAcquisition`), slice by slice:

1. optional Gaussian blur of the activity (``resolution_fwhm_mm``: detector size, positron range, photon
   non-collinearity), not modelled by the reconstruction (as in a reconstruction without resolution modelling);
2. attenuated line integrals ``t = exp(-R mu) * R a`` with the Joseph projector :func:`radon`;
3. a count scale ``c`` so that the expected true counts ``sum(c t)`` are ``counts`` per slice (averaged over the
   slices of one call, or for every slice with ``shared_scale=False``); the full-count level is
   :data:`FULL_COUNTS_PER_SLICE`, and the paper's low-count data have :data:`LOW_COUNT_FRACTION` (1/12) of it;
4. Poisson counts with a flat randoms/scatter background ``r = background_fraction * mean(c t)`` per sinogram bin
   (:func:`~monai_rwkv.transforms.counts.poisson_counts`): ``y ~ Poisson(c t + r)``;
5. OSEM (MLEM for ``subsets=1``) with the model ``E[y] = c exp(-R mu) R a + r`` (attenuation factors, count scale
   and background inside the model, so the result is attenuation corrected and in the activity's units), the
   subsets interleaved views, back-projection by :func:`backproject`;
6. optional Gaussian post-filter (``post_filter_fwhm_mm``).

Defaults, for a modern clinical brain scan: 3.5 mm system resolution, 30 % randoms + scatter, OSEM 3 iterations x
16 subsets, 3 mm post-filter, the geometry of :func:`pet_geometry` (one 2 mm detector bin per pixel).

The projector pair: :func:`backproject` (pixel driven, linear interpolation on the detector) is the adjoint of the
Joseph projector :func:`radon` up to the constant ``dy dx / (dtheta du)`` and about 1 % (RMS; 5 % at worst, in the
corners of the square) of discretisation mismatch; the constant cancels in the EM update because the sensitivity
image is the back-projection of the same weights, ``sum_i c_i exp(-R mu)_i``, with the same back-projector.

Speed (defaults: 128 x 128 pixels of 2 mm, 128 views x 130 bins of 2 mm, 3 iterations x 16 subsets), measured with
2 threads on a 2-core machine also running a training job (load about 3): 0.4-0.9 s per slice (0.6 s of CPU) for one
slice per call, 0.2-0.3 s per slice when a slab of 15 slices is simulated in one call; 192 x 192 slices take about
1.8-2.2 s each (``iterations=2``: 0.8-1.6 s).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Union

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor
from monai.utils.misc import MAX_SEED

from ._util import FWHM_TO_SIGMA, gaussian_blur, value_range
from .counts import _stream_seed, poisson_counts
from .tomography import ParallelBeamGeometry, _pair, _spatial_axes, backproject, radon
from .wrappers import ArrayWrapperd, RandArrayWrapperd

__all__ = [
    "FULL_COUNTS_PER_SLICE",
    "LOW_COUNT_FRACTION",
    "MAX_SUV",
    "MU_WATER_511KEV_PER_MM",
    "WHITE_MATTER_SUV",
    "fdg_phantom",
    "lesion_labels",
    "random_deformation",
    "attenuation_map",
    "pet_geometry",
    "simulate_pet",
    "RandFDGPhantom",
    "RandPETAcquisition",
    "RandPETAcquisitiond",
    "PETAcquisition",
    "PETAcquisitiond",
]

MU_WATER_511KEV_PER_MM = 0.0096
"""Linear attenuation of water (and soft tissue) in 1/mm for 511 keV annihilation photons: 0.096 /cm, from the NIST
mass attenuation coefficients of water (Hubbell and Seltzer, NIST Standard Reference Database 126: 0.0969 cm^2/g at
500 keV, 0.0896 cm^2/g at 600 keV, log-log interpolated to 0.0960 cm^2/g at 511 keV) times 1 g/cm^3."""

WHITE_MATTER_SUV = 2.0
"""Activity of white matter in the phantom, in SUV (grey matter is ``ratios[0] / ratios[1]`` times this)."""

MAX_SUV = 20.0
"""Upper end of the phantom's activity range ``[0, 20]`` SUV, the range of the paper's PET images."""

FULL_COUNTS_PER_SLICE = 4.0e6
"""Default full-count level: expected true (attenuated, unscattered) coincidences per 2-D slice. With the default
reconstruction it gives a noise of about 6 % (standard deviation over mean) in the grey matter of a 2 mm slice of the
MNI phantom (scripts/prepare_pet_phantoms.py), and about 19 % at the low-count level (1/12)."""

LOW_COUNT_FRACTION = 1.0 / 12.0
"""The paper's low-count level as a fraction of the full count (1/12)."""

# ----------------------------------------------------------------------------------------------------------------
# phantom


def _tissue_tensors(gm: NdarrayOrTensor, wm: NdarrayOrTensor, csf: NdarrayOrTensor) -> list[torch.Tensor]:
    """The three maps as float tensors (float64 if any is float64), checked: same shape, finite, in [0, 1]."""
    maps = [convert_to_tensor(m, track_meta=False) for m in (gm, wm, csf)]
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"gm, wm and csf must have the same shape, got {[tuple(m.shape) for m in maps]}.")
    dtype = torch.float64 if any(m.dtype == torch.float64 for m in maps) else torch.float32
    maps = [m.to(dtype) for m in maps]
    for name, m in zip(("gm", "wm", "csf"), maps):
        if m.numel() == 0:
            raise ValueError(f"{name} is empty.")
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"{name} has non-finite values.")
        lo, hi = float(m.min()), float(m.max())
        if lo < 0 or hi > 1 + 1e-6:
            raise ValueError(f"{name} must be a probability map with values in [0, 1], got [{lo:.4g}, {hi:.4g}].")
    return maps


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    vals = tuple(float(r) for r in ratios)
    if len(vals) != 3 or min(vals) < 0 or not vals[1] > 0 or not all(math.isfinite(v) for v in vals):
        raise ValueError(
            f"ratios must be three finite numbers (grey, white, CSF) >= 0 with white > 0, got {tuple(ratios)!r}."
        )
    return vals[0], vals[1], vals[2]


def _check_lesions(lesions: Sequence, ndim: int) -> list[tuple[tuple[float, ...], float, float]]:
    out = []
    for lesion in lesions:
        try:
            centre, radius, contrast = lesion
            centre = tuple(float(c) for c in centre)
            radius, contrast = float(radius), float(contrast)
        except (TypeError, ValueError):
            raise ValueError(f"a lesion must be (centre, radius, contrast), got {lesion!r}.") from None
        if len(centre) != ndim:
            raise ValueError(
                f"lesion centre {centre} has {len(centre)} coordinates but the maps have {ndim} dimensions."
            )
        if not radius > 0 or not contrast >= 0 or not math.isfinite(radius * contrast):
            raise ValueError(f"lesion radius must be > 0 and contrast >= 0 (finite), got {radius!r}, {contrast!r}.")
        out.append((centre, radius, contrast))
    return out


def fdg_phantom(
    gm: NdarrayOrTensor,
    wm: NdarrayOrTensor,
    csf: NdarrayOrTensor,
    ratios: Sequence[float] = (4.0, 1.0, 0.05),
    lesions: Optional[Sequence[tuple[Sequence[float], float, float]]] = None,
    white_matter_suv: float = WHITE_MATTER_SUV,
    max_value: float = MAX_SUV,
) -> NdarrayOrTensor:
    """An FDG brain activity map from tissue probability maps, in SUV.

    ``activity = white_matter_suv * (r_gm gm + r_wm wm + r_csf csf) / r_wm``: with the default ratios white matter is
    2 SUV, grey matter 8 SUV and CSF 0.1 SUV. Each lesion ``(centre, radius, contrast)`` (centre in voxel indices of
    the maps' axes, radius in voxels) replaces the activity inside its ball (disc in 2-D) by ``contrast`` times the
    mean activity there: hot for ``contrast > 1``, cold below. Lesions are painted in order, then the result is clipped
    to ``[0, max_value]`` (a lesion 3 times as hot as grey matter saturates at the paper's 20 SUV).

    Args:
        gm, wm, csf: grey matter, white matter and CSF probability maps in ``[0, 1]``, the same shape: ``(H, W)`` or
            ``(H, W, D)`` (any number of dimensions), numpy or torch.
        ratios: activity ratios ``(grey, white, CSF)``; only their proportions to the white matter count.
        lesions: sequence of ``(centre, radius, contrast)``, or None.
        white_matter_suv: activity of pure white matter.
        max_value: upper clip.

    Returns:
        activity of the maps' shape and kind (float32, float64 if any map is float64).
    """
    maps = _tissue_tensors(gm, wm, csf)
    r_gm, r_wm, r_csf = _check_ratios(ratios)
    if not white_matter_suv > 0 or not max_value > 0:
        raise ValueError(f"white_matter_suv and max_value must be > 0, got {white_matter_suv!r}, {max_value!r}.")
    activity = (r_gm * maps[0] + r_wm * maps[1] + r_csf * maps[2]) * (white_matter_suv / r_wm)
    lesion_list = _check_lesions(lesions or (), activity.ndim)
    if lesion_list:
        grids = torch.meshgrid(
            *[torch.arange(s, dtype=activity.dtype, device=activity.device) for s in activity.shape], indexing="ij"
        )
        for centre, radius, contrast in lesion_list:
            dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
            inside = dist2 <= radius**2
            if bool(inside.any()):
                activity[inside] = contrast * activity[inside].mean()
    activity = activity.clamp(0.0, float(max_value))
    return convert_to_dst_type(activity, dst=gm, dtype=activity.dtype)[0]


def lesion_labels(
    shape: Sequence[int], lesions: Sequence[tuple[Sequence[float], float, float]], device: Optional[str] = None
) -> torch.Tensor:
    """Where each lesion of :func:`fdg_phantom` lies: an int64 map of ``shape``, 0 outside every lesion and
    ``l + 1`` inside lesion ``l`` (painted in order, so a later lesion covers an earlier one exactly as in the
    phantom; a lesion entirely covered has no voxel)."""
    lesion_list = _check_lesions(lesions, len(shape))
    labels = torch.zeros(tuple(int(s) for s in shape), dtype=torch.int64, device=device)
    if not lesion_list:
        return labels
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64, device=device) for s in labels.shape], indexing="ij")
    for index, (centre, radius, _) in enumerate(lesion_list):
        labels[sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2] = index + 1
    return labels


def random_deformation(
    maps: np.ndarray,
    rng: np.random.Generator,
    displacement_mm: float = 4.0,
    smoothness_mm: float = 24.0,
    spacing: Union[float, Sequence[float]] = 1.0,
) -> np.ndarray:
    """A random smooth deformation of channel-last probability maps ``(..., C)`` (the same for every channel): an
    anatomy variant for a phantom. Each displacement component is white noise smoothed by a Gaussian of
    ``smoothness_mm`` FWHM; the field is scaled so that its longest displacement vector is ``displacement_mm``. The
    maps are resampled linearly (beyond the edges: the nearest edge voxel) and clipped to [0, 1].
    ``displacement_mm=0`` returns a copy."""
    from scipy import ndimage  # noqa: PLC0415 - only the phantom needs scipy

    data = np.asarray(maps, dtype=np.float64)
    spatial = data.shape[:-1]
    steps = _spacing_n(spacing, len(spatial))
    if not displacement_mm >= 0 or not smoothness_mm > 0:
        raise ValueError(
            f"displacement_mm must be >= 0 and smoothness_mm > 0, got {displacement_mm!r}, {smoothness_mm!r}."
        )
    if displacement_mm == 0:
        return data.copy()
    sigma = [smoothness_mm * FWHM_TO_SIGMA / s for s in steps]
    fields = [ndimage.gaussian_filter(rng.standard_normal(spatial), sigma, mode="wrap") for _ in steps]  # in mm
    norm = np.sqrt(sum(f**2 for f in fields)).max()
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in spatial], indexing="ij")
    coords = [g + f * (displacement_mm / (norm or 1.0)) / step for g, f, step in zip(grid, fields, steps)]
    out = np.stack(
        [ndimage.map_coordinates(data[..., c], coords, order=1, mode="nearest") for c in range(data.shape[-1])], -1
    )
    return np.clip(out, 0.0, 1.0)


def _spacing_n(spacing: Union[float, Sequence[float]], ndim: int) -> tuple[float, ...]:
    if isinstance(spacing, (int, float)):
        vals = (float(spacing),) * ndim
    else:
        vals = tuple(float(s) for s in spacing)
        if len(vals) != ndim:
            raise ValueError(f"spacing must be a number or {ndim} numbers (one per axis), got {spacing!r}.")
    if min(vals) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing!r}.")
    return vals


def attenuation_map(
    gm: NdarrayOrTensor,
    wm: NdarrayOrTensor,
    csf: NdarrayOrTensor,
    spacing: Union[float, Sequence[float]] = 1.0,
    mu: float = MU_WATER_511KEV_PER_MM,
    head_margin_mm: float = 8.0,
    smooth_fwhm_mm: float = 4.0,
    threshold: float = 0.5,
) -> NdarrayOrTensor:
    """A smooth 511 keV attenuation map (1/mm) of the head around tissue probability maps.

    The head is the intracranial mask ``gm + wm + csf >= threshold`` (holes filled), grown by ``head_margin_mm``
    (skull and scalp, about 8 mm) with a Euclidean distance in mm; it is water (``mu``, 0.0096 /mm, see
    :data:`MU_WATER_511KEV_PER_MM`), the outside air (0), and the map is smoothed by a Gaussian of
    ``smooth_fwhm_mm``. The skull is treated as soft tissue (bone attenuates about 1.5 times more at 511 keV).

    Args:
        gm, wm, csf: probability maps of the same shape ``(H, W)`` or ``(H, W, D)``.
        spacing: voxel size in mm, a number or one per axis.
        mu: attenuation of the head's tissue in 1/mm.
        head_margin_mm: thickness added around the intracranial mask (>= 0).
        smooth_fwhm_mm: FWHM of the Gaussian smoothing (0: none).
        threshold: tissue probability sum that counts as inside.

    Returns:
        ``mu`` map of the maps' shape and kind, float32 (float64 if any map is float64).
    """
    from scipy import ndimage  # noqa: PLC0415 - only the phantom needs scipy

    maps = _tissue_tensors(gm, wm, csf)
    steps = _spacing_n(spacing, maps[0].ndim)
    if not mu >= 0 or not head_margin_mm >= 0 or not smooth_fwhm_mm >= 0 or not 0 < threshold <= 3:
        raise ValueError(
            "mu, head_margin_mm and smooth_fwhm_mm must be >= 0 and threshold in (0, 3], got "
            f"{mu!r}, {head_margin_mm!r}, {smooth_fwhm_mm!r}, {threshold!r}."
        )
    tissue = (maps[0] + maps[1] + maps[2]).cpu().numpy()
    mask = ndimage.binary_fill_holes(tissue >= threshold)
    if head_margin_mm > 0 and mask.any():
        mask = ndimage.distance_transform_edt(~mask, sampling=steps) <= head_margin_mm
    out = mask.astype(np.float64) * float(mu)
    if smooth_fwhm_mm > 0:
        sigma = [smooth_fwhm_mm * FWHM_TO_SIGMA / s for s in steps]
        out = ndimage.gaussian_filter(out, sigma, mode="constant", truncate=3.0)
    result = torch.from_numpy(out).to(device=maps[0].device, dtype=maps[0].dtype)
    return convert_to_dst_type(result, dst=gm, dtype=result.dtype)[0]


class RandFDGPhantom(RandomizableTransform):
    """A random FDG activity phantom from channel-first tissue maps: input ``(3, H, W)`` or ``(3, H, W, D)`` (grey
    matter, white matter, CSF probabilities), output ``(1, H, W)`` or ``(1, H, W, D)`` activity in SUV (see
    :func:`fdg_phantom`), same kind, float32 (float64 for float64 input).

    Per sample (:meth:`randomize`) it draws the grey : white ratio uniformly in ``gm_ratio_range`` (default [3, 5]),
    CSF : white uniformly in ``csf_ratio_range`` ([0, 0.1]), and 0 to ``max_lesions`` (3) lesions, each with a centre
    at a uniformly drawn voxel of the brain (``gm + wm >= 0.5``), a radius uniform in ``lesion_radius_range``
    ([2, 6] voxels) and a contrast log-uniform in ``lesion_contrast_range`` ([0.3, 3] times the local activity,
    about as many cold as hot lesions). White matter stays :data:`WHITE_MATTER_SUV`. Reproducible with
    :meth:`set_random_state`; the parameters drawn last are in :attr:`ratios` and :attr:`lesions`.

    Args:
        prob: probability of drawing random parameters; otherwise the call gives the default phantom (ratios
            ``(4, 1, 0.05)``, no lesions), so the output is always an activity map.
        gm_ratio_range, csf_ratio_range: ranges of the grey : white and CSF : white activity ratios.
        max_lesions: the number of lesions is uniform in ``0 .. max_lesions``.
        lesion_radius_range: range of the lesion radii in voxels.
        lesion_contrast_range: range of the lesion contrasts (drawn log-uniformly), both ends > 0.
        white_matter_suv, max_value: as for :func:`fdg_phantom`.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 1.0,
        gm_ratio_range: Sequence[float] = (3.0, 5.0),
        csf_ratio_range: Sequence[float] = (0.0, 0.1),
        max_lesions: int = 3,
        lesion_radius_range: Sequence[float] = (2.0, 6.0),
        lesion_contrast_range: Sequence[float] = (0.3, 3.0),
        white_matter_suv: float = WHITE_MATTER_SUV,
        max_value: float = MAX_SUV,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.gm_ratio_range = value_range(gm_ratio_range, "gm_ratio_range", 0.0)
        self.csf_ratio_range = value_range(csf_ratio_range, "csf_ratio_range", 0.0)
        self.lesion_radius_range = value_range(lesion_radius_range, "lesion_radius_range", 0.0, strict=True)
        self.lesion_contrast_range = value_range(lesion_contrast_range, "lesion_contrast_range", 0.0, strict=True)
        if int(max_lesions) != max_lesions or max_lesions < 0:
            raise ValueError(f"max_lesions must be an integer >= 0, got {max_lesions!r}.")
        if not white_matter_suv > 0 or not max_value > 0:
            raise ValueError(f"white_matter_suv and max_value must be > 0, got {white_matter_suv!r}, {max_value!r}.")
        self.max_lesions = int(max_lesions)
        self.white_matter_suv = float(white_matter_suv)
        self.max_value = float(max_value)
        self.ratios: tuple[float, float, float] = (4.0, 1.0, 0.05)
        self.lesions: list[tuple[tuple[float, ...], float, float]] = []

    def randomize(self, data: Optional[torch.Tensor] = None) -> None:
        """Draw the ratios and lesions; ``data`` is the ``(3, ...)`` tissue stack (its brain holds the lesions)."""
        super().randomize(None)
        if not self._do_transform:
            return
        if data is not None:
            data = convert_to_tensor(data, track_meta=False)
        r_gm = float(self.R.uniform(*self.gm_ratio_range))
        r_csf = float(self.R.uniform(*self.csf_ratio_range))
        self.ratios = (r_gm, 1.0, r_csf)
        self.lesions = []
        n = int(self.R.randint(self.max_lesions + 1))
        if n == 0 or data is None:
            return
        brain = torch.nonzero((data[0] + data[1]) >= 0.5).cpu().numpy()
        if brain.shape[0] == 0:
            return
        log_lo, log_hi = (math.log(v) for v in self.lesion_contrast_range)
        for _ in range(n):
            centre = tuple(float(c) for c in brain[int(self.R.randint(brain.shape[0]))])
            radius = float(self.R.uniform(*self.lesion_radius_range))
            contrast = float(math.exp(self.R.uniform(log_lo, log_hi)))
            self.lesions.append((centre, radius, contrast))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """The activity ``(1, ...)`` of the tissue stack ``img`` ``(3, ...)`` (see the class docstring)."""
        data = convert_to_tensor(img, track_meta=False)
        if data.ndim < 3 or data.shape[0] != 3:
            raise ValueError(
                f"RandFDGPhantom expects channel-first tissue maps (3, H, W) or (3, H, W, D) (grey matter, white "
                f"matter, CSF), got shape {tuple(data.shape)}."
            )
        if randomize:
            self.randomize(data)
        if not self._do_transform:
            ratios, lesions = (4.0, 1.0, 0.05), None
        else:
            ratios, lesions = self.ratios, self.lesions
        out = fdg_phantom(data[0], data[1], data[2], ratios, lesions, self.white_matter_suv, self.max_value)[None]
        return convert_to_dst_type(out, dst=img, dtype=out.dtype)[0]


# ----------------------------------------------------------------------------------------------------------------
# acquisition and reconstruction


def pet_geometry(
    image_shape: Sequence[int],
    spacing: Union[float, Sequence[float]] = 2.0,
    n_views: Optional[int] = None,
    n_det: Optional[int] = None,
    det_spacing: Optional[float] = None,
) -> ParallelBeamGeometry:
    """The default PET geometry of a slice, coarser than the CT default of :meth:`ParallelBeamGeometry.create`.

    Args:
        image_shape: ``(H, W)`` of the slice in pixels.
        spacing: pixel size in mm, a number or ``(dy, dx)``.
        n_views: number of views over 180 degrees; default the slice's larger side in pixels rounded up to a multiple
            of 8 (128 for 128 x 128: about 2/3 of the full angular sampling, as PET scanners sample).
        n_det: number of detector bins; default enough to cover the larger side of the slice plus one bin either
            side: the field of view is the disc of that diameter, inscribed in a square slice (rays outside it are
            not measured, so keep the head inside it; the corners are still seen by the views that cross them).
        det_spacing: bin width in mm; default the smaller pixel size (one bin per pixel).
    """
    if len(image_shape) != 2 or min(image_shape) < 2:
        raise ValueError(f"image_shape must be (H, W) with H, W >= 2, got {image_shape!r}.")
    h, w = int(image_shape[0]), int(image_shape[1])
    dy, dx = _pair(spacing, "spacing")
    tau = min(dy, dx) if det_spacing is None else float(det_spacing)
    if not tau > 0:
        raise ValueError(f"det_spacing must be positive, got {det_spacing!r}.")
    if n_det is None:
        n_det = int(math.ceil(max(h * dy, w * dx) / tau - 1e-9)) + 2
    if n_views is None:
        n_views = 8 * int(math.ceil(max(h, w) / 8))
    return ParallelBeamGeometry.create((h, w), (dy, dx), n_views, n_det, tau)


@dataclass(frozen=True)
class _ViewSubset(ParallelBeamGeometry):
    """The views ``first, first + stride, ...`` of a geometry with ``total_views`` views, as a geometry of their own
    (``n_views`` of them): :func:`radon` and :func:`backproject` only read the angles through :meth:`angles`."""

    first: int = 0
    stride: int = 1
    total_views: int = 1

    def angles(self, device: Optional[torch.device] = None) -> torch.Tensor:
        index = torch.arange(self.n_views, dtype=torch.float64, device=device) * self.stride + self.first
        return index * (math.pi / self.total_views)


def _subsets(geometry: ParallelBeamGeometry, subsets: int) -> list[_ViewSubset]:
    v = geometry.n_views
    return [
        _ViewSubset(
            geometry.image_shape, geometry.spacing, len(range(s, v, subsets)), geometry.n_det, geometry.det_spacing,
            first=s, stride=subsets, total_views=v,
        )
        for s in range(subsets)
    ]  # fmt: skip


@lru_cache(maxsize=16)
def _ones_projection(geometry: ParallelBeamGeometry, dtype: torch.dtype, device: str) -> torch.Tensor:
    """:func:`radon` of an image of ones, ``(n_views, n_det)`` (cached: it sets the initial OSEM image)."""
    return radon(torch.ones(geometry.image_shape, dtype=dtype, device=device), geometry)


def _gaussian_blur(images: torch.Tensor, fwhm_mm: float, spacing: tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian blur of ``(..., H, W)`` images (replicated edges); FWHM in mm, spacing ``(dy, dx)``."""
    if fwhm_mm <= 0:
        return images
    return gaussian_blur(images, [fwhm_mm * FWHM_TO_SIGMA / step for step in spacing])


def _check_settings(
    counts: float, background_fraction: float, iterations: int, subsets: int, post_fwhm: float, res_fwhm: float
) -> None:
    if not counts > 0 or not math.isfinite(counts):
        raise ValueError(f"counts (expected true counts per slice) must be a finite number > 0, got {counts!r}.")
    if not background_fraction >= 0 or not math.isfinite(background_fraction):
        raise ValueError(f"background_fraction must be a finite number >= 0, got {background_fraction!r}.")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}.")
    if int(subsets) != subsets or subsets < 1:
        raise ValueError(f"subsets must be an integer >= 1 (1: MLEM), got {subsets!r}.")
    if not post_fwhm >= 0 or not res_fwhm >= 0:
        raise ValueError(
            f"post_filter_fwhm_mm and resolution_fwhm_mm must be >= 0 (0: none), got {post_fwhm!r}, {res_fwhm!r}."
        )


def simulate_pet(
    activity: torch.Tensor,
    attenuation: Optional[torch.Tensor],
    counts: float = FULL_COUNTS_PER_SLICE,
    background_fraction: float = 0.3,
    iterations: int = 3,
    subsets: int = 16,
    post_filter_fwhm_mm: float = 3.0,
    resolution_fwhm_mm: float = 3.5,
    spacing: Union[float, Sequence[float]] = 2.0,
    geometry: Optional[ParallelBeamGeometry] = None,
    generator: Optional[torch.Generator] = None,
    shared_scale: bool = True,
) -> torch.Tensor:
    """Simulate a 2-D PET acquisition of ``activity`` and reconstruct it with OSEM (see the module docstring).

    Args:
        activity: ``(..., H, W)`` non-negative activity (any units, e.g. SUV); the leading dimensions are slices
            reconstructed independently (in one batch).
        attenuation: linear attenuation at 511 keV in 1/mm, broadcastable to ``activity`` (e.g. ``(H, W)`` for all
            slices), or None for no attenuation.
        counts: expected true counts per slice (see ``shared_scale``).
        background_fraction: flat randoms + scatter per sinogram bin, as a fraction of the slice's mean true counts
            per bin (0.3: a background of 30 % of the trues).
        iterations: OSEM iterations (full passes over the views).
        subsets: ordered subsets (interleaved views; 1 is MLEM); at most the number of views.
        post_filter_fwhm_mm: FWHM of the Gaussian post-filter in mm (0: none).
        resolution_fwhm_mm: FWHM in mm of the system's resolution, applied to the activity before projection and
            not modelled in the reconstruction (0: none).
        spacing: pixel size in mm, a number or ``(dy, dx)`` (used when ``geometry`` is None).
        geometry: the scan geometry; default :func:`pet_geometry` of the slice size and ``spacing``.
        generator: random generator on ``activity.device`` (None: torch's global one).
        shared_scale: True: the slices of the call share one count scale and ``counts`` is their mean (a slice with
            more activity gets more counts, as in a scanner; only an all-zero call is an error); False: every slice
            gets ``counts`` (as when the slices are simulated one at a time), and a slice without activity gives
            zeros.

    Returns:
        ``(..., H, W)`` reconstructed activity in the units of ``activity`` (float64 for float64 input, else float32),
        non-negative; noise variance about proportional to ``1 / counts``.
    """
    _check_settings(counts, background_fraction, iterations, subsets, post_filter_fwhm_mm, resolution_fwhm_mm)
    if activity.ndim < 2:
        raise ValueError(f"activity must be (..., H, W), got shape {tuple(activity.shape)}.")
    dtype = torch.float64 if activity.dtype == torch.float64 else torch.float32
    geom = geometry if geometry is not None else pet_geometry(tuple(activity.shape[-2:]), spacing)
    if tuple(activity.shape[-2:]) != geom.image_shape:
        raise ValueError(f"activity slices {tuple(activity.shape[-2:])} do not match the geometry {geom.image_shape}.")
    if subsets > geom.n_views:
        raise ValueError(f"subsets ({subsets}) cannot exceed the number of views ({geom.n_views}).")
    lead = activity.shape[:-2]
    act = activity.to(dtype).reshape(-1, *geom.image_shape)
    if act.numel() == 0 or not bool(torch.isfinite(act).all()) or bool((act < 0).any()):
        raise ValueError("activity must be non-empty, finite and non-negative.")
    n = act.shape[0]
    if attenuation is not None:
        mu = attenuation.to(device=act.device, dtype=dtype)
        try:
            mu = torch.broadcast_to(mu, activity.shape).reshape(n, *geom.image_shape)
        except RuntimeError:
            raise ValueError(
                f"attenuation of shape {tuple(attenuation.shape)} does not broadcast to the activity's "
                f"{tuple(activity.shape)}."
            ) from None
        if not bool(torch.isfinite(mu).all()) or bool((mu < 0).any()):
            raise ValueError("attenuation must be finite and non-negative (1/mm).")
    else:
        mu = None

    # forward model: attenuated line integrals of the (blurred) activity, then the count scale
    blurred = _gaussian_blur(act, resolution_fwhm_mm, geom.spacing)
    if mu is not None:
        projections = radon(torch.cat([blurred, mu]), geom)
        att = torch.exp(-projections[n:])
        trues = projections[:n] * att
    else:
        trues, att = radon(blurred, geom), None
    per_slice = trues.sum(dim=(-2, -1))
    if not float(per_slice.max()) > 0:
        raise ValueError("activity projects to no counts (is it all zero?).")
    tiny = torch.finfo(dtype).tiny
    if shared_scale:  # counts per unit of attenuated activity line integral, per slice: (n, 1, 1)
        scale = torch.full_like(per_slice, float(counts) / float(per_slice.mean()))[:, None, None]
    else:
        scale = torch.where(per_slice > 0, float(counts) / per_slice.clamp_min(tiny), 0.0)[:, None, None]
    expected = trues * scale
    measured = torch.empty_like(expected)
    background = torch.empty(n, 1, 1, dtype=dtype, device=act.device)
    for i in range(n):
        noisy = poisson_counts(expected[i], 1.0, background_fraction, generator)  # Poisson(x + b) - b
        b = background_fraction * float(expected[i].mean())
        measured[i] = (noisy + b).clamp_min(0.0)
        background[i] = b

    # OSEM with E[y] = scale * att * R a + b
    weights = scale * att if att is not None else scale.expand_as(expected)
    parts = _subsets(geom, int(subsets))
    k = int(subsets)
    sens = [backproject(weights[:, p.first :: k], p).clamp_min(tiny) for p in parts]
    # initial image: uniform, with the measured true counts (a slice without counts stays 0)
    true_estimate = (measured.sum(dim=(-2, -1)) - background.flatten() * geom.n_views * geom.n_det).clamp_min(0)
    norm = (weights * _ones_projection(geom, dtype, str(act.device))).sum(dim=(-2, -1))
    level = torch.where(norm > 0, true_estimate / norm.clamp_min(tiny), 0.0)
    level = torch.where(norm > 0, level.clamp_min(1e-6 * float(level.max()) + tiny), 0.0)
    image = level[:, None, None] * torch.ones_like(act)
    for _ in range(int(iterations)):
        for p, s in zip(parts, sens):
            w, y, b = weights[:, p.first :: k], measured[:, p.first :: k], background
            model = w * radon(image, p) + b
            ratio = torch.where(model > 0, y / model.clamp_min(tiny), 0.0)
            image = image * backproject(w * ratio, p) / s
    image = _gaussian_blur(image, post_filter_fwhm_mm, geom.spacing)
    return image.reshape(*lead, *geom.image_shape)


def _image_spacing(
    img: NdarrayOrTensor, spacing: Union[float, Sequence[float], None], axes: tuple[int, int]
) -> tuple[float, float]:
    """In-plane ``(dy, dx)`` in mm: the argument, else a MetaTensor's ``pixdim`` of the two spatial axes, else 1 mm."""
    if spacing is not None:
        return _pair(spacing, "spacing")
    if isinstance(img, MetaTensor):
        pixdim = [float(p) for p in img.pixdim]
        if len(pixdim) > max(axes) and min(pixdim[axes[0]], pixdim[axes[1]]) > 0:
            return pixdim[axes[0]], pixdim[axes[1]]
    return 1.0, 1.0


class RandPETAcquisition(RandomizableTransform):
    """Simulate a PET scan of an activity image and reconstruct it (:func:`simulate_pet`), slice by slice.

    Input: a channel-first activity ``(C, H, W)`` or volume ``(C, H, W, D)`` (with the default ``spatial_axes=(0,
    1)``, the ``D`` slices are ``H`` rows by ``W`` columns), numpy, tensor or MetaTensor on any device; optionally an
    attenuation map in 1/mm of the same spatial shape with 1 or ``C`` channels. Output: the reconstruction, same
    shape, kind and units (float32; float64 for float64 input). Channels and slices share one count scale (unless
    ``shared_scale=False``) but get independent noise.

    The counts are ``count_fraction * full_counts`` expected true counts per slice: with the defaults, the paper's
    low-count level (1/12 of :data:`FULL_COUNTS_PER_SLICE`); ``count_fraction=1`` gives the full-count image. A
    low/full pair of one phantom is two transforms with different ``count_fraction`` (their noise independent).

    Seeding as :class:`~monai_rwkv.transforms.ct.RandLowDoseCT`: :meth:`randomize` draws the count fraction (for a
    range) and a seed from ``self.R``; each call then takes the next noise stream of that seed, so
    ``randomize=False`` keeps the count level and draws new noise. A seed reproduces the noise on one device type.

    Args:
        prob: probability of applying the transform.
        count_fraction: fraction of ``full_counts``, a number or a ``(low, high)`` range drawn log-uniformly per call.
        full_counts: expected true counts per slice at ``count_fraction=1``.
        background_fraction, iterations, subsets, post_filter_fwhm_mm, resolution_fwhm_mm: as for
            :func:`simulate_pet`.
        spacing: pixel size in mm, a number or ``(dy, dx)``; None reads a MetaTensor's ``pixdim`` (of the two spatial
            axes) or uses 1 mm.
        n_views, n_det, det_spacing: the scanner geometry, as for :func:`pet_geometry` (None: its defaults).
        spatial_axes: the row and column axes of each slice among the spatial axes (see
            :class:`~monai_rwkv.transforms.tomography.Project`).
        shared_scale: whether the slices and channels of an input share one count scale (True) or each gets
            ``count_fraction * full_counts`` (False: as 2-D slices simulated one at a time), see :func:`simulate_pet`.

    Example::

        low = RandPETAcquisition(count_fraction=1 / 12, spacing=2.0)
        low.set_random_state(0)
        recon = low(activity, attenuation=mu)  # (1, 128, 128) -> (1, 128, 128)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 1.0,
        count_fraction: Union[float, Sequence[float]] = LOW_COUNT_FRACTION,
        full_counts: float = FULL_COUNTS_PER_SLICE,
        background_fraction: float = 0.3,
        iterations: int = 3,
        subsets: int = 16,
        post_filter_fwhm_mm: float = 3.0,
        resolution_fwhm_mm: float = 3.5,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Optional[int] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        spatial_axes: Sequence[int] = (0, 1),
        shared_scale: bool = True,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if isinstance(count_fraction, (int, float)):
            self.count_range = (float(count_fraction), float(count_fraction))
        else:
            self.count_range = _pair(count_fraction, "count_fraction")
        if not 0 < self.count_range[0] <= self.count_range[1] or not math.isfinite(self.count_range[1]):
            raise ValueError(f"count_fraction must be positive (with low <= high for a range), got {count_fraction!r}.")
        _check_settings(full_counts, background_fraction, iterations, subsets, post_filter_fwhm_mm, resolution_fwhm_mm)
        if spacing is not None:
            _pair(spacing, "spacing")
        pet_geometry((2, 2), 1.0, n_views, n_det, det_spacing)  # validates the geometry arguments
        if n_views is not None and subsets > n_views:
            raise ValueError(f"subsets ({subsets}) cannot exceed n_views ({n_views}).")
        self.full_counts = float(full_counts)
        self.background_fraction = float(background_fraction)
        self.iterations, self.subsets = int(iterations), int(subsets)
        self.post_filter_fwhm_mm = float(post_filter_fwhm_mm)
        self.resolution_fwhm_mm = float(resolution_fwhm_mm)
        self.spacing = spacing
        self.n_views, self.n_det, self.det_spacing = n_views, n_det, det_spacing
        self.spatial_axes = _spatial_axes(spatial_axes)
        self.shared_scale = bool(shared_scale)
        self.count_fraction: float = self.count_range[0]
        self.seed: int = 0
        self._stream = 0  # noise streams of ``seed`` used since the last randomize()

    def randomize(self, data: Optional[object] = None) -> None:
        """Decide whether to apply, and draw the count fraction and the seed of the noise generator from ``self.R``."""
        super().randomize(None)
        self._stream = 0
        if not self._do_transform:
            return
        low, high = self.count_range
        self.count_fraction = float(math.exp(self.R.uniform(math.log(low), math.log(high)))) if high > low else low
        self.seed = int(self.R.randint(MAX_SEED))

    def _slices(self, img: NdarrayOrTensor, what: str) -> tuple[torch.Tensor, tuple[int, int]]:
        data = convert_to_tensor(img, track_meta=False)
        if data.ndim not in (3, 4):
            raise ValueError(
                f"{type(self).__name__} expects a channel-first {what} (C, H, W) or (C, H, W, D), got shape "
                f"{tuple(data.shape)}."
            )
        axes = (self.spatial_axes[0] + 1, self.spatial_axes[1] + 1)
        if max(axes) >= data.ndim:
            raise ValueError(
                f"{type(self).__name__}: spatial_axes {self.spatial_axes} name spatial axis 2, which a 2-D {what} of "
                f"shape {tuple(data.shape)} does not have; use spatial_axes (0, 1) or (1, 0)."
            )
        return data.movedim(axes, (-2, -1)), axes

    def __call__(
        self, img: NdarrayOrTensor, attenuation: Optional[NdarrayOrTensor] = None, randomize: bool = True
    ) -> NdarrayOrTensor:
        """The reconstruction of a simulated scan of ``img`` (see the class docstring); ``attenuation`` in 1/mm."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        slices, axes = self._slices(img, "activity")
        mu = None
        if attenuation is not None:
            mu, _ = self._slices(attenuation, "attenuation map")
            if mu.shape[1:] != slices.shape[1:] or mu.shape[0] not in (1, slices.shape[0]):
                raise ValueError(
                    f"{type(self).__name__}: the attenuation map {tuple(mu.movedim((-2, -1), axes).shape)} must have "
                    f"the activity's spatial shape {tuple(img.shape[1:])} and 1 or {img.shape[0]} channels."
                )
            mu = mu.to(slices.device)
        out_dtype = slices.dtype if slices.is_floating_point() else torch.float32
        work_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
        spacing = _image_spacing(img, self.spacing, (axes[0] - 1, axes[1] - 1))
        geometry = pet_geometry(tuple(slices.shape[-2:]), spacing, self.n_views, self.n_det, self.det_spacing)
        generator = torch.Generator(device=slices.device)
        generator.manual_seed(_stream_seed(self.seed, self._stream))
        self._stream += 1
        out = simulate_pet(
            slices.to(work_dtype),
            mu,
            counts=self.count_fraction * self.full_counts,
            background_fraction=self.background_fraction,
            iterations=self.iterations,
            subsets=self.subsets,
            post_filter_fwhm_mm=self.post_filter_fwhm_mm,
            resolution_fwhm_mm=self.resolution_fwhm_mm,
            geometry=geometry,
            generator=generator,
            shared_scale=self.shared_scale,
        )
        result, *_ = convert_to_dst_type(out.movedim((-2, -1), axes).contiguous(), dst=img, dtype=out_dtype)
        return result


class RandPETAcquisitiond(RandArrayWrapperd):
    """Dictionary version of :class:`RandPETAcquisition`.

    One :class:`RandPETAcquisition`, randomised once per call, then applied to every key with ``randomize=False``:
    all keys get the same count level and each its own noise (the next stream of the call's seed, in key order); the
    first key present gets what :class:`RandPETAcquisition` gives for the same seed. The attenuation map is read from
    ``attenuation_key`` (and left unchanged). To keep the clean phantom, copy it first (``CopyItemsd``).

    Args:
        keys: keys of the activity images to replace by their reconstructions.
        attenuation_key: key of the attenuation map in 1/mm, or None for no attenuation.
        prob: probability of applying the transform (to all keys at once).
        count_fraction, full_counts, background_fraction, iterations, subsets, post_filter_fwhm_mm,
        resolution_fwhm_mm, spacing, n_views, n_det, det_spacing, spatial_axes: as for :class:`RandPETAcquisition`.
        allow_missing_keys: don't raise if a key (or the attenuation key) is missing.
    """

    backend = RandPETAcquisition.backend

    def __init__(
        self,
        keys: KeysCollection,
        attenuation_key: Optional[Hashable] = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **acquisition_args,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.attenuation_key = attenuation_key
        self.transform = RandPETAcquisition(prob=1.0, **acquisition_args)

    def call_args(self, data: Mapping[Hashable, NdarrayOrTensor]) -> tuple:
        """The attenuation map of this call."""
        return (_attenuation(data, self.attenuation_key, self.allow_missing_keys, type(self).__name__),)


def _attenuation(
    d: Mapping[Hashable, NdarrayOrTensor], key: Optional[Hashable], allow_missing: bool, name: str
) -> Optional[NdarrayOrTensor]:
    if key is None:
        return None
    if key not in d:
        if allow_missing:
            return None
        raise KeyError(f"{name}: attenuation_key {key!r} is not in the data (keys: {list(d)}).")
    return d[key]


class PETAcquisition(Transform):
    """Reproducible PET acquisition, for fixed validation and test sets: :class:`RandPETAcquisition` reseeded with
    ``seed`` at every call, so an image always gets the same reconstruction (``CacheDataset`` may cache it).

    Args:
        count_fraction: fraction of ``full_counts`` (default the paper's 1/12; 1 for the full-count image).
        seed: seed of the noise; the same seed gives the same noise on a given device type. Use different seeds for
            the low- and full-count images of a pair.
        acquisition_args: the other :class:`RandPETAcquisition` arguments (``full_counts``, ``spacing``, ...).

    Call it as ``transform(img, attenuation)``, shapes as for :class:`RandPETAcquisition`.
    """

    backend = RandPETAcquisition.backend

    def __init__(self, count_fraction: float = LOW_COUNT_FRACTION, seed: int = 0, **acquisition_args) -> None:
        if not isinstance(count_fraction, (int, float)):
            raise ValueError(f"PETAcquisition takes one count_fraction (a number), got {count_fraction!r}.")
        self.count_fraction = float(count_fraction)
        self.seed = int(seed)
        self.acquisition = RandPETAcquisition(prob=1.0, count_fraction=self.count_fraction, **acquisition_args)

    def __call__(self, img: NdarrayOrTensor, attenuation: Optional[NdarrayOrTensor] = None) -> NdarrayOrTensor:
        """The reconstruction of ``img`` (see :class:`RandPETAcquisition`)."""
        self.acquisition.set_random_state(self.seed)
        return self.acquisition(img, attenuation)


class PETAcquisitiond(ArrayWrapperd):
    """Dictionary version of :class:`PETAcquisition`: every key is simulated with the same seed.

    Args:
        keys: keys of the activity images to replace by their reconstructions.
        attenuation_key: key of the attenuation map in 1/mm, or None.
        count_fraction, seed, acquisition_args: as for :class:`PETAcquisition`.
        allow_missing_keys: don't raise if a key (or the attenuation key) is missing.
    """

    backend = PETAcquisition.backend

    def __init__(
        self,
        keys: KeysCollection,
        attenuation_key: Optional[Hashable] = None,
        count_fraction: float = LOW_COUNT_FRACTION,
        seed: int = 0,
        allow_missing_keys: bool = False,
        **acquisition_args,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.attenuation_key = attenuation_key
        self.transform = PETAcquisition(count_fraction, seed, **acquisition_args)

    def call_args(self, data: Mapping[Hashable, NdarrayOrTensor]) -> tuple:
        """The attenuation map of this call."""
        return (_attenuation(data, self.attenuation_key, self.allow_missing_keys, type(self).__name__),)
