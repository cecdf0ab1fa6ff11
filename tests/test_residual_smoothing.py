"""ResidualSmoothing against an independent float64 reference (Sobel, flat region, sample standard deviation and
non-local means written out here), inside the Restorer and as an inferer, and the CT bundle's switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_rwkv.inference import Restorer
from monai_rwkv.inferers import (
    CoarseFusionInferer,
    CoarseScaleFusion,
    ResidualSmoothing,
    ResidualSmoothingInferer,
    RestorationInferer,
    SliceRestorationInferer,
)


def _sobel(image: np.ndarray) -> np.ndarray:
    """Sobel magnitude / 8, edges replicated."""
    p = np.pad(image, 1, mode="edge")
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:] - p[:-2, :-2] - 2 * p[:-2, 1:-1] - p[:-2, 2:]) / 8
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:] - p[:-2, :-2] - 2 * p[1:-1, :-2] - p[2:, :-2]) / 8
    return np.hypot(gx, gy)


def _reflect(i: int, n: int) -> int:
    period = 2 * (n - 1)
    i %= period
    return period - i if i >= n else i


def _nlm(image: np.ndarray, h: float, p: int, s: int) -> np.ndarray:
    """Non-local means by its definition: whole-sample reflection, mean squared patch distance, exp(-d / h^2)."""
    rows, cols = image.shape

    def at(y: int, x: int) -> float:
        return image[_reflect(y, rows), _reflect(x, cols)]

    out = np.empty_like(image)
    for y in range(rows):
        for x in range(cols):
            num = den = 0.0
            for dy in range(-s, s + 1):
                for dx in range(-s, s + 1):
                    d = np.mean(
                        [
                            (at(y + u, x + v) - at(y + dy + u, x + dx + v)) ** 2
                            for u in range(-p, p + 1)
                            for v in range(-p, p + 1)
                        ]
                    )
                    w = math.exp(-d / h**2)
                    num, den = num + w * at(y + dy, x + dx), den + w
            out[y, x] = num / den
    return out


def _reference(inputs: np.ndarray, restored: np.ndarray, settings: dict) -> tuple[float, np.ndarray]:
    """(h, result) for one 2D slice in float64."""
    flat = np.ones(restored.shape, dtype=bool)
    if settings.get("flat_gradient") is not None:
        flat &= _sobel(restored) < settings["flat_gradient"]
    if settings.get("value_range") is not None:
        low, high = settings["value_range"]
        flat &= (restored > low) & (restored < high)
    if flat.sum() < settings.get("min_pixels", 100):
        return 0.0, restored
    removed = (inputs - restored)[flat]
    h = settings.get("scale", 1.0) * max(float(np.std(removed, ddof=1)) - settings.get("threshold", 0.0), 0.0)
    if h == 0:
        return 0.0, restored
    return h, _nlm(restored, h, settings.get("patch_radius", 2), settings.get("search_radius", 5))


def _noisy_slices(rng: np.random.Generator, n: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth 'restored' slices and inputs that add noise of a different level to each slice."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    restored = np.stack(
        [
            rng.uniform(-1, 1) * np.sin(xx / rng.uniform(3, 9)) + rng.uniform(-1, 1) * np.cos(yy / rng.uniform(3, 9))
            for _ in range(n)
        ]
    )
    restored = restored * rng.uniform(0.5, 30.0) + rng.uniform(-50, 50)
    restored += rng.normal(size=restored.shape) * rng.uniform(0.05, 0.5)  # a mottle left by the "network"
    levels = rng.uniform(0.0, 4.0, size=(n, 1, 1)) * rng.uniform(0.5, 3.0)
    inputs = restored + rng.normal(size=restored.shape) * levels
    return inputs, restored


def test_smoothing_matches_the_float64_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, rows, cols = 5, int(rng.integers(11, 17)), int(rng.integers(11, 17))
    inputs, restored = _noisy_slices(rng, n, rows, cols)
    settings = {
        "scale": float(rng.uniform(0.5, 2.0)),
        "threshold": float(np.median(np.std(inputs - restored, axis=(1, 2)))),  # some slices above, some below
        "patch_radius": int(rng.integers(0, 3)),
        "search_radius": int(rng.integers(1, 4)),
        "flat_gradient": float(np.quantile(np.stack([_sobel(r) for r in restored]), 0.8)),
        "value_range": (float(restored.min()) - 1.0, float(np.quantile(restored, 0.9))),
        "min_pixels": 20,
    }
    smoothing = ResidualSmoothing(**settings)
    x, y = torch.from_numpy(inputs)[:, None], torch.from_numpy(restored)[:, None]
    strengths = smoothing.strengths(x, y).double().numpy()
    got = smoothing(x, y).double().numpy()[:, 0]
    expected = [_reference(i, r, settings) for i, r in zip(inputs, restored)]
    np.testing.assert_allclose(strengths, [h for h, _ in expected], rtol=1e-5, atol=1e-6)
    scale = float(np.abs(restored).max())
    for k, (h, want) in enumerate(expected):
        np.testing.assert_allclose(got[k], want, rtol=0, atol=2e-5 * scale)
        if h == 0:
            np.testing.assert_array_equal(got[k], restored[k].astype(np.float32))  # untouched, bit for bit
    assert any(h > 0 for h, _ in expected) and any(h == 0 for h, _ in expected)


def test_slices_with_too_few_flat_pixels_are_left_as_restored(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inputs, restored = _noisy_slices(rng, 3, 12, 12)
    x, y = torch.from_numpy(inputs).float()[:, None], torch.from_numpy(restored).float()[:, None]
    high = float(restored.max()) + 1.0
    smoothing = ResidualSmoothing(value_range=(high, high + 1.0), min_pixels=2)  # no pixel in range
    assert torch.equal(smoothing.strengths(x, y), torch.zeros(3))
    assert torch.equal(smoothing(x, y), y)


@pytest.mark.parametrize("slice_axis", [2, 3, 4])
def test_volumes_are_smoothed_slice_by_slice_along_any_axis(seed: int, slice_axis: int) -> None:
    rng = np.random.default_rng(seed)
    inputs, restored = _noisy_slices(rng, 4, 13, 11)  # (n, rows, cols)
    smoothing = ResidualSmoothing(threshold=0.0, search_radius=2, min_pixels=2)
    per_slice = smoothing(torch.from_numpy(inputs).float()[:, None], torch.from_numpy(restored).float()[:, None])
    order = {2: (0, 1, 2), 3: (1, 0, 2), 4: (1, 2, 0)}[slice_axis]  # the slice axis moved to slice_axis
    vol_in = torch.from_numpy(np.transpose(inputs, order).copy()).float()[None, None]
    vol_out = torch.from_numpy(np.transpose(restored, order).copy()).float()[None, None]
    got = smoothing.apply(vol_in, vol_out, slice_axis)
    torch.testing.assert_close(got.movedim(slice_axis, 2)[0, 0], per_slice[:, 0], rtol=0, atol=0)


def _restorer(smoothing: ResidualSmoothing | None, net: nn.Module, fusion: CoarseScaleFusion | None = None) -> Restorer:
    inferer = SliceRestorationInferer(roi_size=(16, 16), overlap=0.25)
    return Restorer(
        net,
        inferer,
        lambda v: v,
        lambda v: v,
        "cpu",
        clip_output=False,
        progress=False,
        coarse_fusion=fusion,
        residual_smoothing=smoothing,
    )


class _Shrink(nn.Module):
    """A 'network' that keeps a fraction of each pixel's deviation from its slice's mean: it removes noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1), keepdim=True) + 0.3 * (x - x.mean(dim=(-2, -1), keepdim=True))


