"""Omni-Shift re-parameterisation, scan orders and the 3D Re-WKV definition, against float64 references."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from monai_rwkv.networks.blocks import OmniShift, ReWKV, RWKVBlock, scan_order, to_image, to_tokens
from monai_rwkv.networks.blocks import rwkv as rwkv_blocks
from monai_rwkv.networks.blocks.rwkv import pointwise
from monai_rwkv.ops import bi_wkv_quadratic


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_omni_shift_eval_equals_train(spatial_dims: int, seed: int) -> None:
    shift = OmniShift(spatial_dims, 6)
    x = torch.randn(2, 6, *([9, 7, 5][:spatial_dims])) * 50
    train_out = shift.train()(x)
    n_params = len(list(shift.parameters()))
    eval_out = shift.eval()(x)
    assert len(list(shift.parameters())) == n_params  # nothing registered inside forward
    assert ((eval_out - train_out).abs().max() / train_out.abs().max()).item() <= 1e-5
    shift64 = shift.double()
    ref = shift64.train()(x.double())
    assert torch.allclose(shift64.eval()(x.double()), ref, rtol=0, atol=1e-12 * ref.abs().max().item())


def test_fused_kernel_in_state_dict_is_fresh_and_ignored_on_load(seed: int) -> None:
    shift = OmniShift(2, 4)
    state = shift.state_dict()
    assert list(state) == ["alpha", "conv1x1.weight", "conv3x3.weight", "conv5x5.weight", "conv5x5_reparam.weight"]
    assert torch.equal(state["conv5x5_reparam.weight"], shift.fused_kernel().detach())
    state["conv5x5_reparam.weight"] = torch.randn(4, 1, 5, 5) * 1e3  # stale or hostile derived data
    other = OmniShift(2, 4)
    other.load_state_dict(state)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(other.eval()(x), shift.eval()(x))


def test_omni_shift_gradient_free_kernel_follows_every_parameter_change(seed: int) -> None:
    """Gradient-free eval calls reuse the fused kernel, and recompute it after in-place updates (optimiser steps,
    ``load_state_dict``), dtype changes and replaced parameter data: always equal to the explicit branches."""
    shift = OmniShift(2, 5).eval()
    x = torch.randn(2, 5, 11, 9) * 20

    def check(module: OmniShift, inputs: torch.Tensor) -> None:
        with torch.no_grad():
            got = module(inputs)
            want = module.train()(inputs)
            module.eval()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())

    with torch.no_grad():
        first = shift._eval_kernel(torch.float32)
        assert shift._eval_kernel(torch.float32) is first  # reused
    check(shift, x)
    optimiser = torch.optim.SGD(shift.parameters(), lr=0.5)
    shift.train()(x).square().mean().backward()
    optimiser.step()
    check(shift.eval(), x)
    with torch.no_grad():
        shift.conv5x5.weight.mul_(-3.0)
    check(shift, x)
    shift.load_state_dict(OmniShift(2, 5).state_dict())
    check(shift, x)
    shift.conv3x3.weight.data = torch.randn_like(shift.conv3x3.weight) * 4
    check(shift, x)
    shift.double()
    check(shift, x.double())
    shift.float()
    with torch.inference_mode():  # in-place change inside inference mode bumps the version too
        shift.alpha.add_(0.25)
    check(shift, x)
    with torch.inference_mode():  # parameters that are inference tensors (no version counter)
        built = OmniShift(2, 5).eval()
        assert built.alpha.is_inference()
        want = built.train()(x)
        assert torch.allclose(built.eval()(x), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    tracked = x.clone().requires_grad_()
    shift.eval()(tracked).sum().backward()  # grad-enabled eval keeps the graph to the parameters
    assert shift.alpha.grad is not None and tracked.grad is not None


def test_omni_shift_is_thread_safe(seed: int) -> None:
    """Threads sharing one module, half of them gradient-free (the reused kernel, first filled concurrently), the
    others recomputing it: every call gives the single-threaded result."""
    shift = OmniShift(2, 8).eval()
    inputs = [torch.randn(1, 8, 32, 32) for _ in range(8)]
    expected = [shift(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        for _ in range(20):
            with torch.set_grad_enabled(i % 2 == 0):
                results[i] = shift(inputs[i]).detach()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(results[i], expected[i]) for i in range(8))


def test_scan_orders() -> None:
    assert [scan_order(2, j) for j in range(3)] == [(0, 1), (1, 0), (0, 1)]
    # fastest (last) axis cycles W (2), H (1), D (0)
    assert [scan_order(3, j) for j in range(4)] == [(0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 1, 2)]


def _rewkv_reference_3d(mix: ReWKV, x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """3D Re-WKV from its definition: scan j reads tokens with W, H, D (cycling) fastest; float64."""
    b, t, c = x.shape
    d, h, w = shape
    xs = mix.omni_shift(x.reshape(b, d, h, w, c).permute(0, 4, 1, 2, 3))
    xs = xs.permute(0, 2, 3, 4, 1).reshape(b, t, c)
    k, v, r = xs @ mix.key.weight.T, xs @ mix.value.weight.T, xs @ mix.receptance.weight.T
    # (read order as a permutation of the (b, d, h, w, c) grid, its inverse)
    orders = [
        ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4)),
        ((0, 3, 1, 2, 4), (0, 2, 3, 1, 4)),
        ((0, 2, 3, 1, 4), (0, 3, 1, 2, 4)),
    ]
    for j in range(mix.recurrence):
        fwd, inv = orders[j % 3]
        grid = (b, d, h, w, c)
        kk = k.reshape(grid).permute(fwd).reshape(b, t, c)
        vv = v.reshape(grid).permute(fwd).reshape(b, t, c)
        out = bi_wkv_quadratic(mix.spatial_decay[j] / t, mix.spatial_first[j] / t, kk, vv)
        v = out.reshape([grid[i] for i in fwd]).permute(inv).reshape(b, t, c)
    return (torch.sigmoid(r) * v) @ mix.output.weight.T


@pytest.mark.parametrize("recurrence", [3, 4])
def test_rewkv_3d_matches_definition(recurrence: int, seed: int) -> None:
    shape = (3, 4, 5)
    mix = ReWKV(3, 6, recurrence).double().eval()
    with torch.no_grad():
        mix.spatial_decay.mul_(20)
        mix.spatial_first.mul_(20)
        x = torch.randn(2, 60, 6, dtype=torch.float64) * 3
        ours = mix(x, shape)
        ref = _rewkv_reference_3d(mix, x, shape)
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-6
    mix32 = mix.float()
    with torch.no_grad():
        ours32 = mix32(x.float(), shape)
    assert ((ours32.double() - ref).abs().max() / ref.abs().max()).item() <= 1e-4


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_block_keeps_channels_last_and_shape(spatial_dims: int, seed: int) -> None:
    block = RWKVBlock(spatial_dims, 8, recurrence=spatial_dims)
    size = (6, 10) if spatial_dims == 2 else (4, 6, 5)
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    x = torch.randn(2, 8, *size).to(memory_format=fmt)
    out = block(x)
    assert out.shape == x.shape
    assert out.is_contiguous(memory_format=fmt)
    out_from_channel_first = block(x.contiguous())  # copied to token order once, then channels-last throughout
    assert out_from_channel_first.is_contiguous(memory_format=fmt)
    assert torch.allclose(out, out_from_channel_first, atol=1e-5)


@pytest.mark.parametrize("spatial_shape", [(6, 10), (4, 6, 5)])
def test_to_image_of_one_item_has_canonical_channels_last_strides(spatial_shape: tuple[int, ...], seed: int) -> None:
    """A batch of one must keep the batch stride T C: with another stride (legal for a size-one axis) PyTorch's
    convolutions treat the tensor as channel-first, copy it and return channel-first (5x slower on CPU)."""
    channels, seq_len = 8, int(torch.tensor(spatial_shape).prod())
    tokens = torch.randn(1, seq_len, channels)
    image = to_image(tokens, spatial_shape)
    assert image.data_ptr() == tokens.data_ptr() and image.stride()[:2] == (seq_len * channels, 1)
    assert torch.equal(to_tokens(image), tokens)
    weight = torch.randn(channels, 1, *(3,) * len(spatial_shape))
    conv = F.conv2d if len(spatial_shape) == 2 else F.conv3d
    out = conv(image, weight, padding=1, groups=channels)
    fmt = torch.channels_last if len(spatial_shape) == 2 else torch.channels_last_3d
    assert out.is_contiguous(memory_format=fmt) and out.stride()[0] == seq_len * channels


@pytest.mark.parametrize("spatial_shape", [(6, 10), (4, 6, 5)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("conv_min_macs", [0, rwkv_blocks._CONV_MIN_MACS])
def test_pointwise_convolution_equals_the_linear_layer(
    spatial_shape: tuple[int, ...], bias: bool, conv_min_macs: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU inference runs token-wise linears of at least ``_CONV_MIN_MACS`` multiply-adds as 1x1 convolutions of
    the channels-last image, smaller ones as the matmul: same values as ``nn.Linear``, same (B, T, C_out) token
    layout either way; with autograd tracking the input it is the linear layer."""
    monkeypatch.setattr(rwkv_blocks, "_CONV_MIN_MACS", conv_min_macs)
    calls: list[tuple[int, ...]] = []
    conv = rwkv_blocks._CONV_FN[len(spatial_shape)]
    monkeypatch.setitem(rwkv_blocks._CONV_FN, len(spatial_shape), lambda x, *a: calls.append(x.shape) or conv(x, *a))
    linear = torch.nn.Linear(12, 20, bias=bias)
    tokens = torch.randn(2, int(torch.tensor(spatial_shape).prod()), 12) * 10
    want = linear(tokens)
    with torch.no_grad():
        got = pointwise(linear, tokens, spatial_shape)
    assert len(calls) == (conv_min_macs == 0)  # these products (2 x 60 x 12 x 20) are below the default
    assert got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    tracked = tokens.requires_grad_()
    out = pointwise(linear, tracked, spatial_shape)
    assert type(out.grad_fn).__name__.startswith(("AddmmBackward", "ViewBackward", "UnsafeViewBackward", "MmBackward"))


def test_omni_shift_matches_explicit_convolutions(seed: int) -> None:
    shift = OmniShift(2, 3).double()
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    a = shift.alpha
    ref = (
        a[0] * x
        + a[1] * F.conv2d(x, shift.conv1x1.weight, groups=3)
        + a[2] * F.conv2d(x, shift.conv3x3.weight, padding=1, groups=3)
        + a[3] * F.conv2d(x, shift.conv5x5.weight, padding=2, groups=3)
    )
    assert torch.allclose(shift.eval()(x), ref, atol=1e-12)
