"""Triton kernels for the exact Bi-WKV of Restore-RWKV (paper Eq. 8) on CUDA tensors.

This module imports triton at import time; :mod:`monai_rwkv.ops.wkv` only imports it when triton is installed and
the tensors live on a CUDA device (triton ships with the CUDA builds of PyTorch, so nothing is compiled by the
user beyond Triton's own just-in-time step).

Maths. For one channel (decay ``w``, bonus ``u``, keys ``k``, values ``v``) the output is

    out_t = [S_t + R_t + e^{u+k_t} v_t] / [S'_t + R'_t + e^{u+k_t}]

with the prefix state ``S_t = sum_{i<t} e^{k_i-(t-1-i)w} v_i`` (``S'`` the same without ``v``), which obeys
``S_{t+1} = e^{-w} S_t + e^{k_t} v_t``, and the mirrored suffix state ``R_t``. Each step is the affine map
``X -> e^{-tau} X + e^{p} (s, d)``; two such maps compose into another one (``tau`` adds up, ``p`` becomes the
larger of the two decayed exponents and the mantissas are rescaled to it), so the states are an associative
scan whose elements carry their own exponent. Nothing overflows or underflows for any sign or size of ``w`` or
``k``: this is the running-maximum rule of the CPU kernels, applied as a parallel scan.

Parallel layout (three launches, float32 arithmetic, inputs read in their own dtype):

1. ``_chunk_summary``: one program per (chunk of ``L`` positions, block of channels, batch item) reduces its
   chunk to the composed map seen from either end (a max and a sum per direction, one ``exp`` per element and
   direction).
2. ``_chunk_scan``: one program per (block of channels, batch item) scans the chunk maps left to right and
   right to left (``T / L`` elements, in blocks of ``CHUNK_BLOCK``) and stores the state entering each chunk.
3. ``_chunk_output``: one program per chunk again forms the within-chunk states in both directions, seeded
   with the entering states, and writes the normalised output. Where the block's ``|w| L + |u|`` is bounded
   (:data:`FAST_RANGE`, every Restore-RWKV layer once ``T`` is a few chunks long) the states are plain running
   sums of terms rescaled to the chunk's largest (``_states_bounded``: two exponentials per element); otherwise
   the exponent-carrying scan of the rows' maps (``_states_general``, exact for any ``w`` and ``u``).

Backward (:func:`wkv_backward`): ``_grad_prep`` recomputes step 3 from the saved entering states and stores
``-log D_t`` (softmax denominator) and ``grad_t out_t``; steps 1-2 run again on those keys and the two values
``grad_t``, ``grad_t out_t``, and ``_grad_output`` forms the within-chunk states of that pass and writes the
gradients of ``k`` and ``v``; ``grad_w`` and ``grad_u`` come from per-chunk column sums of both passes.

Scan order: the tokens are scanned in their storage order, or (``layout`` from :func:`scan_layout`) in another axis
order of a grid stored in raster order; the kernels then address each scan position's storage row
(:func:`_token_offsets`) and write the output (and the gradients) in storage order, so a column scan needs no
permuted copies.

So ``k`` and ``v`` are read twice and the output written once; the chunk states are ``12 / L`` bytes per
element. Accuracy: float32 rounding in scans of at most ``max(L, CHUNK_BLOCK)`` steps per level, about 1e-6
relative to the output's scale (tested against the float64 reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._layout import scan_layout

__all__ = ["scan_layout", "wkv_backward", "wkv_forward"]

# Exponent of an empty state: far below any real one, yet finite so that differences of two empties are 0, not NaN.
_EMPTY = tl.constexpr(-1.0e30)
#: The within-chunk states take plain running sums for a block of channels where ``max |w| * L + max |u|`` is at
#: most this (see :func:`_states_bounded`; Restore-RWKV's ``|w| T`` is of order 1-60, so any ``T >= 2 L``), else
#: the general exponent-carrying scan.
FAST_RANGE = 30.0


@triton.jit
def _compose(tau1, p1, s1, d1, tau2, p2, s2, d2):
    """The map ``f2 o f1`` of two maps ``X -> e^{-tau} X + e^{p} (s, d)`` (``f1`` applied first)."""
    shifted = p1 - tau2
    p = tl.maximum(shifted, p2)
    a1 = tl.exp(shifted - p)
    a2 = tl.exp(p2 - p)
    return tau1 + tau2, p, s1 * a1 + s2 * a2, d1 * a1 + d2 * a2


@triton.jit
def _token_offsets(batch, seq_len, channels, t, cols, n1, n2, s0, s1, s2):
    """Offsets into (B, T, C) storage of the tokens at scan positions ``t`` (int64): position ``t`` has digits
    ``(t // (n1 n2), t // n2 % n1, t % n2)`` in the scan's grid, whose axes lie ``s0, s1, s2`` rows apart in
    storage (raster order: ``n1 = 1, n2 = T, s2 = 1``)."""
    rest = t // n2
    pos = (rest // n1) * s0 + (rest % n1) * s1 + (t % n2) * s2
    return batch * seq_len * channels + pos[:, None] * channels + cols[None, :]


@triton.jit
def _chunk_tile(
    seq_len, channels, n1, n2, s0, s1, s2, L: tl.constexpr, BLOCK_C: tl.constexpr, STORED_ORDER: tl.constexpr
):
    """This program's tile of a (chunk, block of channels, batch item) grid: chunk and batch indices, the rows
    and columns, the column mask, the number of valid rows, the element mask and the offsets into (B, T, C) of its
    tokens and of each one's predecessor and successor in scan order (``STORED_ORDER``: the storage order, no
    index arithmetic; else :func:`_token_offsets`)."""
    chunk = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch = tl.program_id(2).to(tl.int64)
    rows = tl.arange(0, L)
    col_ok = cols < channels
    n_valid = tl.minimum(seq_len - chunk * L, L)
    ok = (rows < n_valid)[:, None] & col_ok[None, :]
    t = (chunk * L + rows).to(tl.int64)
    if STORED_ORDER:
        offs = batch * seq_len * channels + t[:, None] * channels + cols[None, :]
        prev = offs - channels
        nxt = offs + channels
    else:
        offs = _token_offsets(batch, seq_len, channels, t, cols, n1, n2, s0, s1, s2)
        # neighbours at -1 and T are masked where used; clamped so that their offsets stay in range
        prev = _token_offsets(batch, seq_len, channels, tl.maximum(t - 1, 0), cols, n1, n2, s0, s1, s2)
        nxt = _token_offsets(batch, seq_len, channels, tl.minimum(t + 1, seq_len - 1), cols, n1, n2, s0, s1, s2)
    return chunk, batch, rows, cols, col_ok, n_valid, ok, offs, prev, nxt


@triton.jit
def _chunk_plane(chunk, batch, n_chunks, channels, cols):
    """Offsets of this program's chunk and batch item in one plane of a (planes, B, n_chunks, C) tensor, and the
    planes' stride."""
    return (batch * n_chunks + chunk) * channels + cols, n_chunks * channels * tl.num_programs(2).to(tl.int64)


