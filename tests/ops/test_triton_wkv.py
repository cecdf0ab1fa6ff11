"""The Triton Bi-WKV kernels against the O(T^2) float64 definition (paper Eq. 8).

With a CUDA device the compiled kernels run on it; without one they run on CPU tensors through Triton's
interpreter (``TRITON_INTERPRET=1``, set before the kernel module is first imported), which executes the same
kernel code, so CI checks the maths and indexing on every run. Small chunk sizes make short sequences cover
several chunks and several blocks of the chunk-level scan.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from monai_rwkv.ops import bi_wkv, bi_wkv_quadratic

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu":
    # tests/conftest.py sets TRITON_INTERPRET=1 before triton is first imported
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("no CUDA device and TRITON_INTERPRET is switched off", allow_module_level=True)
pytest.importorskip("triton")

import monai_rwkv.ops.wkv as wkv_mod  # noqa: E402

kernels = importlib.import_module("monai_rwkv.ops._triton_wkv")


def _inputs(
    seq_len: int, channels: int, batch: int, seed: int, decay_max: float = 60.0, k_max: float = 30.0
) -> tuple[torch.Tensor, ...]:
    """Random (w, u, k, v) on DEVICE: |decay|, |first| <= decay_max, |k| <= k_max, value scales spanning six
    orders of magnitude across channels."""
    g = torch.Generator().manual_seed(seed)
    decay = (torch.rand(channels, generator=g) * 2 - 1) * decay_max
    first = (torch.rand(channels, generator=g) * 2 - 1) * decay_max
    k = (torch.rand(batch, seq_len, channels, generator=g) * 2 - 1) * k_max
    scale = 10.0 ** (torch.rand(channels, generator=g) * 6 - 3)
    v = torch.randn(batch, seq_len, channels, generator=g) * scale
    return tuple(x.to(DEVICE) for x in (decay / seq_len, first / seq_len, k, v))


def _channel_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest error over each channel's largest reference magnitude (channels differ in scale by 1e6)."""
    err = (out.double().cpu() - ref.double().cpu()).abs().amax(dim=(0, 1))
    return (err / ref.double().cpu().abs().amax(dim=(0, 1))).max().item()


@pytest.mark.parametrize(
    "seq_len,channels,batch,chunk",
    [(1, 16, 1, 16), (16, 16, 1, 16), (300, 16, 2, 16), (77, 40, 3, 16), (130, 24, 1, 64)],
)
def test_forward_matches_float64_definition(seq_len: int, channels: int, batch: int, chunk: int, seed: int) -> None:
    w, u, k, v = _inputs(seq_len, channels, batch, seed)
    out = kernels.wkv_forward(w, u, k, v, chunk=chunk, chunk_block=16, scan_block_c=4)
    assert out.shape == v.shape and out.dtype == v.dtype
    assert torch.isfinite(out).all()
    assert _channel_rel_err(out, bi_wkv_quadratic(w, u, k, v)) < 5e-5


@pytest.mark.parametrize("decay", [400.0, -400.0])
def test_extreme_decay_and_keys_stay_finite_and_exact(decay: float, seed: int) -> None:
    """|w| T of 400 and keys of +-80 overflow float32 unless every partial sum carries its own exponent."""
    w, u, k, v = _inputs(200, 16, 1, seed, decay_max=abs(decay), k_max=80.0)
    w = w.abs() * (1 if decay > 0 else -1)
    out = kernels.wkv_forward(w, u, k, v, chunk=16, chunk_block=16, scan_block_c=4)
    assert torch.isfinite(out).all()
    assert _channel_rel_err(out, bi_wkv_quadratic(w, u, k, v)) < 5e-5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_bounded_chunks_at_their_limit_and_mixed_blocks(sign: float, seed: int) -> None:
    """Channel blocks whose ``|w| L + |u|`` sits just under FAST_RANGE take the plain-sum chunk states; keys of
    +-80 make their rescaled terms underflow float32. A block holding one channel over the limit takes the
    general scan for all its channels. Both against the float64 definition. The bound is 1e-4 here, not 5e-5:
    with |w| T up to ~250 and keys of 80 the general scan carries exponents of a few hundred in float32, whose
    rounding (ulp(256) = 3e-5) is a relative error of the terms (seen: 5.2e-5 on a general-scan channel)."""
    chunk, block = 16, 16
    w, u, k, v = _inputs(160, 3 * block, 2, seed, k_max=80.0)
    limit = kernels.FAST_RANGE
    g = torch.Generator().manual_seed(seed + 1)
    share = torch.rand(3 * block, generator=g).to(DEVICE)  # split of the range between decay and bonus
    u = (torch.rand(3 * block, generator=g).to(DEVICE) * 2 - 1).sign() * share * limit * 0.999
    w = sign * (1 - share) * limit * 0.999 / chunk
    w[2 * block] = sign * 1.5 * limit / chunk  # third block: one channel over the limit
    ref = bi_wkv_quadratic(w, u, k, v)
    for bounded in (1, 0):  # 0: every block through the general scan, for comparison
        out = kernels.wkv_forward(
            w, u, k, v, chunk=chunk, chunk_block=16, scan_block_c=4, block_c=block, bounded=bounded
        )
        assert torch.isfinite(out).all()
        assert _channel_rel_err(out, ref) < 1e-4


