"""The Triton LayerNorm kernel against float64 ``F.layer_norm``, its switch, and its compilation for CUDA targets.

Without a GPU the kernel runs on CPU tensors through Triton's interpreter (tests/conftest.py sets
``TRITON_INTERPRET=1``); its launches are also compiled for sm_80 and sm_90 down to a cubin.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("no CUDA device and TRITON_INTERPRET is switched off", allow_module_level=True)
pytest.importorskip("triton")

from monai_rwkv.networks.nets import RestoreRWKV  # noqa: E402
from monai_rwkv.ops import norm  # noqa: E402

from .triton_launches import LaunchRecorder, assert_launches_compile  # noqa: E402

kernels = importlib.import_module("monai_rwkv.ops._triton_norm")

#: error floor, relative to the largest |output|, per input/output dtype (the output's own rounding)
TOLERANCE = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _inputs(rows: int, channels: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Tokens whose rows have scales over five orders of magnitude and offsets up to 100x their spread (the case a
    one-pass variance gets wrong; at most ~1e4, inside float16's range), random weight and bias."""
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** (torch.rand(rows, 1, generator=g) * 5 - 3)
    offset = (torch.rand(rows, 1, generator=g) * 2 - 1) * 100 * scale
    x = torch.randn(rows, channels, generator=g) * scale + offset
    weight = torch.randn(channels, generator=g) * 2
    bias = torch.randn(channels, generator=g)
    return tuple(t.to(DEVICE, dtype) for t in (x, weight, bias))


def _plain(rows: int, channels: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Standard-normal tokens, weight and bias: two float32 LayerNorms agree on them to ~1e-6."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g).to(DEVICE) for shape in ((rows, channels), (channels,), (channels,)))


@pytest.fixture
def switch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(norm, "TRITON_LAYER_NORM", True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [3, 16, 48, 130])
def test_kernel_matches_float64(dtype: torch.dtype, channels: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every element written (the output is poisoned with NaN first), and no further from float64 LayerNorm of the same
    inputs than PyTorch's own LayerNorm in that dtype (plus the output's rounding: rows offset far from
    zero lose digits in any float32 mean), for row counts that leave the last tile partly empty and channels that
    are not powers of two."""
    rows = 4096 // triton_block(channels) * 2 + 37
    x, weight, bias = _inputs(rows, channels, seed, dtype)
    empty_like = torch.empty_like
    monkeypatch.setattr(kernels.torch, "empty_like", lambda t: empty_like(t).fill_(float("nan")))
    out = kernels.layer_norm_forward(x.reshape(1, rows, channels), weight, bias, 1e-5)
    monkeypatch.undo()
    assert out.dtype == dtype and out.shape == (1, rows, channels) and out.is_contiguous()
    assert not out.isnan().any()
    ref = F.layer_norm(x.double(), (channels,), weight.double(), bias.double(), 1e-5)
    error = (out[0].double() - ref).abs().max().item()
    torch_error = (F.layer_norm(x, (channels,), weight, bias, 1e-5).double() - ref).abs().max().item()
    assert error <= torch_error + TOLERANCE[dtype] * ref.abs().max().item(), (error, torch_error)


def triton_block(channels: int) -> int:
    return max(1, kernels.TILE_ELEMENTS // (1 << (channels - 1).bit_length()))


def test_non_contiguous_input(seed: int) -> None:
    """A strided view (channel-first storage read as tokens) is normalised as its values, not its storage."""
    x, weight, bias = _plain(300, 16, seed)
    strided = x.t().contiguous().t()
    assert not strided.is_contiguous()
    out = kernels.layer_norm_forward(strided, weight, bias, 1e-5)
    torch.testing.assert_close(out, F.layer_norm(x, (16,), weight, bias, 1e-5), rtol=1e-5, atol=1e-5)


def test_switch_off_is_pytorch(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off (the default), :func:`norm.layer_norm` is exactly ``F.layer_norm`` and never launches the kernel."""
    monkeypatch.setattr(norm, "TRITON_LAYER_NORM", False)
    monkeypatch.setattr(kernels, "layer_norm_forward", _forbidden)
    x, weight, bias = _inputs(100, 16, seed, torch.float32)
    assert torch.equal(norm.layer_norm(x, weight, bias), F.layer_norm(x, (16,), weight, bias, 1e-5))


def _forbidden(*args: object) -> None:
    raise AssertionError("the Triton kernel ran")


def test_switch_on_takes_the_kernels(seed: int, switch_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """On: inference runs the forward kernel, training the forward and backward kernels (same values and gradients
    as ``F.layer_norm``); LayerNorms without affine parameters take ``F.layer_norm``."""
    x, weight, bias = _plain(100, 16, seed)
    calls: list[str] = []
    for name in ("layer_norm_forward", "layer_norm_backward"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, f=original, n=name: calls.append(n) or f(*a))
    with torch.no_grad():
        fast = norm.layer_norm(x, weight, bias)
    assert calls == ["layer_norm_forward"]
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    norm.layer_norm(*leaves).pow(2).sum().backward()
    assert calls == ["layer_norm_forward"] * 2 + ["layer_norm_backward"]
    plain = [t.clone().requires_grad_() for t in (x, weight, bias)]
    slow = F.layer_norm(plain[0], (16,), plain[1], plain[2], 1e-5)
    slow.pow(2).sum().backward()
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)
    for got, want in zip(leaves, plain):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-4)
    assert torch.equal(norm.layer_norm(x, None, None), F.layer_norm(x, (16,), None, None, 1e-5))
    assert len(calls) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [3, 16, 48, 130])
