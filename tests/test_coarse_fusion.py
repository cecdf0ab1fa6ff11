"""CoarseScaleFusion against an independent float64 reference (area average, Keys bicubic, truncated Gaussian written
out here), its gate on the pixel size inside the Restorer, and the CT bundle's switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_rwkv.inference import Restorer
from monai_rwkv.inferers import CoarseFusionInferer, CoarseScaleFusion, SliceRestorationInferer


def _area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Adaptive average pooling: output pixel o averages input pixels floor(o n / m) .. ceil((o + 1) n / m) - 1."""
    out = np.empty(size)
    (n0, n1), (m0, m1) = image.shape, size
    for a in range(m0):
        r0, r1 = (a * n0) // m0, -((-(a + 1) * n0) // m0)
        for b in range(m1):
            c0, c1 = (b * n1) // m1, -((-(b + 1) * n1) // m1)
            out[a, b] = image[r0:r1, c0:c1].mean()
    return out


def _keys(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    t = np.abs(t)
    return np.where(
        t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0)
    )


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of bicubic interpolation, half-pixel centres (align_corners False), edges clamped."""
    weights = np.zeros((n_out, n_in))
    for o in range(n_out):
        x = (o + 0.5) * n_in / n_out - 0.5
        base = math.floor(x)
        for tap in range(base - 1, base + 3):
            weights[o, min(max(tap, 0), n_in - 1)] += _keys(np.array(x - tap))
    return weights


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3.0 * sigma))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = sum(taps[d] * padded[:, d : d + image.shape[1]] for d in range(2 * radius + 1))
    return sum(taps[d] * rows[d : d + image.shape[0], :] for d in range(2 * radius + 1))


def _reference(image: np.ndarray, restore, factor: int, sigma: float) -> np.ndarray:
    """fine + G(up(restore(down(image))) - fine) for one 2D slice, in float64."""
    fine = restore(image)
    size = tuple(math.ceil(s / factor) for s in image.shape)
    coarse = restore(_area(image, size))
    up = _bicubic_matrix(size[0], image.shape[0]) @ coarse @ _bicubic_matrix(size[1], image.shape[1]).T
    return fine + _gaussian(up - fine, sigma)


def _flat_change(fine: np.ndarray, change: np.ndarray, flat_gradient: float, value_range) -> float:
    """RMS of ``change`` where ``fine`` is inside ``value_range`` and its Sobel gradient (/8, edges replicated) is
    below ``flat_gradient``; NaN without such a pixel."""
    padded = np.pad(fine, 1, mode="edge")
    h, w = fine.shape

    def at(dr: int, dc: int) -> np.ndarray:
        return padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    g_rows = sum(k * (at(1, dc) - at(-1, dc)) for dc, k in ((-1, 1), (0, 2), (1, 1))) / 8
    g_cols = sum(k * (at(dr, 1) - at(dr, -1)) for dr, k in ((-1, 1), (0, 2), (1, 1))) / 8
    flat = (np.hypot(g_rows, g_cols) < flat_gradient) & (fine > value_range[0]) & (fine < value_range[1])
    return float(np.sqrt(np.mean(change[flat] ** 2))) if flat.any() else math.nan


def _conv(seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(1, 1, 3, padding=1).double().eval()


@pytest.mark.parametrize("spatial_dim", [0, 1, 2])
def test_fusion_matches_the_float64_reference_for_every_slice_axis(seed: int, spatial_dim: int) -> None:
    rng = np.random.default_rng(seed)
    factor, sigma = int(rng.integers(2, 4)), float(rng.uniform(0.6, 3.0))
    shape = [int(v) for v in rng.integers(33, 60, 3)]  # odd sizes included: the coarse grid is ceil(n / factor)
    shape[spatial_dim] = 3
    volume = rng.normal(size=(1, 1, *shape)) * rng.uniform(0.1, 50.0) + rng.uniform(-100, 100)
    net, net32 = _conv(seed), _conv(seed).float()
    inferer = SliceRestorationInferer(roi_size=(64, 64), spatial_dim=spatial_dim, transpose=True)
    fusion = CoarseScaleFusion(factor=factor, sigma=sigma, max_pixel_size=1.0, min_size=4)
    with torch.no_grad():
        out = fusion(torch.from_numpy(volume).float(), net32, inferer).double().numpy()

        def restore(image: np.ndarray) -> np.ndarray:  # the slice shown as (rows, columns) = (j, i): transposed
            return net(torch.from_numpy(image.T.copy())[None, None])[0, 0].numpy().T

        slices = np.moveaxis(volume[0, 0], spatial_dim, 0)
        expected = np.stack([_reference(s, restore, factor, sigma) for s in slices])
    got = np.moveaxis(out[0, 0], spatial_dim, 0)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
    assert np.abs(got - net_only(volume, net32, spatial_dim)).max() > 1e-3 * scale  # the coarse pass changed it


def net_only(volume: np.ndarray, net: nn.Module, spatial_dim: int) -> np.ndarray:
    inferer = SliceRestorationInferer(roi_size=(64, 64), spatial_dim=spatial_dim)
    with torch.no_grad():
        out = inferer(torch.from_numpy(volume).float(), net).double().numpy()
    return np.moveaxis(out[0, 0], spatial_dim, 0)


def test_the_gate_keeps_the_fusion_only_on_slices_it_changes_enough(seed: int) -> None:
    """min_change: slices whose flat-region change (float64 reference: independent Sobel, window, RMS) reaches it
    get the fused result, the others the fine pass exactly; the threshold between the slices' own statistics."""
    rng = np.random.default_rng(seed)
    n = 6
    volume = rng.normal(size=(1, 1, 45, 38, n)) * rng.uniform(0.5, 20.0) + rng.uniform(-50, 50)
    volume *= rng.uniform(0.2, 3.0, size=n)  # slices with different change amplitudes
    net = _conv(seed).float()
    inferer = SliceRestorationInferer(roi_size=(64, 64), spatial_dim=2)
    x = torch.from_numpy(volume).float()
    with torch.no_grad():
        fine = inferer(x, net).double().numpy()[0, 0]
        fused = CoarseScaleFusion(min_size=4)(x, net, inferer).double().numpy()[0, 0]
    scale = float(np.abs(fine).std())
    flat_gradient, value_range = 0.8 * scale, (float(np.percentile(fine, 5)), float(np.percentile(fine, 95)))
    stats = np.array(
        [_flat_change(fine[..., k], fused[..., k] - fine[..., k], flat_gradient, value_range) for k in range(n)]
    )
    assert np.isfinite(stats).all()
    threshold = float(np.sort(stats)[n // 2 - 1] + np.sort(stats)[n // 2]) / 2  # half the slices pass
    gate = CoarseScaleFusion(min_size=4, min_change=threshold, flat_gradient=flat_gradient, value_range=value_range)
    with torch.no_grad():
        got = gate(x, net, inferer).double().numpy()[0, 0]
        statistic = gate.flat_change(
            torch.from_numpy(fine).permute(2, 0, 1)[:, None], torch.from_numpy(fused - fine).permute(2, 0, 1)[:, None]
        )
    np.testing.assert_allclose(statistic.numpy(), stats, rtol=1e-4)
    for k in range(n):
        expected = fused[..., k] if stats[k] >= threshold else fine[..., k]
        np.testing.assert_allclose(got[..., k], expected, rtol=0, atol=1e-5 * max(1.0, float(np.abs(fused).max())))
    assert 0 < sum(stats >= threshold) < n


def test_the_gate_leaves_slices_without_flat_pixels_fine(seed: int) -> None:
    volume = torch.from_numpy(np.random.default_rng(seed).normal(size=(1, 1, 40, 40, 2))).float()
    net, inferer = _conv(seed).float(), SliceRestorationInferer(roi_size=(64, 64))
    gate = CoarseScaleFusion(min_size=4, min_change=1e-9, value_range=(1e6, 2e6))  # no value in range
    with torch.no_grad():
        torch.testing.assert_close(gate(volume, net, inferer), inferer(volume, net).float(), rtol=0, atol=0)


def test_a_constant_image_and_an_identity_network_keep_a_constant(seed: int) -> None:
    value = float(np.random.default_rng(seed).uniform(-5, 5))
    volume = torch.full((1, 1, 40, 37, 2), value)
    out = CoarseScaleFusion(min_size=4)(volume, nn.Identity(), SliceRestorationInferer(roi_size=(16, 16)))
    torch.testing.assert_close(out, volume, rtol=0, atol=1e-5 * max(1.0, abs(value)))


def test_the_gate_reads_the_pixel_size_and_the_slice_size() -> None:
    fusion = CoarseScaleFusion(factor=2, max_pixel_size=0.75, min_size=16)
    assert fusion.applies([0.48, 0.48], [512, 512])
    assert fusion.applies([0.75, 0.7], [32, 31])  # ceil(31 / 2) = 16
    assert not fusion.applies([0.48, 0.96], [512, 512])  # the coarser axis decides
    assert not fusion.applies([0.5, 0.5], [512, 30])  # a 15-pixel coarse grid


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_the_gate_of_a_volume_reads_its_affine_along_the_slice_axis(seed: int, slice_axis: int) -> None:
    """A rotated, oblique affine: the pixel size is each in-plane column's norm; the slice spacing never counts."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    spacing = np.full(3, 0.5)
    spacing[slice_axis] = 5.0  # thick slices do not stop the fusion
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing
    affine[:3, 3] = rng.uniform(-200, 200, 3)
    shape = [1, 40, 40, 40]
    fusion = CoarseScaleFusion(max_pixel_size=0.75, min_size=16)
    image = MetaTensor(torch.zeros(shape), affine=torch.from_numpy(affine))
    assert fusion.applies_to(image, slice_axis)
    assert not fusion.applies_to(image, (slice_axis + 1) % 3)  # then a 5 mm axis lies in the plane
    assert not fusion.applies_to(image.as_tensor(), slice_axis)  # no geometry
    coarse = affine.copy()
    coarse[:3, (slice_axis + 1) % 3] *= 1.6  # one in-plane axis at 0.8 mm
    assert not fusion.applies_to(MetaTensor(torch.zeros(shape), affine=torch.from_numpy(coarse)), slice_axis)


def test_the_fusion_as_an_inferer_is_the_fusion(seed: int) -> None:
    """``CoarseFusionInferer(inferer, fusion)(x, net)`` is ``fusion(x, net, inferer)``; extra network arguments are
    passed through to every network call; a non-slice inferer is refused."""
    from monai_rwkv.inferers import RestorationInferer

    rng = np.random.default_rng(seed)
    volume = torch.from_numpy(rng.normal(size=(1, 1, 36, 41, 2))).float()
    net = _conv(seed).float()
    inferer = SliceRestorationInferer(roi_size=(32, 32), overlap=0.25)
    fusion = CoarseScaleFusion(min_size=4)
    with torch.no_grad():
        expected = fusion(volume, net, inferer)
        torch.testing.assert_close(CoarseFusionInferer(inferer, fusion)(volume, net), expected, rtol=0, atol=0)
        scaled = CoarseFusionInferer(inferer, fusion)(volume, lambda x, k: k * net(x), 3.0)
    torch.testing.assert_close(scaled, 3.0 * expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs a slice inferer"):
        CoarseFusionInferer(RestorationInferer((8, 8, 8)), fusion)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"factor": 1}, "factor"),
        ({"factor": 2.5}, "factor"),
        ({"sigma": 0}, "sigma"),
        ({"max_pixel_size": -1}, "max"),
        ({"min_change": -1.0}, "min_change"),
        ({"flat_gradient": 0.0}, "flat_gradient"),
        ({"value_range": (1.0, 0.0)}, "value_range"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CoarseScaleFusion(**kwargs)


def _restorer(fusion: CoarseScaleFusion | None, net: nn.Module) -> Restorer:
    inferer = SliceRestorationInferer(roi_size=(16, 16), overlap=0.25)
    return Restorer(
        net, inferer, lambda v: v, lambda v: v, "cpu", clip_output=False, progress=False, coarse_fusion=fusion
    )


@pytest.mark.parametrize("pixel", [0.5, 0.9])
def test_the_restorer_fuses_only_slices_fine_enough(seed: int, pixel: float) -> None:
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(rng.normal(size=(1, 48, 40, Restorer.slab_size + 3))).float()
    affine = torch.diag(torch.tensor([-pixel, pixel, 2.0, 1.0], dtype=torch.float64))
    net = _conv(seed).float()
    fusion = CoarseScaleFusion(max_pixel_size=0.75)
    with torch.no_grad():
        fused = _restorer(fusion, net)(MetaTensor(data.clone(), affine=affine))
        plain = _restorer(None, net)(MetaTensor(data.clone(), affine=affine))
        direct = fusion(data[None], net, SliceRestorationInferer(roi_size=(16, 16), overlap=0.25))[0]
    torch.testing.assert_close(fused.affine, affine)
    if pixel <= 0.75:
        torch.testing.assert_close(fused.as_tensor(), direct, rtol=0, atol=1e-5)  # across slabs, as one call
        assert float((fused - plain).abs().max()) > 1e-3
    else:
        torch.testing.assert_close(fused.as_tensor(), plain.as_tensor(), rtol=0, atol=0)
    assert _restorer(fusion, net).describe()["coarse_fusion"] == {
        "factor": 2,
        "sigma": 1.5,
        "max_pixel_size": 0.75,
        "min_change": 0.0,
        "flat_gradient": None,
        "value_range": None,
    }


def test_a_plain_tensor_has_no_pixel_size_and_keeps_its_grid(seed: int) -> None:
    data = torch.from_numpy(np.random.default_rng(seed).normal(size=(1, 40, 40, 2))).float()
    net = _conv(seed).float()
    with torch.no_grad():
        torch.testing.assert_close(
            _restorer(CoarseScaleFusion(max_pixel_size=5.0), net)(data), _restorer(None, net)(data), rtol=0, atol=0
        )


def test_the_restorer_refuses_fusion_without_a_slice_inferer() -> None:
    from monai_rwkv.inferers import RestorationInferer

    with pytest.raises(ValueError, match="coarse_fusion needs a slice inferer"):
        Restorer(
            nn.Identity(),
            RestorationInferer((8, 8, 8)),
            lambda v: v,
            lambda v: v,
            "cpu",
            coarse_fusion=CoarseScaleFusion(),
        )
