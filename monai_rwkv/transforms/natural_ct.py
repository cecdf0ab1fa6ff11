"""
CT-like slices in Hounsfield units from the structure of natural photographs, for training denoisers on edges and
textures that neither the data at hand nor the painted shapes of :mod:`.synthetic_ct` contain.

:func:`natural_ct` maps one grey-level photograph onto a body cross-section:

- a random square crop of the photograph (a random share of its shorter side, turned and flipped at random) is
  resampled to the slice;
- its grey levels are cut at random quantiles into two to four classes, each given the HU of a different tissue
  drawn from :data:`TISSUE_LADDER_HU` (the class of the median grey level a soft tissue): the photograph's
  iso-contours become tissue boundaries of real CT contrast. Within a class the grey level still varies the HU by up
  to a random amplitude, so the photograph's own texture survives at a tissue's contrast;
- the result fills an ellipse sized in mm like a head or a body (air around it), optionally inside a rim of fat or
  of bone (a skull), and edges get a partial-volume blur.

The slices are not anatomy: they add shapes, edge contrasts and textures at every scale, so that a denoiser learns
to keep structure it has never seen (see the CT bundle's README for what they add to training).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms.transform import RandomizableTransform

from ._util import centred_grid_mm, gaussian_blur, slice_size, value_range, with_pixel_size
from .synthetic_ct import RandGeneratedSliced

__all__ = ["TISSUE_LADDER_HU", "NATURAL_CT_RIMS", "natural_ct", "load_grey_image", "RandNaturalCT", "RandNaturalCTd"]

TISSUE_LADDER_HU = (-850.0, -100.0, 0.0, 40.0, 60.0, 200.0, 300.0, 1000.0)
"""Tissue values the grey-level classes are drawn from (HU): lung, fat, water, soft tissue, muscle, contrast-enhanced
blood, cancellous bone, cortical bone (midpoints of commonly quoted ranges, as in :mod:`.synthetic_ct`)."""

_SOFT_HU = (-100.0, 0.0, 40.0, 60.0)

NATURAL_CT_RIMS = ("none", "fat", "bone")
"""Rims :func:`natural_ct` can put around the body: none, subcutaneous fat (5-20 mm) or bone like a skull (3-8 mm)."""

ImageSource = Union[str, "os.PathLike[str]", np.ndarray, torch.Tensor]


def load_grey_image(source: ImageSource) -> torch.Tensor:
    """A grey-level image as a float64 ``(H, W)`` tensor: an array or tensor as it is, or a ``.npy`` file.

    Raises ``ValueError`` (naming the file) unless it is 2-D, at least 16 x 16, finite and not constant.
    """
    name = "image"
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            source = np.load(name, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{name}: not a readable .npy image ({e}).") from None
    image = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor) else source)
    if image.ndim != 2 or min(image.shape) < 16:
        raise ValueError(f"{name}: must be a 2-D grey-level image of 16 x 16 pixels or more, got {tuple(image.shape)}.")
    image = image.to(torch.float64)
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name}: holds NaN or infinite values.")
    if float(image.max() - image.min()) <= 0:
        raise ValueError(f"{name}: is constant; it has no structure to map to tissues.")
    return image


def _random_crop(image: torch.Tensor, shape: tuple[int, int], rng: np.random.RandomState) -> torch.Tensor:
    """A random square crop of 40-100 % of the shorter side, turned and flipped at random, resampled to ``shape``."""
    side = max(16, int(round(rng.uniform(0.4, 1.0) * min(image.shape))))
    r0 = int(rng.randint(image.shape[0] - side + 1))
    c0 = int(rng.randint(image.shape[1] - side + 1))
    crop = image[r0 : r0 + side, c0 : c0 + side]
    crop = torch.rot90(crop, int(rng.randint(4)))
    if rng.uniform() < 0.5:
        crop = crop.flip(-1)
    antialias = side > min(shape)
    return F.interpolate(crop[None, None], size=shape, mode="bilinear", align_corners=False, antialias=antialias)[0, 0]


def _tissue_map(grey: torch.Tensor, body: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """Grey levels cut at random quantiles (of the body's pixels) into 2-4 classes of tissue HU, with texture.

    Tissues go to the classes in random order, except that the class holding the median grey level is a soft tissue
    (fat, water, soft tissue or muscle): most of a body attenuates like water, as most of a real one does."""
    n_classes = int(rng.randint(2, 5))
    levels = torch.tensor(np.sort(rng.uniform(0.1, 0.9, n_classes - 1)), dtype=grey.dtype)
    tissues = [float(t) for t in rng.choice(TISSUE_LADDER_HU, size=n_classes, replace=False)]
    inside = grey[body] if bool(body.any()) else grey.reshape(-1)
    cuts = torch.quantile(inside, levels)
    # the class the median grey level falls in, as the pixels are assigned below (a cut may tie with the median)
    median_class = int(torch.bucketize(inside.median()[None], cuts)[0])
    if tissues[median_class] not in _SOFT_HU:
        unused = [t for t in _SOFT_HU if t not in tissues]
        tissues[median_class] = float(unused[int(rng.randint(len(unused)))])
    edges = torch.cat([inside.min()[None], cuts, inside.max()[None]])
    hu = torch.empty_like(grey)
    classes = torch.bucketize(grey, cuts)  # class k holds edges[k] < grey <= edges[k + 1]
    for k in range(n_classes):
        low, high = float(edges[k]), float(edges[k + 1])
        position = ((grey - low) / (high - low)).clamp(0, 1) if high > low else torch.full_like(grey, 0.5)
        amplitude = rng.uniform(5.0, 80.0) * (3.0 if abs(tissues[k]) >= 300 else 1.0)  # bone and lung vary more
        hu = torch.where(classes == k, tissues[k] + amplitude * (position - 0.5), hu)
    return hu


def natural_ct(
    image: ImageSource,
    shape: Sequence[int],
    spacing: float,
    rng: Optional[np.random.RandomState] = None,
    rim: str = "none",
    blur: float = 0.5,
) -> torch.Tensor:
    """Map a grey-level photograph onto a CT-like slice (see the module docstring).

    Args:
        image: the photograph, ``(h, w)`` grey levels (any range) as an array, a tensor or a ``.npy`` file.
        shape: ``(H, W)`` of the slice in pixels.
        spacing: pixel size in mm (square pixels). The body is sized in mm: 160-450 mm wide (a head to a large
            abdomen), 60-100 % as deep, shrunk to 95 % of the field of view ``shape * spacing`` when larger.
        rng: the random state to draw from (None: a fresh unseeded one).
        rim: one of :data:`NATURAL_CT_RIMS`: what surrounds the body's inside.
        blur: partial-volume blur of the edges, Gaussian standard deviation in pixels (0: none).

    Returns:
        ``(H, W)`` float32 tensor in HU, within [-1024, 3071]; -1000 HU (air) outside the body.
    """
    h, w = slice_size(tuple(shape), "shape")
    if not spacing > 0:
        raise ValueError(f"spacing must be a positive number of mm, got {spacing!r}.")
    if rim not in NATURAL_CT_RIMS:
        raise ValueError(f"rim must be one of {NATURAL_CT_RIMS}, got {rim!r}.")
    rng = rng if rng is not None else np.random.RandomState()
    grey = _random_crop(load_grey_image(image), (h, w), rng)

    half_width = min(rng.uniform(80.0, 225.0), 0.95 * w * spacing / 2)
    half_depth = min(half_width * rng.uniform(0.6, 1.0), 0.95 * h * spacing / 2)
    yy, xx = centred_grid_mm((h, w), spacing)
    radius = torch.sqrt((yy / half_depth) ** 2 + (xx / half_width) ** 2)  # 1 on the body's outline
    body = radius <= 1.0

    hu = torch.where(body, _tissue_map(grey, body, rng), torch.full_like(grey, -1000.0))
    if rim != "none":
        thickness = rng.uniform(5.0, 20.0) if rim == "fat" else rng.uniform(3.0, 8.0)  # mm
        rim_hu = rng.uniform(-120.0, -80.0) if rim == "fat" else rng.uniform(600.0, 1800.0)
        inner = radius <= 1.0 - thickness / min(half_width, half_depth)
        hu = torch.where(body & ~inner, torch.full_like(hu, rim_hu), hu)
    hu = gaussian_blur(hu, [blur, blur])
    return hu.clamp(-1024.0, 3071.0).float()


class RandNaturalCT(RandomizableTransform):
    """Draw a CT-like slice from a random photograph of ``images`` (:func:`natural_ct`), at a random pixel size.

    Called with no argument (or with an image it ignores), it returns a ``(1, H, W)`` float32 MetaTensor in HU whose
    affine holds the pixel size, so that :class:`RandLowDoseCT` simulates it at its physical size.

    Args:
        images: the photographs: grey-level ``(h, w)`` arrays or tensors, or ``.npy`` files of them (read when first
            drawn, then kept in memory).
        spatial_size: ``(H, W)`` in pixels.
        pixel_size: pixel size in mm or a ``(low, high)`` range.
        rims: the rims to draw from (:data:`NATURAL_CT_RIMS`), with equal probability.
        blur: range of the partial-volume blur in pixels.
    """

    def __init__(
        self,
        images: Sequence[ImageSource],
        spatial_size: Sequence[int] = (256, 256),
        pixel_size: Union[float, Sequence[float]] = (0.7, 1.5),
        rims: Sequence[str] = NATURAL_CT_RIMS,
        blur: Sequence[float] = (0.3, 0.9),
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.images = list(images)
        self._loaded: dict[int, torch.Tensor] = {}
        self.spatial_size = slice_size(spatial_size, "spatial_size")
        self.pixel_range = value_range(pixel_size, "pixel_size", 0.0, strict=True)
        self.rims = (rims,) if isinstance(rims, str) else tuple(rims)
        if not self.rims or any(r not in NATURAL_CT_RIMS for r in self.rims):
            raise ValueError(f"rims must name some of {NATURAL_CT_RIMS}, got {rims!r}.")
        self.blur_range = value_range(blur, "blur", 0.0)

    def _image(self, index: int) -> torch.Tensor:
        if index not in self._loaded:
            self._loaded[index] = load_grey_image(self.images[index])
        return self._loaded[index]

    def __call__(self, img: object = None) -> MetaTensor:
        """A new slice ``(1, H, W)`` (``img`` is ignored)."""
        if not self.images:
            raise ValueError(
                "no photographs to draw from: give RandNaturalCT images (e.g. run scripts/prepare_natural_images.py "
                "and pass its .npy files)."
            )
        index = int(self.R.randint(len(self.images)))
        spacing = float(self.R.uniform(*self.pixel_range))
        rim = self.rims[int(self.R.randint(len(self.rims)))]
        blur = float(self.R.uniform(*self.blur_range))
        seed = int(self.R.randint(2**31 - 1))
        hu = natural_ct(self._image(index), self.spatial_size, spacing, np.random.RandomState(seed), rim, blur)
        return with_pixel_size(hu, spacing)


class RandNaturalCTd(RandGeneratedSliced):
    """With probability ``prob``, replace every key with the same new slice of :class:`RandNaturalCT`: ``prob`` is the
    photograph-derived fraction of the training images that reach it (see :class:`RandGeneratedSliced`).

    Args:
        keys: items to replace.
        images: the photographs, as for :class:`RandNaturalCT`; may be empty only when ``prob`` is 0.
        prob: probability of replacing them.
        spatial_size, pixel_size, rims, blur: as for :class:`RandNaturalCT`.
        scan: a transform applied to each new slice (HU in, HU out), e.g. a full-dose scan
            (``RandLowDoseCT(dose_fraction=1.0, ...)``); ``None``: the noise-free slice.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        images: Sequence[ImageSource] = (),
        prob: float = 0.5,
        spatial_size: Sequence[int] = (256, 256),
        pixel_size: Union[float, Sequence[float]] = (0.7, 1.5),
        rims: Sequence[str] = NATURAL_CT_RIMS,
        blur: Sequence[float] = (0.3, 0.9),
        scan: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        if prob > 0 and not len(images):
            raise ValueError(
                f"RandNaturalCTd has prob {prob:g} but no photographs: run scripts/prepare_natural_images.py (it "
                "writes data/natural/*.npy) or set the probability to 0."
            )
        generator = RandNaturalCT(images, spatial_size, pixel_size, rims, blur)
        super().__init__(keys, generator, prob, scan, allow_missing_keys)
