"""L1SSIMLoss against the evaluation protocol's metrics and plain L1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_rwkv.losses import L1SSIMLoss
from monai_rwkv.metrics import slice_metrics


def _pair(seed: int, shape=(3, 1, 40, 48)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g) * 4000 - 1024
    pred = target + torch.randn(shape, generator=g) * 60
    return pred, target


def test_ssim_matches_the_evaluation_ssim_in_the_window(seed: int) -> None:
    pred, target = _pair(seed)
    window = (-160.0, 240.0)
    # images that span the window, so the evaluation's per-slice data range is the window's width
    target[:, :, 0, 0], target[:, :, 0, 1] = -500.0, 500.0
    norm = lambda x: (x + 1024.0) / 4096.0  # noqa: E731
    loss = L1SSIMLoss(window=(norm(window[0]), norm(window[1])), ssim_weight=0.5)
    shift = -window[0]  # SSIM's luminance term is not shift-invariant: the loss measures from the window's low end
    expected = slice_metrics(pred + shift, target + shift, (0.0, window[1] + shift))["ssim"].mean()
    assert loss.ssim(norm(pred), norm(target)).item() == pytest.approx(expected.item(), abs=1e-5)
    l1 = torch.nn.functional.l1_loss(norm(pred), norm(target))
    assert loss(norm(pred), norm(target)).item() == pytest.approx((l1 + 0.5 * (1 - expected)).item(), rel=1e-5)


def test_zero_weight_is_l1(seed: int) -> None:
    pred, target = _pair(seed)
    assert L1SSIMLoss(ssim_weight=0.0)(pred, target).item() == pytest.approx(
        torch.nn.functional.l1_loss(pred, target).item(), rel=1e-7
    )


def test_window_l1_term_against_a_float64_reference(seed: int) -> None:
    """The windowed L1 term: mean |clip(pred) - clip(target)| in float64 numpy, on images spanning far beyond the
    window; pixels with both images on one side of the window add nothing, a pixel inside counts 1 + weight."""
    pred, target = _pair(seed)
    rng = np.random.default_rng(seed)
    weight, low, high = float(rng.uniform(0.2, 3.0)), float(rng.uniform(-300, 0)), float(rng.uniform(50, 400))
    p64, t64 = pred.double().numpy(), target.double().numpy()
    windowed = np.abs(np.clip(p64, low, high) - np.clip(t64, low, high)).mean()
    assert 0 < windowed < np.abs(p64 - t64).mean()
    expected = np.abs(p64 - t64).mean() + weight * windowed
    loss = L1SSIMLoss(window=(low, high), ssim_weight=0.0, window_l1_weight=weight)
    assert loss(pred, target).item() == pytest.approx(expected, rel=1e-5)
    # with the SSIM term: the sum of the three
    both = L1SSIMLoss(window=(low, high), ssim_weight=0.5, window_l1_weight=weight)
    assert both(pred, target).item() == pytest.approx(expected + 0.5 * (1 - both.ssim(pred, target).item()), rel=1e-5)
    # a pixel inside the window gets 1 + weight times the gradient of one outside it
    x = torch.tensor([[[[low - 100.0, (low + high) / 2]]]], requires_grad=True)
    loss(x, x.detach() + 10.0).backward()
    assert x.grad[0, 0, 0, 1].item() == pytest.approx((1 + weight) * x.grad[0, 0, 0, 0].item(), rel=1e-6)


def test_gradient_reaches_the_prediction_and_favours_the_target(seed: int) -> None:
    pred, target = _pair(seed, (2, 1, 32, 32))
    pred, target = pred / 4096 + 0.25, target / 4096 + 0.25
    loss = L1SSIMLoss(window=(0.2, 0.35), ssim_weight=1.0)
    pred.requires_grad_(True)
    value = loss(pred, target)
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = loss(pred - 1e-3 * pred.grad / pred.grad.abs().max(), target)
    assert stepped < value
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_3d(seed: int) -> None:
    pred, target = _pair(seed, (1, 1, 16, 16, 16))
    value = L1SSIMLoss(spatial_dims=3, window=(-160.0, 240.0))(pred, target)
    assert torch.isfinite(value) and value > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"window": (1.0, 0.5)}, "window"),
        ({"ssim_weight": -1}, "ssim_weight"),
        ({"window_l1_weight": -0.5}, "window_l1_weight"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        L1SSIMLoss(**kwargs)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        L1SSIMLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
