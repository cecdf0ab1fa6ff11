"""The numba projector and back-projector (monai_rwkv/transforms/_numba_tomography.py) against the torch path.

The torch ``grid_sample`` path run in float64 is the reference (it is itself checked against iradon round trips and
analytic projections in test_tomography.py and test_ct.py). Sizes, spacings, view counts, detector layouts and
values are drawn from the fresh ``seed`` fixture: odd and non-square slices, anisotropic pixels, detectors narrower
and wider than the image, values of both signs over several orders of magnitude.
"""

from __future__ import annotations

import math

import pytest
import torch

from monai_rwkv.transforms import TOMOGRAPHY_BACKENDS, ParallelBeamGeometry, backproject, iradon, radon, tomography

numba_missing = tomography._numba_kernels() is None
needs_numba = pytest.mark.skipif(numba_missing, reason="numba cannot be imported here")


def random_case(seed: int) -> tuple[torch.Generator, ParallelBeamGeometry]:
    """A random geometry: 5-70 x 5-70 pixels, spacing 0.3-2.3 mm per axis, 2-97 views, any detector layout."""
    gen = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(5, 71, (2,), generator=gen))
    spacing = tuple(float(v) for v in 0.3 + 2 * torch.rand(2, generator=gen, dtype=torch.float64))
    n_views = int(torch.randint(2, 98, (1,), generator=gen))
    det_spacing = float(min(spacing) * (0.3 + 1.5 * torch.rand(1, generator=gen, dtype=torch.float64)))
    n_det = int(math.hypot(h * spacing[0], w * spacing[1]) / det_spacing * float(0.5 + torch.rand(1, generator=gen)))
    return gen, ParallelBeamGeometry.create((h, w), spacing, n_views, max(n_det, 2), det_spacing)


def random_values(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Values of both signs, magnitudes spread over 10^-3 to 10^3."""
    magnitude = 10 ** (6 * torch.rand(shape, generator=gen, dtype=torch.float64) - 3)
    return magnitude * torch.randn(shape, generator=gen, dtype=torch.float64).sign()


@needs_numba
def test_numba_projection_equals_the_torch_path_in_float64(seed: int) -> None:
    gen, geom = random_case(seed)
    image = random_values(gen, (3, *geom.image_shape))
    reference = radon(image, geom, backend="torch")
    fast = radon(image, geom, backend="numba")
    assert fast.dtype == torch.float64 and fast.shape == reference.shape
    torch.testing.assert_close(fast, reference, rtol=1e-11, atol=1e-11 * float(reference.abs().max()))


@needs_numba
def test_numba_back_projection_equals_the_torch_path_in_float64(seed: int) -> None:
    gen, geom = random_case(seed)
    sinogram = random_values(gen, (2, 1, geom.n_views, geom.n_det))
    reference = backproject(sinogram, geom, backend="torch")
    fast = backproject(sinogram, geom, backend="numba")
    assert fast.dtype == torch.float64 and fast.shape == (2, 1, *geom.image_shape)
    torch.testing.assert_close(fast, reference, rtol=1e-11, atol=1e-11 * float(reference.abs().max()))


@needs_numba
def test_numba_float32_is_within_float32_rounding_of_float64(seed: int) -> None:
    gen, geom = random_case(seed)
    image = random_values(gen, geom.image_shape)
    sinogram = radon(image, geom, backend="torch")
    scale = float(sinogram.abs().max())
    fast = radon(image.float(), geom, backend="numba")
    assert fast.dtype == torch.float32
    # float64 sums: only the rounding of the inputs and the output (the torch float32 path accumulates in float32)
    assert float((fast.double() - sinogram).abs().max()) <= 1e-6 * scale
    recon = iradon(sinogram, geom, "hann", 0.8, backend="torch")
    recon32 = iradon(sinogram.float(), geom, "hann", 0.8, backend="numba")
    assert float((recon32.double() - recon).abs().max()) <= 1e-5 * float(recon.abs().max())


@needs_numba
def test_a_uniform_disc_projects_to_its_chord_lengths(seed: int) -> None:
    """Independent of both paths: a disc of radius r projects to ``2 sqrt(r^2 - u^2)`` (up to pixelation)."""
    gen = torch.Generator().manual_seed(seed)
    n, pixel = 201, float(0.5 + torch.rand(1, generator=gen))
    radius = float(n * pixel * (0.2 + 0.2 * torch.rand(1, generator=gen)))
    geom = ParallelBeamGeometry.create((n, n), pixel, n_views=int(torch.randint(3, 40, (1,), generator=gen)))
    y, x = geom.pixel_coordinates()
    disc = ((y[:, None] ** 2 + x[None, :] ** 2) <= radius**2).double()
    u = geom.detector_positions()
    chord = 2 * (radius**2 - u**2).clamp(min=0).sqrt()
    sinogram = radon(disc, geom, backend="numba")
    # pixelated edge: at most about two pixels of path per ray away from the rim
    inside = u.abs() < radius - 3 * pixel
    assert float((sinogram[:, inside] - chord[inside]).abs().max()) < 2.5 * pixel
    # the total mass is exact for every view (Joseph's method conserves it up to the zero padding)
    mass = float(disc.sum()) * pixel * pixel
    expected = torch.full((geom.n_views,), mass, dtype=torch.float64)
    torch.testing.assert_close(sinogram.sum(dim=1) * geom.det_spacing, expected, rtol=2e-3, atol=0)


def test_auto_takes_torch_where_numba_does_not_apply(seed: int) -> None:
    gen, geom = random_case(seed)
    image = random_values(gen, geom.image_shape).requires_grad_(True)
    sinogram = radon(image, geom)  # needs a gradient: the differentiable torch path
    assert sinogram.requires_grad
    sinogram.sum().backward()
    assert image.grad is not None and image.grad.shape == image.shape
    half = radon(image.detach().half(), geom)  # no numba kernel for float16
    assert half.dtype == torch.float16


def test_auto_falls_back_to_torch_when_numba_cannot_load(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    gen, geom = random_case(seed)
    image = random_values(gen, geom.image_shape)
    expected = radon(image, geom, backend="torch")
    monkeypatch.setattr(tomography, "_NUMBA_MODULE", [None])
    assert torch.equal(radon(image, geom), expected)
    with pytest.raises(ValueError, match="numba, which cannot be imported"):
        radon(image, geom, backend="numba")


def test_backend_errors_say_what_to_do() -> None:
    geom = ParallelBeamGeometry.create((8, 9), 1.0, n_views=4)
    image = torch.rand(8, 9, dtype=torch.float64)
    assert TOMOGRAPHY_BACKENDS == ("auto", "torch", "numba")
    with pytest.raises(ValueError, match="backend must be one of"):
        radon(image, geom, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        backproject(torch.zeros(4, geom.n_det), geom, backend="fast")
    if not numba_missing:
        with pytest.raises(ValueError, match="needs no gradient.*backend='auto'"):
            radon(image.requires_grad_(True), geom, backend="numba")
        with pytest.raises(ValueError, match="float32 or float64"):
            radon(image.detach().half(), geom, backend="numba")
