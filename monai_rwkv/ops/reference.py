"""Direct O(T^2) float64 evaluation of Bi-WKV (paper Eq. 8), the ground truth for tests and benchmarks."""

from __future__ import annotations

import torch

__all__ = ["bi_wkv_at", "bi_wkv_quadratic"]


def bi_wkv_quadratic(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows_per_step: int = 1024
) -> torch.Tensor:
    """Bi-WKV by forming every pairwise weight explicitly, in float64.

    Args:
        w: decay divided by T, shape (C,).
        u: bonus divided by T, shape (C,).
        k: keys, shape (B, T, C).
        v: values, shape (B, T, C).
        rows_per_step: output positions evaluated per step (bounds memory to rows x T x C).

    Returns:
        (B, T, C) float64 tensor.
    """
    w, u, k, v = (x.to(torch.float64) for x in (w, u, k, v))
    seq_len = k.shape[1]
    idx = torch.arange(seq_len, device=k.device)
    out = []
    for t0 in range(0, seq_len, rows_per_step):
        t = idx[t0 : t0 + rows_per_step]
        dist = (t[:, None] - idx[None, :]).abs().to(torch.float64)  # (R, T)
        logits = k[:, None, :, :] - ((dist - 1)[None, :, :, None] * w)  # (B, R, T, C)
        diag = t[:, None] == idx[None, :]
        logits = torch.where(diag[None, :, :, None], (u + k)[:, None, :, :], logits)
        weights = torch.softmax(logits, dim=2)
        out.append((weights * v[:, None, :, :]).sum(dim=2))
    return torch.cat(out, dim=1)


def bi_wkv_at(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t: int) -> torch.Tensor:
    """Bi-WKV output at the single position ``t`` of batch item 0, directly from Eq. 8 in float64.

    O(T) memory and time, so long sequences (e.g. T = 2048 x 2048) can be checked on sampled positions.

    Args:
        w, u: (C,) decay and bonus divided by T; k, v: (B, T, C).
        t: the position.

    Returns:
        (C,) float64 tensor.
    """
    w, u, k, v = (x.to(torch.float64) for x in (w, u, k[0], v[0]))
    idx = torch.arange(k.shape[0], dtype=torch.float64, device=k.device)
    logits = k - ((idx - t).abs() - 1)[:, None] * w
    logits[t] = u + k[t]
    return (torch.softmax(logits, dim=0) * v).sum(0)