def test_the_restorer_smooths_after_the_network_and_the_fusion(seed: int) -> None:
    """The Restorer's result (across slabs) is the smoothing of what it restores without it, with or without the
    coarse-scale fusion before it; describe() records the settings."""
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(rng.normal(size=(1, 24, 20, Restorer.slab_size + 3)) * rng.uniform(0.5, 5.0)).float()
    data *= torch.from_numpy(rng.uniform(0.2, 2.0, size=data.shape[-1])).float()  # slices of different noise
    affine = torch.diag(torch.tensor([-0.5, 0.5, 2.0, 1.0], dtype=torch.float64))
    for fusion in (None, CoarseScaleFusion(min_size=4)):
        with torch.no_grad():
            plain = _restorer(None, _Shrink(), fusion)(MetaTensor(data.clone(), affine=affine))
        planes = (data[0].permute(2, 0, 1)[:, None], plain.as_tensor()[0].permute(2, 0, 1)[:, None])
        removed = ResidualSmoothing(min_pixels=10).strengths(*planes)  # scale 1, threshold 0: the removed std
        smoothing = ResidualSmoothing(1.5, float(removed.median()), search_radius=2, min_pixels=10)  # half above
        with torch.no_grad():
            smoothed = _restorer(smoothing, _Shrink(), fusion)(MetaTensor(data.clone(), affine=affine))
        expected = smoothing.apply(data[None], plain.as_tensor()[None], 4)[0]
        torch.testing.assert_close(smoothed.as_tensor(), expected, rtol=0, atol=1e-6)
        changed = (smoothed - plain).abs().amax(dim=(0, 1, 2))
        h = smoothing.strengths(*planes)
        assert bool((h > 0).any()) and bool((h == 0).any())
        assert not bool(((changed > 0) & (h == 0)).any()) and bool((changed > 0).any())  # only slices above it move
    assert _restorer(smoothing, _Shrink()).describe()["residual_smoothing"] == {
        "scale": 1.5,
        "threshold": smoothing.threshold,
        "patch_radius": 2,
        "search_radius": 2,
        "flat_gradient": None,
        "value_range": None,
        "min_pixels": 10,
    }


