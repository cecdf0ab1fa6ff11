"""
Synthetic CT-like slices in Hounsfield units, for training denoisers on more anatomy than the data at hand.

:func:`synthetic_ct` paints an axial slice of one of three body regions from random shapes, each filled with the
HU of a real tissue and a smooth texture:

- ``"head"``: scalp, a skull of cortical and diploic bone, brain with grey/white contrast, ventricles (CSF) and air
  sinuses;
- ``"thorax"``: fat and muscle walls, two lungs with vessels and airways, mediastinum, spine and ribs;
- ``"abdomen"``: fat and muscle walls, solid organs, visceral fat, bowel gas, the aorta and a vertebra;

optionally with iodinated contrast (brighter vessels and organs) and a patient couch under the body. Shapes are
ellipses with boundaries perturbed by a few random harmonics; edges get a partial-volume blur. Tissue values
(midpoints of commonly quoted ranges): air -1000, lung -900 to -800, fat -120 to -80, CSF 0 to 15, brain 25 to 45,
soft tissue and muscle 20 to 70, contrast-enhanced blood 150 to 350, cancellous bone 150 to 350, cortical bone 600
to 1800 HU.

Slices are ``(H, W)`` of ``spacing`` mm pixels: rows run anterior to posterior, columns across the body. They are not
real anatomy; they add the edges, contrasts and textures of other body regions to a training set drawn from one
head (see the CT bundle's README for what they add).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Optional, Union

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, Randomizable, RandomizableTransform
from monai.utils.misc import MAX_SEED

from ._util import centred_grid_mm, gaussian_blur, slice_size, value_range, with_pixel_size

__all__ = ["SYNTHETIC_CT_REGIONS", "synthetic_ct", "RandSyntheticCT", "RandSyntheticCTd", "RandGeneratedSliced"]

SYNTHETIC_CT_REGIONS = ("head", "thorax", "abdomen")
"""Body regions :func:`synthetic_ct` can paint."""


class _Canvas:
    """An HU image on a millimetre grid centred on the slice, and the shapes painted onto it."""

    def __init__(self, shape: tuple[int, int], spacing: float, rng: np.random.RandomState) -> None:
        self.rng = rng
        h, w = shape
        self.yy, self.xx = centred_grid_mm(shape, spacing)
        self.spacing = spacing
        self.half_height, self.half_width = h * spacing / 2, w * spacing / 2
        self.hu = torch.full(shape, -1000.0, dtype=torch.float64)

    def shape_mask(
        self,
        centre: tuple[float, float],
        radii: tuple[float, float],
        angle: float = 0.0,
        roughness: float = 0.05,
        margin: float = 0.0,
    ) -> torch.Tensor:
        """Inside of an ellipse (centre ``(y, x)`` and radii ``(ry, rx)`` in mm, rotated by ``angle``) whose radius is
        modulated by harmonics 2-5 of relative amplitude up to ``roughness``, shrunk by ``margin`` mm."""
        cy, cx = centre
        ry, rx = max(radii[0] - margin, 0.5), max(radii[1] - margin, 0.5)
        amplitudes = [roughness * self.rng.uniform(-1, 1) / k for k in range(2, 6)]
        phases = [self.rng.uniform(0, 6.3) for _ in range(2, 6)]
        mask = torch.zeros_like(self.yy, dtype=torch.bool)
        reach = max(ry, rx) * (1 + sum(abs(a) for a in amplitudes)) + self.spacing  # only the box around the shape
        h, w = self.yy.shape
        r0 = max(int((cy - reach) / self.spacing + (h - 1) / 2), 0)
        r1 = min(int((cy + reach) / self.spacing + (h - 1) / 2) + 2, h)
        c0 = max(int((cx - reach) / self.spacing + (w - 1) / 2), 0)
        c1 = min(int((cx + reach) / self.spacing + (w - 1) / 2) + 2, w)
        if r0 >= r1 or c0 >= c1:
            return mask
        yy, xx = self.yy[r0:r1, c0:c1], self.xx[r0:r1, c0:c1]
        cos, sin = math.cos(angle), math.sin(angle)
        u = ((xx - cx) * cos + (yy - cy) * sin) / rx
        v = (-(xx - cx) * sin + (yy - cy) * cos) / ry
        rho, phi = torch.sqrt(u * u + v * v), torch.atan2(v, u)
        boundary = torch.ones_like(phi)
        for k, (amplitude, phase) in enumerate(zip(amplitudes, phases), start=2):
            boundary = boundary + amplitude * torch.cos(k * phi + phase)
        mask[r0:r1, c0:c1] = rho < boundary
        return mask

    def paint(self, mask: torch.Tensor, hu: float, texture: float = 0.0) -> None:
        """Set ``mask`` to ``hu`` plus a smooth random texture of standard deviation ``texture`` HU."""
        value = torch.full_like(self.hu, hu)
        if texture > 0:
            value = value + texture * self.smooth_noise(self.rng.uniform(0.8, 4.0))
        self.hu = torch.where(mask, value, self.hu)

    def smooth_noise(self, correlation_mm: float) -> torch.Tensor:
        """Unit-variance Gaussian noise smoothed with a Gaussian of ``correlation_mm`` mm standard deviation."""
        sigma = max(correlation_mm / self.spacing, 0.5)
        noise = torch.from_numpy(self.rng.standard_normal(self.hu.shape))
        smooth = gaussian_blur(noise, [sigma, sigma])
        return smooth / smooth.std().clamp_min(1e-12)

    def point(self, spread_y: float, spread_x: float) -> tuple[float, float]:
        """A random point within ``spread`` times the half extent around the centre, ``(y, x)`` in mm."""
        return (
            self.rng.uniform(-spread_y, spread_y) * self.half_height,
            self.rng.uniform(-spread_x, spread_x) * self.half_width,
        )


def _fit(canvas: _Canvas, half_width: float, aspect: float) -> tuple[float, float]:
    """Half width and half depth (mm) of a body ``aspect`` times deeper than wide, shrunk to fit the field of view."""
    scale = min(1.0, 0.92 * canvas.half_width / half_width, 0.92 * canvas.half_height / (half_width * aspect))
    return half_width * scale, half_width * aspect * scale


def _body(canvas: _Canvas, width: float, depth: float, fat: float, contrast: bool, scale: float = 1.0) -> tuple:
    """Skin and subcutaneous fat, then a muscle wall (its thickness times ``scale``); returns the body's centre,
    the inner radii and the outline's angle."""
    rng = canvas.rng
    centre = canvas.point(0.04, 0.04)
    radii = (depth, width)
    angle = rng.uniform(-0.08, 0.08)
    body = canvas.shape_mask(centre, radii, angle, roughness=0.04)
    canvas.paint(body, rng.uniform(-120, -80), texture=rng.uniform(2, 8))
    muscle_margin = fat + rng.uniform(4, 15) * scale
    canvas.paint(canvas.shape_mask(centre, radii, angle, 0.04, margin=fat), rng.uniform(35, 70), rng.uniform(2, 8))
    inner = canvas.shape_mask(centre, radii, angle, 0.04, margin=muscle_margin)
    canvas.paint(inner, rng.uniform(-110, -70), texture=rng.uniform(2, 8))  # visceral fat between the organs
    inner_radii = (depth - muscle_margin, width - muscle_margin)
    return centre, inner_radii, angle


