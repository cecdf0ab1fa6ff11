"""Re-WKV spatial mix, channel mix and the pre-norm RWKV block of Restore-RWKV, for 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_rwkv.ops import bi_wkv
from monai_rwkv.ops.norm import layer_norm

from .omni_shift import _CONV_FN, OmniShift

__all__ = ["ChannelMix", "RWKVBlock", "ReWKV", "TokenLayerNorm", "pointwise", "scan_order", "to_image", "to_tokens"]


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, T, C) in raster order (last spatial axis fastest); a view for channels-last input."""
    return x.flatten(2).transpose(1, 2)


def to_image(tokens: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """(B, T, C) raster-ordered tokens -> (B, C, *spatial); a view (channels-last) for contiguous tokens.

    Reshaped before permuting, so that even a batch of one keeps the canonical channels-last batch stride
    (T C): transposing first gives the size-one batch axis a stride of C, and convolutions then take the
    tensor for channel-first, copy it and return channel-first (5x slower depthwise convolution on CPU plus a
    copy back to tokens, measured at C = 96, 256^2).
    """
    batch, _, channels = tokens.shape
    image = tokens.reshape(batch, *spatial_shape, channels)
    return image.permute(0, image.ndim - 1, *range(1, image.ndim - 1))


#: Fewest multiply-adds for which :func:`pointwise` takes the convolution: oneDNN's convolution has a larger fixed
#: cost per call than the matmul, so below this the matmul was faster on a 2-thread Intel Xeon
#: (benchmarks/pointwise.py; reading in benchmarks/NOTES.md).
_CONV_MIN_MACS = 1 << 26


def _convolution_pays(n_tokens: int, c_in: int, c_out: int) -> bool:
    """Whether :func:`pointwise` runs a CPU inference product of ``n_tokens`` x ``c_in`` by ``c_in`` x ``c_out`` as a
    1x1 convolution (at least ``_CONV_MIN_MACS`` multiply-adds) rather than as the matmul."""
    return n_tokens * c_in * c_out >= _CONV_MIN_MACS


def pointwise(linear: nn.Linear, tokens: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """``linear`` applied to every token of (B, T, C) ``tokens`` -> (B, T, C_out).

    For CPU inference (autograd not tracking ``tokens``) of at least ``_CONV_MIN_MACS`` multiply-adds it runs as a
    1x1 convolution of the channels-last image: oneDNN's convolution was mostly faster than the matmul behind
    ``nn.Linear`` for these tall, thin products (T x C by C x C_out with C = 16-384; benchmarks/pointwise.py), with
    the same values up to float32 summation order. Smaller products, training and CUDA use ``linear(tokens)``.
    """
    n_tokens = tokens.shape[0] * tokens.shape[1]
    cpu_inference = tokens.device.type == "cpu" and _in_place_ok(tokens)
    if not cpu_inference or not _convolution_pays(n_tokens, linear.in_features, linear.out_features):
        return linear(tokens)
    weight = linear.weight.reshape(*linear.weight.shape, *(1,) * len(spatial_shape))
    out = to_tokens(_CONV_FN[len(spatial_shape)](to_image(tokens, spatial_shape), weight, linear.bias))
    # oneDNN may return a channel-first result (seen for 3D with one thread): the tokens are then a transposed view
    return out if out.is_contiguous() else out.contiguous()


def scan_order(spatial_dims: int, index: int) -> tuple[int, ...]:
    """Spatial axes, slowest to fastest varying, of the ``index``-th Re-WKV scan.

    Scan 0 is raster order (the last axis, W, fastest). Each further scan rotates the axes by one, so the
    fastest axis cycles W, H, D, W, ...: in 2D this alternates row-major and column-major order as the
    published model does; in 3D scan 1 is (W, D, H) and scan 2 is (H, W, D).
    """
    return tuple((axis - index) % spatial_dims for axis in range(spatial_dims))


class ReWKV(nn.Module):
    """Re-WKV spatial mix: Omni-Shift, then ``recurrence`` chained Bi-WKV scans along rotating axis orders.

    ``k`` is computed once and reused by every scan; only ``v`` is chained. Scan ``j`` uses decay
    ``spatial_decay[j] / T`` and bonus ``spatial_first[j] / T`` with T the number of tokens.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: token width C.
        recurrence: number of chained scans (2 in the published 2D model).

    Shapes:
        forward(x (B, T, C), spatial_shape) -> (B, T, C), tokens in raster order of ``spatial_shape``.
    """

    def __init__(self, spatial_dims: int, channels: int, recurrence: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.recurrence = recurrence
        self.omni_shift = OmniShift(spatial_dims, channels)
        self.key = nn.Linear(channels, channels, bias=False)
        self.value = nn.Linear(channels, channels, bias=False)
        self.receptance = nn.Linear(channels, channels, bias=False)
        self.output = nn.Linear(channels, channels, bias=False)
        self.spatial_decay = nn.Parameter(torch.randn(recurrence, channels))
        self.spatial_first = nn.Parameter(torch.randn(recurrence, channels))
        # The 2024 release carried an unused depthwise conv per block; accept and discard its weights.
        self.register_load_state_dict_pre_hook(_drop_unused_dwconv)

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
        seq_len = x.shape[1]
        shifted = to_tokens(self.omni_shift(to_image(x, spatial_shape)))
        k, v, r = (pointwise(layer, shifted, spatial_shape) for layer in (self.key, self.value, self.receptance))
        for j in range(self.recurrence):
            w, u = self.spatial_decay[j] / seq_len, self.spatial_first[j] / seq_len
            v = bi_wkv(w, u, k, v, grid=tuple(spatial_shape), order=scan_order(self.spatial_dims, j))
        if _in_place_ok(r):
            return pointwise(self.output, r.sigmoid_().mul_(v), spatial_shape)
        return self.output(torch.sigmoid(r) * v)


def _in_place_ok(x: torch.Tensor) -> bool:
    """True when autograd does not track ``x`` (inference), so its buffer may be overwritten."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def _drop_unused_dwconv(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    state_dict.pop(prefix + "dwconv.weight", None)


class ChannelMix(nn.Module):
    """Channel mix: ``sigmoid(xs Wr) * (relu(xs Wk)^2 Wv)`` with ``xs = OmniShift(x)``.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: token width C.
        hidden_rate: width of the hidden layer as a multiple of C.

    Shapes:
        forward(x (B, T, C), spatial_shape) -> (B, T, C).
    """

    def __init__(self, spatial_dims: int, channels: int, hidden_rate: int = 4) -> None:
        super().__init__()
        hidden = hidden_rate * channels
        self.key = nn.Linear(channels, hidden, bias=False)
        self.omni_shift = OmniShift(spatial_dims, channels)
        self.receptance = nn.Linear(channels, channels, bias=False)
        self.value = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
        shifted = to_tokens(self.omni_shift(to_image(x, spatial_shape)))
        hidden, gate = pointwise(self.key, shifted, spatial_shape), pointwise(self.receptance, shifted, spatial_shape)
        if _in_place_ok(hidden):  # inference: no new buffers for the activations
            return gate.sigmoid_().mul_(pointwise(self.value, hidden.relu_().square_(), spatial_shape))
        return torch.sigmoid(gate) * self.value(torch.square(torch.relu(hidden)))


class TokenLayerNorm(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` over the channels of ``(B, T, C)`` tokens (same parameters and state dict) that
    runs through :func:`monai_rwkv.ops.norm.layer_norm`: the Triton kernels on CUDA (forward and backward) when
    their switch is on, ``F.layer_norm`` otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class RWKVBlock(nn.Module):
    """Pre-norm residual block: ``x + gamma1 * ReWKV(LN(x))``, then ``x + gamma2 * ChannelMix(LN(x))``.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: number of feature channels C.
        recurrence: number of chained Bi-WKV scans in the spatial mix.
        hidden_rate: channel-mix hidden width as a multiple of C.

    Shapes:
        input and output (B, C, *spatial); the output is channels-last (channels-last input is used without
        copies, other layouts are copied once).
    """

    def __init__(self, spatial_dims: int, channels: int, recurrence: int, hidden_rate: int = 4) -> None:
        super().__init__()
        self.ln1 = TokenLayerNorm(channels, eps=1e-5)
        self.ln2 = TokenLayerNorm(channels, eps=1e-5)
        self.att = ReWKV(spatial_dims, channels, recurrence)
        self.ffn = ChannelMix(spatial_dims, channels, hidden_rate)
        self.gamma1 = nn.Parameter(torch.ones(channels))
        self.gamma2 = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_shape = x.shape[2:]
        # Channel-first input (after a pixel shuffle or a concatenation) is copied to token order once, here;
        # otherwise every LayerNorm copies it and the residual adds run strided (light preset, decoder level 1 at
        # 512^2: 4 blocks paid 8 LayerNorm copies and strided adds).
        tokens = to_tokens(x).contiguous()
        tokens = torch.addcmul(tokens, self.gamma1, self.att(self.ln1(tokens), spatial_shape))
        tokens = torch.addcmul(tokens, self.gamma2, self.ffn(self.ln2(tokens), spatial_shape))
        return to_image(tokens, spatial_shape)
