"""SelfEnsemble: the average of a network over grid symmetries, checked against an independent numpy float64
average, for its invariance, on an equivariant network, and through the bundles' ``self_ensemble`` option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_rwkv.networks.nets import RestoreRWKV, SelfEnsemble, grid_symmetries


def _conv(spatial_dims: int, seed: int) -> nn.Module:
    """A random, orientation-dependent convolutional network (float64)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return nn.Sequential(conv(1, 3, 3, padding=1), nn.Tanh(), conv(3, 1, 3, padding=1)).double().eval()


def _numpy_symmetries(spatial_dims: int):
    """The same 8 symmetries written with numpy, independently of grid_symmetries."""
    if spatial_dims == 2:
        for t in (False, True):
            for k in range(4):
                yield (
                    lambda a, t=t, k=k: np.rot90(np.swapaxes(a, -1, -2) if t else a, k, (-2, -1)),
                    lambda a, t=t, k=k: (lambda r: np.swapaxes(r, -1, -2) if t else r)(np.rot90(a, -k, (-2, -1))),
                )
    else:
        for axes in ((), (-1,), (-2,), (-3,), (-1, -2), (-1, -3), (-2, -3), (-1, -2, -3)):
            yield (lambda a, ax=axes: np.flip(a, ax) if ax else a), (lambda a, ax=axes: np.flip(a, ax) if ax else a)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 12, 7)), (3, (1, 1, 6, 5, 4))])
def test_average_matches_an_independent_numpy_average(spatial_dims: int, shape, seed: int) -> None:
    net = _conv(spatial_dims, seed)
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-50, 300, shape))
    with torch.no_grad():
        got = SelfEnsemble(net, spatial_dims)(x)
        outs = []
        for forward, inverse in _numpy_symmetries(spatial_dims):
            y = net(torch.from_numpy(np.ascontiguousarray(forward(x.numpy())))).numpy()
            outs.append(inverse(y))
    assert got.shape == x.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), np.mean(outs, axis=0), rtol=1e-6, atol=1e-6 * np.abs(outs).max())
    assert not torch.allclose(got.double(), net(x), atol=1e-3)  # the random network is not equivariant


@pytest.mark.parametrize("spatial_dims, shape", [(2, (1, 1, 16, 24)), (3, (1, 1, 8, 6, 4))])
def test_the_ensemble_is_invariant_to_its_symmetries(spatial_dims: int, shape, seed: int) -> None:
    """Restoring a rotated or flipped image gives the rotated or flipped restoration (to float rounding)."""
    net = SelfEnsemble(_conv(spatial_dims, seed), spatial_dims)
    x = torch.from_numpy(np.random.default_rng(seed + 1).normal(0, 100, shape))
    with torch.no_grad():
        base = net(x)
        for forward, _ in grid_symmetries(spatial_dims):
            np.testing.assert_allclose(net(forward(x)).numpy(), forward(base).numpy(), rtol=1e-5, atol=1e-4)


def test_an_equivariant_network_is_unchanged_and_the_input_is_kept(seed: int) -> None:
    """A network that commutes with the symmetries (identity, a symmetric blur) gives its own output; an identity
    network's output never aliases the input (it is accumulated in place)."""
    x = torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, (2, 1, 8, 8)).astype(np.float32))
    copy = x.clone()
    np.testing.assert_allclose(SelfEnsemble(nn.Identity())(x).numpy(), copy.numpy(), rtol=1e-6)
    assert torch.equal(x, copy)
    blur = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        blur.weight.copy_(torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
        np.testing.assert_allclose(SelfEnsemble(blur)(x).numpy(), blur(x).numpy(), atol=1e-6)


def test_restore_rwkv_and_errors(seed: int) -> None:
    torch.manual_seed(seed)
    net = RestoreRWKV(spatial_dims=2, in_channels=1, out_channels=1, dim=8, num_blocks=(1, 1, 1, 1)).eval()
    ensemble = SelfEnsemble(net)
    assert ensemble.network is net and len(ensemble.symmetries) == 8
    assert set(ensemble.state_dict()) == {f"network.{k}" for k in net.state_dict()}
    with torch.no_grad():
        assert ensemble(torch.rand(1, 1, 16, 24)).shape == (1, 1, 16, 24)  # non-square: transposed patches too
    with pytest.raises(ValueError, match="spatial dims"):
        ensemble(torch.rand(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        SelfEnsemble(net, spatial_dims=1)
