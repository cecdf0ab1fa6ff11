"""Triton kernel for LayerNorm over the last axis of narrow token tensors on CUDA.

Restore-RWKV normalises ``(B, T, C)`` tokens over their ``C`` channels, with ``C`` between 16 and a few hundred
and ``B x T`` in the millions for whole slices. One program here normalises a tile of ``BLOCK_N`` rows (about 4,096
elements) in registers: one read of the input, one write of the output, float32 arithmetic (the mean corrected
by a second pass over the centred values, then the variance of those), inputs and outputs in their own dtype
(float32, float16 or bfloat16).

This module imports triton at import time; :mod:`monai_rwkv.ops.norm` imports it only when it is asked to run it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["layer_norm_forward"]

#: Elements one program normalises (``BLOCK_N x BLOCK_C``, rounded to powers of two).
TILE_ELEMENTS = 4096


@triton.jit
def _layer_norm_rows(
    x_ptr, w_ptr, b_ptr, out_ptr, n_rows, eps, C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    offsets = rows[:, None] * C + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    centred = tl.where(mask, x - mean[:, None], 0.0)
    # the rounding of the first mean, removed from the centred values (rows far from zero keep their digits)
    centred = tl.where(mask, centred - (tl.sum(centred, axis=1) / C)[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / C + eps)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm of ``x`` over its last axis: ``(x - mean) / sqrt(var + eps) * weight + bias`` per row.

    Args:
        x: ``(..., C)``, any layout (made contiguous), float32, float16 or bfloat16.
        weight, bias: ``(C,)``.
        eps: added to the biased variance.

    Returns:
        contiguous ``(..., C)`` in the dtype of ``x``.
    """
    channels = x.shape[-1]
    x = x.contiguous()
    out = torch.empty_like(x)
    n_rows = x.numel() // channels if channels else 0
    if n_rows == 0:
        return out
    block_c = triton.next_power_of_2(channels)
    block_n = max(1, TILE_ELEMENTS // block_c)
    grid = (triton.cdiv(n_rows, block_n),)
    _layer_norm_rows[grid](
        x,
        weight.contiguous(),
        bias.contiguous(),
        out,
        n_rows,
        float(eps),
        C=channels,
        BLOCK_C=block_c,
        BLOCK_N=block_n,
        num_warps=4,
    )
    return out
