"""Shared fixtures: every random test draws a fresh seed and reports it on failure."""

from __future__ import annotations

import secrets

import pytest
import torch


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh random seed per test, printed so a failure can be replayed."""
    value = secrets.randbits(31)
    torch.manual_seed(value)
    print(f"{request.node.nodeid}: seed={value}")
    return value
