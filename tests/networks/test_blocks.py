"""Omni-Shift re-parameterisation, scan orders and the 3D Re-WKV definition, against float64 references."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from monai_rwkv.networks.blocks import OmniShift, ReWKV, RWKVBlock, scan_order, to_image, to_tokens
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


def test_omni_shift_is_thread_safe(seed: int) -> None:
    shift = OmniShift(2, 8).eval()
    inputs = [torch.randn(1, 8, 32, 32) for _ in range(8)]
    expected = [shift(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        for _ in range(20):
            results[i] = shift(inputs[i])

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
def test_pointwise_convolution_equals_the_linear_layer(spatial_shape: tuple[int, ...], bias: bool, seed: int) -> None:
    """CPU inference runs token-wise linears as 1x1 convolutions of the channels-last image: same values as
    ``nn.Linear``, same (B, T, C_out) token layout; with autograd tracking the input it is the linear layer."""
    linear = torch.nn.Linear(12, 20, bias=bias)
    tokens = torch.randn(2, int(torch.tensor(spatial_shape).prod()), 12) * 10
    want = linear(tokens)
    with torch.no_grad():
        got = pointwise(linear, tokens, spatial_shape)
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
