"""The Triton Bi-WKV kernels against the O(T^2) float64 definition (paper Eq. 8).

With a CUDA device the compiled kernels run on it; without one they run on CPU tensors through Triton's
interpreter (``TRITON_INTERPRET=1``, set before the kernel module is first imported), which executes the same
kernel code, so CI checks the maths and indexing on every run; and every kernel variant the launch code uses is
compiled for CUDA targets (sm_80, sm_90) down to a cubin, which needs no GPU either. Small chunk sizes make short
sequences cover several chunks and several blocks of the chunk-level scan.
"""

from __future__ import annotations

import importlib
import math
import os
from typing import Any

import pytest
import torch

from monai_rwkv.ops import bi_wkv, bi_wkv_quadratic

from .compile_checks import assert_compiled_like_eager
from .triton_launches import POINTER_TYPES, LaunchRecorder, assert_launches_compile

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
    """|w| T of 400 and keys of +-80 overflow float32 unless every partial sum carries its own exponent. The bound
    is 1e-4, as in the bounded-chunks test below: the carried exponents reach |w| T + |k| ~ 480, and their float32
    rounding (ulp(256) = 3.1e-5, ulp(480) = 6.1e-5) is a relative error of the terms; one CI seed gave 5.9e-5,
    typical seeds ~1.8e-5 (the kernels before and after this session's refactors are bitwise equal on it)."""
    w, u, k, v = _inputs(200, 16, 1, seed, decay_max=abs(decay), k_max=80.0)
    w = w.abs() * (1 if decay > 0 else -1)
    out = kernels.wkv_forward(w, u, k, v, chunk=16, chunk_block=16, scan_block_c=4)
    assert torch.isfinite(out).all()
    assert _channel_rel_err(out, bi_wkv_quadratic(w, u, k, v)) < 1e-4


@pytest.mark.parametrize("sign", [1.0, pytest.param(-1.0, marks=pytest.mark.slow)])  # the interpreter: 1-2 min each
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


