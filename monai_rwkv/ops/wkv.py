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
(numba is a dependency; same equation, float64 carried state, custom exact O(T) backward) when numba
imports and every input is a CPU tensor, except while tracing, scripting or exporting (TorchScript, ONNX,
``torch.export``), which need the pure PyTorch graph below; the kernels are a ``torch.library`` custom op
(``monai_rwkv::bi_wkv_numba``), so ``torch.compile`` keeps them as one call. On CUDA tensors of dtype float32,
float16 or bfloat16 it runs the Triton kernels of :mod:`monai_rwkv.ops._triton_wkv` (float32 arithmetic with
exponent-carrying scans, forward and backward; triton ships with PyTorch's CUDA builds), also custom ops
(``monai_rwkv::bi_wkv_triton`` and its backward) that ``torch.compile`` keeps. ``backend="torch"`` always uses
the pure path; ``backend="numba"`` and ``backend="triton"`` insist on their kernels (``"triton"`` also runs CPU
tensors under ``TRITON_INTERPRET=1``, which is how the tests check it without a GPU). When numba cannot be
imported (an unsupported platform, a broken install) ``"auto"`` falls back to the pure path;
:func:`describe_backend` says which kernels run and why.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Optional, Union

import torch

from ._layout import check_scan, scan_layout

__all__ = ["BACKENDS", "bi_wkv", "describe_backend", "numba_available", "triton_available"]

BACKENDS = ("auto", "torch", "numba", "triton")

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


class _LazyKernels:
    """A kernel module imported on first use; ``module`` is None when its compiler package is missing or broken."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: Optional[BaseException] = None
        self._module: Optional[ModuleType] = None

    @property
    def module(self) -> Optional[ModuleType]:
        if self._module is None and self.error is None:
            try:
                self._module = importlib.import_module(self.name)
            except Exception as err:  # ImportError, or a numba/llvmlite/triton that fails to initialise
                self.error = err
        return self._module


_NUMBA = _LazyKernels("monai_rwkv.ops._numba_wkv")
_TRITON = _LazyKernels("monai_rwkv.ops._triton_wkv")


def numba_available() -> bool:
    """Whether the fused CPU kernels can be used (numba importable)."""
    return _NUMBA.module is not None


def triton_available() -> bool:
    """Whether the CUDA kernels can be used (triton importable)."""
    return _TRITON.module is not None


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _needs_torch_graph() -> bool:
    """True while TorchScript, ONNX or ``torch.export`` records the computation: they need plain PyTorch ops."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_exporting", lambda: False)())


#: The switch for :func:`bi_wkv`'s scans in another axis order on the Triton backend: True reads and writes the
#: tokens in place (no permuted copies); off until a GPU run has timed it (``benchmarks/gpu_levers.py``). Also set
#: by the environment variable ``MONAI_RWKV_TRITON_IN_PLACE_SCANS=1`` before import.
TRITON_IN_PLACE_SCANS = os.environ.get("MONAI_RWKV_TRITON_IN_PLACE_SCANS", "0") not in ("", "0")

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _numba_supported(tensors: tuple[torch.Tensor, ...]) -> bool:
    return all(t.device.type == "cpu" and t.dtype in _KERNEL_DTYPES for t in tensors)


