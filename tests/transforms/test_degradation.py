"""Scaling a degradation against its reference: the formula, the drawn factor's range, reproducibility, the dict
version's shared factor, metadata kept, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms import RandDegradationScale, RandDegradationScaled, scale_degradation


def _pair(seed: int, shape=(1, 9, 11)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    reference = (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5) * 4000
    degraded = reference + torch.randn(shape, generator=gen, dtype=torch.float64) * 300
    return degraded, reference


def test_scale_degradation_is_the_reference_plus_the_scaled_difference(seed: int) -> None:
    degraded, reference = _pair(seed)
    factor = float(np.random.default_rng(seed).uniform(0, 5))
    out = scale_degradation(degraded, reference, factor)
    expected = reference.numpy() + factor * (degraded.numpy() - reference.numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-9)
    assert torch.equal(scale_degradation(degraded, reference, 1.0), degraded)
    assert torch.equal(scale_degradation(degraded, reference, 0.0), reference)


def test_factor_is_drawn_in_range_and_gives_the_scaled_image(seed: int) -> None:
    degraded, reference = _pair(seed)
    t = RandDegradationScale((1.2, 1.7)).set_random_state(seed)
    factors = []
    for _ in range(50):
        out = t(degraded, reference)
        factors.append(t.factor)
        # the drawn factor is the one in the output: (out - ref) / (img - ref) is that factor everywhere
        ratio = (out - reference) / (degraded - reference)
        np.testing.assert_allclose(ratio.numpy(), t.factor, rtol=1e-9)
    assert 1.2 <= min(factors) < 1.3 and 1.6 < max(factors) <= 1.7
    # reproducible with the same seed, and a fixed factor is exact
    a = RandDegradationScale((1.0, 2.0)).set_random_state(seed)(degraded, reference)
    b = RandDegradationScale((1.0, 2.0)).set_random_state(seed)(degraded, reference)
    assert torch.equal(a, b)
    fixed = RandDegradationScale(1.5)(degraded, reference)
    np.testing.assert_allclose(fixed.numpy(), (reference + 1.5 * (degraded - reference)).numpy(), rtol=1e-12)


def test_prob_zero_returns_the_image_and_types_and_metadata_are_kept(seed: int) -> None:
    degraded, reference = _pair(seed)
    assert RandDegradationScale((2.0, 3.0), prob=0.0)(degraded, reference) is degraded
    img = MetaTensor(degraded.float(), meta={"pixdim": [1, 0.7, 0.7]})
    out = RandDegradationScale((2.0, 3.0))(img, reference.float())
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.meta["pixdim"] == [1, 0.7, 0.7]
    arr = RandDegradationScale((2.0, 3.0))(degraded.numpy(), reference.numpy())
    assert isinstance(arr, np.ndarray) and arr.shape == degraded.shape


def test_dict_version_scales_every_key_by_one_factor_and_leaves_the_reference(seed: int) -> None:
    degraded, reference = _pair(seed)
    other = reference + (degraded - reference) * 0.5
    t = RandDegradationScaled(["image", "other"], reference_key="label", factor=(1.5, 2.5)).set_random_state(seed)
    out = t({"image": degraded, "other": other, "label": reference})
    f = t.transform.factor
    assert 1.5 <= f <= 2.5
    np.testing.assert_allclose((out["image"] - reference).numpy(), (f * (degraded - reference)).numpy(), rtol=1e-9)
    np.testing.assert_allclose((out["other"] - reference).numpy(), (f * (other - reference)).numpy(), rtol=1e-9)
    assert out["label"] is reference
    skipped = RandDegradationScaled("image", factor=(1.5, 2.5), prob=0.0)({"image": degraded, "label": reference})
    assert skipped["image"] is degraded


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="factor must be a number or a \\(low, high\\) pair with low <= high"):
        RandDegradationScale((2.0, 1.0))
    with pytest.raises(ValueError, match="factor must be >= 0"):
        RandDegradationScale(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        scale_degradation(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5), 2.0)
    with pytest.raises(KeyError, match="reference key 'label'"):
        RandDegradationScaled("image")({"image": torch.zeros(1, 4, 4)})
    lenient = RandDegradationScaled("image", allow_missing_keys=True)({"image": torch.ones(1, 4, 4)})
    assert torch.equal(lenient["image"], torch.ones(1, 4, 4))
