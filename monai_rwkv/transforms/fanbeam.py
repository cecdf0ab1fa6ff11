"""
Fan-beam tomography by rebinning, in pure PyTorch: the geometry of a third-generation CT scanner (a point source and
an arc of detectors rotating together over 360 degrees) for the low-dose simulator.

A fan-beam ray is a line like any other: the ray of source angle ``beta`` and fan angle ``gamma`` (equiangular
detector, source at distance ``R`` from the rotation centre) is the parallel-beam ray of normal angle
``theta = beta + gamma`` and signed distance ``u = R sin(gamma)`` (:class:`~.tomography.ParallelBeamGeometry`'s
conventions). So

- :func:`fan_project` samples the fan sinogram from a finely sampled parallel sinogram (:func:`~.tomography.radon`),
  by bilinear interpolation in ``(theta, u)``, using ``p(theta + pi, -u) = p(theta, u)``;
- :func:`rebin_to_parallel` turns a (noisy) fan sinogram back into parallel rays by bilinear interpolation in
  ``(beta, gamma)``, averaging the two fan rays that measure each line over a full rotation, as scanners that
  rebin before reconstruction do; :func:`~.tomography.iradon` then reconstructs.

Compared with a parallel scan of the same views per 180 degrees, each line is measured twice and the noise is
interpolated twice (a softer, direction-dependent grain): less noise for the same photons per ray (std 0.68 times
the parallel scan's in the brain of a 256 x 256 head slice of 0.957 mm pixels, 0.37 times on a 96 x 96 disc of 1.2
mm pixels). The interpolations also blur: noise-free, a head slice comes back with 30 HU RMSE (10 HU in the brain)
against 14 HU (5 HU) for the parallel scan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

from .tomography import ParallelBeamGeometry

__all__ = ["FanBeamGeometry", "fan_project", "rebin_to_parallel"]

#: default source-to-centre distance as a multiple of the field-of-view radius (about 570 mm for a 500 mm field).
SOURCE_DISTANCE_RATIO = 2.3


@dataclass(frozen=True)
class FanBeamGeometry:
    """A 2-D equiangular fan-beam geometry over a full rotation.

    Attributes:
        image_shape: ``(H, W)`` in pixels.
        spacing: ``(dy, dx)`` pixel size in mm.
        n_views: source positions, evenly spaced over ``[0, 2 pi)``.
        n_det: detector elements, centred on the ray through the rotation centre.
        det_angle: angle between neighbouring detector elements seen from the source, in radians.
        source_distance: source to rotation centre, in mm.
    """

    image_shape: tuple[int, int]
    spacing: tuple[float, float]
    n_views: int
    n_det: int
    det_angle: float
    source_distance: float

    @classmethod
    def create(
        cls,
        image_shape: Sequence[int],
        spacing: Union[float, Sequence[float]] = 1.0,
        n_views: Optional[int] = None,
        source_distance: Optional[float] = None,
        n_det: Optional[int] = None,
        det_angle: Optional[float] = None,
        det_spacing: Optional[float] = None,
    ) -> FanBeamGeometry:
        """Build a geometry whose fan covers the image diagonal.

        Args:
            image_shape: ``(H, W)`` in pixels.
            spacing: pixel size in mm, a number or ``(dy, dx)``.
            n_views: source positions over 360 degrees; default twice the parallel default (the same angular
                sampling).
            source_distance: in mm; default :data:`SOURCE_DISTANCE_RATIO` times the radius of the image diagonal.
            n_det: detector elements; default: enough to cover the image diagonal plus one either side.
            det_angle: element pitch in radians; default: half the smaller pixel size at the rotation centre.
            det_spacing: or the element pitch in mm at the rotation centre (``det_angle = det_spacing /
                source_distance``); give at most one of the two.
        """
        parallel = ParallelBeamGeometry.create(image_shape, spacing)
        (h, w), (dy, dx) = parallel.image_shape, parallel.spacing
        radius = math.hypot(h * dy, w * dx) / 2
        distance = float(source_distance) if source_distance is not None else SOURCE_DISTANCE_RATIO * radius
        if not distance > radius:
            raise ValueError(
                f"source_distance must be larger than the radius of the image diagonal ({radius:.1f} mm): the source "
                f"would be inside the image; got {source_distance!r}."
            )
        if det_angle is not None and det_spacing is not None:
            raise ValueError("give det_angle or det_spacing, not both.")
        if det_spacing is not None:
            det_angle = float(det_spacing) / distance
        pitch = float(det_angle) if det_angle is not None else min(dy, dx) / 2 / distance
        if not pitch > 0:
            raise ValueError(f"det_angle must be positive, got {det_angle!r}.")
        if n_det is None:
            n_det = 2 * int(math.ceil(math.asin(radius / distance) / pitch)) + 3
        views = int(n_views) if n_views is not None else 2 * parallel.n_views
        if views < 4 or n_det < 2:
            raise ValueError(f"n_views must be >= 4 and n_det >= 2, got {views} and {n_det}.")
        return cls((h, w), (dy, dx), views, int(n_det), pitch, distance)

    def source_angles(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """``beta_i = 2 pi i / n_views``, float64 ``(n_views,)``."""
        return torch.arange(self.n_views, dtype=torch.float64, device=device) * (2 * math.pi / self.n_views)

    def fan_angles(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """``gamma_j = (j - (n_det - 1) / 2) * det_angle``, float64 ``(n_det,)``."""
        j = torch.arange(self.n_det, dtype=torch.float64, device=device)
        return (j - (self.n_det - 1) / 2) * self.det_angle

    def parallel(self, n_views: Optional[int] = None) -> ParallelBeamGeometry:
        """The parallel geometry the fan rays are rebinned to (``n_views // 2`` views over 180 degrees by
        default; bins of the fan's pitch at the rotation centre, covering the image diagonal)."""
        return ParallelBeamGeometry.create(
            self.image_shape,
            self.spacing,
            n_views=n_views if n_views is not None else self.n_views // 2,
            det_spacing=self.source_distance * self.det_angle,
        )


def _interpolate(table: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``table`` ``(N, A, B)`` at fractional indices ``rows``, ``cols`` (same shape ``S``),
    zero outside: ``(N, *S)``."""
    a, b = table.shape[-2:]
    grid = torch.stack([cols / max(b - 1, 1) * 2 - 1, rows / max(a - 1, 1) * 2 - 1], dim=-1).to(table.dtype)
    out = F.grid_sample(
        table[None], grid.reshape(1, -1, 1, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.reshape(table.shape[0], *rows.shape)


def fan_project(parallel_sinogram: torch.Tensor, parallel: ParallelBeamGeometry, fan: FanBeamGeometry) -> torch.Tensor:
    """The fan sinogram ``(..., fan.n_views, fan.n_det)`` sampled from a parallel one ``(..., n_views, n_det)``.

    The parallel sinogram should sample its lines finely (the default half-pixel bins and about ``pi / 2 * N``
    views of :meth:`ParallelBeamGeometry.create`); rays beyond its detector are zero.
    """
    lead = parallel_sinogram.shape[:-2]
    table = parallel_sinogram.reshape(-1, *parallel_sinogram.shape[-2:])
    # one more view at theta = pi: the first view mirrored on the detector (p(theta + pi, -u) = p(theta, u))
    table = torch.cat([table, table[:, :1].flip(-1)], dim=1)
    beta, gamma = fan.source_angles(table.device), fan.fan_angles(table.device)
    theta = (beta[:, None] + gamma[None, :]).remainder(2 * math.pi)
    u = fan.source_distance * torch.sin(gamma)[None, :].expand_as(theta)
    second_half = theta >= math.pi
    theta = torch.where(second_half, theta - math.pi, theta)
    u = torch.where(second_half, -u, u)
    rows = theta / (math.pi / parallel.n_views)
    cols = u / parallel.det_spacing + (parallel.n_det - 1) / 2
    return _interpolate(table, rows, cols).reshape(*lead, fan.n_views, fan.n_det)


def rebin_to_parallel(
    fan_sinogram: torch.Tensor, fan: FanBeamGeometry, parallel: Optional[ParallelBeamGeometry] = None
) -> torch.Tensor:
    """Rebin a fan sinogram ``(..., fan.n_views, fan.n_det)`` to ``parallel`` (default: ``fan.parallel()``).

    Each parallel line ``(theta, u)`` is measured by the fan rays ``(theta - gamma, gamma)`` and
    ``(theta + pi + gamma, -gamma)`` with ``gamma = asin(u / R)``; both are interpolated bilinearly (source angles
    wrap around) and averaged. Lines outside the fan are zero.

    Returns:
        ``(..., parallel.n_views, parallel.n_det)``.
    """
    parallel = parallel if parallel is not None else fan.parallel()
    lead = fan_sinogram.shape[:-2]
    table = fan_sinogram.reshape(-1, *fan_sinogram.shape[-2:])
    table = torch.cat([table, table[:, :1]], dim=1)  # beta = 2 pi is beta = 0
    theta, u = parallel.angles(table.device), parallel.detector_positions(table.device)
    ratio = (u / fan.source_distance).clamp(-1.0, 1.0)
    gamma = torch.asin(ratio)[None, :].expand(parallel.n_views, -1)
    theta = theta[:, None].expand_as(gamma)
    step = 2 * math.pi / fan.n_views
    total = torch.zeros(table.shape[0], parallel.n_views, parallel.n_det, dtype=table.dtype, device=table.device)
    for beta, fan_angle in ((theta - gamma, gamma), (theta + math.pi + gamma, -gamma)):
        rows = beta.remainder(2 * math.pi) / step
        cols = fan_angle / fan.det_angle + (fan.n_det - 1) / 2
        total = total + _interpolate(table, rows, cols)
    return (total / 2).reshape(*lead, parallel.n_views, parallel.n_det)
