"""BlendWithInput: ``x + strength * (network(x) - x)`` against a float64 reference, and its argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from monai_rwkv.networks.nets import BlendWithInput, RestoreRWKV, SelfEnsemble, check_strength


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = RestoreRWKV(spatial_dims=2, in_channels=1, out_channels=1, dim=8, num_blocks=[1, 1, 1, 1])
    with torch.no_grad():  # the output convolution starts at zero (an identity network): give it weights
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("strength", [0.0, 0.2, 0.5, 0.93, 1.0])
def test_matches_float64_reference(strength: float) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    net = _net(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 24, 40, generator=gen) * 30 + 5  # wide range, far from [0, 1]
    with torch.no_grad():
        y = BlendWithInput(net, strength)(x)
        reference = x.double() + strength * (net(x).double() - x.double())
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y.double(), reference, rtol=1e-6, atol=1e-5, msg=f"seed {seed}")
    if strength == 0.0:
        assert torch.equal(y, x)
    if strength == 1.0:
        assert torch.equal(y, net(x).float())


def test_wraps_a_self_ensemble_and_keeps_half_precision_outputs_in_float32() -> None:
    class Half(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * 3).half()

    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 4
    y = BlendWithInput(SelfEnsemble(Half(), 2), 0.25)(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x + 0.25 * ((x * 3).half().float() - x))


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, "strong", None, True])
def test_rejects_strength_outside_unit_interval(bad) -> None:
    with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
        BlendWithInput(nn.Identity(), bad)


def test_accepts_command_line_text() -> None:
    assert check_strength("0.5") == 0.5 and check_strength(1) == 1.0


def test_shape_changing_network_is_refused_with_what_to_do() -> None:
    up = nn.Upsample(scale_factor=2)
    with pytest.raises(ValueError, match="use strength 1"):
        BlendWithInput(up, 0.5)(torch.rand(1, 1, 4, 4))


def test_conditioned_input_blends_with_its_image_channels(seed: int) -> None:
    torch.manual_seed(seed)
    net = RestoreRWKV(
        spatial_dims=2, in_channels=1, out_channels=1, dim=8, num_blocks=[1, 1, 1, 1], conditioning_channels=1
    )
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net = net.eval()
    image = torch.randn(2, 1, 16, 24) * 20
    x = torch.cat([image, torch.full_like(image, -2.0)], 1)
    with torch.no_grad():
        y = BlendWithInput(net, 0.3)(x)
        reference = image.double() + 0.3 * (net(x).double() - image.double())
    assert y.shape == image.shape
    torch.testing.assert_close(y.double(), reference, rtol=1e-6, atol=1e-5, msg=f"seed {seed}")