def _vertebra(canvas: _Canvas, centre: tuple[float, float], size: float) -> None:
    """A vertebral body (cortical rim, cancellous core) with its posterior arch and spinous process."""
    rng = canvas.rng
    cortical, cancellous = rng.uniform(600, 1400), rng.uniform(150, 350)
    canvas.paint(canvas.shape_mask(centre, (size, size * 1.1), roughness=0.03), cortical, 20)
    rim = rng.uniform(1.5, 3.0)
    canvas.paint(canvas.shape_mask(centre, (size, size * 1.1), roughness=0.03, margin=rim), cancellous, 25)
    arch = (centre[0] + size * 1.6, centre[1])
    canvas.paint(canvas.shape_mask(arch, (size * 0.35, size * 0.9), roughness=0.1), cortical, 20)
    canvas.paint(canvas.shape_mask(arch, (size * 0.2, size * 0.3)), rng.uniform(0, 15))  # the spinal canal's CSF
    spine = (centre[0] + size * 2.6, centre[1])
    canvas.paint(canvas.shape_mask(spine, (size * 0.7, size * 0.18), roughness=0.1), cortical, 20)


def _head(canvas: _Canvas, contrast: bool) -> None:
    rng = canvas.rng
    width, depth = _fit(canvas, rng.uniform(65, 80), rng.uniform(1.1, 1.3))
    centre, angle = canvas.point(0.04, 0.04), rng.uniform(-0.15, 0.15)
    canvas.paint(canvas.shape_mask(centre, (depth, width), angle, 0.03), rng.uniform(20, 60), 5)  # scalp
    scalp, skull = rng.uniform(3, 7), rng.uniform(4, 9)
    canvas.paint(canvas.shape_mask(centre, (depth, width), angle, 0.03, margin=scalp), rng.uniform(900, 1800), 40)
    diploe = canvas.shape_mask(centre, (depth, width), angle, 0.03, margin=scalp + skull * 0.35)
    canvas.paint(diploe, rng.uniform(400, 800), 60)
    brain = canvas.shape_mask(centre, (depth, width), angle, 0.03, margin=scalp + skull)
    grey = rng.uniform(32, 45)
    canvas.paint(brain, grey, texture=rng.uniform(1, 3))
    inner_depth, inner_width = depth - scalp - skull, width - scalp - skull
    white = grey - rng.uniform(5, 10)
    for _ in range(rng.randint(2, 6)):
        spot = (centre[0] + rng.uniform(-0.5, 0.5) * inner_depth, centre[1] + rng.uniform(-0.5, 0.5) * inner_width)
        radii = (rng.uniform(0.15, 0.4) * inner_depth, rng.uniform(0.15, 0.4) * inner_width)
        canvas.paint(canvas.shape_mask(spot, radii, rng.uniform(0, 3.2), 0.3) & brain, white, rng.uniform(1, 3))
    for side in (-1, 1):  # lateral ventricles
        if rng.uniform() < 0.8:
            spot = (centre[0] + rng.uniform(-0.2, 0.1) * inner_depth, centre[1] + side * rng.uniform(0.05, 0.2) * width)
            radii = (rng.uniform(0.12, 0.35) * inner_depth, rng.uniform(0.03, 0.1) * inner_width)
            canvas.paint(canvas.shape_mask(spot, radii, side * rng.uniform(0, 0.4), 0.2) & brain, rng.uniform(0, 15))
    if contrast:
        for _ in range(rng.randint(1, 5)):
            spot = (centre[0] + rng.uniform(-0.6, 0.6) * inner_depth, centre[1] + rng.uniform(-0.6, 0.6) * inner_width)
            canvas.paint(canvas.shape_mask(spot, (rng.uniform(1, 3),) * 2) & brain, rng.uniform(150, 300))
    if rng.uniform() < 0.5:  # frontal sinuses or mastoid air cells near the front
        for _ in range(rng.randint(1, 4)):
            spot = (centre[0] - depth * rng.uniform(0.75, 0.9), centre[1] + rng.uniform(-0.3, 0.3) * width)
            canvas.paint(canvas.shape_mask(spot, (rng.uniform(3, 9), rng.uniform(3, 12)), 0, 0.2), -1000.0)


