"""Count-domain Poisson noise: unbiased, variance x / counts, reproducible, and the background correction."""

from __future__ import annotations

import pytest
import torch

from monai_rwkv.transforms import RandPoissonCounts, RandPoissonCountsd, poisson_counts


@pytest.mark.parametrize("counts", [0.5, 10.0, 400.0])
def test_mean_is_unbiased_and_variance_scales_with_one_over_counts(counts: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    level = float(torch.rand(1, generator=gen)) * 20 + 1
    x = torch.full((400_000,), level, dtype=torch.float64)
    noisy = poisson_counts(x, counts, generator=gen)
    n = x.numel()
    # sample mean and variance within 6 standard errors (variance of the sample variance ~ 2 sigma^4 / n + ...)
    sigma2 = level / counts
    assert abs(float(noisy.mean()) - level) < 6 * (sigma2 / n) ** 0.5
    assert float(noisy.var()) == pytest.approx(sigma2, rel=6 * (2 / n) ** 0.5 + 6 / (level * counts * n) ** 0.5)


def test_background_is_added_before_sampling_and_removed_after(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(200_000, generator=gen, dtype=torch.float64) * 4
    noisy = poisson_counts(x, 50.0, background_fraction=0.3, generator=gen)
    background = 0.3 * float(x.mean())
    assert abs(float((noisy - x).mean())) < 6 * ((float(x.mean()) + background) / 50 / x.numel()) ** 0.5
    assert float((noisy - x).var()) == pytest.approx((float(x.mean()) + background) / 50, rel=0.03)


def test_transforms_are_reproducible_and_keep_types(seed: int) -> None:
    x = torch.rand(1, 8, 9) * 5
    a = RandPoissonCounts(20.0).set_random_state(seed)(x)
    b = RandPoissonCounts(20.0).set_random_state(seed)(x)
    assert torch.equal(a, b) and not torch.equal(a, x) and a.dtype == torch.float32
    d = RandPoissonCountsd(["image", "other"], 20.0).set_random_state(seed)({"image": x, "other": x})
    assert not torch.equal(d["image"], d["other"])  # independent noise per key
    assert torch.equal(RandPoissonCounts(20.0, prob=0.0)(x), x)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="counts_per_unit must be > 0"):
        RandPoissonCounts(0.0)
    with pytest.raises(ValueError, match="non-negative"):
        poisson_counts(torch.tensor([-1.0]), 1.0)


def test_dict_randomizes_once_per_call_then_each_key_takes_the_next_noise_stream(seed: int) -> None:
    """MONAI's idiom: one array transform, ``randomize`` once per call, ``randomize=False`` for every key."""
    x = torch.rand(1, 6, 7, generator=torch.Generator().manual_seed(seed)) * 5
    array = RandPoissonCounts(20.0, background_fraction=0.2).set_random_state(seed)
    dictionary = RandPoissonCountsd(["a", "b"], 20.0, background_fraction=0.2).set_random_state(seed)
    for _ in range(3):
        out = dictionary({"a": x, "b": x, "c": x})
        assert torch.equal(out["a"], array(x))  # the first key: what the array transform gives
        assert torch.equal(out["b"], array(x, randomize=False))  # then the next stream of the same seed
        assert not torch.equal(out["a"], out["b"]) and out["c"] is x
    # a call that finds none of the keys draws nothing for the noise
    lenient = RandPoissonCountsd(["a"], 20.0, allow_missing_keys=True).set_random_state(seed)
    assert lenient({"c": x})["c"] is x
    assert torch.equal(lenient({"a": x})["a"], RandPoissonCounts(20.0).set_random_state(seed)(x))
