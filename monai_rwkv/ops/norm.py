"""LayerNorm over the channels of ``(B, T, C)`` tokens, with optional Triton kernels on CUDA.

PyTorch's CUDA LayerNorm is slow for the narrow rows of Restore-RWKV (``C`` = 16-128, millions of rows):
profiled on an NVIDIA H200 it took 43 % of the light network's whole-slice forward (benchmarks/NOTES.md). The
kernels of :mod:`monai_rwkv.ops._triton_norm` normalise tiles of rows in registers instead (forward and backward).
They are off by default until a GPU run has measured them (``benchmarks/gpu_levers.py`` times both): set
:data:`TRITON_LAYER_NORM` to True, or the environment variable ``MONAI_RWKV_TRITON_LAYER_NORM=1`` before import, to
use them.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .wkv import _LazyKernels, _needs_torch_graph, _triton_interpreted

__all__ = ["TRITON_LAYER_NORM", "kernel_available", "layer_norm", "triton_layer_norm_applies"]

#: The switch: run eligible LayerNorms (see :func:`triton_layer_norm_applies`) through the Triton kernel.
TRITON_LAYER_NORM = os.environ.get("MONAI_RWKV_TRITON_LAYER_NORM", "0") not in ("", "0")

_KERNEL = _LazyKernels("monai_rwkv.ops._triton_norm")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel_available() -> bool:
    """Whether the Triton kernel can be used (triton importable)."""
    return _KERNEL.module is not None


def triton_layer_norm_applies(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> bool:
    """Whether :func:`layer_norm` takes the Triton kernels for these arguments: the switch is on; a CUDA tensor (or
    any, under ``TRITON_INTERPRET=1``) of float32/float16/bfloat16 with weight and bias; and nothing is being
    compiled, traced or exported (they see ``F.layer_norm``, which the compilers fuse themselves)."""
    if not TRITON_LAYER_NORM or weight is None or bias is None:
        return False
    if x.device.type != "cuda" and not _triton_interpreted():
        return False
    if x.dtype not in _DTYPES or torch.compiler.is_compiling() or _needs_torch_graph():
        return False
    return kernel_available()


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """``F.layer_norm(x, (C,), weight, bias, eps)`` over the last axis of ``x`` ``(..., C)``, through the Triton
    kernels where :func:`triton_layer_norm_applies` (float32 arithmetic; the result is contiguous, in the dtype of
    ``x``; differentiable with respect to all three tensors)."""
    if not triton_layer_norm_applies(x, weight, bias):
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias)):
        return _TritonLayerNorm.apply(x, weight, bias, eps)
    return _KERNEL.module.layer_norm_forward(x, weight, bias, eps)


class _TritonLayerNorm(torch.autograd.Function):
    """The Triton forward and backward as one autograd node (the input is all it saves)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return _KERNEL.module.layer_norm_forward(x, weight, bias, eps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        dx, dw, db = _KERNEL.module.layer_norm_backward(x, weight, grad, ctx.eps)
        return dx, dw, db, None