def _thorax(canvas: _Canvas, contrast: bool) -> None:
    rng = canvas.rng
    half_width = rng.uniform(130, 190)
    width, depth = _fit(canvas, half_width, rng.uniform(0.6, 0.85))
    scale = width / half_width  # a body shrunk to fit the field of view keeps its proportions
    fat = rng.uniform(3, 25) * scale
    centre, (in_depth, in_width), _ = _body(canvas, width, depth, fat, contrast, scale)
    for side in (-1, 1):
        lung_centre = (centre[0] + rng.uniform(-0.1, 0.05) * in_depth, centre[1] + side * in_width * 0.48)
        radii = (in_depth * rng.uniform(0.7, 0.88), in_width * rng.uniform(0.36, 0.46))
        lung = canvas.shape_mask(lung_centre, radii, side * rng.uniform(0, 0.2), 0.08)
        canvas.paint(lung, rng.uniform(-900, -820), texture=rng.uniform(5, 20))
        for _ in range(rng.randint(10, 40)):  # vessels, mostly seen end-on
            spot = (
                lung_centre[0] + rng.uniform(-0.9, 0.9) * radii[0],
                lung_centre[1] + rng.uniform(-0.9, 0.9) * radii[1],
            )
            radius = rng.uniform(0.5, 3.0) * scale
            vessel_hu = rng.uniform(150, 300) if contrast else rng.uniform(-40, 60)
            vessel = canvas.shape_mask(spot, (radius, radius * rng.uniform(1, 2)), rng.uniform(0, 3.2))
            canvas.paint(vessel & lung, vessel_hu)
    heart = (centre[0] - in_depth * rng.uniform(0.0, 0.3), centre[1] + rng.uniform(-0.1, 0.15) * in_width)
    canvas.paint(canvas.shape_mask(heart, (in_depth * 0.45, in_width * 0.28), rng.uniform(-0.5, 0.5), 0.1), 40, 3)
    blood = rng.uniform(150, 350) if contrast else rng.uniform(35, 55)
    canvas.paint(canvas.shape_mask(heart, (in_depth * 0.3, in_width * 0.17), rng.uniform(0, 3.2), 0.15), blood, 2)
    trachea = canvas.shape_mask((heart[0] - in_depth * 0.5, centre[1]), (5.0 * scale, 5.0 * scale))
    canvas.paint(trachea, -1000.0)
    vertebra = (centre[0] + in_depth * 0.55, centre[1])
    _vertebra(canvas, vertebra, rng.uniform(11, 18) * scale)
    aorta = canvas.shape_mask((vertebra[0] - 25 * scale, centre[1] - 12 * scale), (10 * scale, 10 * scale))
    canvas.paint(aorta, blood, 2)  # descending aorta
    for side in (-1, 1):  # rib cross-sections along the chest wall
        for t in np.linspace(-2.4, 2.4, rng.randint(3, 7)) + rng.uniform(-0.2, 0.2):
            spot = (
                centre[0] - math.cos(t) * (depth - fat - 4 * scale),
                centre[1] + side * abs(math.sin(t)) * (width - fat - 4 * scale),
            )
            rib = canvas.shape_mask(spot, (rng.uniform(3, 6) * scale, rng.uniform(5, 10) * scale), t)
            canvas.paint(rib, rng.uniform(400, 1000), 30)