def test_default_launch_settings_and_unknown_setting(seed: int) -> None:
    """The shipped SETTINGS (several chunks, masked channels in the chunk-level scan) and a typo'd setting."""
    assert kernels.SETTINGS["chunk"] == 0  # chunk length by shape
    assert kernels._auto_chunk(2, 293, 20) == 128 and kernels._auto_chunk(4, 65536, 384) == 64
    w, u, k, v = _inputs(2 * 128 + 37, 20, 2, seed)
    out = kernels.wkv_forward(w, u, k, v)
    assert _channel_rel_err(out, bi_wkv_quadratic(w, u, k, v)) < 5e-5
    with pytest.raises(TypeError, match="unknown settings"):
        kernels.wkv_forward(w, u, k, v, chunks=64)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_inputs_round_only_the_result(dtype: torch.dtype, tol: float, seed: int) -> None:
    w, u, k, v = _inputs(90, 16, 2, seed, k_max=5.0)
    k, v = k.to(dtype), v.to(dtype)
    out = kernels.wkv_forward(w, u, k, v, chunk=16, chunk_block=16, scan_block_c=4)
    assert out.dtype == dtype
    assert _channel_rel_err(out, bi_wkv_quadratic(w, u, k, v)) < tol


def test_bi_wkv_triton_backend_forward_and_gradients(seed: int) -> None:
    """Through bi_wkv: the Triton forward and its float64 recomputed backward match the pure PyTorch backend."""
    w, u, k, v = (x.requires_grad_() for x in _inputs(40, 16, 2, seed, decay_max=20.0, k_max=5.0))
    out = bi_wkv(w, u, k, v, backend="triton")
    assert type(out.grad_fn).__name__.startswith("_TritonBiWKV")
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (w, u, k, v), grad)
    ref_inputs = [x.detach().double().requires_grad_() for x in (w, u, k, v)]
    ref_out = bi_wkv(*ref_inputs, backend="torch")
    want = torch.autograd.grad(ref_out, ref_inputs, grad.double())
    assert _channel_rel_err(out.detach(), ref_out.detach()) < 5e-5
    for g_got, g_want in zip(got, want):
        assert g_got.dtype == torch.float32
        assert torch.allclose(g_got.double(), g_want, rtol=1e-4, atol=1e-6 * g_want.abs().max().item())


def test_triton_backend_errors_are_clear(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    w, u, k, v = _inputs(20, 16, 1, seed)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        bi_wkv(w, u, k.double(), v.double(), backend="triton")
    monkeypatch.setattr(wkv_mod, "_TRITON", wkv_mod._LazyKernels("monai_rwkv.ops._no_such_kernels"))
    with pytest.raises(RuntimeError, match="needs triton"):
        bi_wkv(w, u, k, v, backend="triton")


@pytest.mark.skipif(DEVICE.type != "cuda", reason="auto picks Triton only for CUDA tensors")
def test_auto_picks_triton_on_cuda(seed: int) -> None:
    w, u, k, v = (x.requires_grad_() for x in _inputs(64, 16, 1, seed))
    assert type(bi_wkv(w, u, k, v).grad_fn).__name__.startswith("_TritonBiWKV")
    assert not type(bi_wkv(w.double(), u, k.double(), v.double()).grad_fn).__name__.startswith("_TritonBiWKV")
