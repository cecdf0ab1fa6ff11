"""Shared fixtures: every random test draws a fresh seed and reports it on failure."""

from __future__ import annotations

import os
import secrets

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run through Triton's interpreter (tests/ops/test_triton_wkv.py). The
    # variable is read when triton is first imported, so it is set here, before any test module loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")


#: environment variable that forces the value of the ``seed`` fixture (replay a failure, or sweep many seeds).
SEED_VARIABLE = "MONAI_RWKV_TEST_SEED"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """
    A fresh random seed per test, printed so a failure can be replayed.

    Set the environment variable ``MONAI_RWKV_TEST_SEED`` to an integer to use that seed instead (for every test
    of the run), e.g. to replay a failure: ``MONAI_RWKV_TEST_SEED=1234 pytest tests/test_inference.py``. Unset
    (or empty), each test draws a fresh seed.
    """
    forced = os.environ.get(SEED_VARIABLE, "").strip()
    value = int(forced) if forced else secrets.randbits(31)
    torch.manual_seed(value)
    print(f"{request.node.nodeid}: seed={value}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seeded-only",
        action="store_true",
        help="run only the tests that draw a fresh seed (the `seed` fixture): `make test-seeds` repeats them to find "
        "tolerances that fail for rare seeds",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--seeded-only"):
        return
    seeded, others = [], []
    for item in items:
        (seeded if "seed" in getattr(item, "fixturenames", ()) else others).append(item)
    config.hook.pytest_deselected(items=others)
    items[:] = seeded
