"""RestoreRWKV: published layout and equations, presets, shapes, padding, 3D, loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from monai_rwkv.networks.nets import RestoreRWKV, infer_config
from monai_rwkv.networks.utils import count_macs, count_parameters

from .paper_reference import paper_forward

LAYOUT = Path(__file__).parent / "data" / "restore_rwkv_official_state_dict.tsv"
TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}


def _official_layout() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in LAYOUT.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s)))
    return rows


def _random_official_state_dict(generator: torch.Generator, with_2024_extras: bool) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout, scaled like a trained network (unit-gain layers)."""
    state = {}
    for key, shape in _official_layout():
        t = torch.randn(shape, generator=generator, dtype=torch.float64)
        if key.endswith("weight") and len(shape) >= 2 and "omni_shift" not in key:
            t /= (torch.tensor(shape[1:]).prod().sqrt()).item()
        elif key.endswith(("gamma1", "gamma2")):
            t = 0.3 * t
        elif "spatial_" in key:
            t = 10.0 * t  # decays of either sign and realistic size
        state[key] = t
        if with_2024_extras and key.endswith("att.spatial_first"):
            state[key.replace("spatial_first", "dwconv.weight")] = torch.randn(shape[1], 1, 3, 3, dtype=torch.float64)
    return state


def test_state_dict_layout_equals_official() -> None:
    ours = [(k, tuple(v.shape)) for k, v in RestoreRWKV().state_dict().items()]
    assert ours == _official_layout()


def test_published_counts() -> None:
    model = RestoreRWKV.from_preset("paper")
    assert count_parameters(model) == 27_846_625
    assert round(count_macs(model, (1, 1, 128, 128)) / 1e9, 2) == 37.46
    light = RestoreRWKV.from_preset("light")
    assert 1.1e6 <= count_parameters(light) <= 1.3e6


# with the 2024 extras the run took 336 s of a 27-minute suite on the 2-core machine (2026-12-02): `make test-all`
@pytest.mark.parametrize("with_2024_extras", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_random_official_weights_reproduce_paper_equations(with_2024_extras: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    state = _random_official_state_dict(g, with_2024_extras)
    state = {k: (torch.randn_like(v) * 1e3 if "conv5x5_reparam" in k else v) for k, v in state.items()}  # stale
    model = RestoreRWKV.from_official(state).double().eval()
    model.load_state_dict(state)  # again in float64: from_official's float32 parameters rounded the weights
    img = torch.rand(2, 1, 16, 24, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ours = model(img)
        ref = paper_forward(state, img)
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-10


def test_from_official_infers_config_and_loads_files(tmp_path: Path, seed: int) -> None:
    cfg = {
        "in_channels": 2,
        "out_channels": 3,
        "dim": 8,
        "num_blocks": (1, 2, 1, 3),
        "num_refinement_blocks": 2,
        "recurrence": 3,
        "hidden_rate": 2,
    }
    model = RestoreRWKV(**cfg).eval()
    state = model.state_dict()
    assert infer_config(state) == {"spatial_dims": 2, "conditioning_channels": 0, **cfg}
    x = torch.randn(1, 2, 16, 16)
    for i, payload in enumerate([state, {"params": state}, {"module." + k: v for k, v in state.items()}]):
        torch.save(payload, tmp_path / f"ckpt{i}.pt")
        loaded = RestoreRWKV.from_official(tmp_path / f"ckpt{i}.pt").eval()
        assert torch.equal(loaded(x), model(x))


class _Exploit:
    def __reduce__(self):
        return (print, ("pickle code executed",))


def test_from_official_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "malicious.pt"
    torch.save({"patch_embed.weight": torch.zeros(1), "payload": _Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError):
        RestoreRWKV.from_official(path)


def test_not_a_state_dict() -> None:
    with pytest.raises(ValueError, match="missing 'patch_embed.weight'"):
        RestoreRWKV.from_official({"foo": torch.zeros(1)})


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (13, 21), (16, 16), (33, 8)])
def test_any_2d_size(size: tuple[int, int], seed: int) -> None:
    model = RestoreRWKV(**TINY).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(3, 5, 7), (8, 8, 8)])
def test_3d_shapes_and_channels(size: tuple[int, int, int], seed: int) -> None:
    model = RestoreRWKV(spatial_dims=3, in_channels=2, out_channels=1, **TINY).eval()
    assert model.config["recurrence"] == 3
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1, *size)