def _gradient_scales(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The natural scale of each gradient: the sum of the absolute values of the terms that add up to it. With
    ``a_t = grad_t / D_t`` (``D_t`` the softmax denominator) and ``c_ti = a_t W_ti (v_i - out_t)``: ``grad_w`` sums
    ``-(|t - i| - 1) c_ti`` over ``t != i``, ``grad_u`` sums ``c_tt``, ``grad_k_i`` sums ``c_ti`` over ``t`` and
    ``grad_v_i`` sums ``a_t W_ti``; ``v_i - out_t`` counts as ``|v_i| + |out_t|`` (the kernels form ``v_i``- and
    ``out_t``-weighted sums apart and subtract). Float64, O(B T^2 C). Signed sums cancel, so an error is judged
    against these (float32 summation promises no better), not against the result."""
    w, u, k, v, grad = (x.detach().double().cpu() for x in (w, u, k, v, grad))
    idx = torch.arange(k.shape[1], dtype=torch.float64)
    dist = (idx[:, None] - idx[None, :]).abs()
    eye = dist == 0
    logits = k[:, None] - (dist - 1)[None, :, :, None] * w
    logits = torch.where(eye[None, :, :, None], (u + k)[:, None], logits)
    weights = torch.softmax(logits, dim=2)  # (B, t, i, C)
    out = (weights * v[:, None]).sum(2)
    a_w = grad.abs()[:, :, None] * weights
    terms = a_w * (v[:, None].abs() + out[:, :, None].abs())
    scale_w = (terms * ((dist - 1).abs() * ~eye)[None, :, :, None]).sum((0, 1, 2))
    scale_u = (terms * eye[None, :, :, None]).sum((0, 1, 2))
    return scale_w, scale_u, terms.sum(1), a_w.sum(1)


def _check_gradients(inputs: tuple[torch.Tensor, ...], grad: torch.Tensor, got: tuple, tol: float) -> None:
    """``got`` (grad_w, grad_u, grad_k, grad_v) against float64 autograd through the O(T^2) definition, each
    error at most ``tol`` times the scale of :func:`_gradient_scales` (terms below float32's range aside)."""
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = torch.autograd.grad(bi_wkv_quadratic(*ref_inputs), ref_inputs, grad.double())
    for got_g, want_g, scale in zip(got, want, _gradient_scales(*inputs, grad)):
        assert torch.isfinite(got_g).all()
        assert ((got_g.double().cpu() - want_g.cpu()).abs() <= tol * scale + 1e-30).all()


@pytest.mark.parametrize(
    "seq_len,channels,batch,chunk,decay_max,k_max,tol",
    [
        (40, 16, 2, 16, 20.0, 5.0, 1e-4),
        # 19 chunks: two blocks of the chunk-level scan
        pytest.param(300, 16, 2, 16, 60.0, 30.0, 1e-4, marks=pytest.mark.slow),
        (77, 40, 3, 16, 60.0, 30.0, 1e-4),  # masked rows and channels
        (130, 24, 1, 64, 60.0, 30.0, 1e-4),
        # |w| L = 32 > FAST_RANGE: the general scans. Keys of +-80 and |w| T = 400 leave exponents of several
        # hundred in float32 (ulp(512) = 3e-5 relative per rounding); seen up to 4.3e-5 over ten seeds, the
        # cases above up to 9e-6
        (200, 16, 1, 16, 400.0, 80.0, 5e-4),
    ],
)
def test_backward_matches_float64_definition(
    seq_len: int, channels: int, batch: int, chunk: int, decay_max: float, k_max: float, tol: float, seed: int
) -> None:
    """The Triton backward (wkv_backward on wkv_forward's chunk states) against float64 autograd of Eq. 8."""
    inputs = _inputs(seq_len, channels, batch, seed, decay_max=decay_max, k_max=k_max)
    out, state, plan = kernels.wkv_forward(*inputs, return_state=True, chunk=chunk, chunk_block=16, scan_block_c=4)
    assert state.shape == (6, batch, -(-seq_len // chunk), channels)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
    got = kernels.wkv_backward(*inputs, state, grad, plan)
    assert [g.shape for g in got] == [x.shape for x in inputs]
    _check_gradients(inputs, grad, got, tol)


@pytest.mark.parametrize("bounded", [1, 0])
def test_backward_bounded_and_general_chunk_states_agree(bounded: int, seed: int) -> None:
    """Both within-chunk state rules of the backward, on blocks at the limit and a block with one channel over
    it (as the forward's test), against float64; |w| T reaches ~190."""
    chunk, block = 16, 16
    w, u, k, v = _inputs(100, 3 * block, 2, seed, k_max=30.0)
    g = torch.Generator().manual_seed(seed + 1)
    share = torch.rand(3 * block, generator=g).to(DEVICE)
    u = (torch.rand(3 * block, generator=g).to(DEVICE) * 2 - 1).sign() * share * kernels.FAST_RANGE * 0.999
    w = (1 - share) * kernels.FAST_RANGE * 0.999 / chunk * (torch.arange(3 * block, device=DEVICE) % 2 * 2 - 1)
    w[2 * block] = 1.5 * kernels.FAST_RANGE / chunk
    settings = {"chunk": chunk, "chunk_block": 16, "scan_block_c": 4, "block_c": block, "bounded": bounded}
    out, state, plan = kernels.wkv_forward(w, u, k, v, return_state=True, **settings)
    grad = torch.randn(out.shape, generator=g).to(DEVICE)
    _check_gradients((w, u, k, v), grad, kernels.wkv_backward(w, u, k, v, state, grad, plan), 5e-4)


def _through_triton(out: torch.Tensor) -> bool:
    """Whether ``out`` came from the Triton custom op (its autograd node names the op)."""
    return "bi_wkv_triton" in type(out.grad_fn).__name__


def test_bi_wkv_triton_backend_forward_and_gradients(seed: int) -> None:
    """Through bi_wkv: the Triton forward and backward match the pure PyTorch backend; gradients come back in
    each input's dtype, also for one token and for half-precision keys and values."""
    w, u, k, v = (x.requires_grad_() for x in _inputs(40, 16, 2, seed, decay_max=20.0, k_max=5.0))
    out = bi_wkv(w, u, k, v, backend="triton")
    assert _through_triton(out)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (w, u, k, v), grad)
    assert _channel_rel_err(out.detach(), bi_wkv(*(x.detach().double() for x in (w, u, k, v)))) < 5e-5
    assert all(g.dtype == torch.float32 for g in got)
    _check_gradients((w, u, k, v), grad, got, 1e-4)

    w, u, k, v = (x.requires_grad_() for x in _inputs(1, 16, 2, seed))  # one token: out = v, grad_v = grad
    grad = torch.randn_like(v)
    got = torch.autograd.grad(bi_wkv(w, u, k, v, backend="triton"), (w, u, k, v), grad)
    assert torch.allclose(got[3], grad, rtol=1e-6, atol=0) and got[0].abs().max() == 0
    assert got[1].abs().max() <= 1e-6 * (grad * v).abs().sum() and got[2].abs().max() <= 1e-6 * (grad * v).abs().max()

    w, u, k, v = _inputs(90, 16, 2, seed, k_max=5.0)
    k, v = (x.half().requires_grad_() for x in (k, v))
    grad = torch.randn_like(v)
    got = torch.autograd.grad(bi_wkv(w, u, k, v, backend="triton"), (k, v), grad)
    ref_inputs = [x.detach().double().requires_grad_() for x in (k, v)]
    want = torch.autograd.grad(bi_wkv_quadratic(w, u, *ref_inputs), ref_inputs, grad.double())
    for g_got, g_want in zip(got, want):
        assert g_got.dtype == torch.float16
        assert _channel_rel_err(g_got, g_want) < 2e-3


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
    assert _through_triton(bi_wkv(w, u, k, v))
    assert not _through_triton(bi_wkv(w.double(), u, k.double(), v.double()))


def test_torch_compile_keeps_the_triton_kernels(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile the Triton kernels stay opaque custom ops, forward and backward (before, compiling sent
    CUDA tensors down the float64 pure path): same outputs and gradients as eager, the ops in the compiled graphs,
    and the shapes the fake implementations promise are the ones the kernels return."""
    assert wkv_mod.triton_available()  # loads the kernels: a first import inside a fullgraph trace is a graph break
    w, u, k, v = _inputs(300, 16, 2, seed, decay_max=20.0, k_max=5.0)
    grad_out = torch.randn(k.shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)

    def fn(w, u, k, v):
        return bi_wkv(w, u, torch.tanh(k), v, backend="triton") * 2

    assert_compiled_like_eager(fn, (w, u, k, v), grad_out, "bi_wkv_triton")
    layout = list(kernels.scan_layout(300, (15, 20), (1, 0)))
    forward_args = (w, u, k, v, layout)
    torch.library.opcheck(wkv_mod._triton_forward, forward_args, test_utils=("test_schema", "test_faketensor"))
    out, state = wkv_mod._triton_forward(*forward_args)
    backward_args = (w, u, k, v, state, grad_out, layout)
    torch.library.opcheck(wkv_mod._triton_backward, backward_args, test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(ValueError, match="does not belong to keys"):
        wkv_mod._triton_backward(w, u, k[:, :17], v[:, :17], state, grad_out[:, :17], layout)

    def column_scan(w, u, k, v):
        return bi_wkv(w, u, torch.tanh(k), v, backend="triton", grid=(15, 20), order=(1, 0)) * 2

    with monkeypatch.context() as patch:
        patch.setattr(wkv_mod, "TRITON_IN_PLACE_SCANS", True)
        assert_compiled_like_eager(column_scan, (w, u, k, v), grad_out, "bi_wkv_triton")


@pytest.mark.parametrize(
    "grid, order",
    [((37, 21), (1, 0)), ((8, 40), (1, 0)), ((5, 7, 9), (2, 0, 1)), ((6, 5, 11), (1, 2, 0)), ((4, 6, 10), (0, 2, 1))],
)
def test_scan_order_in_place_matches_permuted_copies(grid: tuple[int, ...], order: tuple[int, ...], seed: int) -> None:
    """Scanning raster-ordered tokens in another axis order inside the kernels (no copies) gives exactly the result
    and gradients of permuting copies into that order, scanning in storage order and permuting back: the same
    values meet the same arithmetic. Sizes that are not multiples of the chunk, 2D column scans and 3D rotations."""
    seq_len = math.prod(grid)
    w, u, k, v = _inputs(seq_len, 16, 2, seed, decay_max=20.0)
    settings = {"chunk": 16, "chunk_block": 16, "scan_block_c": 4}
    layout = kernels.scan_layout(seq_len, grid, order)
    shape = (2, *grid, 16)
    forward = (0, *(a + 1 for a in order), len(shape) - 1)
    inverse = tuple(forward.index(i) for i in range(len(shape)))

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(shape).permute(forward).reshape(2, seq_len, 16).contiguous()

    def unpermute(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(tuple(shape[i] for i in forward)).permute(inverse).reshape(2, seq_len, 16)

    out, state, plan = kernels.wkv_forward(w, u, k, v, return_state=True, layout=layout, **settings)
    ref, ref_state, ref_plan = kernels.wkv_forward(w, u, permute(k), permute(v), return_state=True, **settings)
    assert torch.equal(out, unpermute(ref)) and torch.equal(state, ref_state)
    grad = torch.randn(k.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
    got = kernels.wkv_backward(w, u, k, v, state, grad, plan, layout)
    want = kernels.wkv_backward(w, u, permute(k), permute(v), ref_state, permute(grad), ref_plan)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[2], unpermute(want[2])) and torch.equal(got[3], unpermute(want[3]))


def test_spatial_mix_with_in_place_scans(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-WKV (a raster scan, then a column scan) on the Triton backend gives the same output and parameter
    gradients, bit for bit, with the column scan in place as through permuted copies."""
    from functools import partial

    from monai_rwkv.networks.blocks import ReWKV
    from monai_rwkv.networks.blocks import rwkv as rwkv_block

    monkeypatch.setattr(rwkv_block, "bi_wkv", partial(bi_wkv, backend="triton"))
    torch.manual_seed(seed)
    mix = ReWKV(2, 16, recurrence=2).to(DEVICE)
    x = torch.randn(2, 24 * 40, 16, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    results = []
    for in_place in (True, False):
        monkeypatch.setattr(wkv_mod, "TRITON_IN_PLACE_SCANS", in_place)
        mix.zero_grad()
        out = mix(x, (24, 40))
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in mix.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_describe_backend_names_the_cuda_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's verbose line for a CUDA device says which fast-path switches are on."""
    from monai_rwkv.ops import norm

    assert wkv_mod.triton_available()
    for layer_norm, in_place, tail in (
        (False, False, "kernels)"),
        (True, False, "; Triton LayerNorm on)"),
        (True, True, "; Triton LayerNorm, in-place scans on)"),
    ):
        monkeypatch.setattr(norm, "TRITON_LAYER_NORM", layer_norm)
        monkeypatch.setattr(wkv_mod, "TRITON_IN_PLACE_SCANS", in_place)
        line = wkv_mod.describe_backend("cuda")
        assert line.startswith("triton (fused CUDA kernels") and line.endswith(tail), line


@pytest.mark.parametrize("in_place", [True, False])
def test_bi_wkv_scan_order_on_every_backend(in_place: bool, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bi_wkv(..., grid, order)``: the Triton kernels (in place, or on permuted copies with the switch off) and
    the float64 path through permuted copies agree to float32 rounding, forward and backward; a raster order is the
    plain call."""
    monkeypatch.setattr(wkv_mod, "TRITON_IN_PLACE_SCANS", in_place)
    grid, order = (12, 17), (1, 0)
    w, u, k, v = (x.requires_grad_() for x in _inputs(math.prod(grid), 16, 2, seed, decay_max=20.0))
    grad = torch.randn(k.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
    results = {}
    for backend in ("triton", "torch"):
        out = bi_wkv(w, u, k, v, backend=backend, grid=grid, order=order)
        results[backend] = (out, *torch.autograd.grad(out, (w, u, k, v), grad))
    for got, want in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    plain = bi_wkv(w, u, k, v, backend="triton", grid=grid, order=(0, 1))
    assert torch.equal(plain, bi_wkv(w, u, k, v, backend="triton"))
    with pytest.raises(ValueError, match="is not a scan of a grid"):
        bi_wkv(w, u, k, v, backend="triton", grid=(12, 16), order=(1, 0))


_LAUNCHED = ("_chunk_summary", "_chunk_scan", "_chunk_output", "_grad_prep", "_grad_output")


def test_every_kernel_variant_compiles_for_cuda(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """The interpreter checks what the kernels compute; this checks that Triton's compiler accepts every variant the
    launch code uses (float32, float16 and bfloat16 inputs; with and without second values; bounded and general chunk
    states; chunk lengths 64 and 128): each recorded launch compiles for sm_80 and sm_90 down to a cubin, with the
    ptxas that ships with triton, in a process of its own without the interpreter and without a GPU."""
    launches: list[dict[str, Any]] = []
    for name in _LAUNCHED:
        monkeypatch.setattr(kernels, name, LaunchRecorder(name, getattr(kernels, name), launches))
    for dtype in POINTER_TYPES:
        w, u, k, v = _inputs(150, 16, 1, seed, decay_max=20.0, k_max=5.0)
        k, v = (x.to(dtype).requires_grad_() for x in (k, v))
        bi_wkv(w, u, k, v, backend="triton").sum().backward()  # default settings: chunk 128
    w, u, k, v = _inputs(150, 16, 1, seed)
    for bounded in (0, 1):
        settings = {"chunk": 64, "chunk_block": 16, "bounded": bounded}
        layout = kernels.scan_layout(150, (10, 15), (1, 0))  # a column scan's layout arguments
        out, state, plan = kernels.wkv_forward(w, u, k, v, return_state=True, layout=layout, **settings)
        kernels.wkv_backward(w, u, k, v, state, torch.ones_like(out), plan, layout)
    assert_launches_compile(launches, "monai_rwkv.ops._triton_wkv", _LAUNCHED)
