"""
Property tests of the slice-wise sliding-window path (:class:`SliceWiseRestorer`) with networks whose output is
known: the identity gives the (range-clipped) input back, a 1x1 convolution gives exactly its per-pixel affine map,
whatever the image size (smaller than the ROI, not a multiple of it), overlap, ROI, batch size and blending.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from torch import nn

from monai_rwkv.inference import SliceWiseRestorer

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw: st.DrawFn) -> dict:
    """A volume ``(C, i, j, k)`` in physical units (partly outside the range) and restorer settings."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 3)))
    low = draw(st.floats(-2000.0, 1000.0))
    width = draw(st.floats(1.0, 5000.0))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    volume = rng.uniform(low - 0.2 * width, low + 1.2 * width, size=shape).astype(np.float32)
    return {
        "volume": torch.from_numpy(volume),
        "settings": {
            "roi_size": (draw(st.integers(1, 24)), draw(st.integers(1, 24))),
            "overlap": draw(st.floats(0.0, 0.9, exclude_max=True)),
            "sw_batch_size": draw(st.integers(1, 5)),
            "mode": draw(st.sampled_from(["gaussian", "constant"])),
            "intensity_range": (low, low + width),
        },
    }


def restorer(network: nn.Module, settings: dict, **kwargs) -> SliceWiseRestorer:
    return SliceWiseRestorer(network, device="cpu", amp=False, progress=False, **settings, **kwargs)


def tolerance(settings: dict) -> float:
    """float32 rounding of normalise / blend / de-normalise, relative to the magnitudes involved."""
    low, high = settings["intensity_range"]
    return 1e-5 * (high - low) + 2e-6 * max(abs(low), abs(high))


@SETTINGS
@given(cases())
def test_identity_network_gives_the_clipped_input_back(case: dict) -> None:
    volume, settings = case["volume"], case["settings"]
    affine = torch.diag(torch.tensor([0.7, 0.8, 2.0, 1.0], dtype=torch.float64))
    out = restorer(nn.Identity(), settings)(MetaTensor(volume, affine=affine))
    assert out.shape == volume.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.affine, affine)
    low, high = settings["intensity_range"]
    expected = volume.double().clamp(low, high)
    assert float((out.as_tensor().double() - expected).abs().max()) <= tolerance(settings)


@settings(SETTINGS, max_examples=40)
@given(cases(), st.floats(-2.0, 2.0), st.floats(-1.0, 1.0))
def test_one_by_one_convolution_gives_its_affine_map(case: dict, weight: float, bias: float) -> None:
    volume, settings = case["volume"], case["settings"]
    conv = nn.Conv2d(1, 1, kernel_size=1)
    with torch.no_grad():
        conv.weight.fill_(weight)
        conv.bias.fill_(bias)
    out = restorer(conv, settings, clip_output=False)(volume)
    low, high = settings["intensity_range"]
    normalised = ((volume.double() - low) / (high - low)).clamp(0.0, 1.0)
    expected = (weight * normalised + bias) * (high - low) + low
    assert out.shape == volume.shape
    bound = tolerance(settings) * (1 + abs(weight) + abs(bias))
    assert float((out.double() - expected).abs().max()) <= bound


def test_identity_network_with_overlapping_windows_of_one_patch_keeps_the_slice() -> None:
    """Regression (found by the property above): MONAI scaled the identity's output, a view of the slice, in place."""
    volume = torch.tensor([0.6917, 0.1777, -0.1426]).reshape(1, 1, 3, 1)  # a 3 x 1 slice, windows overlap at row 1
    settings = {"roi_size": (2, 1), "overlap": 0.0, "sw_batch_size": 1, "mode": "gaussian", "intensity_range": (0, 1)}
    out = restorer(nn.Identity(), settings)(volume)
    torch.testing.assert_close(out, volume.clamp(0, 1), rtol=0, atol=1e-6)