def test_backward_matches_float64(dtype: torch.dtype, channels: int, seed: int) -> None:
    """Gradients of the input, weight and bias against float64 autograd of ``F.layer_norm`` on the same inputs and
    output gradient, no further from it than PyTorch's own autograd in that dtype plus the gradient's rounding (the
    weight and bias sums span several tiles)."""
    rows = 4096 // triton_block(channels) * 3 + 11
    x, weight, bias = _inputs(rows, channels, seed, dtype)
    weight, bias = weight.float(), bias.float()  # parameters stay float32 under mixed precision
    grad = torch.randn(rows, channels, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE, dtype)
    dx, dw, db = kernels.layer_norm_backward(x, weight, grad, 1e-5)
    assert dx.dtype == dtype and dw.dtype == db.dtype == torch.float32

    def grads(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = [v.detach().clone().requires_grad_() for v in (t, w, b)]
        F.layer_norm(leaves[0], (channels,), leaves[1], leaves[2], 1e-5).backward(g)
        return tuple(v.grad.double() for v in leaves)

    ref = grads(*(v.double() for v in (x, weight, bias, grad)))
    torch_grads = grads(x.float(), weight, bias, grad.float())
    for got, want, theirs, floor in zip((dx, dw, db), ref, torch_grads, (TOLERANCE[dtype], 1e-6, 1e-6)):
        error = (got.double() - want).abs().max().item()
        torch_error = (theirs - want).abs().max().item()
        assert error <= torch_error + floor * want.abs().max().item(), (error, torch_error)


def test_network_with_the_kernels(seed: int, switch_on: None) -> None:
    """The light network with every block's LayerNorm through the kernels matches PyTorch's LayerNorm: inference
    output, and the parameters' gradients of a training loss."""
    torch.manual_seed(seed)
    net = RestoreRWKV.from_preset("light").to(DEVICE)
    x = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    results = {}
    for switch in (True, False):
        norm.TRITON_LAYER_NORM = switch
        with torch.no_grad():
            out = net.eval()(x)
        net.train().zero_grad()
        net(x).square().mean().backward()
        results[switch] = (out, {n: p.grad.clone() for n, p in net.named_parameters()})
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    for name, grad in results[True][1].items():
        scale = results[False][1][name].abs().max().item()
        torch.testing.assert_close(grad, results[False][1][name], rtol=1e-3, atol=1e-4 * scale + 1e-9, msg=name)


def test_every_kernel_variant_compiles_for_cuda(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward and backward launches of three widths and dtypes compile for sm_80 and sm_90 (no GPU needed)."""
    launches: list = []
    names = ("_layer_norm_rows", "_layer_norm_rows_backward")
    for name in names:
        monkeypatch.setattr(kernels, name, LaunchRecorder(name, getattr(kernels, name), launches))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for channels in (16, 48, 130):
            x, weight, bias = _inputs(64, channels, seed, dtype)
            kernels.layer_norm_forward(x, weight, bias, 1e-5)
            kernels.layer_norm_backward(x, weight.float(), torch.ones_like(x), 1e-5)
    assert_launches_compile(launches, "monai_rwkv.ops._triton_norm", names)