@triton.jit
def _chunk_summary(
    w_ptr,
    k_ptr,
    v_ptr,
    v2_ptr,
    summary_ptr,
    seq_len,
    channels,
    n_chunks,
    n1,
    n2,
    s0,
    s1,
    s2,
    L: tl.constexpr,
    BLOCK_C: tl.constexpr,
    STORED_ORDER: tl.constexpr,
    HAS_V2: tl.constexpr,
):
    """Per chunk: ``(p, s, d)`` of ``sum_i e^{k_i - (n-1-r_i) w} (v_i, v2_i)`` (forward, seen from the chunk's last
    position) and of ``sum_i e^{k_i - r_i w} (v_i, v2_i)`` (backward, seen from its first); ``r_i`` is the row in
    the chunk, ``n`` the number of valid rows, ``v2`` is 1 unless ``HAS_V2``. ``summary`` is (6, B, n_chunks, C):
    forward p, s, d then backward p, s, d."""
    chunk, batch, rows, cols, col_ok, n_valid, ok, offs, _, _ = _chunk_tile(
        seq_len, channels, n1, n2, s0, s1, s2, L, BLOCK_C, STORED_ORDER
    )
    k = tl.load(k_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
    r = rows.to(tl.float32)[:, None]

    e_fwd = tl.where(ok, k - (n_valid - 1 - r) * w[None, :], _EMPTY)
    p_fwd = tl.max(e_fwd, axis=0)
    x_fwd = tl.exp(e_fwd - p_fwd[None, :])
    e_bwd = tl.where(ok, k - r * w[None, :], _EMPTY)
    p_bwd = tl.max(e_bwd, axis=0)
    x_bwd = tl.exp(e_bwd - p_bwd[None, :])
    if HAS_V2:
        v2 = tl.load(v2_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        d_fwd = tl.sum(x_fwd * v2, axis=0)
        d_bwd = tl.sum(x_bwd * v2, axis=0)
    else:
        d_fwd = tl.sum(x_fwd, axis=0)
        d_bwd = tl.sum(x_bwd, axis=0)

    offs_c, stride = _chunk_plane(chunk, batch, n_chunks, channels, cols)
    plane = summary_ptr + offs_c
    tl.store(plane, p_fwd, mask=col_ok)
    tl.store(plane + stride, tl.sum(x_fwd * v, axis=0), mask=col_ok)
    tl.store(plane + 2 * stride, d_fwd, mask=col_ok)
    tl.store(plane + 3 * stride, p_bwd, mask=col_ok)
    tl.store(plane + 4 * stride, tl.sum(x_bwd * v, axis=0), mask=col_ok)
    tl.store(plane + 5 * stride, d_bwd, mask=col_ok)


@triton.jit
def _last_row(x, rows, last):
    return tl.sum(tl.where((rows == last)[:, None], x, 0.0), axis=0)


@triton.jit
def _load_planes(ptr, stride, offs, mask):
    """``(p, s, d)`` at ``offs`` of three planes ``stride`` apart (chunk maps or entering states); masked entries
    are empty maps."""
    p = tl.load(ptr + offs, mask=mask, other=_EMPTY)
    s = tl.load(ptr + stride + offs, mask=mask, other=0.0)
    d = tl.load(ptr + 2 * stride + offs, mask=mask, other=0.0)
    return p, s, d


@triton.jit
def _store_planes(ptr, stride, offs, p, s, d, mask):
    tl.store(ptr + offs, p, mask=mask)
    tl.store(ptr + stride + offs, s, mask=mask)
    tl.store(ptr + 2 * stride + offs, d, mask=mask)


@triton.jit
def _scan_after(c_tau, c_p, c_s, c_d, tau, p, s, d, rows, CHUNK_BLOCK: tl.constexpr):
    """Inclusive scan of a block of maps (rows), composed after the carried map ``c_*`` ((BLOCK_C,) each);
    returns the block's ``(p, s, d)`` and the carry for the next block (its last row)."""
    tau, p, s, d = tl.associative_scan((tau, p, s, d), 0, _compose)
    tau, p, s, d = _compose(c_tau[None, :], c_p[None, :], c_s[None, :], c_d[None, :], tau, p, s, d)
    last = CHUNK_BLOCK - 1
    return (
        p,
        s,
        d,
        _last_row(tau, rows, last),
        _last_row(p, rows, last),
        _last_row(s, rows, last),
        _last_row(d, rows, last),
    )


@triton.jit
def _chunk_scan(
    w_ptr,
    summary_ptr,
    state_ptr,
    seq_len,
    channels,
    n_chunks,
    L: tl.constexpr,
    CHUNK_BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """States entering each chunk: forward from all chunks to its left, backward from all to its right.
    ``state`` is (6, B, n_chunks, C) like ``summary``."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch = tl.program_id(1).to(tl.int64)
    col_ok = cols < channels
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)[None, :]
    rows = tl.arange(0, CHUNK_BLOCK)
    stride = n_chunks * channels * tl.num_programs(1).to(tl.int64)
    base = batch * n_chunks * channels
    zero = tl.zeros([BLOCK_C], dtype=tl.float32)
    last_len = seq_len - (n_chunks - 1) * L

    # Forward: the element of chunk j is chunk j - 1's summary (every chunk but the last is full).
    c_tau, c_p, c_s, c_d = zero, zero + _EMPTY, zero, zero
    start = 0
    while start < n_chunks:  # a while loop: Triton's interpreter cannot range() over a runtime bound
        chunk = start + rows
        src = chunk - 1
        ok = ((src >= 0) & (chunk < n_chunks))[:, None] & col_ok[None, :]
        offs = base + src.to(tl.int64)[:, None] * channels + cols[None, :]
        p, s, d = _load_planes(summary_ptr, stride, offs, ok)
        tau = tl.where(ok, L * w, 0.0)
        p, s, d, c_tau, c_p, c_s, c_d = _scan_after(c_tau, c_p, c_s, c_d, tau, p, s, d, rows, CHUNK_BLOCK)
        dst = base + chunk.to(tl.int64)[:, None] * channels + cols[None, :]
        _store_planes(state_ptr, stride, dst, p, s, d, (chunk < n_chunks)[:, None] & col_ok[None, :])
        start += CHUNK_BLOCK

    # Backward: walk from the right; the element of chunk j is chunk j + 1's summary.
    c_tau, c_p, c_s, c_d = zero, zero + _EMPTY, zero, zero
    start = 0
    while start < n_chunks:
        chunk = n_chunks - 1 - (start + rows)
        src = chunk + 1
        ok = ((chunk >= 0) & (src < n_chunks))[:, None] & col_ok[None, :]
        offs = base + src.to(tl.int64)[:, None] * channels + cols[None, :]
        p, s, d = _load_planes(summary_ptr + 3 * stride, stride, offs, ok)
        length = tl.where(src == n_chunks - 1, last_len, L).to(tl.float32)[:, None]
        tau = tl.where(ok, length * w, 0.0)
        p, s, d, c_tau, c_p, c_s, c_d = _scan_after(c_tau, c_p, c_s, c_d, tau, p, s, d, rows, CHUNK_BLOCK)
        dst = base + chunk.to(tl.int64)[:, None] * channels + cols[None, :]
        _store_planes(state_ptr + 3 * stride, stride, dst, p, s, d, (chunk >= 0)[:, None] & col_ok[None, :])
        start += CHUNK_BLOCK


@triton.jit
def _states_general(w, prev, nxt, first, last, state_f, state_b):
    """Both directions' states at every row of a chunk, for any ``w`` and ``u``: exponent-carrying scans of the
    rows' maps. Forward: row ``r`` holds token ``r - 1``, row 0 the state entering from the left. Backward: row
    ``r`` holds token ``r + 1``, the last valid row the state entering from the right. ``prev`` and ``nxt`` are
    ``(k, v, v2, ok)`` of each row's neighbour token (:func:`_tile_states`; ``v2`` 0 where it is missing). Returns
    ``(p, s, d)`` of each direction per row (the state is ``e^p (s, d)``)."""
    k_prev, v_prev, v2_prev, prev_ok = prev
    k_next, v_next, v2_next, next_ok = nxt
    p_in, s_in, d_in = state_f
    p_in, s_in, d_in = p_in[None, :], s_in[None, :], d_in[None, :]
    tau = tl.where(first, 0.0, w + tl.zeros_like(k_prev))
    p = tl.where(first, p_in, tl.where(prev_ok, k_prev, _EMPTY))
    s = tl.where(first, s_in, v_prev)
    d = tl.where(first, d_in, v2_prev)
    _, p_f, s_f, d_f = tl.associative_scan((tau, p, s, d), 0, _compose)

    p_in, s_in, d_in = state_b
    p_in, s_in, d_in = p_in[None, :], s_in[None, :], d_in[None, :]
    tau = tl.where(next_ok, w + tl.zeros_like(k_next), 0.0)
    p = tl.where(last, p_in, tl.where(next_ok, k_next, _EMPTY))
    s = tl.where(last, s_in, v_next)
    d = tl.where(last, d_in, v2_next)
    _, p_b, s_b, d_b = tl.associative_scan((tau, p, s, d), 0, _compose, reverse=True)
    return p_f, s_f, d_f, p_b, s_b, d_b


@triton.jit
def _rescaled_sums(g, ok, v, v2, p_in, s_in, d_in, REVERSE: tl.constexpr, HAS_V2: tl.constexpr):
    """``e^{top} (s, d)`` = ``e^{p_in} (s_in, d_in) + cumsum over rows of e^{g} (v, v2)`` (from the end if
    ``REVERSE``; ``v2`` is 1 unless ``HAS_V2``), every exponential taken relative to the largest of ``g`` and
    ``p_in``: returns ``top`` per channel and ``s``, ``d`` per row."""
    g = tl.where(ok, g, _EMPTY)
    q = tl.max(g, axis=0)
    m = tl.where(ok, tl.exp(g - q[None, :]), 0.0)
    top = tl.maximum(q, p_in)
    a_in = tl.exp(p_in - top)[None, :]
    a_q = tl.exp(q - top)[None, :]
    s = a_in * s_in[None, :] + a_q * tl.cumsum(m * v, 0, reverse=REVERSE)
    if HAS_V2:
        m = m * v2
    d = a_in * d_in[None, :] + a_q * tl.cumsum(m, 0, reverse=REVERSE)
    return top, s, d


@triton.jit
def _states_bounded(w_row, prev, nxt, rows, n_valid, state_f, state_b, HAS_V2: tl.constexpr):
    """The same states where ``|w| L + |u| <= FAST_RANGE``: moved to the decay frame of row 0, every term is a
    plain sum. Forward: token ``j`` enters as ``g = k_j + (j + 1) w`` and the state at row ``r`` is
    ``e^{-r w} [e^{p_in} (s_in, d_in) + sum_{j < r} e^{g_j} (v_j, v2_j)]``; backward: ``h = k_j - (j - 1) w``, the
    state at row ``r`` is ``e^{r w} [e^{p_in - (n - 1) w} (s_in, d_in) + sum_{j > r} e^{h_j} (v_j, v2_j)]``. Two
    exponentials per element (one per direction) and two running sums, instead of scans of exponent-carrying
    maps. A term whose ``e^{g - max g}`` underflows float32 (``< e^{-87}``) is smaller than another term of
    the same output by at least ``e^{87 - 2 |w| L - |u|}``, so it does not change the float32 result."""
    k_prev, v_prev, v2_prev, prev_ok = prev
    k_next, v_next, v2_next, next_ok = nxt
    r = rows.to(tl.float32)[:, None]
    w = w_row[None, :]
    p_in, s_in, d_in = state_f
    top, s_f, d_f = _rescaled_sums(k_prev + r * w, prev_ok, v_prev, v2_prev, p_in, s_in, d_in, False, HAS_V2)
    p_f = top[None, :] - r * w
    p_in, s_in, d_in = state_b
    p_in = p_in - (n_valid - 1) * w_row
    top, s_b, d_b = _rescaled_sums(k_next - r * w, next_ok, v_next, v2_next, p_in, s_in, d_in, True, HAS_V2)
    p_b = top[None, :] + r * w
    return p_f, s_f, d_f, p_b, s_b, d_b


@triton.jit
def _tile_states(w_row, bounded, k_ptr, v_ptr, v2_ptr, state_ptr, tile, plane, channels, HAS_V2: tl.constexpr):
    """States of both directions at every row of this program's tile, for keys ``k``, values ``v`` and second
    values ``v2`` (1 unless ``HAS_V2``), seeded with the entering states of ``state`` at ``plane`` (from
    :func:`_chunk_plane`); ``tile`` from :func:`_chunk_tile`; ``bounded``: whether :func:`_states_bounded` applies to
    this block of channels."""
    chunk, batch, rows, cols, col_ok, n_valid, ok, offs, offs_prev, offs_next = tile
    state_offs, stride = plane
    prev_ok = ok & (rows >= 1)[:, None]
    k_prev = tl.load(k_ptr + offs_prev, mask=prev_ok, other=0.0).to(tl.float32)
    v_prev = tl.load(v_ptr + offs_prev, mask=prev_ok, other=0.0).to(tl.float32)
    next_ok = ok & (rows < n_valid - 1)[:, None]
    k_next = tl.load(k_ptr + offs_next, mask=next_ok, other=0.0).to(tl.float32)
    v_next = tl.load(v_ptr + offs_next, mask=next_ok, other=0.0).to(tl.float32)
    if HAS_V2:
        v2_prev = tl.load(v2_ptr + offs_prev, mask=prev_ok, other=0.0).to(tl.float32)
        v2_next = tl.load(v2_ptr + offs_next, mask=next_ok, other=0.0).to(tl.float32)
    else:
        v2_prev = tl.where(prev_ok, 1.0, 0.0)
        v2_next = tl.where(next_ok, 1.0, 0.0)
    state_f = _load_planes(state_ptr, stride, state_offs, col_ok)
    state_b = _load_planes(state_ptr + 3 * stride, stride, state_offs, col_ok)
    prev = (k_prev, v_prev, v2_prev, prev_ok)
    nxt = (k_next, v_next, v2_next, next_ok)
    if bounded:
        states = _states_bounded(w_row, prev, nxt, rows, n_valid, state_f, state_b, HAS_V2)
    else:
        first = (rows == 0)[:, None]
        last = (rows == n_valid - 1)[:, None]
        states = _states_general(w_row[None, :], prev, nxt, first, last, state_f, state_b)
    return states


@triton.jit
def _forward_states(
    w_ptr, u_ptr, k_ptr, v_ptr, state_ptr, tile, channels, n_chunks, L: tl.constexpr, LIMIT: tl.constexpr
):
    """The forward on this program's ``tile`` (from :func:`_chunk_tile`; see :func:`_chunk_output`): returns
    ``k``, ``v``, the output ``num / den``, ``den`` and ``top`` (``e^{top} den`` is the softmax denominator), and
    the weights and states of the parts: ``a_diag``, ``a_f, s_f, d_f`` (prefix), ``a_b, s_b, d_b`` (suffix)."""
    chunk, batch, rows, cols, col_ok, n_valid, ok, offs, _, _ = tile
    w_row = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
    u_row = tl.load(u_ptr + cols, mask=col_ok, other=0.0)
    k = tl.load(k_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    plane = _chunk_plane(chunk, batch, n_chunks, channels, cols)
    bounded = tl.max(tl.abs(w_row), axis=0) * L + tl.max(tl.abs(u_row), axis=0) <= LIMIT
    states = _tile_states(w_row, bounded, k_ptr, v_ptr, v_ptr, state_ptr, tile, plane, channels, False)
    p_f, s_f, d_f, p_b, s_b, d_b = states
    p_diag = u_row[None, :] + k
    top = tl.maximum(tl.maximum(p_f, p_b), p_diag)
    a_f = tl.exp(p_f - top)
    a_b = tl.exp(p_b - top)
    a_diag = tl.exp(p_diag - top)
    num = a_f * s_f + a_b * s_b + a_diag * v
    den = a_f * d_f + a_b * d_b + a_diag
    return k, v, num / den, den, top, a_diag, a_f, s_f, d_f, a_b, s_b, d_b


@triton.jit
def _chunk_output(
    w_ptr,
    u_ptr,
    k_ptr,
    v_ptr,
    state_ptr,
    out_ptr,
    seq_len,
    channels,
    n_chunks,
    n1,
    n2,
    s0,
    s1,
    s2,
    L: tl.constexpr,
    BLOCK_C: tl.constexpr,
    STORED_ORDER: tl.constexpr,
    LIMIT: tl.constexpr,
):
    """Within-chunk states in both directions seeded with the entering states, then the normalised output.
    A block of channels whose ``|w| L + |u|`` is at most ``LIMIT`` (:data:`FAST_RANGE`, or -1: never) takes
    :func:`_states_bounded`, any other :func:`_states_general`."""
    tile = _chunk_tile(seq_len, channels, n1, n2, s0, s1, s2, L, BLOCK_C, STORED_ORDER)
    chunk, batch, rows, cols, col_ok, n_valid, ok, offs, _, _ = tile
    fwd = _forward_states(w_ptr, u_ptr, k_ptr, v_ptr, state_ptr, tile, channels, n_chunks, L, LIMIT)
    k, v, out, den, top, a_diag, a_f, s_f, d_f, a_b, s_b, d_b = fwd
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _store_chunk_sum(ptr, index, plane, col_ok, x):
    """Stores the column sums of ``x`` into plane ``index`` at ``plane`` (from :func:`_chunk_plane`)."""
    offs, stride = plane
    tl.store(ptr + index * stride + offs, tl.sum(x, axis=0), mask=col_ok)


@triton.jit
def _grad_prep(
    w_ptr,
    u_ptr,
    k_ptr,
    v_ptr,
    state_ptr,
    g_ptr,
    q_ptr,
    go_ptr,
    sums_ptr,
    seq_len,
    channels,
    n_chunks,
    n1,
    n2,
    s0,
    s1,
    s2,
    L: tl.constexpr,
    BLOCK_C: tl.constexpr,
    STORED_ORDER: tl.constexpr,
    LIMIT: tl.constexpr,
):
    """Backward, first pass (output gradient ``g``): recomputes the forward on the tile and stores ``q = -log``
    (softmax denominator), ``go = g * out``, and per chunk the column sums of the terms of ``grad_u`` and of the
    output side of ``grad_w`` (``sums`` planes 0-2, see :func:`wkv_backward`)."""
    tile = _chunk_tile(seq_len, channels, n1, n2, s0, s1, s2, L, BLOCK_C, STORED_ORDER)
    chunk, batch, rows, cols, col_ok, n_valid, ok, offs, _, _ = tile
    fwd = _forward_states(w_ptr, u_ptr, k_ptr, v_ptr, state_ptr, tile, channels, n_chunks, L, LIMIT)
    k, v, out, den, top, a_diag, a_f, s_f, d_f, a_b, s_b, d_b = fwd
    g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(q_ptr + offs, -(top + tl.log(den)), mask=ok)
    tl.store(go_ptr + offs, g * out, mask=ok)
    rg = tl.where(ok, g / den, 0.0)
    t_pre = rg * a_f * (s_f - out * d_f)  # sum over i < t of the pair terms a_t W_ti (v_i - out_t)
    t_suf = rg * a_b * (s_b - out * d_b)  # the same over i > t
    r = rows.to(tl.float32)[:, None]
    plane = _chunk_plane(chunk, batch, n_chunks, channels, cols)
    _store_chunk_sum(sums_ptr, 0, plane, col_ok, r * (t_suf - t_pre) + t_pre)
    _store_chunk_sum(sums_ptr, 1, plane, col_ok, t_suf - t_pre)
    _store_chunk_sum(sums_ptr, 4, plane, col_ok, rg * a_diag * (v - out))


@triton.jit
def _grad_output(
    w_ptr,
    u_ptr,
    k_ptr,
    v_ptr,
    q_ptr,
    g_ptr,
    go_ptr,
    state_ptr,
    gk_ptr,
    gv_ptr,
    sums_ptr,
    seq_len,
    channels,
    n_chunks,
    n1,
    n2,
    s0,
    s1,
    s2,
    L: tl.constexpr,
    BLOCK_C: tl.constexpr,
    STORED_ORDER: tl.constexpr,
    LIMIT: tl.constexpr,
):
    """Backward, second pass: the states of keys ``q``, values ``g`` and ``go`` (entering states from the chunk
    scan of the same) give, at token ``i``, ``sum_{t != i} e^{q_t - (|t-i|-1) w} (g_t, go_t)`` per side; times
    ``e^{k_i}`` these are the gradients of ``k_i`` and ``v_i``. Also stores per chunk the column sums of the input
    side of ``grad_w`` (``sums`` planes 2-3)."""
    tile = _chunk_tile(seq_len, channels, n1, n2, s0, s1, s2, L, BLOCK_C, STORED_ORDER)
    chunk, batch, rows, cols, col_ok, n_valid, ok, offs, _, _ = tile
    w_row = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
    u_row = tl.load(u_ptr + cols, mask=col_ok, other=0.0)
    plane = _chunk_plane(chunk, batch, n_chunks, channels, cols)
    bounded = tl.max(tl.abs(w_row), axis=0) * L <= LIMIT
    states = _tile_states(w_row, bounded, q_ptr, g_ptr, go_ptr, state_ptr, tile, plane, channels, True)
    p_f, s_f, d_f, p_b, s_b, d_b = states
    k = tl.load(k_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    q = tl.load(q_ptr + offs, mask=ok, other=0.0)
    g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    go = tl.load(go_ptr + offs, mask=ok, other=0.0)
    e_f = tl.where(ok, tl.exp(k + p_f), 0.0)
    e_b = tl.where(ok, tl.exp(k + p_b), 0.0)
    e_diag = tl.where(ok, tl.exp(u_row[None, :] + k + q), 0.0)
    k_suf = e_f * (v * s_f - d_f)  # sum over t < i (token i on the suffix side of t) of a_t W_ti (v_i - out_t)
    k_pre = e_b * (v * s_b - d_b)  # the same over t > i
    tl.store(gv_ptr + offs, (e_f * s_f + e_b * s_b + e_diag * g).to(gv_ptr.dtype.element_ty), mask=ok)
    tl.store(gk_ptr + offs, (k_suf + k_pre + e_diag * (g * v - go)).to(gk_ptr.dtype.element_ty), mask=ok)
    r = rows.to(tl.float32)[:, None]
    _store_chunk_sum(sums_ptr, 2, plane, col_ok, r * (k_pre - k_suf) + k_suf)
    _store_chunk_sum(sums_ptr, 3, plane, col_ok, k_pre - k_suf)


def _stored_order(layout: Sequence[int], seq_len: int) -> bool:
    """Whether ``layout`` (:func:`scan_layout`) scans the tokens in their storage order."""
    return tuple(layout) == scan_layout(seq_len)


def _block_channels(channels: int) -> int:
    for block in (32, 16):
        if channels % block == 0:
            return block
    return 16


def _auto_chunk(batch: int, seq_len: int, channels: int) -> int:
    """Chunk length for ``chunk=0``: 128 where few (batch item, channel) rows or a short sequence leave the
    chunk-level scan sequential over few programs, else 64 (the within-chunk sums then cost less per element).
    Thresholds from a sweep on an H200 (``benchmarks/wkv_cuda.py --sweep``; figures in benchmarks/NOTES.md)."""
    return 128 if batch * channels <= 192 or seq_len <= 8192 else 64


#: Launch settings: ``chunk`` positions per chunk (0: :func:`_auto_chunk`), up to ``chunk_block`` chunks per step of
#: the chunk-level scan with ``scan_block_c`` channels per program (that scan is the only sequential part, so it
#: takes wide steps over few channels), ``block_c`` channels per program of the chunk kernels (0: the widest of
#: 32/16 dividing C), ``bounded`` 1 to let blocks of channels within :data:`FAST_RANGE` take the plain-sum chunk
#: states (0: always the general scan; for comparisons). These were the fastest in ``benchmarks/wkv_cuda.py
#: --sweep`` on an H200 (figures in benchmarks/NOTES.md).
SETTINGS = {"chunk": 0, "chunk_block": 256, "scan_block_c": 4, "block_c": 0, "bounded": 1}


def _chunk_length(shape: Sequence[int], chunk: int) -> int:
    """``chunk``, or where it is 0 :func:`_auto_chunk`'s choice for a (B, T, C) ``shape``."""
    return chunk or _auto_chunk(*shape)


def state_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Shape of the chunk entering states that ``wkv_forward(..., return_state=True)`` returns for (B, T, C) keys of
    ``shape`` under the default :data:`SETTINGS` (no kernel launched; also for symbolic shapes)."""
    batch, seq_len, channels = shape
    chunk = _chunk_length(shape, SETTINGS["chunk"])
    return 6, batch, (seq_len + chunk - 1) // chunk, channels


def launch_plan(k: torch.Tensor, state: torch.Tensor) -> dict[str, int]:
    """The default launch plan for keys ``k``, checked against a ``state`` from :func:`wkv_forward` (the plan
    :func:`wkv_backward` takes when the forward's own plan was not kept)."""
    plan = _launch_plan(k, {})
    if tuple(state.shape) != state_shape(k.shape):
        raise ValueError(
            f"state of shape {tuple(state.shape)} does not belong to keys of shape {tuple(k.shape)} under the default"
            f" settings (expected {state_shape(k.shape)})."
        )
    return plan


def _launch_plan(k: torch.Tensor, settings: dict[str, int]) -> dict[str, int]:
    """Launch sizes for a call on ``k``'s (B, T, C): :data:`SETTINGS` with ``settings`` over them, ``chunk``
    resolved, plus ``n_chunks``, ``block_c`` and the chunk-level scan's ``chunk_block``."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(SETTINGS)}")
    cfg = {**SETTINGS, **settings}
    batch, seq_len, channels = k.shape
    cfg["chunk"] = _chunk_length(k.shape, cfg["chunk"])
    cfg["n_chunks"] = triton.cdiv(seq_len, cfg["chunk"])
    cfg["block_c"] = cfg["block_c"] or _block_channels(channels)
    cfg["chunk_block"] = min(cfg["chunk_block"], max(16, triton.next_power_of_2(cfg["n_chunks"])))
    return cfg


def _entering_states(
    w32: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    v2: torch.Tensor | None,
    cfg: dict[str, int],
    layout: tuple[int, ...],
    stored_order: bool,
) -> torch.Tensor:
    """The (6, B, n_chunks, C) float32 states entering every chunk from either side, for keys ``k``, values ``v``
    and second values ``v2`` (None: 1) scanned in the order of ``layout`` (:func:`scan_layout`; ``stored_order``:
    it is the storage order): chunk summaries, then the chunk-level scan."""
    batch, seq_len, channels = k.shape
    chunk, n_chunks, block_c = cfg["chunk"], cfg["n_chunks"], cfg["block_c"]
    summary = torch.empty((6, batch, n_chunks, channels), device=k.device, dtype=torch.float32)
    state = torch.empty_like(summary)
    grid = (n_chunks, triton.cdiv(channels, block_c), batch)
    _chunk_summary[grid](
        w32,
        k,
        v,
        v if v2 is None else v2,
        summary,
        seq_len,
        channels,
        n_chunks,
        *layout,
        L=chunk,
        BLOCK_C=block_c,
        STORED_ORDER=stored_order,
        HAS_V2=v2 is not None,
    )
    chunk_block, scan_c = cfg["chunk_block"], cfg["scan_block_c"]
    _chunk_scan[(triton.cdiv(channels, scan_c), batch)](
        w32,
        summary,
        state,
        seq_len,
        channels,
        n_chunks,
        L=chunk,
        CHUNK_BLOCK=chunk_block,
        BLOCK_C=scan_c,
        num_warps=min(32, max(4, chunk_block * scan_c // 512)),
    )
    return state


def wkv_forward(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    return_state: bool = False,
    layout: Sequence[int] | None = None,
    **settings: int,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Bi-WKV forward on CUDA (or, under ``TRITON_INTERPRET=1``, CPU) tensors.

    Args:
        w, u: (C,) decay and bonus already divided by T (any float dtype; used in float32).
        k, v: (B, T, C) in float32, float16 or bfloat16.
        layout: the scan order over the stored tokens, from :func:`scan_layout` (None: the storage order); the
            output is stored like ``k`` and ``v``, so a column scan of raster-ordered tokens needs no copies.
        return_state: also return what :func:`wkv_backward` takes: the (6, B, T / L, C) chunk entering states
            (12 / L bytes per element) and the launch plan.
        settings: overrides of :data:`SETTINGS` (sizes: powers of two; ``chunk`` and ``chunk_block`` at least 16).

    Returns:
        (B, T, C) tensor in the dtype of ``v``, or ``(out, state, plan)`` with ``return_state``.
    """
    cfg = _launch_plan(k, settings)
    batch, seq_len, channels = k.shape
    layout = tuple(layout) if layout is not None else scan_layout(seq_len)
    stored_order = _stored_order(layout, seq_len)
    k, v = k.contiguous(), v.contiguous()
    w32 = w.detach().to(device=k.device, dtype=torch.float32).contiguous()
    u32 = u.detach().to(device=k.device, dtype=torch.float32).contiguous()
    out = torch.empty_like(v)
    if out.numel() == 0:
        state = torch.empty((6, batch, cfg["n_chunks"], channels), device=k.device, dtype=torch.float32)
        return (out, state, cfg) if return_state else out
    state = _entering_states(w32, k, v, None, cfg, layout, stored_order)
    grid = (cfg["n_chunks"], triton.cdiv(channels, cfg["block_c"]), batch)
    limit = FAST_RANGE if cfg["bounded"] else -1.0
    _chunk_output[grid](
        w32,
        u32,
        k,
        v,
        state,
        out,
        seq_len,
        channels,
        cfg["n_chunks"],
        *layout,
        L=cfg["chunk"],
        BLOCK_C=cfg["block_c"],
        STORED_ORDER=stored_order,
        LIMIT=limit,
    )
    return (out, state, cfg) if return_state else out


def wkv_backward(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    grad: torch.Tensor,
    plan: dict[str, int],
    layout: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``sum(grad * wkv_forward(w, u, k, v))`` with respect to ``(w, u, k, v)``, in O(B T C).

    With ``D_t`` the softmax denominator at ``t``, ``a_t = grad_t / D_t`` and ``W_ti`` the weight of token ``i``
    in output ``t`` (paper Eq. 8), the pair terms ``c_ti = a_t W_ti (v_i - out_t)`` sum to
    ``grad_k_i = sum_t c_ti``, ``grad_v_i = sum_t a_t W_ti``, ``grad_u = sum_t c_tt`` and
    ``grad_w = -sum_{t != i} (|t - i| - 1) c_ti``. The sums over ``t`` for fixed ``i`` are a Bi-WKV pass of their own
    with keys ``-log D_t`` and values ``(grad_t, grad_t out_t)`` (same decay, the same chunk summaries, scan and
    within-chunk states as the forward); the distance weights of ``grad_w`` split into ``t``- and ``i``-weighted
    sums of the one-sided sums of ``c_ti``, which per chunk are reduced in float32 and across chunks in float64.

    Args:
        w, u, k, v: the forward's inputs; ``state`` and ``plan``: from ``wkv_forward(..., return_state=True)``.
        grad: (B, T, C) gradient of the output.
        layout: the forward's scan order (:func:`scan_layout`; None: the storage order).

    Returns:
        ``(grad_w, grad_u)`` float32 (C,) and ``(grad_k, grad_v)`` in the dtypes of ``k`` and ``v``.
    """
    batch, seq_len, channels = k.shape
    layout = tuple(layout) if layout is not None else scan_layout(seq_len)
    stored_order = _stored_order(layout, seq_len)
    k, v, grad = k.contiguous(), v.contiguous(), grad.contiguous()
    dev = k.device
    w32 = w.detach().to(device=dev, dtype=torch.float32).contiguous()
    u32 = u.detach().to(device=dev, dtype=torch.float32).contiguous()
    grad_k, grad_v = torch.empty_like(k), torch.empty_like(v)
    if k.numel() == 0:
        return torch.zeros_like(w32), torch.zeros_like(u32), grad_k, grad_v
    chunk, n_chunks, block_c = plan["chunk"], plan["n_chunks"], plan["block_c"]
    grid = (n_chunks, triton.cdiv(channels, block_c), batch)
    q = torch.empty(k.shape, device=dev, dtype=torch.float32)
    go = torch.empty_like(q)
    sums = torch.empty((5, batch, n_chunks, channels), device=dev, dtype=torch.float32)
    limit = FAST_RANGE if plan["bounded"] else -1.0
    _grad_prep[grid](
        w32,
        u32,
        k,
        v,
        state,
        grad,
        q,
        go,
        sums,
        seq_len,
        channels,
        n_chunks,
        *layout,
        L=chunk,
        BLOCK_C=block_c,
        STORED_ORDER=stored_order,
        LIMIT=limit,
    )
    t_state = _entering_states(w32, q, grad, go, plan, layout, stored_order)
    _grad_output[grid](
        w32,
        u32,
        k,
        v,
        q,
        grad,
        go,
        t_state,
        grad_k,
        grad_v,
        sums,
        seq_len,
        channels,
        n_chunks,
        *layout,
        L=chunk,
        BLOCK_C=block_c,
        STORED_ORDER=stored_order,
        LIMIT=limit,
    )
    sums = sums.double()
    start = torch.arange(n_chunks, device=dev, dtype=torch.float64)[:, None] * chunk  # first token of each chunk
    grad_w = (sums[0] + sums[2] + start * (sums[1] + sums[3])).sum(dim=(0, 1))
    grad_u = sums[4].sum(dim=(0, 1))
    return grad_w.float(), grad_u.float(), grad_k, grad_v