def test_global_residual_only_when_channels_match(seed: int) -> None:
    model = RestoreRWKV(**TINY).eval()
    torch.nn.init.zeros_(model.output.weight)
    torch.nn.init.zeros_(model.output.bias)
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(model(x), x)
    other = RestoreRWKV(in_channels=1, out_channels=2, **TINY).eval()
    torch.nn.init.zeros_(other.output.weight)
    torch.nn.init.zeros_(other.output.bias)
    assert torch.equal(other(x), torch.zeros(1, 2, 8, 8))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_conditioning_channels_feed_the_network_but_not_the_residual(spatial_dims: int, seed: int) -> None:
    model = RestoreRWKV(spatial_dims=spatial_dims, in_channels=1, out_channels=1, conditioning_channels=1, **TINY)
    model.eval()
    size = (8, 12) if spatial_dims == 2 else (8, 4, 6)
    image = torch.randn(2, 1, *size) * 3
    level = torch.full_like(image, 1.5)
    with torch.no_grad():
        changed = model(torch.cat([image, level], 1))
        assert not torch.equal(changed, model(torch.cat([image, level - 1.0], 1)))  # the level is an input
        torch.nn.init.zeros_(model.output.weight)
        torch.nn.init.zeros_(model.output.bias)
        assert torch.equal(model(torch.cat([image, level], 1)), image)  # the residual is the image alone
    with pytest.raises(ValueError, match=r"expected 2 input channels \(1 image \+ 1 conditioning\)"):
        model(image)


def test_checkpoint_filter_starts_a_conditioned_network_as_the_blind_one(tmp_path: Path, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    blind = RestoreRWKV(**TINY).eval()
    with torch.no_grad():
        for p in blind.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    conditioned = RestoreRWKV(conditioning_channels=2, **TINY).eval()
    state = conditioned.checkpoint_filter_fn(blind.state_dict())
    conditioned.load_state_dict(state)  # strict: the filter also records the conditioning
    image = torch.randn(1, 1, 16, 24, generator=gen) * 10
    levels = torch.randn(1, 2, 1, 1, generator=gen).expand(1, 2, 16, 24) * 4
    with torch.no_grad():
        torch.testing.assert_close(conditioned(torch.cat([image, levels], 1)), blind(image), rtol=1e-5, atol=1e-5)
    assert conditioned.checkpoint_filter_fn(state).keys() == state.keys()  # a fitting state dict is kept
    # the saved weights say how many input channels condition the image: from_official rebuilds the same network
    assert infer_config(state)["conditioning_channels"] == 2 and infer_config(state)["in_channels"] == 1
    torch.save(state, tmp_path / "conditioned.pt")
    loaded = RestoreRWKV.from_official(tmp_path / "conditioned.pt").eval()
    x = torch.cat([image, levels], 1)
    with torch.no_grad():
        assert torch.equal(loaded(x), conditioned(x))
    # a network with more input than output channels but no conditioning keeps its meaning (no residual)
    assert infer_config(RestoreRWKV(in_channels=2, out_channels=1, **TINY).state_dict())["in_channels"] == 2


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_eval_equals_train_math(spatial_dims: int, seed: int) -> None:
    model = RestoreRWKV(spatial_dims=spatial_dims, **TINY)
    x = torch.randn(2, 1, *([16, 16, 8][:spatial_dims])) * 100
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert ((eval_out - train_out).abs().max() / train_out.abs().max()).item() <= 1e-5


def test_batch_and_channels_last_consistency(seed: int) -> None:
    model = RestoreRWKV(**TINY).eval()
    x = torch.randn(3, 1, 24, 16)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
        cl_model = model.to(memory_format=torch.channels_last)
        cl = cl_model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(batched, cl, atol=1e-5)


def test_trains(seed: int) -> None:
    model = RestoreRWKV(**TINY)
    x = torch.randn(2, 1, 16, 16)
    loss = (model(x) - x).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder_level1[0].att.spatial_decay.grad.abs().sum() > 0


def test_presets() -> None:
    with pytest.raises(ValueError, match="Unknown preset"):
        RestoreRWKV.from_preset("huge")
    assert RestoreRWKV.from_preset("light", in_channels=3, out_channels=3).config["in_channels"] == 3
