"""The MRI baselines' classical modules: total-variation denoising (Chambolle), Tukey k-space apodisation and the
data-consistent TV reconstruction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_rwkv.networks.nets.classical import KSpaceApodizer, TotalVariationDenoiser, TVKSpaceReconstruction
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
    # eps=0: all 20,000 iterations (skimage's relative-change stop can end early: at eps=1e-12 it stopped 6.5e-4
    # above the minimum for one seed, which this implementation then undercut)
    ref = restoration.denoise_tv_chambolle(f, weight=weight, eps=0.0, max_num_iter=20000)
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


# ------------------------------------------------------------------------------------------ TV reconstruction


def _fixed_spectrum(x: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """
    The documented measured data, built independently in fftshift order: the kept block of ``fft2(x)`` and its point
    reflection (signed frequency ``-u`` of every kept ``u``: index ``(2 (n // 2) - s) mod n``), returned unshifted as
    (mask, spectrum on the mask and 0 elsewhere).
    """
    h, w = x.shape[-2:]
    spectrum = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    mask = np.zeros((h, w), dtype=bool)
    for s in range(*kspace_keep(h, factor).indices(h)):
        for t in range(*kspace_keep(w, factor).indices(w)):
            mask[s, t] = True
            mask[(2 * (h // 2) - s) % h, (2 * (w // 2) - t) % w] = True
    mask = np.fft.ifftshift(mask)
    return mask, np.fft.ifftshift(spectrum, axes=(-2, -1)) * mask


def _phantom(h: int, w: int) -> torch.Tensor:
    """Piecewise-constant disks and a rectangle in [0, 2000] (float64, (H, W))."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    image = torch.zeros(h, w, dtype=torch.float64)
    for (cy, cx, ry, rx), value in (
        ((0.5, 0.5, 0.4, 0.42), 800.0),
        ((0.4, 0.4, 0.15, 0.12), 1600.0),
        ((0.65, 0.3, 0.08, 0.08), 2000.0),
    ):
        image[((y - cy * h) / (ry * h)) ** 2 + ((x - cx * w) / (rx * w)) ** 2 <= 1] = value
    image[int(0.55 * h) : int(0.75 * h), int(0.55 * w) : int(0.7 * w)] = 300.0
    return image


def _psnr(pred: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10((ref.max() - ref.min()) ** 2 / ((pred - ref) ** 2).mean()))


@pytest.mark.parametrize("shape", SHAPES + [(64, 48), (8, 8)])
@pytest.mark.parametrize("factor", [4.0, 3.0])
def test_tv_recon_mask(shape: tuple[int, int], factor: float) -> None:
    """The fixed frequencies: the kept block and its Hermitian partners, closed under k -> -k."""
    x = np.zeros(shape)
    expected, _ = _fixed_spectrum(x, factor)
    mask = TVKSpaceReconstruction(factor, 1.0).mask(*shape)
    assert mask.dtype == torch.bool and mask.shape == shape
    np.testing.assert_array_equal(mask.numpy(), expected)
    flipped = np.roll(np.flip(mask.numpy(), (0, 1)), (1, 1), axis=(0, 1))  # index k -> -k mod n
    np.testing.assert_array_equal(mask.numpy(), flipped)
    block = torch.fft.fftshift(mask)[kspace_keep(shape[0], factor), kspace_keep(shape[1], factor)]
    assert bool(block.all())
    odd = all((b.stop - b.start) % 2 for b in (kspace_keep(n, factor) for n in shape))
    assert (int(mask.sum()) == block.numel()) == odd  # an even block's unpaired frequency gets its partner


@pytest.mark.parametrize("shape", SHAPES)
def test_tv_recon_weight_0_is_data_consistency_only(shape: tuple[int, int], seed: int) -> None:
    """weight 0 (or n_iter 0): the zero-filled real image of the measured data, or the input for start "input"."""
    image = torch.rand(2, 1, *shape, dtype=torch.float64) * 4095
    x = truncate_kspace(image, 4.0)  # the zero-filled magnitude input
    _, fixed = _fixed_spectrum(x.numpy(), 4.0)
    zero_filled = torch.from_numpy(np.fft.ifft2(fixed).real)
    assert float(np.abs(np.fft.ifft2(fixed).imag).max()) < 1e-9 * 4095  # Hermitian: real up to rounding
    for module in (TVKSpaceReconstruction(4.0, 0.0, n_iter=5), TVKSpaceReconstruction(4.0, 30.0, n_iter=0)):
        out = module(x)
        assert out.dtype == torch.float64 and out.shape == x.shape
        torch.testing.assert_close(out, zero_filled, rtol=0, atol=1e-9 * 4095)
    for module in (
        TVKSpaceReconstruction(4.0, 0.0, n_iter=5, start="input"),
        TVKSpaceReconstruction(4.0, 30.0, n_iter=0, start="input"),
    ):
        torch.testing.assert_close(module(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES + [(64, 48)])
@pytest.mark.parametrize("start", ["zero_filled", "input"])
def test_tv_recon_keeps_the_measured_block(shape: tuple[int, int], start: str, seed: int) -> None:
    """The output's kept block (and its partners) equals the input's, to FFT rounding; elsewhere it changed."""
    x = truncate_kspace(torch.rand(2, 2, *shape, dtype=torch.float64) * 4095, 4.0)
    out = TVKSpaceReconstruction(4.0, 40.0, n_iter=6, tv_iter=4, start=start)(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    mask, fixed = _fixed_spectrum(x.numpy(), 4.0)
    spectrum = np.fft.fft2(out.numpy())
    scale = np.abs(fixed).max()
    assert np.abs(spectrum[..., mask] - fixed[..., mask]).max() < 1e-12 * scale
    assert np.abs(spectrum[..., ~mask] - np.fft.fft2(x.numpy())[..., ~mask]).max() > 1e-3 * scale


@pytest.mark.parametrize("shape", [(64, 64), (63, 70)])
def test_tv_recon_beats_zero_filling_on_a_phantom(shape: tuple[int, int]) -> None:
    """Piecewise-constant truth truncated x4: about +2 dB over the input, where TV denoising alone gains < 0.5 dB."""
    truth = _phantom(*shape)[None, None]
    x = truncate_kspace(truth, 4.0)
    out = TVKSpaceReconstruction(4.0, 50.0, n_iter=50, tv_iter=20)(x)
    denoised = max(_psnr(TotalVariationDenoiser(w, n_iter=200)(x), truth) for w in (10.0, 30.0, 100.0, 300.0))
    assert _psnr(out, truth) > _psnr(x, truth) + 1.5
    assert _psnr(out, truth) > denoised + 1.0
    # float32 gives the same reconstruction up to rounding
    out32 = TVKSpaceReconstruction(4.0, 50.0, n_iter=50, tv_iter=20)(x.float())
    assert out32.dtype == torch.float32
    assert abs(_psnr(out32.double(), truth) - _psnr(out, truth)) < 0.01


def test_tv_recon_independent_and_transposable(seed: int) -> None:
    """Batch items and channels are reconstructed independently; transposing the image commutes."""
    x = truncate_kspace(torch.rand(3, 2, 17, 22, dtype=torch.float64) * 4095, 4.0)
    module = TVKSpaceReconstruction(4.0, 60.0, n_iter=4, tv_iter=3, start="input")
    out = module(x)
    torch.testing.assert_close(module(x[1:2, 1:2]), out[1:2, 1:2], rtol=0, atol=1e-9)
    torch.testing.assert_close(module(x.transpose(-1, -2)), out.transpose(-1, -2), rtol=0, atol=1e-9)
    assert module.extra_repr() == "factor=4.0, weight=60.0, n_iter=4, tv_iter=3, start='input'"


def test_tv_recon_rejects_bad_arguments() -> None:
    for kwargs in (
        {"factor": 0.5, "weight": 1.0},
        {"factor": 4.0, "weight": -1.0},
        {"factor": 4.0, "weight": 1.0, "n_iter": -1},
        {"factor": 4.0, "weight": 1.0, "n_iter": 1.5},
        {"factor": 4.0, "weight": 1.0, "tv_iter": 0},
        {"factor": 4.0, "weight": 1.0, "start": "zeros"},
    ):
        with pytest.raises(ValueError):
            TVKSpaceReconstruction(**kwargs)
    with pytest.raises(ValueError, match="B, C, H, W"):
        TVKSpaceReconstruction(4.0, 1.0)(torch.zeros(4, 4))
