"""Exact, linear-time bidirectional WKV (Restore-RWKV, Eq. 8) in pure PyTorch.

For one channel with decay ``w`` and bonus ``u`` (both already divided by the sequence length T),
keys ``k`` and values ``v``, the output at position ``t`` is a softmax-weighted average of all values

.. math::

    \\mathrm{wkv}_t = \\frac{\\sum_{i \\ne t} e^{k_i - (|t-i|-1) w} v_i + e^{u + k_t} v_t}
                           {\\sum_{i \\ne t} e^{k_i - (|t-i|-1) w} + e^{u + k_t}}.

The sum over ``i < t`` factors as ``exp(-(t-1) w) * sum_{i<t} exp(k_i + i w) v_i`` (a prefix sum) and
the sum over ``i > t`` as ``exp((t+1) w) * sum_{i>t} exp(k_i - i w) v_i`` (a suffix sum), so the whole
operator costs O(T). The sums are formed in float64 with their exponents shifted by a per-channel
maximum, and the three parts are combined with a per-position shift, so nothing overflows for any
sign of ``w`` as long as the spread of exponents within one sequence, roughly
``max|k| - min|k| + |w| T + |u|``, stays below ~700 (float64's exponent range). That covers the
Restore-RWKV parameterisation (``|w| T`` is the learned decay, of order 1-60) with a wide margin.
No subtraction of large partial sums is ever performed, so accuracy does not degrade with T.

Backends. ``bi_wkv(..., backend="auto")`` runs the fused numba kernels of :mod:`monai_rwkv.ops._numba_wkv`
(extra ``monai-rwkv[fast]``; same equation, running-max float64 state, custom exact backward) when numba
imports and every input is a CPU tensor, except while tracing, scripting, compiling or exporting (TorchScript,
ONNX, ``torch.compile``/``torch.export``), which need the pure PyTorch graph below. ``backend="torch"`` always
uses the pure path, ``backend="numba"`` insists on the kernels.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Optional

import torch

__all__ = ["BACKENDS", "bi_wkv", "numba_available"]

BACKENDS = ("auto", "torch", "numba")

# Elements (batch x tokens x channels) processed at once when no gradient is needed; bounds the
# float64 temporaries of inference on very long sequences to a few hundred MB.
_INFERENCE_BLOCK_ELEMENTS = 1 << 23


def _check_inputs(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"k and v must both be (B, T, C); got {tuple(k.shape)} and {tuple(v.shape)}.")
    channels = k.shape[-1]
    if w.shape != (channels,) or u.shape != (channels,):
        raise ValueError(f"w and u must be ({channels},); got {tuple(w.shape)} and {tuple(u.shape)}.")


def _exclusive_cumsum(x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Sum over strictly earlier (or, with ``reverse``, strictly later) positions along dim 1."""
    if reverse:
        x = x.flip(1)
    out = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1).cumsum(1)
    return out.flip(1) if reverse else out


