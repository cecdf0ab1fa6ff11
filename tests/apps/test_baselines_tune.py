"""monai_rwkv.apps.baselines.tune: grid, then the multiplicative line search on the continuous parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monai_rwkv.apps import baselines as lib


def _baseline(grid: list[float]) -> lib.Baseline:
    return lib.Baseline("f", "f", lambda **p: None, {"s": grid, "fixed": [1]}, "s", (1.0, 1000.0), 1.4)


@pytest.mark.parametrize("optimum", [None, 110.0])  # None: drawn; at 110, 4-decimal rounding asked 99.3901 and 99.3902
def test_the_line_search_finds_an_optimum_between_grid_points_and_never_asks_a_point_twice(
    optimum: float | None, seed: int
) -> None:
    if optimum is None:
        optimum = float(np.exp(np.random.default_rng(seed).uniform(np.log(2.0), np.log(500.0))))
    asked: list[float] = []
    memo: dict[float, float] = {}

    def objective(params: dict) -> float:
        s = params["s"]
        if s not in memo:
            asked.append(s)
            memo[s] = -((math.log(s) - math.log(optimum)) ** 2)  # a smooth peak in log space
        return memo[s]

    best = lib.tune(_baseline([15.0, 30.0, 60.0]), objective)
    assert best["fixed"] == 1
    # the last step is 1.4 ** 0.25: the optimum is within half of it, up to the 4-digit rounding
    assert abs(math.log(best["s"] / optimum)) <= math.log(1.4) / 8 + 1e-3
    asked.sort()
    assert all(b / a - 1 > 1e-4 for a, b in zip(asked, asked[1:]))  # no two points that differ only by rounding


def test_the_line_search_stops_at_a_bound() -> None:
    best = lib.tune(_baseline([15.0, 30.0]), lambda p: p["s"])  # increasing: runs up to the upper bound
    assert best["s"] == 1000.0
    best = lib.tune(_baseline([15.0, 30.0]), lambda p: -p["s"])
    assert best["s"] == 1.0
