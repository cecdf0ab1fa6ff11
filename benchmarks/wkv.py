"""Bi-WKV timings: torch and numba backends, the O(T^2) reference, a Python-loop recurrence and memcpy.

Usage (from the repository root)::

    python benchmarks/wkv.py                                   # C=48, B=1, T = 1k .. 1M
    python benchmarks/wkv.py --channels 48 384 --batch 1 4 --max-tokens 4194304
    python benchmarks/wkv.py --write benchmarks/RESULTS.md     # also write/update the markdown section

Every figure is the median wall time of several runs (fewer for slow cells: repeats stop after
``--budget-s`` seconds). Bandwidth counts nominal float32 traffic: the forward reads k and v and writes
out (12 bytes per element); forward + backward adds reading out and the incoming gradient and writing the
gradients of k and v (36 bytes per element in all). Timing cells read ``median (fastest run)``; GB/s and
speedups use the medians. ``memcpy`` copies a buffer of 6 bytes per element
(``Tensor.copy_``), i.e. 12 bytes of traffic per element, in the same run; "% memcpy" is the achieved
bandwidth as a share of that copy's.

Unless ``--default-malloc``, the process runs with ``monai_rwkv.runtime.reuse_freed_memory()``, as the bundles
and benchmarks/network.py do on CPU: with glibc's defaults every output and gradient of a large call is a fresh
mapping that is paged in again (1 x 65,536 x 384 forward, numba kernel on 2 threads: 90-180 ms for the first calls
of a process, ~60 ms after a few; 40-60 ms from the second call with reused memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import header_lines, sweep_grid, write_section  # noqa: E402
from monai_rwkv.ops import bi_wkv, bi_wkv_quadratic  # noqa: E402
from monai_rwkv.ops.wkv import numba_available  # noqa: E402
from monai_rwkv.runtime import reuse_freed_memory  # noqa: E402

SECTION = "## Bi-WKV (benchmarks/wkv.py)"
FWD_BYTES = 12  # per element, float32: read k, v; write out
FWD_BWD_BYTES = 36  # + read out, grad_out; write grad_k, grad_v


def python_loop_bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bi-WKV by the two first-order recurrences stepped one position at a time in Python (float64).

    w, u (C,), k, v (B, T, C); returns (B, T, C) float64. Running-max state as in the numba kernel.
    """
    w, u, k, v = (x.double() for x in (w, u, k, v))
    batch, seq_len, channels = k.shape

    def scan(order: range) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = torch.full((batch, channels), -torch.inf, dtype=torch.float64)
        s = torch.zeros(batch, channels, dtype=torch.float64)
        z = torch.zeros(batch, channels, dtype=torch.float64)
        ms, ss, zs = (torch.empty(batch, seq_len, channels, dtype=torch.float64) for _ in range(3))
        for t in order:
            ms[:, t], ss[:, t], zs[:, t] = m, s, z
            m_new = torch.maximum(m - w, k[:, t])
            f_old, f_new = torch.exp(m - w - m_new), torch.exp(k[:, t] - m_new)
            s, z, m = f_old * s + f_new * v[:, t], f_old * z + f_new, m_new
        return ms, ss, zs

    pm, ps, pz = scan(range(seq_len))
    sm, ss, sz = scan(range(seq_len - 1, -1, -1))
    diag = u + k
    shift = torch.maximum(torch.maximum(pm, sm), diag)
    e1, e2, e3 = torch.exp(pm - shift), torch.exp(sm - shift), torch.exp(diag - shift)
    return (ps * e1 + ss * e2 + v * e3) / (pz * e1 + sz * e2 + e3)


_LAST_CPU_MS: list[float] = [0.0]
_LAST_MIN_MS: list[float] = [0.0]


