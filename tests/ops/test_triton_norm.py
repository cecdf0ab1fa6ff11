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


def test_switch_on_takes_kernel_for_inference_only(seed: int, switch_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """On: inference runs the kernel; anything autograd tracks, and LayerNorms without affine parameters, take
    ``F.layer_norm`` (the kernel has no backward), with the same values."""
    x, weight, bias = _plain(100, 16, seed)
    calls = []
    forward = kernels.layer_norm_forward
    monkeypatch.setattr(kernels, "layer_norm_forward", lambda *a: calls.append(1) or forward(*a))
    with torch.no_grad():
        fast = norm.layer_norm(x, weight, bias)
    assert calls == [1]
    weight.requires_grad_()
    slow = norm.layer_norm(x, weight, bias)
    slow.sum().backward()
    assert calls == [1] and weight.grad is not None
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(norm.layer_norm(x, None, None), F.layer_norm(x, (16,), None, None, 1e-5))
    assert calls == [1]


def test_network_with_the_kernel(seed: int, switch_on: None) -> None:
    """The light network's forward with every block's LayerNorm through the kernel matches PyTorch's LayerNorm."""
    torch.manual_seed(seed)
    net = RestoreRWKV.from_preset("light").to(DEVICE).eval()
    x = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    with torch.no_grad():
        fast = net(x)
        norm.TRITON_LAYER_NORM = False
        plain = net(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_every_kernel_variant_compiles_for_cuda(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launches the network's widths and the three dtypes make compile for sm_80 and sm_90 (no GPU needed)."""
    launches: list = []
    name = "_layer_norm_rows"
    monkeypatch.setattr(kernels, name, LaunchRecorder(name, getattr(kernels, name), launches))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for channels in (16, 48, 130):
            kernels.layer_norm_forward(*_inputs(64, channels, seed, dtype), 1e-5)
    assert_launches_compile(launches, "monai_rwkv.ops._triton_norm", [name])