def test_the_smoothing_as_an_inferer_is_the_smoothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(1, 1, 20, 18, 3)) * rng.uniform(1, 9)).float()
    smoothing = ResidualSmoothing(search_radius=2, min_pixels=10)
    inner = SliceRestorationInferer(roi_size=(16, 16), overlap=0.25)
    with torch.no_grad():
        restored = inner(x, _Shrink())
        got = ResidualSmoothingInferer(inner, smoothing)(x, _Shrink())
        fused = ResidualSmoothingInferer(CoarseFusionInferer(inner, CoarseScaleFusion(min_size=4)), smoothing)(
            x, _Shrink()
        )
        fused_alone = CoarseFusionInferer(inner, CoarseScaleFusion(min_size=4))(x, _Shrink())
    torch.testing.assert_close(got, smoothing.apply(x, restored, 4), rtol=0, atol=0)
    torch.testing.assert_close(fused, smoothing.apply(x, fused_alone, 4), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0.0}, "scale must be > 0"),
        ({"threshold": -1.0}, "threshold must be >= 0"),
        ({"search_radius": 0}, "search_radius >= 1"),
        ({"flat_gradient": 0.0}, "flat_gradient must be > 0"),
        ({"value_range": (1.0, 0.0)}, "low < high"),
        ({"min_pixels": 1}, "min_pixels must be >= 2"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResidualSmoothing(**kwargs)


def test_smoothing_needs_a_slice_inferer() -> None:
    volume_inferer, same = RestorationInferer((8, 8, 8)), lambda v: v
    with pytest.raises(ValueError, match="residual smoothing needs a slice inferer"):
        ResidualSmoothingInferer(volume_inferer, ResidualSmoothing())
    with pytest.raises(ValueError, match="residual_smoothing needs a slice inferer"):
        Restorer(nn.Identity(), volume_inferer, same, same, "cpu", residual_smoothing=ResidualSmoothing())