@torch.library.custom_op("monai_rwkv::bi_wkv_numba", mutates_args=(), device_types="cpu")
def _numba_forward(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bi-WKV through the fused numba kernels: w, u (C,) float64; k, v (B, T, C) both float32 or both float64.

    A ``torch.library`` custom op, so that ``torch.compile`` keeps it as one opaque call (the kernels are not
    traceable) instead of falling back to the pure PyTorch graph; its backward is :func:`_numba_backward`.
    """
    return _numba_run(w, u, k, v)


def _numba_call(name: str, *tensors: torch.Tensor) -> Any:
    """The numba kernel ``name`` of the kernel module on the CPU tensors' arrays, with torch's thread count.

    numba's OpenMP thread pool, launched at its first use in a process, sets the process-wide OpenMP thread count
    to the pool's size, which torch then reports and uses for its own ops: a count the caller set
    (``torch.set_num_threads(1)``, or ``OMP_NUM_THREADS=1`` below the number of cores) is restored afterwards.
    """
    threads = torch.get_num_threads()
    kernels = _NUMBA.module
    try:
        kernels.set_threads(threads)
        return getattr(kernels, name)(*(x.detach().contiguous().numpy() for x in tensors))
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _numba_run(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The numba forward on plain CPU tensors (the body of :func:`_numba_forward`)."""
    return torch.from_numpy(_numba_call("wkv_forward", w, u, k, v))


@_numba_forward.register_fake
def _(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(v, memory_format=torch.contiguous_format)


@torch.library.custom_op("monai_rwkv::bi_wkv_numba_backward", mutates_args=(), device_types="cpu")
def _numba_backward(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(w, u, k, v)`` of :func:`_numba_forward` (exact O(T) kernels; not itself differentiable)."""
    return tuple(torch.from_numpy(x) for x in _numba_call("wkv_backward", w, u, k, v, out, grad.to(out.dtype)))


@_numba_backward.register_fake
def _(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.empty_like(w), torch.empty_like(u), torch.empty_like(k), torch.empty_like(v))


def _numba_setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs, output)


def _numba_backward_formula(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return _numba_backward(*ctx.saved_tensors, grad_out)


_numba_forward.register_autograd(_numba_backward_formula, setup_context=_numba_setup_context)


def _numba_bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Computes in float64 when ``k`` or ``v`` is float64 and in float32 otherwise (half inputs are upcast); the
    recurrent state is float64 either way. The casts are ordinary autograd ops, so gradients come back in each
    input's dtype."""
    dtype = torch.float64 if torch.float64 in (k.dtype, v.dtype) else torch.float32
    f64 = torch.float64
    args = (w.to(f64), u.to(f64), k.to(dtype).contiguous(), v.to(dtype).contiguous())
    forward = _numba_run if _plain_inference(args) else _numba_forward
    return forward(*args).to(v.dtype)


def _plain_inference(tensors: tuple[torch.Tensor, ...]) -> bool:
    """True for eager calls on plain tensors that autograd does not track: the kernels may then run without the
    custom op's dispatch, a fixed cost per call that matters for small scans (benchmarks/NOTES.md). Compiling,
    tensor subclasses (fake tensors) and dispatch modes keep the custom op, which they need."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if torch.compiler.is_compiling() or _DISPATCH_MODES() > 0:
        return False
    return all(type(t) is torch.Tensor for t in tensors)


# Number of active Python dispatch modes (a private PyTorch function; should it go away, assume one is active).
_DISPATCH_MODES = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 1)


@torch.library.custom_op("monai_rwkv::bi_wkv_triton", mutates_args=())
def _triton_forward(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bi-WKV through the Triton kernels (float32 arithmetic): w, u (C,); k, v (B, T, C) in float32, float16 or
    bfloat16, scanned in the order of ``layout`` (:func:`~monai_rwkv.ops._layout.scan_layout`). Returns the output
    (B, T, C) in the dtype of ``v``, stored like ``k``, and the (6, B, n_chunks, C) float32 chunk entering states
    (12 / L bytes per element), all its backward :func:`_triton_backward` keeps besides the inputs.

    A ``torch.library`` custom op, so that ``torch.compile`` keeps the kernels as one opaque call."""
    out, state, _ = _TRITON.module.wkv_forward(w, u, k, v, return_state=True, layout=layout)
    return out, state


@_triton_forward.register_fake
def _(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    state_shape = _TRITON.module.state_shape(k.shape)
    return torch.empty_like(v, memory_format=torch.contiguous_format), k.new_empty(state_shape, dtype=torch.float32)


@torch.library.custom_op("monai_rwkv::bi_wkv_triton_backward", mutates_args=())
def _triton_backward(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    grad: torch.Tensor,
    layout: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(w, u, k, v)`` of :func:`_triton_forward` from its inputs, its ``state``, the output's gradient
    and its ``layout``: (C,) float32 twice, then the dtypes of k and v (not itself differentiable)."""
    plan = _TRITON.module.launch_plan(k, state)
    return _TRITON.module.wkv_backward(w, u, k, v, state, grad, plan, layout)


@_triton_backward.register_fake
def _(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    grad: torch.Tensor,
    layout: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    f32 = torch.float32
    grads_k_v = (torch.empty_like(x, memory_format=torch.contiguous_format) for x in (k, v))
    return (w.new_empty(w.shape, dtype=f32), u.new_empty(u.shape, dtype=f32), *grads_k_v)


def _triton_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(*inputs[:4], output[1])
    ctx.layout = inputs[4]


def _triton_backward_formula(ctx: Any, grad_out: torch.Tensor, _grad_state: Optional[torch.Tensor]) -> tuple:
    w, u, k, v, state = ctx.saved_tensors
    grads = _triton_backward(w, u, k, v, state, grad_out.contiguous(), ctx.layout)
    return (*(g.to(x.dtype) for g, x in zip(grads, (w, u, k, v))), None)


_triton_forward.register_autograd(_triton_backward_formula, setup_context=_triton_setup_context)


_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _triton_supported(tensors: tuple[torch.Tensor, ...]) -> bool:
    k, v = tensors[2:]
    device_ok = all(t.device.type == "cuda" or _triton_interpreted() for t in tensors)
    same_device = len({t.device for t in tensors}) == 1
    return device_ok and same_device and k.dtype in _TRITON_DTYPES and v.dtype in _TRITON_DTYPES


def describe_backend(device: Union[str, torch.device] = "cpu") -> str:
    """One line naming the Bi-WKV kernels ``backend="auto"`` runs for float32 inputs on ``device`` (and, when it
    falls back to the pure PyTorch path, why; on CUDA, the fast-path switches that are on), e.g.
    ``"numba (fused CPU kernels)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        if triton_available():
            from . import norm  # imports this module

            switches = (("Triton LayerNorm", norm.TRITON_LAYER_NORM), ("in-place scans", TRITON_IN_PLACE_SCANS))
            on = [name for name, flag in switches if flag]
            return "triton (fused CUDA kernels" + (f"; {', '.join(on)} on" if on else "") + ")"
        return f"torch (pure PyTorch: triton could not be imported: {_TRITON.error!r})"
    if numba_available():
        return "numba (fused CPU kernels)"
    return f"torch (pure PyTorch, several times slower: numba could not be imported: {_NUMBA.error!r})"


def _permuted_scan(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str,
    grid: Sequence[int],
    order: Sequence[int],
) -> torch.Tensor:
    """:func:`bi_wkv` over raster-ordered tokens of ``grid`` scanned in the axis ``order``, through copies of ``k`` and
    ``v`` permuted into that order and the result permuted back."""
    batch, seq_len, channels = k.shape
    check_scan(seq_len, grid, order)
    shape = (batch, *grid, channels)
    forward = (0, *(a + 1 for a in order), len(shape) - 1)
    inverse = tuple(forward.index(i) for i in range(len(shape)))

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(shape).permute(forward).reshape(batch, seq_len, channels)

    out = bi_wkv(w, u, permute(k), permute(v), backend=backend)
    return out.reshape(tuple(shape[i] for i in forward)).permute(inverse).reshape(batch, seq_len, channels)


def _choose(backend: str, tensors: tuple[torch.Tensor, ...]) -> str:
    """The backend that runs: ``backend`` itself, or for ``"auto"`` the fastest one that applies."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
    if backend == "auto":
        if _needs_torch_graph():
            return "torch"
        cuda = tensors[2].device.type == "cuda"
        if cuda and _triton_supported(tensors) and triton_available():
            return "triton"
        if _numba_supported(tensors) and numba_available():
            return "numba"
        return "torch"
    if backend == "numba":
        if not numba_available():
            raise RuntimeError(
                "backend='numba' needs numba (a dependency of monai-rwkv: pip install numba);"
                f" importing it failed with: {_NUMBA.error!r}"
            )
        if not _numba_supported(tensors):
            raise ValueError("backend='numba' needs CPU tensors of dtype float16, bfloat16, float32 or float64.")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"backend='triton' needs triton; importing it failed with: {_TRITON.error!r}")
        if not _triton_supported(tensors):
            raise ValueError(
                "backend='triton' needs k and v on one CUDA device in float32, float16 or bfloat16"
                " (or TRITON_INTERPRET=1 for CPU tensors)."
            )
    return backend


def bi_wkv(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str = "auto",
    grid: Optional[Sequence[int]] = None,
    order: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Bidirectional WKV of Restore-RWKV (paper Eq. 8), exact, O(T) time and memory.

    Args:
        w: per-channel decay already divided by the sequence length, shape (C,). Any sign.
        u: per-channel bonus of the current token already divided by T, shape (C,).
        k: keys, shape (B, T, C).
        v: values, shape (B, T, C).
        backend: ``"auto"`` (while nothing is being traced/scripted/exported: Triton kernels for CUDA
            tensors in float32/float16/bfloat16, numba kernels for CPU tensors when numba is installed; else
            pure PyTorch), ``"torch"``, ``"numba"`` or ``"triton"``.
        grid, order: with both given, ``k`` and ``v`` hold the tokens of the spatial ``grid`` in raster order (last
            axis fastest) and the scan visits them with the axes in ``order`` (slowest to fastest varying, e.g.
            ``(1, 0)``: a 2D grid column by column); the result is in raster order too. The backends scan copies
            permuted into that order, or with :data:`TRITON_IN_PLACE_SCANS` the Triton kernels read and write the
            tokens where they are. None: the stored order.

    Returns:
        (B, T, C) tensor in the dtype of ``v``; float16 and bfloat16 inputs are computed in float64
        internally (as are float32 inputs), so the only rounding is the final cast. The numba backend
        keeps its state in float64 and agrees to ~1e-7 relative; the Triton backend computes in float32 and
        agrees to ~1e-5 relative (float64 inputs on CUDA take the pure path).

    Differentiable with respect to all four inputs through autograd (the numba and Triton backends supply their
    own O(T) backward kernels, which are not themselves differentiable). Runs on any device; autocast is disabled
    inside so mixed-precision callers still get the exact result.
    """
    _check_inputs(w, u, k, v)
    chosen = _choose(backend, (w, u, k, v))
    if order is not None and grid is not None and list(order) != sorted(order):
        if chosen == "triton" and TRITON_IN_PLACE_SCANS:
            layout = list(scan_layout(k.shape[1], grid, order))
            with torch.autocast(device_type=k.device.type, enabled=False):
                return _triton_forward(w, u, k, v, layout)[0]
        return _permuted_scan(w, u, k, v, chosen, grid, order)
    if chosen == "numba":  # autocast does not apply to the kernels, nor to the casts around them
        return _numba_bi_wkv(w, u, k, v)
    if chosen == "triton":
        with torch.autocast(device_type=k.device.type, enabled=False):
            return _triton_forward(w, u, k, v, list(scan_layout(k.shape[1])))[0]
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
