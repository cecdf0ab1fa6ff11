"""Fan-beam CT by rebinning (monai_rwkv/transforms/fanbeam.py) and the simulator's fan-beam scans, checked against
the analytic line integrals of Gaussian blobs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_rwkv.transforms import RandLowDoseCT
from monai_rwkv.transforms.fanbeam import FanBeamGeometry, fan_project, rebin_to_parallel
from monai_rwkv.transforms.tomography import ParallelBeamGeometry, radon

SHAPE, SPACING = (96, 96), 1.2


def _blobs(rng: np.random.Generator, geometry) -> tuple[torch.Tensor, list[tuple[float, float, float, float]]]:
    """An image of three random Gaussian blobs (amplitude, x0, y0, sigma in mm) and the blobs."""
    y, x = geometry.pixel_coordinates()
    blobs = [
        (rng.uniform(0.5, 2.0), rng.uniform(-25, 25), rng.uniform(-25, 25), rng.uniform(4.0, 8.0)) for _ in range(3)
    ]
    image = torch.zeros(SHAPE, dtype=torch.float64)
    for a, x0, y0, s in blobs:
        image += a * torch.exp(-((x[None, :] - x0) ** 2 + (y[:, None] - y0) ** 2) / (2 * s * s))
    return image, blobs


def _line_integrals(blobs, theta: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exact line integrals of the blobs along the lines of normal angle ``theta`` at signed distance ``u``."""
    out = torch.zeros_like(theta)
    for a, x0, y0, s in blobs:
        centre = x0 * torch.cos(theta) + y0 * torch.sin(theta)
        out += a * math.sqrt(2 * math.pi) * s * torch.exp(-((u - centre) ** 2) / (2 * s * s))
    return out


def test_geometry_covers_the_image_and_refuses_a_source_inside_it() -> None:
    fan = FanBeamGeometry.create(SHAPE, SPACING)
    radius = math.hypot(SHAPE[0] * SPACING, SHAPE[1] * SPACING) / 2
    assert fan.source_distance == pytest.approx(2.3 * radius)
    assert fan.source_distance * math.sin(float(fan.fan_angles()[-1])) >= radius
    assert fan.n_views == 2 * ParallelBeamGeometry.create(SHAPE, SPACING).n_views
    parallel = fan.parallel()
    assert parallel.n_views == fan.n_views // 2 and parallel.det_spacing == pytest.approx(SPACING / 2)
    with pytest.raises(ValueError, match="source_distance"):
        FanBeamGeometry.create(SHAPE, SPACING, source_distance=radius * 0.9)
    coarse = FanBeamGeometry.create(SHAPE, SPACING, det_spacing=2 * SPACING)  # pitch in mm at the rotation centre
    assert coarse.det_angle * coarse.source_distance == pytest.approx(2 * SPACING)
    assert coarse.parallel().det_spacing == pytest.approx(2 * SPACING)
    with pytest.raises(ValueError, match="not both"):
        FanBeamGeometry.create(SHAPE, SPACING, det_angle=0.001, det_spacing=1.0)


def test_fan_rays_match_the_analytic_line_integrals(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parallel = ParallelBeamGeometry.create(SHAPE, SPACING)
    image, blobs = _blobs(rng, parallel)
    distance = float(rng.uniform(200, 400))
    fan = FanBeamGeometry.create(SHAPE, SPACING, n_views=int(rng.integers(40, 90)), source_distance=distance)
    sinogram = fan_project(radon(image, parallel), parallel, fan)
    beta, gamma = fan.source_angles(), fan.fan_angles()
    theta = beta[:, None] + gamma[None, :]
    exact = _line_integrals(blobs, theta, distance * torch.sin(gamma)[None, :].expand_as(theta))
    assert sinogram.shape == (fan.n_views, fan.n_det)
    assert (sinogram - exact).abs().max() < 0.02 * exact.abs().max()


def test_rebinning_recovers_the_parallel_rays(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fan = FanBeamGeometry.create(SHAPE, SPACING, n_views=int(rng.integers(300, 500)))
    parallel = fan.parallel(n_views=int(rng.integers(50, 100)))
    _, blobs = _blobs(rng, parallel)
    beta, gamma = fan.source_angles(), fan.fan_angles()
    theta = beta[:, None] + gamma[None, :]
    fan_sinogram = _line_integrals(blobs, theta, fan.source_distance * torch.sin(gamma)[None, :].expand_as(theta))
    rebinned = rebin_to_parallel(fan_sinogram[None], fan, parallel)[0]
    theta_p, u_p = parallel.angles(), parallel.detector_positions()
    exact = _line_integrals(
        blobs, theta_p[:, None].expand(-1, parallel.n_det), u_p[None, :].expand(parallel.n_views, -1)
    )
    assert rebinned.shape == (parallel.n_views, parallel.n_det)
    assert (rebinned - exact).abs().max() < 0.02 * exact.abs().max()


def test_fan_beam_scans_reconstruct_the_image_with_less_noise_per_photon(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, x = ParallelBeamGeometry.create(SHAPE, SPACING).pixel_coordinates()
    disc = ((x[None, :] ** 2 + y[:, None] ** 2) < 45.0**2).float() * float(rng.uniform(0, 60))  # water-like disc
    image = (disc - 1000 * (disc == 0)).float()[None]
    fan = RandLowDoseCT(dose_fraction=1.0, incident_photons=1e12, electronic_noise_var=0, beam="fan", spacing=SPACING)
    clean = fan.set_random_state(seed)(image)
    inside = (x[None, :] ** 2 + y[:, None] ** 2) < 30.0**2
    assert (clean - image)[0][inside].abs().mean() < 3.0  # noise-free: the disc's HU comes back
    stds = {}
    for beam in ("parallel", "fan"):
        sim = RandLowDoseCT(dose_fraction=0.25, incident_photons=2e5, beam=beam, spacing=SPACING)
        stds[beam] = float((sim.set_random_state(seed)(image) - image)[0][inside].std())
    # each line measured twice, and the interpolations average neighbouring rays
    assert 0.2 < stds["fan"] / stds["parallel"] < 0.9


def test_the_beam_is_drawn_and_reported(seed: int) -> None:
    sim = RandLowDoseCT(beam=("parallel", "fan"), spacing=SPACING).set_random_state(seed)
    seen = set()
    for _ in range(20):
        sim.randomize()
        seen.add(sim.params["beam"])
        geometry = sim.geometry(torch.zeros(1, *SHAPE))
        assert isinstance(geometry, FanBeamGeometry if sim.beam == "fan" else ParallelBeamGeometry)
    assert seen == {"parallel", "fan"}
    with pytest.raises(ValueError, match="beam"):
        RandLowDoseCT(beam="cone")
