"""Per-volume percentile scaling (monai_rwkv/transforms/intensity.py): exact statistics, exact inverse, meta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms.intensity import (
    SCALE_KEY,
    RestoreIntensityScale,
    RestoreIntensityScaled,
    ScaleToPercentile,
    ScaleToPercentiled,
    percentile_scale,
)


def _volume(rng: np.random.Generator, shape=(1, 23, 19, 7)) -> np.ndarray:
    """Non-negative MR-like values over a wide range with a zero background and a few hot voxels."""
    data = rng.gamma(2.0, rng.uniform(1, 5000), size=shape)
    data[rng.random(shape) < 0.4] = 0.0
    data.flat[rng.integers(0, data.size, 3)] *= 50
    return data


@pytest.mark.parametrize("nonzero", [True, False])
@pytest.mark.parametrize("percentile", [50.0, 99.5, 100.0])
def test_percentile_is_numpys_nearest_order_statistic(seed: int, percentile: float, nonzero: bool) -> None:
    data = _volume(np.random.default_rng(seed))
    values = data[data > 0] if nonzero else data.ravel()
    expected = np.percentile(values, percentile, method="nearest")
    assert percentile_scale(torch.from_numpy(data), percentile, 2.5, nonzero) == pytest.approx(
        2.5 / expected, rel=1e-12
    )


def test_scale_ignores_nan_and_degenerate_images_get_one(seed: int) -> None:
    data = torch.from_numpy(_volume(np.random.default_rng(seed)))
    with_nan = data.clone()
    with_nan[0, 0, 0, :] = float("nan")
    finite = data.clone()
    finite[0, 0, 0, :] = 0.0
    assert percentile_scale(with_nan) == percentile_scale(finite)
    assert percentile_scale(torch.zeros(3, 4)) == 1.0
    assert percentile_scale(-torch.rand(3, 4) - 1) == 1.0
    assert percentile_scale(torch.full((2, 2), float("nan"))) == 1.0


def test_scaling_is_gain_invariant_and_exactly_undone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = _volume(rng).astype(np.float32)
    gain = float(rng.uniform(0.01, 100))
    a = ScaleToPercentile()(MetaTensor(torch.from_numpy(data)))
    b = ScaleToPercentile()(MetaTensor(torch.from_numpy(data) * gain))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-6, atol=1e-7)
    assert a.meta[SCALE_KEY] == pytest.approx(b.meta[SCALE_KEY] * gain, rel=1e-6)
    back = RestoreIntensityScale()(a)
    np.testing.assert_allclose(back.numpy(), data, rtol=1e-6, atol=1e-6 * data.max())


def test_scale_keeps_meta_and_maps_nan_to_zero() -> None:
    image = MetaTensor(
        torch.tensor([[[1.0, float("nan")], [3.0, 4.0]]]), affine=torch.diag(torch.tensor([2.0, 3, 4, 1]))
    )
    out = ScaleToPercentile(percentile=100, target=2.0)(image)
    assert torch.equal(out.affine, image.affine)
    np.testing.assert_allclose(out.numpy(), [[[0.5, 0.0], [1.5, 2.0]]])
    assert out.meta[SCALE_KEY] == 0.5


def test_restore_needs_a_scale() -> None:
    with pytest.raises(ValueError, match="intensity_scale"):
        RestoreIntensityScale()(torch.ones(1, 2, 2))
    np.testing.assert_allclose(RestoreIntensityScale(scale=0.5, clip_min=None)(torch.tensor([-1.0, 2.0])), [-2.0, 4.0])
    np.testing.assert_allclose(RestoreIntensityScale(scale=0.5)(torch.tensor([-1.0, 2.0])), [0.0, 4.0])


def test_dictionary_versions_share_the_reference_factor(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image, label = (MetaTensor(torch.from_numpy(_volume(rng).astype(np.float32))) for _ in range(2))
    d = ScaleToPercentiled(["image", "label"], reference_key="image")({"image": image, "label": label})
    scale = percentile_scale(image)
    assert d["image"].meta[SCALE_KEY] == d["label"].meta[SCALE_KEY] == scale
    np.testing.assert_allclose(d["label"].numpy(), label.numpy() * np.float32(scale), rtol=1e-6)
    own = ScaleToPercentiled(["image", "label"])({"image": image, "label": label})
    assert own["label"].meta[SCALE_KEY] == percentile_scale(label)
    # a prediction without meta goes back to the image's units with the image's factor
    pred = d["image"].as_tensor() * 1.0
    out = RestoreIntensityScaled("pred", scale_from="image")({"image": d["image"], "pred": pred})["pred"]
    np.testing.assert_allclose(out.numpy(), image.numpy(), rtol=1e-5, atol=1e-5 * float(image.max()))
    with pytest.raises(ValueError, match="intensity_scale"):
        RestoreIntensityScaled("pred", scale_from="image")({"image": image, "pred": pred})