def _abdomen(canvas: _Canvas, contrast: bool) -> None:
    rng = canvas.rng
    half_width = rng.uniform(120, 200)
    width, depth = _fit(canvas, half_width, rng.uniform(0.65, 0.95))
    scale = width / half_width  # a body shrunk to fit the field of view keeps its proportions
    fat = rng.uniform(3, 35) * scale
    centre, (in_depth, in_width), _ = _body(canvas, width, depth, fat, contrast, scale)
    boost = rng.uniform(30, 120) if contrast else 0.0
    for _ in range(rng.randint(2, 6)):  # liver, spleen, kidneys, pancreas
        spot = (centre[0] + rng.uniform(-0.55, 0.4) * in_depth, centre[1] + rng.uniform(-0.6, 0.6) * in_width)
        radii = (rng.uniform(0.12, 0.45) * in_depth, rng.uniform(0.1, 0.4) * in_width)
        organ = canvas.shape_mask(spot, radii, rng.uniform(0, 3.2), 0.2)
        canvas.paint(organ, rng.uniform(25, 70) + boost * rng.uniform(0.3, 1.0), texture=rng.uniform(2, 10))
        if rng.uniform() < 0.3:  # a cyst or lesion
            lesion = canvas.shape_mask(
                (spot[0] + rng.uniform(-0.4, 0.4) * radii[0], spot[1] + rng.uniform(-0.4, 0.4) * radii[1]),
                (rng.uniform(3, 15),) * 2,
                0,
                0.2,
            )
            canvas.paint(lesion & organ, rng.uniform(0, 40) + (boost * 0.3 if contrast else 0.0), 2)
    for _ in range(rng.randint(4, 14)):  # bowel loops packed between the organs (soft tissue, fluid-filled)
        spot = (centre[0] + rng.uniform(-0.65, 0.35) * in_depth, centre[1] + rng.uniform(-0.65, 0.65) * in_width)
        radii = (rng.uniform(0.08, 0.22) * in_depth, rng.uniform(0.06, 0.2) * in_width)
        loop = canvas.shape_mask(spot, radii, rng.uniform(0, 3.2), 0.3)
        canvas.paint(loop & (canvas.hu < 0), rng.uniform(20, 50) + boost * rng.uniform(0.0, 0.4), rng.uniform(2, 8))
    for _ in range(rng.randint(0, 8)):  # bowel gas
        spot = (centre[0] + rng.uniform(-0.7, 0.3) * in_depth, centre[1] + rng.uniform(-0.7, 0.7) * in_width)
        canvas.paint(
            canvas.shape_mask(spot, (rng.uniform(2, 14) * scale, rng.uniform(2, 20) * scale), rng.uniform(0, 3.2), 0.3),
            -1000.0,
        )
    vertebra = (centre[0] + in_depth * 0.6, centre[1])
    size = rng.uniform(13, 22) * scale
    _vertebra(canvas, vertebra, size)
    aorta = (vertebra[0] - size * 1.6, centre[1] - size * 0.3)
    radius = rng.uniform(7, 13) * scale
    canvas.paint(canvas.shape_mask(aorta, (radius, radius)), rng.uniform(150, 350) if contrast else 45.0, 2)
    for side in (-1, 1):  # psoas muscles
        canvas.paint(canvas.shape_mask((vertebra[0], centre[1] + side * size * 1.8), (size, size * 0.7)), 55.0, 4)


