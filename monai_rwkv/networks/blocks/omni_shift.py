"""Omni-Shift: multi-scale depthwise token shift with structural re-parameterisation."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from monai_rwkv.ops.wkv import _needs_torch_graph

__all__ = ["OmniShift"]

_FUSED_SIZE = 5
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# Per module: (parameter fingerprint, detached parameters, fused kernel) of the last gradient-free eval call.
_INFERENCE_KERNELS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, tuple[torch.Tensor, ...], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


class OmniShift(nn.Module):
    """Depthwise mix of identity, 1, 3 and 5-wide kernels, fused to one 5-wide kernel at inference.

    In training mode the output is ``a0 x + a1 dw1(x) + a2 dw3(x) + a3 dw5(x)`` (four branches, zero
    padding, no bias). In eval mode the same linear map is applied as a single depthwise convolution
    whose kernel, ``a0 delta + a1 pad(K1) + a2 pad(K3) + a3 K5`` (:meth:`fused_kernel`), is recomputed from
    the parameters whenever autograd needs its graph or the module is traced, scripted, compiled or exported
    (one convolution in the graph). Gradient-free calls reuse the last kernel while every parameter keeps its
    storage, dtype and version counter (in-place updates such as optimiser steps and ``load_state_dict`` bump
    it), so eval and train never disagree; the reuse saves ~35 us of small tensor operations per call (4 % of the
    light preset's 128^2 forward on CPU).

    The state dict carries the fused kernel under ``conv5x5_reparam.weight``, as the published
    checkpoints do. It is written fresh on every save and ignored on load (it is derived data).

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: number of channels C.

    Shapes:
        input and output (B, C, *spatial).
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.conv1x1 = conv_type(channels, channels, 1, groups=channels, bias=False)
        self.conv3x3 = conv_type(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.conv5x5 = conv_type(channels, channels, 5, padding=2, groups=channels, bias=False)
        self.alpha = nn.Parameter(torch.randn(4))
        self.register_state_dict_post_hook(_save_fused_kernel)
        self.register_load_state_dict_pre_hook(_drop_fused_kernel)

    def fused_kernel(self) -> torch.Tensor:
        """The single depthwise kernel equal to the four branches, shape (C, 1, 5, ..., 5)."""
        k5 = self.conv5x5.weight
        pad1 = (_FUSED_SIZE // 2,) * (2 * self.spatial_dims)
        pad3 = (_FUSED_SIZE // 2 - 1,) * (2 * self.spatial_dims)
        identity = F.pad(torch.ones_like(self.conv1x1.weight), pad1)
        return (
            self.alpha[0] * identity
            + self.alpha[1] * F.pad(self.conv1x1.weight, pad1)
            + self.alpha[2] * F.pad(self.conv3x3.weight, pad3)
            + self.alpha[3] * k5
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            a = self.alpha
            return a[0] * x + a[1] * self.conv1x1(x) + a[2] * self.conv3x3(x) + a[3] * self.conv5x5(x)
        conv = _CONV_FN[self.spatial_dims]
        return conv(x, self._eval_kernel(x.dtype), padding=_FUSED_SIZE // 2, groups=x.shape[1])

    def _eval_kernel(self, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`fused_kernel` in ``dtype``; reused between gradient-free eager calls while the parameters hold."""
        params = (self.alpha, self.conv1x1.weight, self.conv3x3.weight, self.conv5x5.weight)
        needs_graph = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if needs_graph or _recording() or any(p.is_inference() for p in params):  # inference tensors: no versions
            return self.fused_kernel().to(dtype)
        # The cache holds the parameters' storages, so no new parameter can reuse an address it remembers.
        fingerprint = tuple((p.data_ptr(), p._version, p.dtype, p.device, p.shape) for p in params) + (dtype,)
        cached = _INFERENCE_KERNELS.get(self)
        if cached is not None and cached[0] == fingerprint:
            return cached[2]
        with torch.no_grad():
            kernel = self.fused_kernel().to(dtype)
        _INFERENCE_KERNELS[self] = (fingerprint, tuple(p.detach() for p in params), kernel)
        return kernel


def _recording() -> bool:
    """True while TorchScript, ONNX, torch.compile or torch.export record the computation."""
    return _needs_torch_graph() or torch.compiler.is_compiling()


def _save_fused_kernel(module: OmniShift, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    with torch.no_grad():
        state_dict[prefix + "conv5x5_reparam.weight"] = module.fused_kernel().detach()


def _drop_fused_kernel(module: OmniShift, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    state_dict.pop(prefix + "conv5x5_reparam.weight", None)
