"""The per-slice noise-level estimate and the level channel: against an independent float64 reference, on images of
known noise with edges, and its invariances and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms import NoiseLevelMap, NoiseLevelMapd, estimate_noise_level, noise_level_channel


def reference_level(image: np.ndarray) -> float:
    """The estimator written out pixel by pixel in float64: the median |second-difference response| over 3x3
    neighbourhoods that are finite, not constant and away from the image's extremes, / (6 * 0.6745)."""
    finite = np.isfinite(image)
    low, high = image[finite].min(), image[finite].max()
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    values = []
    for r in range(image.shape[0] - 2):
        for c in range(image.shape[1] - 2):
            window = image[r : r + 3, c : c + 3].astype(np.float64)
            if not np.isfinite(window).all() or window.min() <= low or window.max() >= high:
                continue
            if window.max() == window.min():
                continue
            values.append(abs(float((window * kernel).sum())))
    if not values:
        return 0.0
    lower_median = np.sort(values)[(len(values) - 1) // 2]  # of an even count: the lower of the middle two
    return float(lower_median) / (6.0 * 0.6744897501960817)


def phantom(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Piecewise-smooth: a ramp, a disc and a bright bar (edges in a minority of the pixels)."""
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    image = rng.uniform(-5, 5) + rng.uniform(-2, 2) * rows + rng.uniform(-2, 2) * cols
    image += rng.uniform(1, 10) * (((rows - 0.4) ** 2 + (cols - 0.5) ** 2) < 0.06)
    image[size[0] // 3 : size[0] // 3 + 4] += rng.uniform(5, 20)
    return image


def test_matches_the_float64_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(3):
        image = phantom(rng, (37, 29)) * rng.uniform(0.01, 100.0)
        image += rng.normal(size=image.shape) * rng.uniform(0.01, 3.0) * np.abs(image).mean()
        image[: rng.integers(0, 5)] = image.min() - 1.0  # a clipped band touching the minimum
        images.append(image)
    images[1][5, 7] = np.nan
    got = estimate_noise_level(torch.from_numpy(np.stack(images)).float())
    expected = [reference_level(image.astype(np.float32)) for image in images]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, err_msg=f"seed {seed}")


@pytest.mark.parametrize("sigma", [0.001, 0.03, 1.0, 40.0])
def test_recovers_white_noise_on_images_with_edges(sigma: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clean = phantom(rng, (256, 256)) * 50.0
    noisy = clean + rng.normal(0.0, sigma, clean.shape)
    level = float(estimate_noise_level(torch.from_numpy(noisy[None]).float())[0])
    # float32 rounding of the image adds about 1e-7 of its magnitude (here up to ~1e3: 1e-4) to tiny levels
    assert level == pytest.approx(sigma, rel=0.06, abs=2e-4), f"seed {seed}"


def test_invariant_to_offset_and_equivariant_to_scale(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(phantom(rng, (64, 48)) + rng.normal(0, 0.5, (64, 48)))[None]
    level = estimate_noise_level(image.double())
    offset, scale = float(rng.uniform(-1e3, 1e3)), float(rng.uniform(0.01, 100))
    # computed in float32: an offset of 1e3 leaves about 1e-4 of the image's own resolution
    torch.testing.assert_close(estimate_noise_level((image + offset).double()), level, rtol=1e-3, atol=0)
    torch.testing.assert_close(estimate_noise_level((image * scale).double()), level * scale, rtol=1e-4, atol=0)


def test_constant_and_clipped_images_have_no_noise() -> None:
    images = torch.zeros(3, 16, 16)
    images[1] = 0.25
    images[2, :, :8] = 1.0  # two plateaus: every neighbourhood is constant or touches an extreme
    assert torch.equal(estimate_noise_level(images), torch.zeros(3))
    assert noise_level_channel(torch.zeros(1), 0.01).item() == -8.0
    assert noise_level_channel(torch.tensor([0.02]), 0.01).item() == pytest.approx(1.0)


def test_map_of_a_volume_has_one_level_per_slice_along_slice_dim(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # six levels 0.85 octave apart in random order: each slice's map must name its own level and no other
    # (the estimator's accuracy is tested above; here it reads up to ~0.15 octave high where edges are dense)
    ladder = np.log2(0.01 * 1.8 ** np.arange(6)) + rng.uniform(-0.1, 0.1)
    sigmas = 2.0 ** rng.permutation(ladder)
    for slice_dim in (0, 1, 2):
        volume = np.moveaxis(np.stack([phantom(rng, (96, 96)) for _ in range(6)]), 0, slice_dim)
        noise = rng.normal(size=volume.shape) * np.expand_dims(sigmas, tuple(a for a in range(3) if a != slice_dim))
        image = MetaTensor(torch.from_numpy(volume + noise)[None].float(), meta={"pixdim": [1.0, 0.5, 0.5, 2.0]})
        out = NoiseLevelMap(reference=0.05, slice_dim=slice_dim)(image)
        assert isinstance(out, MetaTensor) and out.meta["pixdim"] == [1.0, 0.5, 0.5, 2.0]
        assert out.shape == (2, *image.shape[1:]) and torch.equal(out[0], image[0].as_tensor())
        for k in range(6):
            index = [slice(None)] * 3
            index[slice_dim] = k
            level_map = out[1][tuple(index)]
            expected = noise_level_channel(estimate_noise_level(image[0][tuple(index)].as_tensor()[None]), 0.05)
            # one value over the slice: its own slice's estimate (alone or in the batch of the volume's slices
            # the convolution rounds differently, which can move the median response: up to 5e-5 octave seen)
            assert torch.all(level_map == level_map.flatten()[0])
            assert abs(float(level_map.flatten()[0]) - float(expected[0])) < 1e-3
            distance = np.abs(float(level_map[0, 0]) - np.log2(sigmas / 0.05))
            assert int(distance.argmin()) == k and distance[k] < 0.3, f"seed {seed}: {distance}"


def test_dictionary_version_and_2d_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(
        np.stack([phantom(rng, (30, 30)), phantom(rng, (30, 30))]) + rng.normal(0, 0.1, (2, 30, 30))
    )
    out = NoiseLevelMapd(keys="image", reference=0.1)({"image": image, "label": image})
    assert out["image"].shape == (4, 30, 30) and torch.equal(out["label"], image)
    levels = noise_level_channel(estimate_noise_level(image), 0.1)
    assert torch.all(out["image"][2] == levels[0]) and torch.all(out["image"][3] == levels[1])


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="reference must be > 0"):
        NoiseLevelMap(reference=0.0)
    with pytest.raises(ValueError, match="slice_dim must be 0, 1 or 2"):
        NoiseLevelMap(slice_dim=3)
    with pytest.raises(ValueError, match=r"channel-first 2D image \(C, H, W\) or volume"):
        NoiseLevelMap()(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="at least 3 x 3"):
        estimate_noise_level(torch.zeros(1, 2, 9))
