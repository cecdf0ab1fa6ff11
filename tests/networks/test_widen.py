"""widen_state_dict / RestoreRWKV.checkpoint_filter_fn: a wider network that starts as the narrow one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_rwkv.apps.training import training_network
from monai_rwkv.networks.nets import RestoreRWKV, infer_config, widen_state_dict

TINY = {"dim": 8, "num_blocks": (1, 2, 1, 2), "num_refinement_blocks": 1}


def _random_network(seed: int, spatial_dims: int = 2, **overrides: object) -> RestoreRWKV:
    """A float64 network whose every parameter (gammas, LayerNorms, Omni-Shift mixes included) is random."""
    gen = torch.Generator().manual_seed(seed)
    net = RestoreRWKV(spatial_dims=spatial_dims, **{**TINY, **overrides}).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return net


def _wide(narrow: RestoreRWKV, factor: int, **kwargs: object) -> RestoreRWKV:
    state = widen_state_dict(narrow.state_dict(), factor, **kwargs)
    wide = RestoreRWKV(**infer_config(state)).double().eval()
    wide.load_state_dict(state)  # strict
    return wide


@pytest.mark.parametrize(("spatial_dims", "factor"), [(2, 2), (2, 3), (3, 2)])
def test_widened_network_computes_the_same_function(spatial_dims: int, factor: int, seed: int) -> None:
    narrow = _random_network(seed, spatial_dims)
    wide = _wide(narrow, factor)
    assert wide.config["dim"] == factor * narrow.config["dim"]
    assert sum(p.numel() for p in wide.parameters()) > (factor**2 - 1) * sum(p.numel() for p in narrow.parameters())
    size = (24, 40) if spatial_dims == 2 else (8, 16, 12)
    x = torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * 50
    with torch.no_grad():
        expected = narrow(x)
        # float64 rounding, amplified by random weights and inputs of +-150 (largest seen: 2.5e-9 of the output)
        atol = 1e-8 * expected.abs().max().item()
        torch.testing.assert_close(wide(x), expected, rtol=1e-10, atol=atol)
        torch.testing.assert_close(wide.train()(x), narrow.train()(x), rtol=1e-10, atol=atol)


def test_widening_keeps_conditioning_channels(seed: int) -> None:
    narrow = _random_network(seed, conditioning_channels=1)
    wide = _wide(narrow, 2)
    assert wide.config["conditioning_channels"] == 1 and wide.config["dim"] == 16
    x = torch.randn(1, 2, 16, 24, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        expected = narrow(x)
        # float64 rounding amplified by the random weights, as above (seed 36912830: 3.3e-9, 4e-10 of that value)
        atol = 1e-8 * expected.abs().max().item()
        torch.testing.assert_close(wide(x), expected, rtol=1e-10, atol=atol)


def test_perturbation_changes_the_output_at_second_order_only(seed: int) -> None:
    narrow = _random_network(seed)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        reference = narrow(x)
        change = []
        for noise in (1e-3, 2e-3, 4e-3):
            wide = _wide(narrow, 2, noise=noise, generator=torch.Generator().manual_seed(seed))
            change.append((wide(x) - reference).abs().max().item())
    assert change[0] > 0
    # the same draw scaled by 2 and 4: a first-order change would double, a second-order one quadruples
    assert 3.5 < change[1] / change[0] < 4.5 and 3.5 < change[2] / change[1] < 4.5
    assert change[2] < 1e-3 * reference.abs().max().item()


def test_unperturbed_copies_stay_copies_under_training(seed: int) -> None:
    """Why the perturbation: without it every copy of a channel gets the same update, so the wide network stays
    the narrow one however long it trains."""
    narrow = _random_network(seed).float()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(seed))

    def copies_differ(noise: float) -> bool:
        wide = _wide(narrow.double(), 2, noise=noise, generator=torch.Generator().manual_seed(seed)).float().train()
        opt = torch.optim.AdamW(wide.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            (wide(x) - x.flip(-1)).abs().mean().backward()
            opt.step()
        key = wide.encoder_level1[0].att.key.weight.detach()  # rows c and c + 8 started as copies
        return not torch.allclose(key[:8], key[8:], rtol=0, atol=1e-6)

    assert not copies_differ(0.0)
    assert copies_differ(0.01)


def test_checkpoint_filter_widens_init_weights(tmp_path: Path, seed: int) -> None:
    narrow = _random_network(seed).float()
    torch.save(narrow.state_dict(), tmp_path / "narrow.pt")
    torch.manual_seed(seed)
    wide = training_network(RestoreRWKV(**{**TINY, "dim": 16}), device="cpu", init_weights=tmp_path / "narrow.pt")
    x = torch.randn(1, 1, 24, 24, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = narrow(x)
        close = (wide.eval()(x) - expected).abs().max().item()
    assert close < 1e-2 * expected.abs().max().item()  # the perturbation's second-order change (seen: up to 1e-3)
    # blind narrow weights into a wide network with a conditioning channel: both adaptations
    conditioned = RestoreRWKV(**{**TINY, "dim": 16}, conditioning_channels=1)
    conditioned.load_state_dict(conditioned.checkpoint_filter_fn(narrow.state_dict()))


def test_widening_refuses_what_it_cannot_do(seed: int) -> None:
    state = RestoreRWKV(**TINY).state_dict()
    release_2024 = {**state, "encoder_level1.0.att.dwconv.weight": torch.zeros(8, 1, 3, 3)}  # unused, dropped
    assert widen_state_dict(release_2024, 2).keys() == widen_state_dict(state, 2).keys()
    with pytest.raises(ValueError, match="positive integer"):
        widen_state_dict(state, 0)
    with pytest.raises(ValueError, match="are not of a RestoreRWKV state dict"):
        widen_state_dict({**state, "extra.weight": torch.zeros(1)}, 2)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        RestoreRWKV(**{**TINY, "dim": 12}).checkpoint_filter_fn(state)
    with pytest.raises(ValueError, match="other settings differ"):
        RestoreRWKV(**{**TINY, "dim": 16, "num_refinement_blocks": 2}).checkpoint_filter_fn(state)
