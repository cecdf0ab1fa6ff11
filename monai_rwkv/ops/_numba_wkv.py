"""Fused CPU kernels for the exact Bi-WKV of Restore-RWKV (paper Eq. 8), written with numba.

This module imports numba at import time; :mod:`monai_rwkv.ops.wkv` imports it on first use and falls back to the
pure PyTorch path when that fails (numba is a dependency of the package, but may not load on every platform).

Maths. For one channel (decay ``w``, bonus ``u``, keys ``k``, values ``v``) the output is

    out_t = [A_t + C_t + e^{u+k_t} v_t] / [B_t + D_t + e^{u+k_t}],

with the prefix sums ``A_t = sum_{i<t} e^{k_i-(t-1-i)w} v_i`` (``B_t`` the same without ``v``) obeying
``A_{t+1} = e^{-w} A_t + e^{k_t} v_t``, and the suffix sums ``C_t``, ``D_t`` obeying the mirrored recurrence.
Every running sum is kept as ``(scaled sums, exponent m)`` with the true value ``sum * e^m`` and ``m`` the
largest exponent seen so far (log-sum-exp style): a step rescales by ``e^{-|d|}`` with ``d`` the gap between
the decayed old maximum ``m - w`` and the new exponent, so one ``exp`` per step, no overflow or underflow
for any sign or size of ``w`` or ``k``, and all state in float64.

Memory. Each task (one batch item x a block of channels) first sweeps right-to-left over the whole sequence
and keeps the suffix state only at chunk boundaries; then it walks the chunks left to right, recomputes the
suffix state inside a chunk into a small cache-resident buffer and combines it with the running prefix
state. So the extra memory is O(T / chunk + chunk) per task, and the forward never materialises a (B, T, C)
float64 temporary.

Fast path (forward). Where ``|w| * _FAST_CHUNK + |u| <= _FAST_RANGE`` for every channel of a task (the
Restore-RWKV range: ``|w| T`` of order 1-60, so any T >= ~64), the forward avoids the per-position exponential of
the running maximum. The sequence is cut into chunks of ``_FAST_CHUNK`` positions; inside a chunk every term is
``p_t = e^{k_t - ref}`` with one reference per chunk and channel, and the recurrences are pure multiply-adds with
the precomputed decay ``e^{-w}``. A right-to-left pass stores, per chunk, its key maximum ``kmax``, its own sums
seen from either end (in the scale ``e^{kmax}``, so its largest term is 1 and nothing in it can overflow) and the
suffix state entering it from the right; the left-to-right pass then converts the incoming prefix and suffix
states to the chunk's common scale ``mc = max(prefix scale, suffix scale, kmax)`` and evaluates every position
with ``p_t = e^{k_t - mc}`` (terms that underflow there are < e^{-700} of the denominator, which is at least
``e^{mc - 2 |w| chunk - |u|}``). The carried states keep their own scales, updated once per chunk by the
running-maximum rule ``m <- max(m - n w, kmax)``, so a stretch of tiny keys next to huge ones loses nothing that
matters later. Cost: two vectorised exponentials per element instead of six. Tasks outside that range (short
sequences with extreme decays or bonuses) take the running-maximum kernels below. For float32 inputs the chunk
arithmetic runs in float32 (twice the SIMD lanes, a float32 exponential) where ``|w| * _FAST_CHUNK + |u| <=
_FAST_RANGE32`` (float32 underflows below e^-87); the carried states stay float64 and the decay step is applied as
its float32 value plus its rounding error, so rounding does not compound over a chunk: about 2e-6 of each channel's
largest output (float64 inputs: float64 throughout, ~1e-15).

Backward (``alpha_{t,i}`` the softmax weight of ``i`` in ``out_t``, ``g`` the incoming gradient,
``L_t = log`` of the denominator at ``t``):

    grad_v_i = sum_t g_t alpha_{t,i}
             = e^{k_i} [sum_{t != i} e^{-L_t - (|t-i|-1) w} g_t + e^{u - L_i} g_i]     (same bidirectional sum,
                                                                                      keys -L_t, values g_t)
    grad_k_i = v_i grad_v_i - sum_t alpha_{t,i} g_t out_t
    grad_u   = sum_t g_t alpha_{t,t} (v_t - out_t)
    grad_w   = -sum_t g_t sum_{i != t} alpha_{t,i} (|t-i|-1) (v_i - out_t)

The distance-weighted sums of ``grad_w`` come from one extra running sum per direction,
``A'_{t+1} = e^{-w} (A'_t + A_t)``. Phase A of the backward recomputes the forward with those sums and stores
``-L_t`` (float64, one value per element of the task); phase B runs the bidirectional sum over ``(-L, g)``.

Fast path (backward). Where the forward's fast path applies, so does the backward's, with the same chunks: phase A
is the fast forward plus the distance-weighted sums (carried from chunk to chunk as ``A' <- e^{-n w} (A' + n A)
+ own``) and keeps ``1 / denominator`` per element in its chunk's scale ``e^{mc}`` (k's dtype) with, per chunk,
``-mc`` and the log of the largest true reciprocal; phase B's chunk terms ``g / den`` and ``g out / den`` then
come without an exponential, and the factor ``e^{k_i}`` is one exponential per element. In float32 every
gradient element is within ~1e-6 of the sum of the absolute values of its terms (the scale of its rounding,
large where a saturated softmax makes ``out_t ~ v_i`` cancel), as with the running-maximum kernels (~1e-7).

Tasks and threads. Where every channel takes the fast path, a task is one batch item with all its channels
(whole rows of ``(B, T, C)``: contiguous reads, long vectorised channel loops); each phase runs as chunk
summaries, the states entering every chunk (a few operations per chunk, sequential) and the chunks' work, so
with fewer tasks than threads the chunks of a task are cut into ranges that run in parallel. Calls where some
channel needs the running-maximum kernels use blocks of up to 64 channels, so that only those blocks take them.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

__all__ = ["KERNELS", "KERNEL_GROUPS", "compile_kernel", "set_threads", "wkv_backward", "wkv_forward"]

_CHUNK = 256  # positions per chunk of the two-level sweep; the chunk buffer stays in L1/L2
_FAST_CHUNK = 64  # positions per chunk of the fast path (0: always the running-maximum kernels)
_FAST_RANGE = 64.0  # fast path only where max_c |w_c| * _FAST_CHUNK + |u_c| <= this (see "Fast path")
_FAST_RANGE32 = 30.0  # the same for float32 inputs, whose fast path computes in float32 (underflow below e^-87)
_BIG = 600.0  # exponent gap beyond which the combine re-centres before exponentiating (float64: ~709)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# fast path: allow fused multiply-adds (rounding changes by at most an ulp per operation)
_JIT_FAST = {**_JIT, "fastmath": {"contract"}}
# numba's default "workqueue" thread pool must not be entered by two Python threads at once
_LAUNCH_LOCK = threading.Lock()

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 split in two so n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.9082149292705877e-10
_EXP_MIN = -708.0  # below: 0 (such terms are < 1e-307 of the term they are added to)
_EXP_MAX = 709.0
# float32 exponential (typed constants: a Python float literal would promote the arithmetic to float64)
_LOG2E_32 = np.float32(_LOG2E)
_LN2_HI_32 = np.float32(0.693359375)  # 9 significant bits: n * _LN2_HI_32 is exact for |n| < 2^15
_LN2_LO_32 = np.float32(-2.12194440e-4)
_EXP_MIN_32 = np.float32(-87.0)  # below: 0 (float32's smallest normal is e^-87.3)
_EXP_MAX_32 = np.float32(88.0)
_HALF_32 = np.float32(0.5)
_EXP_POLY_32 = tuple(np.float32(1.0 / math.factorial(i)) for i in range(8))


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (one register move; vectorises)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _float_to_bits(typingctx, x):
    """Reinterpret the bits of a float64 as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@numba.njit(inline="always", **_JIT)
