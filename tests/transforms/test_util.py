"""The transforms' shared helpers: the Gaussian blur against scipy, the range parser's checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_rwkv.transforms._util import gaussian_blur, value_range


def test_gaussian_blur_matches_scipy_nearest(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1000, 3000, (2, 23, 31))
    sigmas = (float(rng.uniform(0.3, 2.5)), float(rng.uniform(0.3, 2.5)))
    out = gaussian_blur(torch.from_numpy(x), sigmas).numpy()
    for i in range(2):
        ref = x[i]
        for axis, sigma in enumerate(sigmas):
            radius = max(1, math.ceil(3 * sigma))
            ref = ndimage.gaussian_filter1d(ref, sigma, axis=axis, mode="nearest", truncate=radius / sigma)
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-9)
    only_rows = gaussian_blur(torch.from_numpy(x), (sigmas[0], 0.0)).numpy()
    np.testing.assert_allclose(
        only_rows,
        ndimage.gaussian_filter1d(
            x, sigmas[0], axis=1, mode="nearest", truncate=max(1, math.ceil(3 * sigmas[0])) / sigmas[0]
        ),
        rtol=0,
        atol=1e-9,
    )
    unchanged = torch.from_numpy(x)
    assert gaussian_blur(unchanged, (0.0,)) is unchanged
    with pytest.raises(ValueError, match="3 sigmas"):
        gaussian_blur(torch.zeros(4, 4), (1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [(2.0, {}, (2.0, 2.0)), ((0.1, 0.5), {"strict": True}, (0.1, 0.5)), ([0, 3], {}, (0.0, 3.0))],
)
def test_value_range_accepts(value, kwargs, expected) -> None:
    assert value_range(value, "x", **kwargs) == expected


@pytest.mark.parametrize(
    "value, kwargs, match",
    [
        ((0.5, 0.1), {}, "low <= high"),
        ((0.0, 1.0), {"strict": True}, "must be > 0"),
        ((-1.0, 1.0), {}, "must be >= 0"),
        ((1.0, 2.0, 3.0), {}, "pair"),
        ("ab", {}, "pair"),
        ((1.0, math.inf), {}, "low <= high"),
    ],
)
def test_value_range_refuses_naming_the_argument(value, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match) as info:
        value_range(value, "dose_fraction", **kwargs)
    assert "dose_fraction" in str(info.value)
