"""The MRI baselines' classical modules: total-variation denoising (Chambolle) and Tukey k-space apodisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_rwkv.networks.nets.classical import KSpaceApodizer, TotalVariationDenoiser
from monai_rwkv.transforms.kspace import kspace_keep, truncate_kspace

SHAPES = [(16, 16), (17, 23), (24, 9), (31, 40)]


def _total_variation(u: np.ndarray) -> float:
    """Isotropic TV with forward differences, zero across the last row / column (an independent numpy version)."""
    dy = np.zeros_like(u)
    dx = np.zeros_like(u)
    dy[:-1] = u[1:] - u[:-1]
    dx[:, :-1] = u[:, 1:] - u[:, :-1]
    return float(np.sqrt(dy**2 + dx**2).sum())


def _rof_energy(u: np.ndarray, f: np.ndarray, weight: float) -> float:
    return 0.5 * float(((u - f) ** 2).sum()) + weight * _total_variation(u)


def _tv(image: np.ndarray, weight: float, n_iter: int = 100) -> np.ndarray:
    return TotalVariationDenoiser(weight, n_iter=n_iter)(torch.from_numpy(image)[None, None])[0, 0].numpy()


# ------------------------------------------------------------------------------------------------ total variation


def test_tv_identity_cases(seed: int) -> None:
    x = torch.rand(2, 3, 11, 14, dtype=torch.float64)
    for module in (TotalVariationDenoiser(0.0), TotalVariationDenoiser(0.5, n_iter=0)):
        out = module(x)
        assert out.dtype == x.dtype and out.shape == x.shape
        torch.testing.assert_close(out, x, rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_tv_lowers_total_variation_and_energy(shape: tuple[int, int], seed: int) -> None:
    f = np.random.default_rng(seed).random(shape) * 4095
    for weight in (10.0, 100.0, 1000.0):
        u = _tv(f, weight)
        assert _total_variation(u) < _total_variation(f)
        assert _rof_energy(u, f, weight) < _rof_energy(f, f, weight)
        # maximum principle of the ROF model (up to the iterate's tiny excursions)
        assert u.min() >= f.min() - 1e-6 * 4095 and u.max() <= f.max() + 1e-6 * 4095


def test_tv_more_weight_is_flatter(seed: int) -> None:
    f = np.random.default_rng(seed).random((20, 25))
    values = [_total_variation(_tv(f, w, 300)) for w in (0.01, 0.05, 0.2, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_tv_invariances(seed: int) -> None:
    """Adding a constant shifts the result; scaling image and weight scales it; transposing commutes; batch items
    and channels are independent."""
    x = torch.rand(3, 2, 13, 18, dtype=torch.float64)
    tv = TotalVariationDenoiser(0.1, n_iter=80)
    out = tv(x)
    torch.testing.assert_close(tv(x + 1234.5), out + 1234.5, rtol=0, atol=1e-9)
    torch.testing.assert_close(
        TotalVariationDenoiser(0.1 * 4095, n_iter=80)(x * 4095), out * 4095, rtol=1e-9, atol=1e-7
    )
    torch.testing.assert_close(tv(x.transpose(-1, -2)), out.transpose(-1, -2), rtol=0, atol=1e-12)
    torch.testing.assert_close(tv(x[1:2, 1:2]), out[1:2, 1:2], rtol=0, atol=1e-12)


def test_tv_float32_close_to_float64(seed: int) -> None:
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64) * 4095
    tv = TotalVariationDenoiser(50.0, n_iter=60)
    out32 = tv(x.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), tv(x), rtol=0, atol=0.05)


@pytest.mark.parametrize("shape", [(16, 16), (17, 23), (12, 30)])
@pytest.mark.parametrize("weight", [0.05, 1.0])
def test_tv_matches_skimage_chambolle(shape: tuple[int, int], weight: float, seed: int) -> None:
    """Both converge to the unique minimiser of the same discrete ROF energy."""
    restoration = pytest.importorskip("skimage.restoration")
    f = np.random.default_rng(seed).random(shape)
    ref = restoration.denoise_tv_chambolle(f, weight=weight, eps=1e-12, max_num_iter=20000)
    u = _tv(f, weight, n_iter=4000)
    assert np.abs(u - ref).max() < 5e-3  # the dual iteration's last digits converge slowly (intensities in [0, 1])
    assert _rof_energy(u, f, weight) == pytest.approx(_rof_energy(ref, f, weight), rel=1e-4)


def test_tv_rejects_bad_arguments() -> None:
    for kwargs in (
        {"weight": -1.0},
        {"weight": 1.0, "n_iter": -1},
        {"weight": 1.0, "n_iter": 2.5},
        {"weight": 1.0, "tau": 0.3},
    ):
        with pytest.raises(ValueError):
            TotalVariationDenoiser(**kwargs)
    with pytest.raises(ValueError, match="B, C, H, W"):
        TotalVariationDenoiser(1.0)(torch.zeros(4, 4))


# ------------------------------------------------------------------------------------------------------ apodiser


@pytest.mark.parametrize("shape", SHAPES + [(7, 5), (64, 48)])
@pytest.mark.parametrize("factor", [4.0, 3.0, 2.5, 1.0])
def test_apodizer_alpha_0_is_truncation(shape: tuple[int, int], factor: float, seed: int) -> None:
    x = torch.rand(2, 1, *shape, dtype=torch.float64) * 4095
    out = KSpaceApodizer(factor, 0.0)(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    torch.testing.assert_close(out, truncate_kspace(x, factor), rtol=0, atol=1e-12 * 4095)


def _reference_window(n: int, factor: float, alpha: float) -> np.ndarray:
    """The documented weights, one frequency at a time."""
    block = kspace_keep(n, factor)
    half = (block.stop - block.start) / 2
    w = np.zeros(n)
    for index in range(block.start, block.stop):
        u = abs(index - n // 2)
        if alpha == 0 or u <= (1 - alpha) * half:
            w[index] = 1.0
        else:
            w[index] = 0.5 * (1 + math.cos(math.pi * (u - (1 - alpha) * half) / (alpha * half)))
    return w


@pytest.mark.parametrize("n", [8, 9, 16, 17, 181, 217])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_apodizer_window(n: int, alpha: float) -> None:
    w = KSpaceApodizer.window(n, 4.0, alpha).numpy()
    np.testing.assert_allclose(w, _reference_window(n, 4.0, alpha), rtol=0, atol=1e-14)
    assert w[n // 2] == 1.0 and w.min() >= 0 and w.max() <= 1
    block = kspace_keep(n, 4.0)
    assert not w[: block.start].any() and not w[block.stop :].any()
    # for alpha > 0, symmetric about the zero frequency (an even block's unpaired frequency -keep/2 gets 0)
    for u in range(1, n // 2 if alpha > 0 else 0):
        if n // 2 + u < n:
            assert w[n // 2 + u] == pytest.approx(w[n // 2 - u], abs=1e-14)
    if alpha == 1.0:
        half = (block.stop - block.start) / 2
        u = np.arange(block.start, block.stop) - n // 2
        np.testing.assert_allclose(w[block], 0.5 * (1 + np.cos(np.pi * u / half)), atol=1e-14)


@pytest.mark.parametrize("shape", [(20, 20), (21, 26)])
def test_apodizer_against_numpy(shape: tuple[int, int], seed: int) -> None:
    x = np.random.default_rng(seed).random(shape)
    alpha = 0.6
    window = np.outer(_reference_window(shape[0], 4.0, alpha), _reference_window(shape[1], 4.0, alpha))
    spectrum = np.fft.fftshift(np.fft.fft2(x)) * window
    expected = np.abs(np.fft.ifft2(np.fft.ifftshift(spectrum)))
    out = KSpaceApodizer(4.0, alpha)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_apodizer_constant_and_ringing() -> None:
    """A constant is kept; the Hann window removes most of the Gibbs overshoot of a step that plain truncation has."""
    const = torch.full((1, 1, 24, 30), 1234.0, dtype=torch.float64)
    torch.testing.assert_close(KSpaceApodizer(4.0, 0.7)(const), const, rtol=0, atol=1e-9)
    step = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    step[..., 16:48, 16:48] = 1.0
    overshoot = [float(KSpaceApodizer(4.0, a)(step).max()) - 1 for a in (0.0, 0.5, 1.0)]
    assert overshoot[0] > 0.05 and overshoot[0] > overshoot[1] > overshoot[2] and overshoot[2] < 0.02


def test_apodizer_float32_and_arguments() -> None:
    x = torch.rand(1, 2, 16, 12)
    out = KSpaceApodizer(4.0, 0.5)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape and bool((out >= 0).all())
    for factor, alpha in ((0.5, 0.5), (4.0, -0.1), (4.0, 1.5)):
        with pytest.raises(ValueError):
            KSpaceApodizer(factor, alpha)
