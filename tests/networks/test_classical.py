"""Classical denoisers against float64 direct loops (and scipy for the Gaussian)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_rwkv.inference import SliceWiseRestorer
from monai_rwkv.networks.nets import BilateralDenoiser, GaussianDenoiser, NonLocalMeansDenoiser
from monai_rwkv.networks.nets.classical import reflect_pad2d


def _reflect(i: int, n: int) -> int:
    """Whole-sample reflection of an index into [0, n), by repeated folding (independent of the module's formula)."""
    if n == 1:
        return 0
    while not 0 <= i < n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def _at(img: np.ndarray, y: int, x: int) -> float:
    return float(img[_reflect(y, img.shape[0]), _reflect(x, img.shape[1])])


def _bilateral_ref(img: np.ndarray, ss: float, sr: float, r: int) -> np.ndarray:
    out = np.empty_like(img)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            num = den = 0.0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    v = _at(img, y + dy, x + dx)
                    w = math.exp(-(dy * dy + dx * dx) / (2 * ss * ss) - (v - img[y, x]) ** 2 / (2 * sr * sr))
                    num, den = num + w * v, den + w
            out[y, x] = num / den
    return out


def _nlm_ref(img: np.ndarray, h: float, p: int, s: int, sigma: float) -> np.ndarray:
    out = np.empty_like(img)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            num = den = 0.0
            for dy in range(-s, s + 1):
                for dx in range(-s, s + 1):
                    d = np.mean(
                        [
                            (_at(img, y + u, x + v) - _at(img, y + dy + u, x + dx + v)) ** 2
                            for u in range(-p, p + 1)
                            for v in range(-p, p + 1)
                        ]
                    )
                    w = math.exp(-max(d - 2 * sigma**2, 0.0) / h**2)
                    num, den = num + w * _at(img, y + dy, x + dx), den + w
            out[y, x] = num / den
    return out


def test_reflect_pad_matches_numpy_and_any_width(seed):
    x = torch.rand(2, 1, 5, 7, dtype=torch.float64)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (4, 4)), mode="reflect")
    np.testing.assert_array_equal(reflect_pad2d(x, 3, 4).numpy(), expected)
    wide = reflect_pad2d(x, 9, 11)  # wider than the image: periodic reflection
    for y in range(wide.shape[-2]):
        for xx in range(wide.shape[-1]):
            assert wide[1, 0, y, xx] == x[1, 0, _reflect(y - 9, 5), _reflect(xx - 11, 7)]