def _log(x: float) -> float:
    """Natural log to ~2e-16 for positive normal float64 ``x`` (here a denominator >= 1), vectorisable.

    x = 2^e * m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172.
    """
    bits = _float_to_bits(x)
    e = (bits >> 52) - 1023
    m = _bits_to_float((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)  # mantissa in [1, 2)
    big = m > 1.4142135623730951
    m = 0.5 * m if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    fe = float(e)
    return fe * _LN2_HI + (fe * _LN2_LO + 2.0 * s * p)


@numba.njit(inline="always", **_JIT)
def _exp(x: float) -> float:
    """``e^x`` in float64 to ~5e-16 relative error for x in [-708, 709], 0 below, inlinable and vectorisable.

    numba's own exp is a scalar libm call, which keeps the channel loops from being vectorised; this
    one is x = n ln2 + r with |r| <= ln2 / 2, a degree-12 Taylor polynomial in r and 2^n built from bits.
    """
    xc = min(max(x, _EXP_MIN), _EXP_MAX)
    n = math.floor(xc * _LOG2E + 0.5)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = 2.08767569878681e-09  # 1 / 12!
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    y = p * _bits_to_float((np.int64(n) + 1023) << 52)
    return 0.0 if x < _EXP_MIN else y


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", **_JIT)
def _exp32(x):
    """``e^x`` in float32 to ~2 ulp for float32 x in [-87, 88], 0 below: as :func:`_exp` with a degree-7
    polynomial (remainder term ``0.347^8 / 8! = 5e-9``), eight lanes per AVX2 register instead of four."""
    xc = min(max(x, _EXP_MIN_32), _EXP_MAX_32)
    n = np.floor(xc * _LOG2E_32 + _HALF_32)
    r = (xc - n * _LN2_HI_32) - n * _LN2_LO_32
    c = _EXP_POLY_32
    p = ((((((c[7] * r + c[6]) * r + c[5]) * r + c[4]) * r + c[3]) * r + c[2]) * r + c[1]) * r + c[0]
    y = p * _bits_to_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    return np.float32(0.0) if x < _EXP_MIN_32 else y


def _exp_as(x):
    """``e^x`` in the precision of ``x`` (:func:`_exp32` for float32, :func:`_exp` otherwise); numba only."""
    raise NotImplementedError("_exp_as is only callable from numba-compiled code")


@overload(_exp_as, inline="always")
def _exp_as_overload(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: _exp(x)


@numba.njit(inline="always", **_JIT)
def _scales(m: float, w: float, key: float) -> tuple[float, float, float]:
    """New running maximum and the factors for the old state and the new term.

    The decayed old state has exponent ``m - w``, the new term ``key``; the larger becomes the new maximum
    and gets factor 1, the other ``e^{-gap}``. Returns ``(m_new, old_factor, new_factor)``.
    """
    decayed = m - w
    d = decayed - key
    e = _exp(-abs(d))  # written without branches so the compiler emits selects, not jumps
    old_wins = d >= 0.0
    return max(decayed, key), 1.0 if old_wins else e, e if old_wins else 1.0


# Every inner loop below runs over the channels of one position with unit stride and touches few arrays,
# so LLVM vectorises it; copies of the state into the chunk buffers are separate loops for the same reason
# (a fused loop needs too many run-time alias checks and stays scalar, ~4x slower).


@numba.njit(inline="always", **_JIT)
def _push(m, s, z, w, k, v, b, t, c0, nc):
    """Add position ``t`` to the running state ``(m, s, z)`` (each (nc,)) of channels ``c0:c0+nc``."""
    for c in range(nc):
        m[c], fo, fn = _scales(m[c], w[c0 + c], k[b, t, c0 + c])
        s[c] = fo * s[c] + fn * v[b, t, c0 + c]
        z[c] = fo * z[c] + fn


@numba.njit(inline="always", **_JIT)
def _push_dist(m, s, z, sd, zd, w, k, v, b, t, c0, nc):
    """:func:`_push` that also carries the distance-weighted sums, ``sd <- e^{-w} (sd + s)`` (scaled)."""
    for c in range(nc):
        m[c], fo, fn = _scales(m[c], w[c0 + c], k[b, t, c0 + c])
        sd[c] = fo * (sd[c] + s[c])
        zd[c] = fo * (zd[c] + z[c])
        s[c] = fo * s[c] + fn * v[b, t, c0 + c]
        z[c] = fo * z[c] + fn


@numba.njit(inline="always", **_JIT)
def _push_grad(m, a, h, w, keys, g, out, b, t, c0, nc):
    """Add position ``t`` to the state of the gradient sums: key ``keys[c]`` (= -log denominator at t),
    values ``g`` and ``g * out``."""
    for c in range(nc):
        gt = g[b, t, c0 + c]
        m[c], fo, fn = _scales(m[c], w[c0 + c], keys[c])
        a[c] = fo * a[c] + fn * gt
        h[c] = fo * h[c] + fn * gt * out[b, t, c0 + c]


@numba.njit(**_JIT)
def _sweep_boundaries(w, k, v, b, c0, nc, chunk, bm, bs, bz):
    """Right-to-left sweep over the whole sequence of ``k[b, :, c0:c0+nc]``, ``v`` alike.

    Stores in ``bm, bs, bz`` (n_chunks, nc) the suffix state (max exponent, scaled weighted sum, scaled
    weight sum) of all positions at or after the end of chunk j, i.e. the state entering chunk j from the
    right.
    """
    seq_len = k.shape[1]
    m = np.full(nc, -np.inf)
    s = np.zeros(nc)
    z = np.zeros(nc)
    for j in range(bm.shape[0] - 1, -1, -1):
        bm[j, :] = m
        bs[j, :] = s
        bz[j, :] = z
        for t in range(min(seq_len, (j + 1) * chunk) - 1, j * chunk - 1, -1):
            _push(m, s, z, w, k, v, b, t, c0, nc)


@numba.njit(**_JIT)
def _forward_task(w, u, k, v, out, b, c0, nc, chunk):
    """Bi-WKV of batch item ``b``, channels ``c0:c0+nc``; writes ``out[b, :, c0:c0+nc]``."""
    seq_len = k.shape[1]
    n_chunks = (seq_len + chunk - 1) // chunk
    bm = np.empty((n_chunks, nc))
    bs = np.empty((n_chunks, nc))
    bz = np.empty((n_chunks, nc))
    _sweep_boundaries(w, k, v, b, c0, nc, chunk, bm, bs, bz)
    # suffix state at each position of the current chunk (sum over i > t)
    cm = np.empty((chunk, nc))
    cs = np.empty((chunk, nc))
    cz = np.empty((chunk, nc))
    # running prefix state (sum over i < t)
    pm = np.full(nc, -np.inf)
    ps = np.zeros(nc)
    pz = np.zeros(nc)
    m = np.empty(nc)
    s = np.empty(nc)
    z = np.empty(nc)
    for j in range(n_chunks):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        m[:] = bm[j]
        s[:] = bs[j]
        z[:] = bz[j]
        for t in range(t1 - 1, t0 - 1, -1):
            cm[t - t0, :] = m
            cs[t - t0, :] = s
            cz[t - t0, :] = z
            _push(m, s, z, w, k, v, b, t, c0, nc)
        for t in range(t0, t1):
            r = t - t0
            for c in range(nc):
                vt = v[b, t, c0 + c]
                diag = u[c0 + c] + k[b, t, c0 + c]
                x1 = pm[c] - diag
                x2 = cm[r, c] - diag
                shift = max(x1, x2)
                shift = shift if shift > _BIG else 0.0
                e1, e2, e3 = _exp(x1 - shift), _exp(x2 - shift), _exp(-shift)
                num = ps[c] * e1 + cs[r, c] * e2 + vt * e3
                den = pz[c] * e1 + cz[r, c] * e2 + e3
                out[b, t, c0 + c] = num / den
            _push(pm, ps, pz, w, k, v, b, t, c0, nc)


@numba.njit(**_JIT)
def _sweep_boundaries_dist(w, k, v, b, c0, nc, chunk, bm, bs, bz, bsd, bzd):
    """As :func:`_sweep_boundaries`, also keeping the distance-weighted sums ``bsd, bzd``."""
    seq_len = k.shape[1]
    m = np.full(nc, -np.inf)
    s = np.zeros(nc)
    z = np.zeros(nc)
    sd = np.zeros(nc)
    zd = np.zeros(nc)
    for j in range(bm.shape[0] - 1, -1, -1):
        bm[j, :] = m
        bs[j, :] = s
        bz[j, :] = z
        bsd[j, :] = sd
        bzd[j, :] = zd
        for t in range(min(seq_len, (j + 1) * chunk) - 1, j * chunk - 1, -1):
            _push_dist(m, s, z, sd, zd, w, k, v, b, t, c0, nc)


@numba.njit(**_JIT)
def _backward_phase_a(w, u, k, v, g, neg_log_den, gw, gu, b, c0, nc, chunk):
    """Recompute the forward of one task with distance-weighted sums.

    Writes ``neg_log_den[t, c] = -log(denominator)`` (T, nc) and adds this task's ``grad_w`` and ``grad_u``
    into ``gw[b, c0:c0+nc]`` and ``gu[b, c0:c0+nc]``.
    """
    seq_len = k.shape[1]
    n_chunks = (seq_len + chunk - 1) // chunk
    bm = np.empty((n_chunks, nc))
    bs = np.empty((n_chunks, nc))
    bz = np.empty((n_chunks, nc))
    bsd = np.empty((n_chunks, nc))
    bzd = np.empty((n_chunks, nc))
    _sweep_boundaries_dist(w, k, v, b, c0, nc, chunk, bm, bs, bz, bsd, bzd)
    cm = np.empty((chunk, nc))
    cs = np.empty((chunk, nc))
    cz = np.empty((chunk, nc))
    csd = np.empty((chunk, nc))
    czd = np.empty((chunk, nc))
    log_shift = np.empty((chunk, nc))
    pm = np.full(nc, -np.inf)
    ps = np.zeros(nc)
    pz = np.zeros(nc)
    psd = np.zeros(nc)
    pzd = np.zeros(nc)
    m = np.empty(nc)
    s = np.empty(nc)
    z = np.empty(nc)
    sd = np.empty(nc)
    zd = np.empty(nc)
    acc_w = np.zeros(nc)
    acc_u = np.zeros(nc)
    for j in range(n_chunks):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        m[:] = bm[j]
        s[:] = bs[j]
        z[:] = bz[j]
        sd[:] = bsd[j]
        zd[:] = bzd[j]
        for t in range(t1 - 1, t0 - 1, -1):
            cm[t - t0, :] = m
            cs[t - t0, :] = s
            cz[t - t0, :] = z
            csd[t - t0, :] = sd
            czd[t - t0, :] = zd
            _push_dist(m, s, z, sd, zd, w, k, v, b, t, c0, nc)
        for t in range(t0, t1):
            r = t - t0
            for c in range(nc):
                vt = v[b, t, c0 + c]
                gt = g[b, t, c0 + c]
                diag = u[c0 + c] + k[b, t, c0 + c]
                x1 = pm[c] - diag
                x2 = cm[r, c] - diag
                shift = max(x1, x2)
                shift = shift if shift > _BIG else 0.0
                e1, e2, e3 = _exp(x1 - shift), _exp(x2 - shift), _exp(-shift)
                num = ps[c] * e1 + cs[r, c] * e2 + vt * e3
                den = pz[c] * e1 + cz[r, c] * e2 + e3
                o = num / den
                dist_v = psd[c] * e1 + csd[r, c] * e2
                dist_1 = pzd[c] * e1 + czd[r, c] * e2
                acc_w[c] -= gt * (dist_v - o * dist_1) / den
                acc_u[c] += gt * (e3 / den) * (vt - o)
                neg_log_den[t, c] = den  # its logarithm is taken in a separate loop below
                log_shift[r, c] = diag + shift
            _push_dist(pm, ps, pz, psd, pzd, w, k, v, b, t, c0, nc)
        for t in range(t0, t1):
            for c in range(nc):
                neg_log_den[t, c] = -(log_shift[t - t0, c] + _log(neg_log_den[t, c]))
    for c in range(nc):
        gw[b, c0 + c] += acc_w[c]
        gu[b, c0 + c] += acc_u[c]


@numba.njit(**_JIT)
def _backward_phase_b(w, u, k, v, out, g, neg_log_den, gk, gv, b, c0, nc, chunk):
    """``grad_v`` and ``grad_k`` of one task from the bidirectional sum over keys ``-L_t``, values ``g_t``
    and ``g_t out_t``; ``neg_log_den`` (T, nc) comes from :func:`_backward_phase_a`."""
    seq_len = k.shape[1]
    n_chunks = (seq_len + chunk - 1) // chunk
    bm = np.empty((n_chunks, nc))
    ba = np.empty((n_chunks, nc))  # scaled sum of g
    bh = np.empty((n_chunks, nc))  # scaled sum of g * out
    m = np.full(nc, -np.inf)
    a = np.zeros(nc)
    h = np.zeros(nc)
    for j in range(n_chunks - 1, -1, -1):
        bm[j, :] = m
        ba[j, :] = a
        bh[j, :] = h
        for t in range(min(seq_len, (j + 1) * chunk) - 1, j * chunk - 1, -1):
            _push_grad(m, a, h, w, neg_log_den[t], g, out, b, t, c0, nc)
    cm = np.empty((chunk, nc))
    ca = np.empty((chunk, nc))
    ch = np.empty((chunk, nc))
    pm = np.full(nc, -np.inf)
    pa = np.zeros(nc)
    ph = np.zeros(nc)
    for j in range(n_chunks):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        m[:] = bm[j]
        a[:] = ba[j]
        h[:] = bh[j]
        for t in range(t1 - 1, t0 - 1, -1):
            cm[t - t0, :] = m
            ca[t - t0, :] = a
            ch[t - t0, :] = h
            _push_grad(m, a, h, w, neg_log_den[t], g, out, b, t, c0, nc)
        for t in range(t0, t1):
            r = t - t0
            for c in range(nc):
                kt = k[b, t, c0 + c]
                gt = g[b, t, c0 + c]
                # each factor is a softmax weight (<= 1) up to the scaling kept in the sums
                e1 = _exp(kt + pm[c])
                e2 = _exp(kt + cm[r, c])
                e3 = _exp(u[c0 + c] + kt + neg_log_den[t, c])
                grad_v = pa[c] * e1 + ca[r, c] * e2 + gt * e3
                grad_h = ph[c] * e1 + ch[r, c] * e2 + gt * out[b, t, c0 + c] * e3
                gv[b, t, c0 + c] = grad_v
                gk[b, t, c0 + c] = v[b, t, c0 + c] * grad_v - grad_h
            _push_grad(pm, pa, ph, w, neg_log_den[t], g, out, b, t, c0, nc)


# ---------------------------------------------------------------------------------------------------------------
# Fast path: chunk-local stabilisation (see the module docstring, "Fast path").


@numba.njit(inline="always", **_JIT)
def _bonus_factors(u, c0, nc, like):
    """``e^{u_{c0:c0+nc}}`` in the dtype of ``like`` (the chunk arithmetic's precision)."""
    eu = np.empty(nc, like.dtype)
    for c in range(nc):
        eu[c] = _exp(u[c0 + c])
    return eu


@numba.njit(**_JIT)
def _decay_powers(w, c0, nc, chunk, like):
    """``dpow2[r] = [e^{-r w_{c0:c0+nc}}, e^{-r w_{c0:c0+nc}}]`` for r = 0..chunk, (chunk + 1, 2 nc) in the dtype of
    ``like`` (the precision the chunk's arithmetic runs in), and ``dlo2``, the rounding error of ``dpow2[1]`` in
    that dtype (0 in float64). The recurrences multiply by ``dpow2[1] + dlo2``: a step-by-step product with the
    rounded float32 decay alone compounds its rounding (up to 64 x 3e-8 over a chunk; seen: 1e-5 per channel)."""
    dpow2 = np.empty((chunk + 1, 2 * nc), like.dtype)
    dlo2 = np.empty(2 * nc, like.dtype)
    exact = np.empty(nc)  # float64; one exponential per loop body, so that the loop vectorises
    for r in range(chunk + 1):
        for c in range(nc):
            exact[c] = _exp(-float(r) * w[c0 + c])
        row = dpow2[r]
        for c in range(nc):
            row[c] = exact[c]
        for c in range(nc):
            row[nc + c] = exact[c]
        if r == 1:
            for c in range(nc):
                dlo2[c] = dlo2[nc + c] = exact[c] - float(row[c])
    return dpow2, dlo2


# The fast-path loops below index one-dimensional row views (``k[b, t, c0:c0+nc]``, ``buf[r]``): LLVM then
# vectorises the channel loops with little per-row overhead (3-dimensional indexing inside a 16-channel loop
# was ~3x slower). Inside a chunk they compute in the dtype of k and v (buffers, references and decay powers
# in that dtype, :func:`_exp_as`): float32 inputs get float32 chunk arithmetic, twice the lanes per register;
# the states carried from chunk to chunk stay float64.


@numba.njit(inline="always", **_JIT_FAST)
def _chunk_max(k, b, t0, t1, c0, nc, km):
    """``km[c] = max_t k[b, t, c0 + c]`` over the chunk ``t0 <= t < t1``."""
    km[:] = -np.inf
    for t in range(t0, t1):
        kr = k[b, t, c0 : c0 + nc]
        for c in range(nc):
            km[c] = max(km[c], kr[c])


@numba.njit(inline="always", **_JIT_FAST)
def _carry_factors(m, km, w, c0, nc, n, fac):
    """Scale update of a carried state moved over ``n`` positions and joined by terms of scale ``e^km``:
    ``m <- max(m - n w, km)``, ``fac[0]`` the factor of the old state, ``fac[1]`` that of the new terms (one of the
    two is 1, the other ``e^{-gap}``: one exponential per channel). A loop of its own, so that it vectorises."""
    fa, fk = fac[0], fac[1]
    for c in range(nc):
        decayed = m[c] - float(n) * w[c0 + c]
        d = decayed - km[c]
        e = _exp(-abs(d))
        fa[c] = 1.0 if d >= 0.0 else e
        fk[c] = e if d >= 0.0 else 1.0
        m[c] = max(decayed, km[c])


@numba.njit(inline="always", **_JIT_FAST)
def _carry(m, s, own, km, w, c0, nc, n, fac):
    """Carried state ``s e^m`` (``s``: (2 nc,) value sums then weight sums, float64) moved over ``n`` positions
    plus the chunk's own sums ``own`` in scale ``e^km``: ``s <- e^{-n w} s + own`` (new scale ``max(m - n w, km)``).
    ``fac``: (2, nc) float64 scratch."""
    _carry_factors(m, km, w, c0, nc, n, fac)
    fa, fk = fac[0], fac[1]
    for c in range(nc):
        s[c] = s[c] * fa[c] + own[c] * fk[c]
        s[nc + c] = s[nc + c] * fa[c] + own[nc + c] * fk[c]


@numba.njit(inline="always", **_JIT_FAST)
def _carry_dist(m, s, sd, own, own_d, km, w, c0, nc, n, fac):
    """:func:`_carry` that also moves the distance-weighted sums: ``sd <- e^{-n w} (sd + n s) + own_d``."""
    _carry_factors(m, km, w, c0, nc, n, fac)
    fa, fk = fac[0], fac[1]
    for c in range(nc):
        sd[c] = (sd[c] + float(n) * s[c]) * fa[c] + own_d[c] * fk[c]
        sd[nc + c] = (sd[nc + c] + float(n) * s[nc + c]) * fa[c] + own_d[nc + c] * fk[c]
        s[c] = s[c] * fa[c] + own[c] * fk[c]
        s[nc + c] = s[nc + c] * fa[c] + own[nc + c] * fk[c]


@numba.njit(inline="always", **_JIT_FAST)
def _enter(m, s, mc, nc, dst):
    """``dst = s e^{m - mc}`` per channel: a carried state (scale ``e^m``) in the chunk's scale ``e^mc``."""
    for c in range(nc):
        f = _exp(m[c] - mc[c])
        dst[c] = s[c] * f
        dst[nc + c] = s[nc + c] * f


@numba.njit(**_JIT)
def _distance_powers(dpow2):
    """``r * dpow2[r]`` (the weights ``r e^{-r w}`` of the distance-weighted sums), in the dtype of ``dpow2``."""
    ddpow2 = np.empty_like(dpow2)
    for r in range(dpow2.shape[0]):
        for c in range(dpow2.shape[1]):
            ddpow2[r, c] = float(r) * float(dpow2[r, c])
    return ddpow2


@numba.njit(inline="always", **_JIT_FAST)
def _own_sums(x, n, dpow2, dlo2, width, left, right):
    """The chunk's own sums of its rows ``x[:n]`` (each ``width`` wide) seen from its ends:
    ``left = sum_r e^{-r w} x[r]`` (towards the state left of it), ``right = sum_r e^{-(n-1-r) w} x[r]``.

    One pass: ``left`` with the tabulated weights, ``right`` by the recurrence (4x faster than a pass each)."""
    d2 = dpow2[1]
    left[:] = 0.0
    right[:] = 0.0
    for r in range(n):
        xr, dr = x[r], dpow2[r]
        for c in range(width):
            right[c] = d2[c] * right[c] + (dlo2[c] * right[c] + xr[c])
            left[c] += dr[c] * xr[c]


@numba.njit(inline="always", **_JIT_FAST)
def _own_sums_dist(x, n, dpow2, dlo2, ddpow2, width, left, right, left_d, right_d):
    """:func:`_own_sums` plus the distance-weighted sums ``left_d = sum_r r e^{-r w} x[r]`` and
    ``right_d = sum_r (n-1-r) e^{-(n-1-r) w} x[r]`` (``ddpow2[r] = r dpow2[r]``), also in one pass."""
    d2 = dpow2[1]
    left[:] = 0.0
    right[:] = 0.0
    left_d[:] = 0.0
    right_d[:] = 0.0
    for r in range(n):
        xr, dr, ddr = x[r], dpow2[r], ddpow2[r]
        for c in range(width):
            a = right[c]
            s = right_d[c] + a
            right_d[c] = d2[c] * s + dlo2[c] * s
            right[c] = d2[c] * a + (dlo2[c] * a + xr[c])
            left[c] += dr[c] * xr[c]
            left_d[c] += ddr[c] * xr[c]


@numba.njit(inline="always", **_JIT_FAST)
def _scan(x, n, d2, dlo2, width, pre, q):
    """Within-chunk prefix and suffix sums: given ``pre[0]`` and ``q[n-1]`` (the states entering the chunk),
    ``pre[r+1] = e^{-w} pre[r] + x[r]`` and ``q[r] = e^{-w} q[r+1] + x[r+1]``."""
    for r in range(n - 2, -1, -1):
        a, a1, x1 = q[r], q[r + 1], x[r + 1]
        for c in range(width):
            a[c] = d2[c] * a1[c] + (dlo2[c] * a1[c] + x1[c])
    for r in range(n - 1):
        a, a0, x0 = pre[r + 1], pre[r], x[r]
        for c in range(width):
            a[c] = d2[c] * a0[c] + (dlo2[c] * a0[c] + x0[c])


@numba.njit(inline="always", **_JIT_FAST)
def _scan_dist(x, n, d2, dlo2, width, pre, q, pre_d, q_d):
    """:func:`_scan` plus the distance-weighted sums ``pre_d[r+1] = e^{-w} (pre_d[r] + pre[r])`` and
    ``q_d[r] = e^{-w} (q_d[r+1] + q[r+1])`` (given ``pre_d[0]``, ``q_d[n-1]``); one array written per loop."""
    _scan(x, n, d2, dlo2, width, pre, q)
    for r in range(n - 2, -1, -1):
        ad, ad1, a1 = q_d[r], q_d[r + 1], q[r + 1]
        for c in range(width):
            s = ad1[c] + a1[c]
            ad[c] = d2[c] * s + dlo2[c] * s
    for r in range(n - 1):
        ad, ad0, a0 = pre_d[r + 1], pre_d[r], pre[r]
        for c in range(width):
            s = ad0[c] + a0[c]
            ad[c] = d2[c] * s + dlo2[c] * s


@numba.njit(inline="always", **_JIT_FAST)
def _chunk_terms(k, v, b, t0, t1, c0, nc, ref, x):
    """Row ``t - t0`` of ``x`` (chunk, 2 nc) gets ``[p v, p]`` with ``p = e^{k[b, t, c0+c] - ref[c]}``; ``ref``
    and ``x`` in the dtype of ``k``."""
    for t in range(t0, t1):
        kr, vr, xr = k[b, t, c0 : c0 + nc], v[b, t, c0 : c0 + nc], x[t - t0]
        for c in range(nc):
            p = _exp_as(kr[c] - ref[c])
            xr[nc + c] = p
            xr[c] = p * vr[c]


@numba.njit(**_JIT_FAST)
def _fast_summaries(k, v, b, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx, el, er):
    """Summaries of the chunks ``j0 <= j < j1`` of ``k[b, :, c0:c0+nc]``, ``v`` alike, each independent of the
    others: the key maximum ``kmx[j]`` and the chunk's own sums seen from its left and right ends,
    ``el[j] = sum_t e^{k_t - kmx[j] - (t-t0) w} [v_t, 1]`` and ``er[j]`` the same with ``(t1-1-t) w`` (2 nc).
    ``dpow2[r] = [e^{-r w}, e^{-r w}]`` (2 nc), ``dlo2`` the rounding error of ``dpow2[1]``.
    """
    seq_len = k.shape[1]
    width = 2 * nc
    x = np.empty((chunk, width), k.dtype)
    left, right = np.empty(width, k.dtype), np.empty(width, k.dtype)
    kref = np.empty(nc, k.dtype)
    for j in range(j0, j1):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        _chunk_max(k, b, t0, t1, c0, nc, kref)
        kmx[j, :nc] = kref  # exact: a key of k's dtype
        _chunk_terms(k, v, b, t0, t1, c0, nc, kref, x)
        _own_sums(x, t1 - t0, dpow2, dlo2, width, left, right)
        el[j, :width] = left
        er[j, :width] = right


@numba.njit(inline="always", **_JIT)
def _store_state(m, s, nc, dst_m, dst_s):
    """``dst_m[:nc] = m``, ``dst_s[:2 nc] = s`` as plain loops (numba's slice assignment is a generic, slower copy)."""
    for c in range(nc):
        dst_m[c] = m[c]
    for c in range(2 * nc):
        dst_s[c] = s[c]


@numba.njit(**_JIT)
def _boundary_states(w, c0, nc, chunk, seq_len, kmx, el, er, bm, bs, pm, ps):
    """The states entering every chunk, from the chunk summaries of :func:`_fast_summaries`: from the right,
    ``bs[j] e^{bm[j]}`` (sums over the positions after chunk j), and from the left, ``ps[j] e^{pm[j]}``."""
    m = np.full(nc, -np.inf)
    s = np.zeros(2 * nc)
    fac = np.empty((2, nc))
    for j in range(kmx.shape[0] - 1, -1, -1):
        _store_state(m, s, nc, bm[j], bs[j])
        _carry(m, s, el[j], kmx[j], w, c0, nc, min(seq_len, (j + 1) * chunk) - j * chunk, fac)
    m[:] = -np.inf
    s[:] = 0.0
    for j in range(kmx.shape[0]):
        _store_state(m, s, nc, pm[j], ps[j])
        _carry(m, s, er[j], kmx[j], w, c0, nc, min(seq_len, (j + 1) * chunk) - j * chunk, fac)


@numba.njit(**_JIT_FAST)
def _fast_outputs(u, k, v, out, b, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx, bm, bs, pm, ps):
    """Outputs of the chunks ``j0 <= j < j1``, given the states entering them (:func:`_boundary_states`)."""
    seq_len = k.shape[1]
    width = 2 * nc
    # everything inside a chunk in one scale e^{mc}: row r of x = [p v, p] with p = e^{k_t - mc},
    # q = [suffix sum of p v, of p] over i > t, pre = the same for the prefix i < t (incoming states included)
    x = np.empty((chunk, width), k.dtype)
    q = np.empty((chunk, width), k.dtype)
    pre = np.empty((chunk, width), k.dtype)
    mc = np.empty(nc, k.dtype)  # in k's dtype, so that the chunk's terms and its incoming states share it exactly
    eu = _bonus_factors(u, c0, nc, k)
    for j in range(j0, j1):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        n = t1 - t0
        for c in range(nc):
            mc[c] = max(max(pm[j, c], bm[j, c]), kmx[j, c])
        _enter(pm[j], ps[j], mc, nc, pre[0])
        _enter(bm[j], bs[j], mc, nc, q[n - 1])
        _chunk_terms(k, v, b, t0, t1, c0, nc, mc, x)
        _scan(x, n, dpow2[1], dlo2, width, pre, q)
        for t in range(t0, t1):
            r = t - t0
            pr, qr, xr = pre[r], q[r], x[r]
            orow = out[b, t, c0 : c0 + nc]
            for c in range(nc):
                orow[c] = (pr[c] + qr[c] + eu[c] * xr[c]) / (pr[nc + c] + qr[nc + c] + eu[c] * xr[nc + c])


@numba.njit(**_JIT_FAST)
def _fast_forward_task(w, u, k, v, out, b, c0, nc, chunk):
    """Fast-path Bi-WKV of batch item ``b``, channels ``c0:c0+nc``; needs ``|w| chunk + |u|`` moderate."""
    seq_len = k.shape[1]
    n_chunks = (seq_len + chunk - 1) // chunk
    dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
    kmx, bm, pm = np.empty((n_chunks, nc)), np.empty((n_chunks, nc)), np.empty((n_chunks, nc))
    el, er = np.empty((n_chunks, 2 * nc)), np.empty((n_chunks, 2 * nc))
    bs, ps = np.empty((n_chunks, 2 * nc)), np.empty((n_chunks, 2 * nc))
    _fast_summaries(k, v, b, c0, nc, chunk, 0, n_chunks, dpow2, dlo2, kmx, el, er)
    _boundary_states(w, c0, nc, chunk, seq_len, kmx, el, er, bm, bs, pm, ps)
    _fast_outputs(u, k, v, out, b, c0, nc, chunk, 0, n_chunks, dpow2, dlo2, kmx, bm, bs, pm, ps)


# Fast path of the backward (same chunking and range as the forward's), in the forward's three stages per
# phase (chunk summaries, the states entering each chunk, per-chunk work), so that long sequences with few
# tasks split over chunk ranges as the forward does. Phase A recomputes the forward chunk by chunk with
# distance-weighted sums, adds grad_w and grad_u, and keeps ``1 / denominator`` per element in the chunk's scale
# (``rden``, in k's dtype) together with that scale per chunk; phase B then runs the same scheme over the
# gradient terms ``(g / den, g out / den)``, whose per-chunk exponent it already knows, so its chunk terms need
# no exponential; phase B's chunk summaries are formed at the end of each chunk of phase A, while that chunk's
# gradients, reciprocals and outputs are still in cache.


@numba.njit(**_JIT_FAST)
def _summaries_dist(k, v, b, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx, el, er, eld, erd):
    """:func:`_fast_summaries` plus the chunks' own distance-weighted sums ``eld``, ``erd`` (2 nc wide)."""
    seq_len = k.shape[1]
    width = 2 * nc
    ddpow2 = _distance_powers(dpow2)
    x = np.empty((chunk, width), k.dtype)
    left, right = np.empty(width, k.dtype), np.empty(width, k.dtype)
    left_d, right_d = np.empty(width, k.dtype), np.empty(width, k.dtype)
    kref = np.empty(nc, k.dtype)
    for j in range(j0, j1):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        _chunk_max(k, b, t0, t1, c0, nc, kref)
        kmx[j, :nc] = kref
        _chunk_terms(k, v, b, t0, t1, c0, nc, kref, x)
        _own_sums_dist(x, t1 - t0, dpow2, dlo2, ddpow2, width, left, right, left_d, right_d)
        el[j, :width], er[j, :width] = left, right
        eld[j, :width], erd[j, :width] = left_d, right_d


@numba.njit(**_JIT)
def _boundary_states_dist(w, c0, nc, chunk, seq_len, kmx, el, er, eld, erd, bm, bs, bsd, pm, ps, psd):
    """:func:`_boundary_states` that also carries the distance-weighted sums (``bsd``, ``psd``)."""
    m = np.full(nc, -np.inf)
    s, sd = np.zeros(2 * nc), np.zeros(2 * nc)
    fac = np.empty((2, nc))
    for j in range(kmx.shape[0] - 1, -1, -1):
        _store_state(m, s, nc, bm[j], bs[j])
        _store_state(m, sd, nc, bm[j], bsd[j])
        _carry_dist(m, s, sd, el[j], eld[j], kmx[j], w, c0, nc, min(seq_len, (j + 1) * chunk) - j * chunk, fac)
    m[:] = -np.inf
    s[:] = 0.0
    sd[:] = 0.0
    for j in range(kmx.shape[0]):
        _store_state(m, s, nc, pm[j], ps[j])
        _store_state(m, sd, nc, pm[j], psd[j])
        _carry_dist(m, s, sd, er[j], erd[j], kmx[j], w, c0, nc, min(seq_len, (j + 1) * chunk) - j * chunk, fac)


@numba.njit(**_JIT_FAST)
def _backward_a_chunks(u, k, v, g, rden, rscale, acc, b, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx, states, el, er):
    """Phase A for the chunks ``j0 <= j < j1`` of batch item ``b``, channels ``c0:c0+nc``, given the states
    entering them (``states = (bm, bs, bsd, pm, ps, psd)`` from :func:`_boundary_states_dist`).

    Writes ``rden[t, c]`` (T, nc), the reciprocal of the denominator at ``t`` in its chunk's scale (the true
    reciprocal is ``rden e^{-mc_j}``), ``rscale[0, j] = -mc_j`` and ``rscale[1, j] = log max_t(true reciprocal)``
    ((2, n_chunks, nc)), adds these chunks' ``grad_w`` and ``grad_u`` into ``acc[0]``, ``acc[1]`` (nc each), and
    writes phase B's chunk summaries into ``el[j]``, ``er[j]`` (see :func:`_grad_terms`) while the chunk's
    gradients, reciprocals and outputs are still in cache.
    """
    bm, bs, bsd, pm, ps, psd = states
    seq_len = k.shape[1]
    width = 2 * nc
    dt = k.dtype
    d2 = dpow2[1]
    x, pre, q = np.empty((chunk, width), dt), np.empty((chunk, width), dt), np.empty((chunk, width), dt)
    pre_d, q_d = np.empty((chunk, width), dt), np.empty((chunk, width), dt)
    mc = np.empty(nc, dt)
    eu = _bonus_factors(u, c0, nc, k)
    rmax = np.empty(nc, dt)
    one = dpow2[0, 0]  # 1 in the chunk's dtype (a float literal would make the loop below float64)
    chunk_w, chunk_u = np.empty(nc, dt), np.empty(nc, dt)  # per-chunk sums, added to float64 totals
    acc_w, acc_u = acc[0], acc[1]
    outs = np.empty((chunk, nc), dt)  # the chunk's outputs, for phase B's summary
    terms, left, right, phi = np.empty((chunk, width), dt), np.empty(width, dt), np.empty(width, dt), np.empty(nc, dt)
    for j in range(j0, j1):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        n = t1 - t0
        for c in range(nc):
            mc[c] = max(max(pm[j, c], bm[j, c]), kmx[j, c])
        _enter(pm[j], ps[j], mc, nc, pre[0])
        _enter(pm[j], psd[j], mc, nc, pre_d[0])
        _enter(bm[j], bs[j], mc, nc, q[n - 1])
        _enter(bm[j], bsd[j], mc, nc, q_d[n - 1])
        _chunk_terms(k, v, b, t0, t1, c0, nc, mc, x)
        _scan_dist(x, n, d2, dlo2, width, pre, q, pre_d, q_d)
        rmax[:] = 0.0
        chunk_w[:] = 0.0
        chunk_u[:] = 0.0
        for t in range(t0, t1):
            r = t - t0
            pr, qr, xr, prd, qrd = pre[r], q[r], x[r], pre_d[r], q_d[r]
            vr, gr, rr, orow = v[b, t, c0 : c0 + nc], g[b, t, c0 : c0 + nc], rden[t], outs[r]
            for c in range(nc):
                diag = eu[c] * xr[nc + c]
                rec = one / (pr[nc + c] + qr[nc + c] + diag)
                o = (pr[c] + qr[c] + eu[c] * xr[c]) * rec
                dist_v = prd[c] + qrd[c]
                dist_1 = prd[nc + c] + qrd[nc + c]
                chunk_w[c] -= gr[c] * ((dist_v - o * dist_1) * rec)
                chunk_u[c] += gr[c] * ((diag * rec) * (vr[c] - o))
                rr[c] = rec
                orow[c] = o
                rmax[c] = max(rmax[c], rec)
        for c in range(nc):
            rscale[0, j, c] = -float(mc[c])
            rscale[1, j, c] = _log(float(rmax[c])) - float(mc[c])
            acc_w[c] += chunk_w[c]
            acc_u[c] += chunk_u[c]
            phi[c] = one / rmax[c]  # e^{rscale[0, j] - rscale[1, j]}
        for t in range(t0, t1):
            _grad_terms_row(g[b, t, c0 : c0 + nc], outs[t - t0], rden[t], nc, phi, terms[t - t0])
        _own_sums(terms, n, dpow2, dlo2, width, left, right)
        el[j, :width], er[j, :width] = left, right


@numba.njit(inline="always", **_JIT_FAST)
def _grad_terms_row(gr, orow, rr, nc, phi, xr):
    """``xr`` (2 nc) gets ``[g p, g out p]`` with ``p = rden * phi`` for one position (rows of g, out, rden)."""
    for c in range(nc):
        p = gr[c] * (rr[c] * phi[c])
        xr[c] = p
        xr[nc + c] = p * orow[c]


@numba.njit(inline="always", **_JIT_FAST)
def _grad_terms(g, out, rden, b, t0, t1, c0, nc, phi, x):
    """Row ``t - t0`` of ``x`` (chunk, 2 nc) gets phase B's terms of position ``t`` (:func:`_grad_terms_row`; phi per
    channel, all in the dtype of ``g``). Phase B's chunk summaries are the own sums of these in the chunk's scale
    ``e^{rscale[1, j]}`` (its largest reciprocal is 1); :func:`_backward_a_chunks` forms them."""
    for t in range(t0, t1):
        _grad_terms_row(g[b, t, c0 : c0 + nc], out[b, t, c0 : c0 + nc], rden[t], nc, phi, x[t - t0])


@numba.njit(**_JIT_FAST)
def _backward_b_chunks(u, k, v, out, g, rden, rscale, gk, gv, b, c0, nc, chunk, j0, j1, dpow2, dlo2, states):
    """Phase B for the chunks ``j0 <= j < j1``: ``grad_v`` and ``grad_k`` as the bidirectional sum over keys
    ``-L_t`` (``rden``, ``rscale`` from :func:`_backward_a_chunks`) and values ``g_t`` and ``g_t out_t``, times
    ``e^{k_i}``; ``states = (bm, bs, pm, ps)`` from :func:`_boundary_states` over phase B's summaries."""
    bm, bs, pm, ps = states
    seq_len = k.shape[1]
    width = 2 * nc
    dt = k.dtype
    d2 = dpow2[1]
    x, pre, q = np.empty((chunk, width), dt), np.empty((chunk, width), dt), np.empty((chunk, width), dt)
    phi = np.empty(nc, dt)
    mc = np.empty(nc, dt)
    eu = _bonus_factors(u, c0, nc, k)
    for j in range(j0, j1):
        t0 = j * chunk
        t1 = min(seq_len, t0 + chunk)
        n = t1 - t0
        for c in range(nc):
            mc[c] = max(max(pm[j, c], bm[j, c]), rscale[1, j, c])
            phi[c] = _exp(rscale[0, j, c] - float(mc[c]))
        _enter(pm[j], ps[j], mc, nc, pre[0])
        _enter(bm[j], bs[j], mc, nc, q[n - 1])
        _grad_terms(g, out, rden, b, t0, t1, c0, nc, phi, x)
        _scan(x, n, d2, dlo2, width, pre, q)
        for t in range(t0, t1):
            r = t - t0
            pr, qr, xr = pre[r], q[r], x[r]
            kr, vr, orow = k[b, t, c0 : c0 + nc], v[b, t, c0 : c0 + nc], out[b, t, c0 : c0 + nc]
            gvr, gkr = gv[b, t, c0 : c0 + nc], gk[b, t, c0 : c0 + nc]
            for c in range(nc):
                f = _exp_as(kr[c] + mc[c])  # e^{k_t} in the chunk's scale; <= e^{2 range} (softmax weights <= 1)
                off_v = f * (pr[c] + qr[c])
                diag = f * (eu[c] * xr[c])
                gvr[c] = off_v + diag
                # the diagonal term g alpha (v - out) on its own: out_t ~ v_t where the bonus dominates, and
                # v_t grad_v - grad_h would cancel to the rounding of those float32 products
                gkr[c] = (vr[c] * off_v - f * (pr[nc + c] + qr[nc + c])) + diag * (vr[c] - orow[c])


@numba.njit(**_JIT_FAST)
def _fast_backward_task(w, u, k, v, out, g, gw, gu, gk, gv, b, c0, nc, chunk):
    """Fast-path gradients of batch item ``b``, channels ``c0:c0+nc`` (phases A and B above, all chunks)."""
    seq_len = k.shape[1]
    n_chunks = (seq_len + chunk - 1) // chunk
    width = 2 * nc
    dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
    kmx, bm, pm = np.empty((n_chunks, nc)), np.empty((n_chunks, nc)), np.empty((n_chunks, nc))
    el = np.empty((n_chunks, width))
    er, eld, erd = np.empty_like(el), np.empty_like(el), np.empty_like(el)
    bs, bsd, ps, psd = np.empty_like(el), np.empty_like(el), np.empty_like(el), np.empty_like(el)
    _summaries_dist(k, v, b, c0, nc, chunk, 0, n_chunks, dpow2, dlo2, kmx, el, er, eld, erd)
    _boundary_states_dist(w, c0, nc, chunk, seq_len, kmx, el, er, eld, erd, bm, bs, bsd, pm, ps, psd)
    rden = np.empty((seq_len, nc), k.dtype)
    rscale = np.empty((2, n_chunks, nc))
    acc = np.zeros((2, nc))
    states = (bm, bs, bsd, pm, ps, psd)
    _backward_a_chunks(u, k, v, g, rden, rscale, acc, b, c0, nc, chunk, 0, n_chunks, dpow2, dlo2, kmx, states, el, er)
    for c in range(nc):
        gw[b, c0 + c] += acc[0, c]
        gu[b, c0 + c] += acc[1, c]
    _boundary_states(w, c0, nc, chunk, seq_len, rscale[1], el, er, bm, bs, pm, ps)
    states_b = (bm, bs, pm, ps)
    _backward_b_chunks(u, k, v, out, g, rden, rscale, gk, gv, b, c0, nc, chunk, 0, n_chunks, dpow2, dlo2, states_b)


@numba.njit(inline="always", **_JIT)
def _fast_ok(w, u, c0, nc, chunk, fast_range):
    """Whether the fast path is exact for channels ``c0:c0+nc`` (else the running-maximum kernels run)."""
    worst = 0.0
    for c in range(nc):
        worst = max(worst, abs(w[c0 + c]) * chunk + abs(u[c0 + c]))
    return worst <= fast_range


@numba.njit(inline="always", **_JIT)
def _task_channels(task, n_blocks, block, channels):
    """First channel and number of channels of a task's block, unsigned: numba then skips negative-index
    wrap-around and the channel loops vectorise."""
    c0 = (task % n_blocks) * block
    return np.uint64(c0), np.uint64(min(block, channels - c0))


@numba.njit(inline="always", **_JIT)
def _split_range(i, n_split, n_chunks):
    """Task and chunk range ``[j0, j1)`` of the ``i``-th (task, range) pair of :func:`_forward_kernel_split`."""
    per_split = (n_chunks + n_split - 1) // n_split
    j0 = (i % n_split) * per_split
    return i // n_split, j0, min(n_chunks, j0 + per_split)


@numba.njit(parallel=True, **_JIT)
def _forward_kernel(w, u, k, v, out, block, chunk, fast_chunk, fast_range):
    batch, _, channels = k.shape
    n_blocks = (channels + block - 1) // block
    for task in numba.prange(batch * n_blocks):
        b = task // n_blocks
        c0, nc = _task_channels(task, n_blocks, block, channels)
        if fast_chunk > 0 and _fast_ok(w, u, c0, nc, fast_chunk, fast_range):
            _fast_forward_task(w, u, k, v, out, b, c0, nc, fast_chunk)
        else:
            _forward_task(w, u, k, v, out, b, c0, nc, chunk)


@numba.njit(inline="always", **_JIT)
def _split_layout(k, block, chunk):
    """Sizes of a split kernel's call: ``(seq_len, channels, n_blocks, n_tasks, n_chunks)``, and per task and chunk
    the key maximum and the scales of the states entering it from either side (``kmx, bm, pm``, block wide)."""
    batch, seq_len, channels = k.shape
    n_blocks = (channels + block - 1) // block
    n_tasks = batch * n_blocks
    n_chunks = (seq_len + chunk - 1) // chunk
    kmx = np.empty((n_tasks, n_chunks, block))
    return (seq_len, channels, n_blocks, n_tasks, n_chunks), (kmx, np.empty_like(kmx), np.empty_like(kmx))


@numba.njit(parallel=True, **_JIT)
def _forward_kernel_split(w, u, k, v, out, block, chunk, n_split):
    """The fast path with each task's chunks cut into ``n_split`` ranges that run in parallel: for fewer
    (batch item, channel block) tasks than threads, e.g. one long 16-channel sequence. Every channel must be
    within the fast path's range. Three parallel stages: chunk summaries, the states entering each chunk
    (sequential over chunks, per task; a few operations per chunk), outputs."""
    (seq_len, channels, n_blocks, n_tasks, n_chunks), (kmx, bm, pm) = _split_layout(k, block, chunk)
    # per task and chunk: own sums and entering states (2 block wide)
    el = np.empty((n_tasks, n_chunks, 2 * block))
    er, bs, ps = np.empty_like(el), np.empty_like(el), np.empty_like(el)
    for i in numba.prange(n_tasks * n_split):
        task, j0, j1 = _split_range(i, n_split, n_chunks)
        c0, nc = _task_channels(task, n_blocks, block, channels)
        dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
        _fast_summaries(k, v, task // n_blocks, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx[task], el[task], er[task])
    for task in numba.prange(n_tasks):
        c0, nc = _task_channels(task, n_blocks, block, channels)
        states = (bm[task], bs[task], pm[task], ps[task])
        _boundary_states(w, c0, nc, chunk, seq_len, kmx[task], el[task], er[task], *states)
    for i in numba.prange(n_tasks * n_split):
        task, j0, j1 = _split_range(i, n_split, n_chunks)
        c0, nc = _task_channels(task, n_blocks, block, channels)
        dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
        states = (bm[task], bs[task], pm[task], ps[task])
        _fast_outputs(u, k, v, out, task // n_blocks, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx[task], *states)


@numba.njit(parallel=True, **_JIT)
def _backward_kernel(w, u, k, v, out, g, gw, gu, gk, gv, block, chunk, fast_chunk, fast_range):
    batch, seq_len, channels = k.shape
    n_blocks = (channels + block - 1) // block
    for task in numba.prange(batch * n_blocks):
        b = task // n_blocks
        c0, nc = _task_channels(task, n_blocks, block, channels)
        if fast_chunk > 0 and _fast_ok(w, u, c0, nc, fast_chunk, fast_range):
            _fast_backward_task(w, u, k, v, out, g, gw, gu, gk, gv, b, c0, nc, fast_chunk)
        else:
            neg_log_den = np.empty((seq_len, nc))
            _backward_phase_a(w, u, k, v, g, neg_log_den, gw, gu, b, c0, nc, chunk)
            _backward_phase_b(w, u, k, v, out, g, neg_log_den, gk, gv, b, c0, nc, chunk)


@numba.njit(parallel=True, **_JIT)
def _backward_kernel_split(w, u, k, v, out, g, gw, gu, gk, gv, block, chunk, n_split):
    """The fast backward with each task's chunks cut into ``n_split`` ranges that run in parallel, as
    :func:`_forward_kernel_split` (every channel within the fast path's range): per phase, chunk summaries, the
    states entering each chunk (sequential per task), then the chunks' work; ``grad_w`` and ``grad_u`` are summed
    per range and added up at the end."""
    (seq_len, channels, n_blocks, n_tasks, n_chunks), (kmx, bm, pm) = _split_layout(k, block, chunk)
    el = np.empty((n_tasks, n_chunks, 2 * block))
    er, eld, erd = np.empty_like(el), np.empty_like(el), np.empty_like(el)
    bs, bsd, ps, psd = np.empty_like(el), np.empty_like(el), np.empty_like(el), np.empty_like(el)
    rden = np.empty((n_tasks, seq_len, block), k.dtype)
    rscale = np.empty((n_tasks, 2, n_chunks, block))
    acc = np.zeros((n_tasks * n_split, 2, block))
    for i in numba.prange(n_tasks * n_split):
        task, j0, j1 = _split_range(i, n_split, n_chunks)
        c0, nc = _task_channels(task, n_blocks, block, channels)
        dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
        sums = (kmx[task], el[task], er[task], eld[task], erd[task])
        _summaries_dist(k, v, task // n_blocks, c0, nc, chunk, j0, j1, dpow2, dlo2, *sums)
    for task in numba.prange(n_tasks):
        c0, nc = _task_channels(task, n_blocks, block, channels)
        sums = (kmx[task], el[task], er[task], eld[task], erd[task])
        states = (bm[task], bs[task], bsd[task], pm[task], ps[task], psd[task])
        _boundary_states_dist(w, c0, nc, chunk, seq_len, *sums, *states)
    for i in numba.prange(n_tasks * n_split):
        task, j0, j1 = _split_range(i, n_split, n_chunks)
        c0, nc = _task_channels(task, n_blocks, block, channels)
        dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
        states = (bm[task], bs[task], bsd[task], pm[task], ps[task], psd[task])
        b = task // n_blocks
        a_args = (rden[task], rscale[task], acc[i], b, c0, nc, chunk, j0, j1, dpow2, dlo2, kmx[task], states)
        _backward_a_chunks(u, k, v, g, *a_args, el[task], er[task])
    for task in numba.prange(n_tasks):
        c0, nc = _task_channels(task, n_blocks, block, channels)
        states_b = (bm[task], bs[task], pm[task], ps[task])
        _boundary_states(w, c0, nc, chunk, seq_len, rscale[task, 1], el[task], er[task], *states_b)
    for i in numba.prange(n_tasks * n_split):
        task, j0, j1 = _split_range(i, n_split, n_chunks)
        c0, nc = _task_channels(task, n_blocks, block, channels)
        dpow2, dlo2 = _decay_powers(w, c0, nc, chunk, k)
        states_b = (bm[task], bs[task], pm[task], ps[task])
        _backward_b_chunks(
            u,
            k,
            v,
            out,
            g,
            rden[task],
            rscale[task],
            gk,
            gv,
            task // n_blocks,
            c0,
            nc,
            chunk,
            j0,
            j1,
            dpow2,
            dlo2,
            states_b,
        )
    for i in range(n_tasks * n_split):
        task = i // n_split
        c0, nc = _task_channels(task, n_blocks, block, channels)
        for c in range(nc):
            gw[task // n_blocks, c0 + c] += acc[i, 0, c]
            gu[task // n_blocks, c0 + c] += acc[i, 1, c]


def set_threads(n: int) -> None:
    """Use ``n`` worker threads (clipped to numba's pool size) in the following kernel calls."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def _all_fast(w: np.ndarray, u: np.ndarray, fast_range: float) -> bool:
    """Whether every channel is within the fast path's range (see the module docstring, "Fast path")."""
    return bool(_FAST_CHUNK) and float((np.abs(w) * _FAST_CHUNK + np.abs(u)).max(initial=0.0)) <= fast_range


def _block_size(w: np.ndarray, u: np.ndarray, shape: tuple[int, ...], fast_range: float) -> int:
    """Channels per task. Where every channel takes the fast path: whole rows, so a task reads k and v
    contiguously and its channel loops are long (faster than blocks of 64-192 channels, forward and backward;
    benchmarks/NOTES.md); batch items and chunk ranges (:func:`_split_count`) keep the threads busy. Otherwise
    :func:`_fast_block_size`, so that only the blocks that need them take the running-maximum kernels."""
    batch, _, channels = shape
    return channels if _all_fast(w, u, fast_range) else _fast_block_size(batch, channels)


def _fast_block_size(batch: int, channels: int) -> int:
    """Channels per task where some channel needs the running-maximum kernels: up to 64, a multiple of 8 where
    possible, and enough tasks for every thread."""
    threads = numba.get_num_threads()
    n_blocks = (channels + 63) // 64
    while batch * n_blocks < threads and channels >= 16 * (n_blocks + 1):
        n_blocks += 1
    block = (channels + n_blocks - 1) // n_blocks
    return min(channels, (block + 7) // 8 * 8)


def _split_count(w: np.ndarray, u: np.ndarray, shape: tuple[int, ...], block: int, fast_range: float) -> int:
    """Ranges of chunks per task for :func:`_forward_kernel_split` and :func:`_backward_kernel_split` (1: one task
    per thread, the usual kernels): enough to occupy every thread when there are fewer (batch item, channel block)
    tasks than threads, the sequence spans at least 8 chunks per range, and every channel is within the fast
    path's range."""
    batch, seq_len, channels = shape
    n_tasks = batch * -(-channels // block)
    threads = numba.get_num_threads()
    if n_tasks >= threads or not _all_fast(w, u, fast_range):
        return 1
    return max(1, min(-(-threads // n_tasks), seq_len // (8 * _FAST_CHUNK)))


def _launch_plan(w: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[float, int, int]:
    """For a call on ``v``'s shape and dtype: the fast path's range, channels per task and chunk ranges per task."""
    fast_range = _FAST_RANGE32 if v.dtype == np.float32 else _FAST_RANGE
    block = _block_size(w, u, v.shape, fast_range)
    return fast_range, block, _split_count(w, u, v.shape, block, fast_range)


def wkv_forward(w: np.ndarray, u: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bi-WKV forward.

    Args:
        w, u: (C,) float64 decay and bonus (already divided by T).
        k, v: (B, T, C) C-contiguous arrays, both float32 or both float64.

    Returns:
        (B, T, C) array in the dtype of ``v``.
    """
    out = np.empty_like(v)
    if v.size:
        with _LAUNCH_LOCK:
            fast_range, block, n_split = _launch_plan(w, u, v)
            if n_split > 1:
                _forward_kernel_split(w, u, k, v, out, block, _FAST_CHUNK, n_split)
            else:
                _forward_kernel(w, u, k, v, out, block, _CHUNK, _FAST_CHUNK, fast_range)
    return out


def wkv_backward(
    w: np.ndarray, u: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of Bi-WKV.

    Args:
        w, u: (C,) float64.
        k, v, out, g: (B, T, C) C-contiguous, one dtype (float32 or float64); ``out`` is the forward
            output, ``g`` the gradient with respect to it.

    Returns:
        ``(grad_w, grad_u, grad_k, grad_v)``: (C,) float64, (C,) float64, (B, T, C), (B, T, C) in the dtype
        of ``v``.
    """
    batch, _, channels = k.shape
    gw = np.zeros((batch, channels))
    gu = np.zeros((batch, channels))
    gk = np.empty_like(v)
    gv = np.empty_like(v)
    if v.size:
        with _LAUNCH_LOCK:
            fast_range, block, n_split = _launch_plan(w, u, v)
            if n_split > 1:
                _backward_kernel_split(w, u, k, v, out, g, gw, gu, gk, gv, block, _FAST_CHUNK, n_split)
            else:
                _backward_kernel(w, u, k, v, out, g, gw, gu, gk, gv, block, _CHUNK, _FAST_CHUNK, fast_range)
    return gw.sum(0), gu.sum(0), gk, gv


# the compiled entry points, slowest to compile first (each is compiled for float32 and float64 inputs)
KERNELS = ("_backward_kernel", "_backward_kernel_split", "_forward_kernel", "_forward_kernel_split")
# kernels to compile in one process: a kernel and its split twin are bit-identical only when their shared helpers
# come from one compilation (compiled in two processes, the backward pair differed in the last bits)
KERNEL_GROUPS = (("_backward_kernel", "_backward_kernel_split"), ("_forward_kernel", "_forward_kernel_split"))


def compile_kernel(name: str) -> None:
    """Compile (or load from numba's cache) the entry point ``name`` of :data:`KERNELS` for float32 and
    float64 inputs, with the argument types the public functions pass, by calling it on a tiny input."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}: expected one of {', '.join(KERNELS)}")
    rng = np.random.default_rng(0)
    channels = 8
    w, u = rng.uniform(0.0, 0.1, channels), rng.uniform(-0.5, 0.5, channels)
    for dtype in (np.float32, np.float64):
        k, v, g = (rng.standard_normal((1, 2 * _FAST_CHUNK, channels)).astype(dtype) for _ in range(3))
        fast_range = _FAST_RANGE32 if dtype == np.float32 else _FAST_RANGE
        if name.startswith("_forward"):
            out = np.empty_like(v)
            if name == "_forward_kernel_split":
                _forward_kernel_split(w, u, k, v, out, channels, _FAST_CHUNK, 2)
            else:
                _forward_kernel(w, u, k, v, out, channels, _CHUNK, _FAST_CHUNK, fast_range)
        else:
            out, gk, gv = v.copy(), np.empty_like(v), np.empty_like(v)
            gw, gu = np.zeros((1, channels)), np.zeros((1, channels))
            if name == "_backward_kernel_split":
                _backward_kernel_split(w, u, k, v, out, g, gw, gu, gk, gv, channels, _FAST_CHUNK, 2)
            else:
                _backward_kernel(w, u, k, v, out, g, gw, gu, gk, gv, channels, _CHUNK, _FAST_CHUNK, fast_range)