def _couch(canvas: _Canvas) -> None:
    """A curved patient table under the body (rows are anterior to posterior: the table is at the bottom)."""
    rng = canvas.rng
    top = canvas.half_height * rng.uniform(0.8, 0.95)
    bend = rng.uniform(0.0, 0.002)
    thickness = rng.uniform(3, 10)
    surface = top - bend * canvas.xx**2
    slab = (canvas.yy > surface) & (canvas.yy < surface + thickness) & (canvas.xx.abs() < canvas.half_width * 0.85)
    canvas.hu = torch.where(slab & (canvas.hu < -500), torch.full_like(canvas.hu, rng.uniform(-300, 200)), canvas.hu)


_PAINTERS = {"head": _head, "thorax": _thorax, "abdomen": _abdomen}


def synthetic_ct(
    shape: Sequence[int],
    spacing: float,
    region: str = "abdomen",
    rng: Optional[np.random.RandomState] = None,
    contrast: bool = False,
    couch: bool = False,
    blur: float = 0.5,
) -> torch.Tensor:
    """Paint one synthetic axial CT slice (see the module docstring).

    Args:
        shape: ``(H, W)`` in pixels.
        spacing: pixel size in mm (square pixels). The anatomy is sized in mm (adult head, thorax and abdomen
            widths), so the field of view ``shape * spacing`` decides how much of the slice the body fills; a body
            larger than the field of view is shrunk to 92 % of it (its random offset and rough outline may still
            touch the edge, as a large patient does).
        region: one of :data:`SYNTHETIC_CT_REGIONS`.
        rng: the random state to draw from (None: a fresh unseeded one).
        contrast: iodinated contrast in the vessels and organs.
        couch: add a patient table under the body.
        blur: partial-volume blur of the edges, Gaussian standard deviation in pixels (0: none).

    Returns:
        ``(H, W)`` float32 tensor in HU, within [-1024, 3071].
    """
    if region not in _PAINTERS:
        raise ValueError(f"region must be one of {SYNTHETIC_CT_REGIONS}, got {region!r}.")
    shape = slice_size(tuple(shape), "shape")
    if not spacing > 0:
        raise ValueError(f"spacing must be a positive number of mm, got {spacing!r}.")
    canvas = _Canvas(shape, float(spacing), rng if rng is not None else np.random.RandomState())
    _PAINTERS[region](canvas, contrast)
    if couch:
        _couch(canvas)
    hu = gaussian_blur(canvas.hu, [blur, blur])
    return hu.clamp(-1024.0, 3071.0).float()


