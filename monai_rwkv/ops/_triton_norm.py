"""Triton kernels for LayerNorm over the last axis of narrow token tensors on CUDA.

Restore-RWKV normalises ``(B, T, C)`` tokens over their ``C`` channels, with ``C`` between 16 and a few hundred
and ``B x T`` in the millions for whole slices. One program here normalises a tile of ``BLOCK_N`` rows (about 4,096
elements) in registers: one read of the input, one write of the output, float32 arithmetic (the mean corrected
by a second pass over the centred values, then the variance of those), inputs and outputs in their own dtype
(float32, float16 or bfloat16). The backward normalises the rows again from the input, writes the input's gradient
and per-tile sums for the weight and bias (added up on the host), so training saves nothing but the input.

This module imports triton at import time; :mod:`monai_rwkv.ops.norm` imports it only when it is asked to run it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["layer_norm_backward", "layer_norm_forward"]

#: Elements one program normalises (``BLOCK_N x BLOCK_C``, rounded to powers of two).
TILE_ELEMENTS = 4096


@triton.jit
def _tile(pid, n_rows, C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    """Offsets of a program's ``BLOCK_N`` rows, its column indices and masks."""
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    return rows[:, None] * C + cols[None, :], cols, col_ok, mask


@triton.jit
def _normalised(x_ptr, offsets, mask, eps, C: tl.constexpr):
    """``(x - mean) / sqrt(var + eps)`` of a tile's rows in float32 (0 where masked) and each row's ``1 / sqrt``."""
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    centred = tl.where(mask, x - mean[:, None], 0.0)
    # the rounding of the first mean, removed from the centred values (rows far from zero keep their digits)
    centred = tl.where(mask, centred - (tl.sum(centred, axis=1) / C)[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / C + eps)
    return centred * rstd[:, None], rstd


@triton.jit
def _layer_norm_rows(
    x_ptr, w_ptr, b_ptr, out_ptr, n_rows, eps, C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr
):
    offsets, cols, col_ok, mask = _tile(tl.program_id(0), n_rows, C, BLOCK_C, BLOCK_N)
    xhat, _ = _normalised(x_ptr, offsets, mask, eps, C)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, (xhat * w[None, :] + b[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_rows_backward(
    x_ptr,
    w_ptr,
    grad_ptr,
    dx_ptr,
    dw_part_ptr,
    db_part_ptr,
    n_rows,
    eps,
    C: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Gradient of the input (rows normalised again from ``x``) and this tile's sums for the weight and bias."""
    pid = tl.program_id(0)
    offsets, cols, col_ok, mask = _tile(pid, n_rows, C, BLOCK_C, BLOCK_N)
    xhat, rstd = _normalised(x_ptr, offsets, mask, eps, C)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    gw = grad * w[None, :]
    mean_gw = tl.sum(gw, axis=1) / C
    mean_gw_xhat = tl.sum(gw * xhat, axis=1) / C
    dx = rstd[:, None] * (gw - mean_gw[:, None] - xhat * mean_gw_xhat[:, None])
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_part_ptr + pid * BLOCK_C + cols, tl.sum(grad * xhat, axis=0))
    tl.store(db_part_ptr + pid * BLOCK_C + cols, tl.sum(grad, axis=0))


def _launch(x: torch.Tensor) -> tuple[int, int, int, tuple[int]]:
    """``(n_rows, BLOCK_C, BLOCK_N, grid)`` for the rows of ``x`` ``(..., C)``."""
    channels = x.shape[-1]
    n_rows = x.numel() // channels if channels else 0
    block_c = triton.next_power_of_2(max(channels, 1))
    block_n = max(1, TILE_ELEMENTS // block_c)
    return n_rows, block_c, block_n, (triton.cdiv(n_rows, block_n),)


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm of ``x`` over its last axis: ``(x - mean) / sqrt(var + eps) * weight + bias`` per row.

    Args:
        x: ``(..., C)``, any layout (made contiguous), float32, float16 or bfloat16.
        weight, bias: ``(C,)``.
        eps: added to the biased variance.

    Returns:
        contiguous ``(..., C)`` in the dtype of ``x``.
    """
    x = x.contiguous()
    out = torch.empty_like(x)
    n_rows, block_c, block_n, grid = _launch(x)
    if n_rows == 0:
        return out
    _layer_norm_rows[grid](
        x,
        weight.contiguous(),
        bias.contiguous(),
        out,
        n_rows,
        float(eps),
        C=x.shape[-1],
        BLOCK_C=block_c,
        BLOCK_N=block_n,
        num_warps=4,
    )
    return out


def layer_norm_backward(
    x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(x, weight, bias)`` of :func:`layer_norm_forward` given the output's gradient ``grad``.

    The rows are normalised again from ``x`` (nothing else is saved); the weight and bias gradients are per-tile sums
    added up in float64. Returns the input's gradient in the dtype of ``x`` and the others in that of ``weight``.
    """
    x, grad = x.contiguous(), grad.contiguous()
    dx = torch.empty_like(x)
    n_rows, block_c, block_n, grid = _launch(x)
    channels = x.shape[-1]
    parts = torch.zeros((2, max(grid[0], 1), block_c), device=x.device, dtype=torch.float32)
    if n_rows > 0:
        _layer_norm_rows_backward[grid](
            x,
            weight.contiguous(),
            grad,
            dx,
            parts[0],
            parts[1],
            n_rows,
            float(eps),
            C=channels,
            BLOCK_C=block_c,
            BLOCK_N=block_n,
            num_warps=4,
        )
    sums = parts[..., :channels].sum(1, dtype=torch.float64).to(weight.dtype)
    return dx, sums[0], sums[1]
