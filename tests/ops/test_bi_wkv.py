"""The pure-PyTorch Bi-WKV against the O(T^2) float64 definition of paper Eq. 8, with fresh random seeds.

The numba backend has the same checks in test_numba_wkv.py; here ``backend="torch"`` pins the fallback path.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from monai_rwkv.ops import bi_wkv as _bi_wkv
from monai_rwkv.ops import bi_wkv_at, bi_wkv_quadratic

bi_wkv = partial(_bi_wkv, backend="torch")


def _inputs(seq_len: int, channels: int, batch: int, seed: int, decay_max: float = 60.0, k_max: float = 30.0):
    g = torch.Generator().manual_seed(seed)
    decay = (torch.rand(channels, generator=g) * 2 - 1) * decay_max
    first = (torch.rand(channels, generator=g) * 2 - 1) * decay_max
    k = (torch.rand(batch, seq_len, channels, generator=g) * 2 - 1) * k_max
    v = torch.randn(batch, seq_len, channels, generator=g) * 10.0 ** torch.randint(-3, 4, (1,), generator=g).item()
    return decay / seq_len, first / seq_len, k, v


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("seq_len", [1, 2, 3, 5, 17, 64, 255, 1024])
def test_matches_quadratic_reference_float32(seq_len: int, seed: int) -> None:
    w, u, k, v = _inputs(seq_len, channels=12, batch=2, seed=seed)
    out = bi_wkv(w, u, k, v)
    assert out.dtype == torch.float32 and out.shape == v.shape
    assert torch.isfinite(out).all()
    ref = bi_wkv_quadratic(w, u, k, v)
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
def test_extreme_decay_and_keys(decay_sign: float, seed: int) -> None:
    """|decay| = 60 and |k| = 30 at the corners of the supported range, both signs of decay."""
    w, u, k, v = _inputs(300, channels=8, batch=1, seed=seed)
    w = decay_sign * torch.full_like(w, 60.0 / 300)
    k[..., ::2] = 30.0 * torch.sign(k[..., ::2])
    out = bi_wkv(w, u, k, v)
    assert torch.isfinite(out).all()
    assert _rel_err(out, bi_wkv_quadratic(w, u, k, v)) <= 1e-5


def test_long_sequence_against_reference_rows(seed: int) -> None:
    """T = 2048 x 2048: compare a random subset of output rows with the quadratic formula."""
    seq_len, channels = 2048 * 2048, 2
    w, u, k, v = _inputs(seq_len, channels, batch=1, seed=seed)
    out = bi_wkv(w, u, k, v)
    assert torch.isfinite(out).all()
    rows = torch.randint(0, seq_len, (6,)).tolist() + [0, seq_len - 1]
    for t in rows:
        ref = bi_wkv_at(w, u, k, v, t)
        err = ((out[0, t].double() - ref).abs() / v.double().abs().max()).max().item()
        assert err <= 1e-5, (t, err)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype, seed: int) -> None:
    w, u, k, v = _inputs(200, channels=6, batch=2, seed=seed, decay_max=10, k_max=5)
    k, v = k.to(dtype), v.to(dtype)
    out = bi_wkv(w, u, k, v)
    assert out.dtype == dtype
    ref = bi_wkv_quadratic(w, u, k, v)  # same rounded inputs, so only the final cast differs
    assert _rel_err(out, ref) <= (1e-3 if dtype == torch.float16 else 8e-3)


def test_gradcheck_float64(seed: int) -> None:
    w, u, k, v = (x.double().requires_grad_() for x in _inputs(9, channels=3, batch=2, seed=seed, k_max=3))
    assert torch.autograd.gradcheck(bi_wkv, (w, u, k, v))


def test_gradients_match_reference(seed: int) -> None:
    w, u, k, v = (x.double().requires_grad_() for x in _inputs(70, channels=4, batch=2, seed=seed))
    grad = torch.randn(2, 70, 4, dtype=torch.float64)
    ours = torch.autograd.grad((bi_wkv(w, u, k, v) * grad).sum(), (w, u, k, v))
    ref = torch.autograd.grad((bi_wkv_quadratic(w, u, k, v) * grad).sum(), (w, u, k, v))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


def test_inference_channel_blocks_equal_single_pass(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    import monai_rwkv.ops.wkv as mod

    w, u, k, v = _inputs(500, channels=7, batch=2, seed=seed)
    whole = bi_wkv(w, u, k, v)
    monkeypatch.setattr(mod, "_INFERENCE_BLOCK_ELEMENTS", 2 * 500 * 2)
    with torch.no_grad():
        blocked = bi_wkv(w, u, k, v)
    assert torch.equal(whole, blocked)


def test_rejects_bad_shapes() -> None:
    k = torch.randn(1, 10, 4)
    with pytest.raises(ValueError, match="w and u"):
        bi_wkv(torch.zeros(3), torch.zeros(4), k, k)
    with pytest.raises(ValueError, match="k and v"):
        bi_wkv(torch.zeros(4), torch.zeros(4), k, k[:, :5])