@pytest.mark.parametrize("sigma", [0.6, 1.3, 2.5])
def test_gaussian_matches_scipy(seed, sigma):
    x = torch.rand(2, 1, 19, 23, dtype=torch.float64)
    out = GaussianDenoiser(sigma)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for b in range(2):
        ref = ndimage.gaussian_filter(x[b, 0].numpy(), sigma, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(out[b, 0].numpy(), ref, rtol=0, atol=1e-12)
    out32 = GaussianDenoiser(sigma)(x.float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.double().numpy(), out.numpy(), rtol=0, atol=1e-6)


def test_gaussian_zero_sigma_is_identity(seed):
    x = torch.rand(1, 1, 8, 9)
    torch.testing.assert_close(GaussianDenoiser(0.0)(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("ss, sr, radius", [(1.0, 0.1, None), (1.7, 0.3, 2), (0.8, 0.05, 3)])
def test_bilateral_matches_loop(seed, ss, sr, radius):
    x = torch.rand(2, 1, 9, 11, dtype=torch.float64)
    f = BilateralDenoiser(ss, sr, radius)
    out = f(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    r = math.ceil(2 * ss) if radius is None else radius
    assert f.radius == r
    for b in range(2):
        np.testing.assert_allclose(out[b, 0].numpy(), _bilateral_ref(x[b, 0].numpy(), ss, sr, r), rtol=0, atol=1e-12)
    np.testing.assert_allclose(f(x.float()).double().numpy(), out.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("h, p, s, sigma", [(0.2, 1, 2, 0.0), (0.15, 0, 3, 0.0), (0.3, 2, 2, 0.05)])
def test_nlm_matches_loop(seed, h, p, s, sigma):
    x = torch.rand(1, 2, 7, 8, dtype=torch.float64)  # two channels, filtered independently
    f = NonLocalMeansDenoiser(h, patch_radius=p, search_radius=s, sigma=sigma)
    out = f(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for c in range(2):
        np.testing.assert_allclose(out[0, c].numpy(), _nlm_ref(x[0, c].numpy(), h, p, s, sigma), rtol=0, atol=1e-12)
    np.testing.assert_allclose(f(x.float()).double().numpy(), out.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "module",
    [GaussianDenoiser(1.5), BilateralDenoiser(1.5, 0.01), NonLocalMeansDenoiser(0.01, 1, 3)],
    ids=["gaussian", "bilateral", "nlm"],
)
def test_constant_image_unchanged_and_smoothing_reduces_noise(seed, module):
    const = torch.full((2, 1, 16, 20), 0.37)
    torch.testing.assert_close(module(const), const, rtol=0, atol=1e-6)
    assert len(module.state_dict()) == 0
    clean = torch.full((1, 1, 48, 48), 0.3)
    noisy = clean + 0.003 * torch.randn_like(clean)
    out = module(noisy.contiguous(memory_format=torch.channels_last))
    assert out.shape == noisy.shape
    assert ((out - clean) ** 2).mean() < 0.5 * ((noisy - clean) ** 2).mean()


def test_bilateral_keeps_edges(seed):
    step = torch.zeros(1, 1, 12, 12)
    step[..., 6:] = 1.0
    torch.testing.assert_close(BilateralDenoiser(2.0, 0.05)(step), step, rtol=0, atol=1e-6)
    assert (GaussianDenoiser(2.0)(step) - step).abs().max() > 0.1


def test_through_slice_wise_restorer(seed):
    volume = 40 + 20 * torch.randn(1, 24, 20, 2)  # (C, i, j, k) HU
    f = GaussianDenoiser(1.0)
    restorer = SliceWiseRestorer(f, roi_size=(20, 24), device="cpu", amp=False, progress=False)
    out = restorer(volume)
    for k in range(2):
        expected = f(((volume[0, :, :, k].T + 1024) / 4096)[None, None])[0, 0].T * 4096 - 1024
        torch.testing.assert_close(out[0, :, :, k], expected, rtol=0, atol=1e-3)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        GaussianDenoiser(-1.0)
    with pytest.raises(ValueError):
        BilateralDenoiser(1.0, 0.0)
    with pytest.raises(ValueError):
        NonLocalMeansDenoiser(0.0)
    with pytest.raises(ValueError):
        GaussianDenoiser(1.0)(torch.zeros(4, 4))


def test_bm3d_matches_the_package_per_image_and_denoises(seed: int) -> None:
    bm3d = pytest.importorskip("bm3d")
    from monai_rwkv.networks.nets import BM3DDenoiser  # noqa: PLC0415

    rng = np.random.RandomState(seed)
    clean = np.cumsum(rng.uniform(-1, 1, (2, 1, 40, 36)), axis=2) * 20.0  # smooth random structure, HU-like scale
    noisy = clean + rng.normal(0.0, 25.0, clean.shape)
    out = BM3DDenoiser(25.0)(torch.from_numpy(noisy).float())
    assert out.shape == noisy.shape and out.dtype == torch.float32
    for b in range(2):
        direct = bm3d.bm3d(noisy[b, 0].astype(np.float32).astype(np.float64), sigma_psd=25.0)
        np.testing.assert_allclose(out[b, 0].numpy(), direct, rtol=0, atol=1e-3)
    assert np.abs(out.double().numpy() - clean).mean() < 0.7 * np.abs(noisy - clean).mean()


def test_bm3d_arguments_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys  # noqa: PLC0415

    from monai_rwkv.networks.nets import BM3DDenoiser  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "bm3d", None)  # what an environment without the package sees
    with pytest.raises(ImportError, match="pip install bm3d"):
        BM3DDenoiser(10.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        BM3DDenoiser(0.0)