def _bi_wkv_float64(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bi-WKV on float64 tensors: w, u (C,), k, v (B, T, C); returns (B, T, C) float64."""
    seq_len = k.shape[1]
    pos = torch.arange(seq_len, dtype=k.dtype, device=k.device).unsqueeze(-1)  # (T, 1)
    ramp = pos * w  # (T, C): t * w

    # Prefix part: weight of token i < t is exp(k_i + i w - (t - 1) w).
    e_fwd = k + ramp
    m_fwd = e_fwd.amax(dim=1, keepdim=True).detach()
    p_fwd = torch.exp(e_fwd - m_fwd)
    # Suffix part: weight of token i > t is exp(k_i - i w + (t + 1) w).
    e_bwd = k - ramp
    m_bwd = e_bwd.amax(dim=1, keepdim=True).detach()
    p_bwd = torch.exp(e_bwd - m_bwd)

    # One cumulative sum over [numerator terms | denominator terms] per direction.
    s_fwd = _exclusive_cumsum(torch.cat([p_fwd * v, p_fwd], dim=-1), reverse=False)
    s_bwd = _exclusive_cumsum(torch.cat([p_bwd * v, p_bwd], dim=-1), reverse=True)

    # Log-scale of each part at position t, and a common per-position shift.
    log_fwd = m_fwd - ramp + w
    log_bwd = m_bwd + ramp + w
    log_diag = u + k
    shift = torch.maximum(torch.maximum(log_fwd, log_bwd), log_diag).detach()
    a_fwd = torch.exp(log_fwd - shift)
    a_bwd = torch.exp(log_bwd - shift)
    a_diag = torch.exp(log_diag - shift)

    channels = k.shape[-1]
    num = a_fwd * s_fwd[..., :channels] + a_bwd * s_bwd[..., :channels] + a_diag * v
    den = a_fwd * s_fwd[..., channels:] + a_bwd * s_bwd[..., channels:] + a_diag
    return num / den


_NUMBA_MODULE: Optional[ModuleType] = None
_NUMBA_ERROR: Optional[BaseException] = None


def _numba_kernels() -> Optional[ModuleType]:
    """The numba kernel module, imported on first use; None when numba (or llvmlite) is missing or broken."""
    global _NUMBA_MODULE, _NUMBA_ERROR
    if _NUMBA_MODULE is None and _NUMBA_ERROR is None:
        try:
            _NUMBA_MODULE = importlib.import_module("monai_rwkv.ops._numba_wkv")
        except Exception as err:  # ImportError, or a numba/llvmlite that fails to initialise
            _NUMBA_ERROR = err
    return _NUMBA_MODULE


def numba_available() -> bool:
    """Whether the fused CPU kernels can be used (numba importable)."""
    return _numba_kernels() is not None


def _is_graph_capture() -> bool:
    """True while TorchScript, ONNX, ``torch.compile`` or ``torch.export`` records the computation."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _numba_supported(tensors: tuple[torch.Tensor, ...]) -> bool:
    return all(t.device.type == "cpu" and t.dtype in _KERNEL_DTYPES for t in tensors)


class _NumbaBiWKV(torch.autograd.Function):
    """Bi-WKV through the fused numba kernels with their exact O(T) backward (not twice differentiable).

    Computes in float64 when ``k`` or ``v`` is float64 and in float32 otherwise (half inputs are upcast);
    the recurrent state is float64 either way. Saves the (upcast) inputs and the output for the backward.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kernels = _numba_kernels()
        dtype = torch.float64 if torch.float64 in (k.dtype, v.dtype) else torch.float32
        w64, u64 = (x.detach().to(torch.float64).contiguous() for x in (w, u))
        kc, vc = (x.detach().to(dtype).contiguous() for x in (k, v))
        kernels.set_threads(torch.get_num_threads())
        out = torch.from_numpy(kernels.wkv_forward(w64.numpy(), u64.numpy(), kc.numpy(), vc.numpy()))
        ctx.save_for_backward(w64, u64, kc, vc, out)
        ctx.dtypes = (w.dtype, u.dtype, k.dtype, v.dtype)
        return out.to(v.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kernels = _numba_kernels()
        w64, u64, kc, vc, out = ctx.saved_tensors
        g = grad_out.detach().to(out.dtype).contiguous()
        kernels.set_threads(torch.get_num_threads())
        arrays = (w64.numpy(), u64.numpy(), kc.numpy(), vc.numpy(), out.numpy(), g.numpy())
        grads = kernels.wkv_backward(*arrays)
        return tuple(torch.from_numpy(x).to(dt) for x, dt in zip(grads, ctx.dtypes))


def _use_numba(backend: str, tensors: tuple[torch.Tensor, ...]) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
    if backend == "torch":
        return False
    if backend == "auto":
        return not _is_graph_capture() and _numba_supported(tensors) and numba_available()
    if not numba_available():
        raise RuntimeError(
            f"backend='numba' needs numba (pip install 'monai-rwkv[fast]'); importing it failed with: {_NUMBA_ERROR!r}"
        )
    if not _numba_supported(tensors):
        raise ValueError("backend='numba' needs CPU tensors of dtype float16, bfloat16, float32 or float64.")
    return True


def bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Bidirectional WKV of Restore-RWKV (paper Eq. 8), exact, O(T) time and memory.

    Args:
        w: per-channel decay already divided by the sequence length, shape (C,). Any sign.
        u: per-channel bonus of the current token already divided by T, shape (C,).
        k: keys, shape (B, T, C).
        v: values, shape (B, T, C).
        backend: ``"auto"`` (numba kernels for CPU tensors when numba is installed and nothing is being
            traced/scripted/compiled/exported, else pure PyTorch), ``"torch"`` or ``"numba"``.

    Returns:
        (B, T, C) tensor in the dtype of ``v``; float16 and bfloat16 inputs are computed in float64
        internally (as are float32 inputs), so the only rounding is the final cast. The numba backend
        also works in float64 throughout and rounds only its result; the two agree to ~1e-7 relative.

    Differentiable with respect to all four inputs through autograd (the numba backend supplies its own
    O(T) backward, which is not itself differentiable). Runs on any device; autocast is disabled inside so
    mixed-precision callers still get the exact result.
    """
    _check_inputs(w, u, k, v)
    if _use_numba(backend, (w, u, k, v)):
        with torch.autocast(device_type="cpu", enabled=False):
            return _NumbaBiWKV.apply(w, u, k, v)
    f64 = torch.float64
    with torch.autocast(device_type=k.device.type, enabled=False):
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (w, u, k, v))
        batch, seq_len, channels = k.shape
        block = max(1, _INFERENCE_BLOCK_ELEMENTS // max(1, batch * seq_len))
        if needs_grad or block >= channels or torch.jit.is_tracing():
            return _bi_wkv_float64(w.to(f64), u.to(f64), k.to(f64), v.to(f64)).to(v.dtype)
        # Inference on long sequences: a few channels at a time bounds the float64 temporaries.
        out = torch.empty_like(v)
        for c0 in range(0, channels, block):
            sl = slice(c0, c0 + block)
            out[..., sl] = _bi_wkv_float64(w[sl].to(f64), u[sl].to(f64), k[..., sl].to(f64), v[..., sl].to(f64))
        return out