class RandSyntheticCT(RandomizableTransform):
    """Draw a synthetic CT slice (:func:`synthetic_ct`): region, size, pixel size, contrast and couch at random.

    Called with no argument (or with an image it ignores), it returns a ``(1, H, W)`` float32 MetaTensor in HU whose
    affine holds the pixel size (rows and columns, no orientation), so that :class:`RandLowDoseCT` simulates it at
    its physical size.

    Args:
        spatial_size: ``(H, W)`` in pixels.
        pixel_size: pixel size in mm or a ``(low, high)`` range (field of view ``spatial_size * pixel_size``).
        regions: body regions to draw from (:data:`SYNTHETIC_CT_REGIONS`).
        contrast_prob: probability of iodinated contrast.
        couch_prob: probability of a patient couch.
        blur: range of the partial-volume blur in pixels.
    """

    def __init__(
        self,
        spatial_size: Sequence[int] = (256, 256),
        pixel_size: Union[float, Sequence[float]] = (0.7, 1.5),
        regions: Sequence[str] = SYNTHETIC_CT_REGIONS,
        contrast_prob: float = 0.5,
        couch_prob: float = 0.5,
        blur: Sequence[float] = (0.3, 0.9),
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.spatial_size = slice_size(spatial_size, "spatial_size")
        self.pixel_range = value_range(pixel_size, "pixel_size", 0.0, strict=True)
        self.regions = (regions,) if isinstance(regions, str) else tuple(regions)
        if not self.regions or any(r not in SYNTHETIC_CT_REGIONS for r in self.regions):
            raise ValueError(f"regions must name some of {SYNTHETIC_CT_REGIONS}, got {regions!r}.")
        self.contrast_prob, self.couch_prob = float(contrast_prob), float(couch_prob)
        self.blur_range = (float(blur[0]), float(blur[1]))

    def __call__(self, img: object = None) -> MetaTensor:
        """A new synthetic slice ``(1, H, W)`` (``img`` is ignored)."""
        region = self.regions[int(self.R.randint(len(self.regions)))]
        spacing = float(self.R.uniform(*self.pixel_range))
        contrast = bool(self.R.uniform() < self.contrast_prob)
        couch = bool(self.R.uniform() < self.couch_prob)
        blur = float(self.R.uniform(*self.blur_range))
        seed = int(self.R.randint(2**31 - 1))
        hu = synthetic_ct(self.spatial_size, spacing, region, np.random.RandomState(seed), contrast, couch, blur)
        return with_pixel_size(hu, spacing)


class RandGeneratedSliced(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace every key with the same new slice drawn from ``generator``.

    Placed after the slice sampling of a training pipeline (before the low-dose simulation copies the clean image),
    it mixes generated images into real slices: ``prob`` is the generated fraction of the training images that
    reach it.

    Args:
        keys: items to replace.
        generator: a callable returning a new ``(1, H, W)`` slice (HU, with its pixel size in the affine) when
            called with no argument, e.g. :class:`RandSyntheticCT`; seeded from this transform when it is
            randomizable.
        prob: probability of replacing them.
        scan: a transform applied to each new slice (HU in, HU out), e.g. a full-dose scan
            (``RandLowDoseCT(dose_fraction=1.0, ...)``) so that the slice carries a scanner's noise as a real
            full-dose slice does; seeded from this transform when it is randomizable. ``None``: the noise-free slice.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        generator: Callable[[], torch.Tensor],
        prob: float = 0.5,
        scan: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.generator = generator
        self.scan = scan

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """A copy of ``data`` whose keys hold one new slice (or ``data`` unchanged, with ``1 - prob``)."""
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        seed = int(self.R.randint(MAX_SEED))
        if isinstance(self.generator, Randomizable):
            self.generator.set_random_state(seed)
        slice_hu = self.generator()
        if self.scan is not None:
            if isinstance(self.scan, Randomizable):
                self.scan.set_random_state(int(self.R.randint(MAX_SEED)))
            slice_hu = self.scan(slice_hu)
        for key in self.key_iterator(d):
            d[key] = slice_hu.clone()
        return d


class RandSyntheticCTd(RandGeneratedSliced):
    """With probability ``prob``, replace every key with the same new synthetic CT slice (:class:`RandSyntheticCT`):
    ``prob`` is the synthetic fraction of the training images (see :class:`RandGeneratedSliced`).

    Args:
        keys: items to replace.
        prob: probability of replacing them.
        spatial_size, pixel_size, regions, contrast_prob, couch_prob, blur: as for :class:`RandSyntheticCT`.
        scan: a transform applied to each new slice (HU in, HU out), e.g. a full-dose scan
            (``RandLowDoseCT(dose_fraction=1.0, ...)``); ``None``: the noise-free slice.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        spatial_size: Sequence[int] = (256, 256),
        pixel_size: Union[float, Sequence[float]] = (0.7, 1.5),
        regions: Sequence[str] = SYNTHETIC_CT_REGIONS,
        contrast_prob: float = 0.5,
        couch_prob: float = 0.5,
        blur: Sequence[float] = (0.3, 0.9),
        scan: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        generator = RandSyntheticCT(spatial_size, pixel_size, regions, contrast_prob, couch_prob, blur)
        super().__init__(keys, generator, prob, scan, allow_missing_keys)