def median_ms(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median wall time of ``fn`` in ms after one warm-up call; stops early once ``budget_s`` is spent.

    The median CPU time of the process over the same runs (all threads, ms) is left in ``_LAST_CPU_MS[0]``
    and the fastest run's wall time in ``_LAST_MIN_MS[0]``: on a shared machine those show the work done.
    """
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > budget_s:  # one slow run: time it once more only
        repeats = 1
    times, cpu_times = [], []
    spent = 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        spent += times[-1]
        if spent > budget_s:
            break
    _LAST_CPU_MS[0] = 1e3 * statistics.median(cpu_times)
    _LAST_MIN_MS[0] = 1e3 * min(times)
    return 1e3 * statistics.median(times)


def make_inputs(batch: int, seq_len: int, channels: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(channels, generator=g) * 10 / seq_len
    u = torch.randn(channels, generator=g) * 10 / seq_len
    k = torch.randn(batch, seq_len, channels, generator=g) * 3
    v = torch.randn(batch, seq_len, channels, generator=g)
    return w, u, k, v


def forward_backward(backend: str, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        args = [x.detach().requires_grad_() for x in inputs]
        bi_wkv(*args, backend=backend).backward(grad)

    return run


def bench_cell(batch: int, seq_len: int, channels: int, opts: argparse.Namespace) -> dict[str, Optional[float]]:
    """All timings (ms) for one (B, T, C)."""
    inputs = make_inputs(batch, seq_len, channels)
    n = batch * seq_len * channels
    src = torch.randn(n * 3 // 2)
    dst = torch.empty_like(src)
    row: dict[str, Optional[float]] = {"memcpy": median_ms(lambda: dst.copy_(src), opts.repeats, opts.budget_s)}
    row["memcpy_min"] = _LAST_MIN_MS[0]
    grad = torch.randn(batch, seq_len, channels)
    backends = ["torch"] + (["numba"] if numba_available() else [])
    for backend in backends:
        if backend == "torch" and seq_len > opts.max_torch_tokens:
            row["torch_fwd"] = row["torch_fwd_bwd"] = None
            continue
        with torch.no_grad():
            row[f"{backend}_fwd"] = median_ms(lambda b=backend: bi_wkv(*inputs, backend=b), opts.repeats, opts.budget_s)
        row[f"{backend}_fwd_cpu"], row[f"{backend}_fwd_min"] = _LAST_CPU_MS[0], _LAST_MIN_MS[0]
        if backend == "torch" and seq_len > opts.max_torch_backward_tokens:
            row["torch_fwd_bwd"] = None
        else:
            run = forward_backward(backend, inputs, grad)
            row[f"{backend}_fwd_bwd"] = median_ms(run, opts.repeats, opts.budget_s)
            row[f"{backend}_fwd_bwd_cpu"], row[f"{backend}_fwd_bwd_min"] = _LAST_CPU_MS[0], _LAST_MIN_MS[0]
    row["quadratic"] = None
    if seq_len <= opts.max_quadratic_tokens:
        rows = max(1, (1 << 23) // (batch * seq_len * channels))
        row["quadratic"] = median_ms(lambda: bi_wkv_quadratic(*inputs, rows_per_step=rows), 1, opts.budget_s)
    row["python_loop"] = None
    if seq_len <= opts.max_loop_tokens:
        row["python_loop"] = median_ms(lambda: python_loop_bi_wkv(*inputs), 1, opts.budget_s)
    return row


def fmt(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def gbps(ms: Optional[float], elements: int, bytes_per_element: int) -> Optional[float]:
    return None if not ms else elements * bytes_per_element / (ms * 1e-3) / 1e9


def _share(bw: Optional[float], copy_bw: Optional[float]) -> str:
    return "-" if bw is None or not copy_bw else f"{fmt(bw, 2)} ({100 * bw / copy_bw:.1f} %)"


def _ms(r: dict[str, Optional[float]], key: str) -> str:
    """``median (fastest)`` of one timing in ms."""
    med, fastest = r.get(key), r.get(key + "_min")
    return "-" if med is None else f"{med:.1f} ({fastest:.1f})" if fastest is not None else f"{med:.1f}"


def _speedup(a: Optional[float], b: Optional[float]) -> str:
    return "-" if a is None or b is None else f"{a / b:.1f}x"


def table(batch: int, channels: int, cells: dict[int, dict[str, Optional[float]]]) -> list[str]:
    """Markdown table for one (B, C)."""
    head = (
        "| T | memcpy ms | torch fwd ms | numba fwd ms | numba fwd GB/s (% memcpy) | fwd speedup "
        "| torch fwd+bwd ms | numba fwd+bwd ms | numba fwd+bwd GB/s (% memcpy) | fwd+bwd speedup "
        "| O(T^2) ref ms | Python loop ms | numba CPU ms fwd / fwd+bwd |"
    )
    lines = [f"B = {batch}, C = {channels}:", "", head, "|" + "---|" * (head.count("|") - 1)]
    for seq_len, r in cells.items():
        n = batch * seq_len * channels
        copy_bw = gbps(r["memcpy"], n, FWD_BYTES)
        fwd_bw = gbps(r.get("numba_fwd"), n, FWD_BYTES)
        fb_bw = gbps(r.get("numba_fwd_bwd"), n, FWD_BWD_BYTES)

        lines.append(
            f"| {seq_len:,} | {fmt(r['memcpy'], 2)} ({fmt(r['memcpy_min'], 2)}; {fmt(copy_bw, 1)} GB/s) "
            f"| {_ms(r, 'torch_fwd')} "
            f"| {_ms(r, 'numba_fwd')} | {_share(fwd_bw, copy_bw)} "
            f"| {_speedup(r.get('torch_fwd'), r.get('numba_fwd'))} "
            f"| {_ms(r, 'torch_fwd_bwd')} | {_ms(r, 'numba_fwd_bwd')} | {_share(fb_bw, copy_bw)} "
            f"| {_speedup(r.get('torch_fwd_bwd'), r.get('numba_fwd_bwd'))} | {fmt(r['quadratic'])} "
            f"| {fmt(r['python_loop'])} | {fmt(r.get('numba_fwd_cpu'))} / {fmt(r.get('numba_fwd_bwd_cpu'))} |"
        )
    return lines


def machine_lines(opts: argparse.Namespace, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> list[str]:
    lines = header_lines(torch.device("cpu"), load_before, load_after)
    lines[3] += " (the numba kernels use the same count)"
    return lines + [
        f"- medians of up to {opts.repeats} runs (budget {opts.budget_s:g} s per cell), float32 inputs; "
        f"torch forward only up to T = {opts.max_torch_tokens:,}, torch backward up to "
        f"{opts.max_torch_backward_tokens:,}, O(T^2) up to {opts.max_quadratic_tokens:,}, Python loop up to "
        f"{opts.max_loop_tokens:,}; malloc: " + ("glibc defaults" if opts.default_malloc else "reuse_freed_memory()"),
    ]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-tokens", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=1 << 20, help="largest T (powers of 4 from --min-tokens)")
    p.add_argument("--channels", type=int, nargs="+", default=[48])
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=3.0, help="stop repeating a cell after this many seconds")
    p.add_argument("--max-torch-tokens", type=int, default=1 << 20)
    p.add_argument("--max-torch-backward-tokens", type=int, default=1 << 18, help="its float64 graph is large")
    p.add_argument("--max-quadratic-tokens", type=int, default=2048)
    p.add_argument("--max-loop-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="torch (and numba) threads; default: torch's")
    p.add_argument("--write", type=Path, default=None, help="markdown file to write/update the section in")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's malloc defaults (default: monai_rwkv.runtime.reuse_freed_memory)",
    )
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if not opts.default_malloc:
        reuse_freed_memory()
    load_before = os.getloadavg()
    out_lines = sweep_grid(opts, bench_cell, table)
    lines = machine_lines(opts, load_before, os.getloadavg()) + [""] + out_lines
    print("\n".join(lines))
    if opts.write:
        write_section(opts.write, SECTION, lines)


if __name__ == "__main__":
    main()
