"""Bi-WKV on a CUDA device: the Triton kernels against the pure PyTorch backend and a device-to-device copy.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python benchmarks/wkv_cuda.py
    python benchmarks/wkv_cuda.py --write benchmarks/RESULTS.md
    python benchmarks/wkv_cuda.py --sweep --max-tokens 262144    # launch settings first (a few minutes)

Every time is the median of ``triton.testing.do_bench`` (CUDA events, warm-up first). Traffic is counted as in
benchmarks/wkv.py: the forward reads k and v and writes the output (12 bytes per element in float32); the copy
moves a buffer of 6 bytes per element (12 bytes read plus written), so "% copy" is the share of the card's copy
bandwidth the kernel reaches. ``err`` is the largest difference from the float64 pure PyTorch result over each
channel's largest magnitude; ``grad err`` the same for the gradients of k and v (against float64 autograd of the
pure PyTorch backend, while its graph fits: ``--max-backward-elements``, which also bounds its fwd+bwd timing).
The Triton forward+backward is timed up to ``--max-triton-backward-elements`` (its own kernels).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import header_lines, sweep_grid, write_section  # noqa: E402
from monai_rwkv.ops import bi_wkv, bi_wkv_at  # noqa: E402

SECTION = "## Bi-WKV, CUDA (benchmarks/wkv_cuda.py)"
FWD_BYTES = 12


def bench_ms(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def copy_ms(elements: int, device: torch.device) -> float:
    """A device-to-device copy of 6 bytes per element (12 bytes of traffic per element, as the forward's)."""
    src = torch.randn(elements * 3 // 2, device=device)
    dst = torch.empty_like(src)
    return bench_ms(lambda: dst.copy_(src))


def make_inputs(batch: int, seq_len: int, channels: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(channels, generator=g, device=device) * 10 / seq_len
    u = torch.randn(channels, generator=g, device=device) * 10 / seq_len
    k = torch.randn(batch, seq_len, channels, generator=g, device=device) * 3
    v = torch.randn(batch, seq_len, channels, generator=g, device=device)
    return w, u, k, v


def channel_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    err = (out.double() - ref).abs().amax(dim=(0, 1))
    return (err / ref.abs().amax(dim=(0, 1))).max().item()


def forward_backward(backend: str, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        args = [x.detach().requires_grad_() for x in inputs]
        bi_wkv(*args, backend=backend).backward(grad)

    return run


def gradient_rel_err(inputs: tuple[torch.Tensor, ...], grad: torch.Tensor) -> float:
    """Largest channel-relative error of the Triton gradients of k and v against float64 autograd."""
    args = [x.detach().requires_grad_() for x in inputs]
    got = torch.autograd.grad(bi_wkv(*args, backend="triton"), args[2:], grad)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = torch.autograd.grad(bi_wkv(*ref_inputs, backend="torch"), ref_inputs[2:], grad.double())
    return max(channel_rel_err(g, r) for g, r in zip(got, want))


def sampled_rel_err(inputs: tuple[torch.Tensor, ...], out: torch.Tensor, positions: int = 8) -> float:
    """Error at a few positions of batch item 0 against :func:`bi_wkv_at` (float64, O(T) each)."""
    seq_len = out.shape[1]
    worst = 0.0
    for t in torch.linspace(0, seq_len - 1, positions).long().tolist():
        ref = bi_wkv_at(*inputs, t)
        worst = max(worst, ((out[0, t].double() - ref).abs().max() / ref.abs().max()).item())
    return worst


def bench_cell(batch: int, seq_len: int, channels: int, opts: argparse.Namespace) -> dict[str, Optional[float]]:
    device = torch.device("cuda")
    n = batch * seq_len * channels
    inputs = make_inputs(batch, seq_len, channels, device, seed=seq_len + channels + batch)
    row: dict[str, Optional[float]] = {"copy": copy_ms(n, device)}
    row["torch_fwd"] = row["triton_fwd_bwd"] = row["torch_fwd_bwd"] = row["grad_err"] = None
    with torch.no_grad():
        out = bi_wkv(*inputs, backend="triton")
        if n <= opts.max_torch_elements:
            row["err"] = channel_rel_err(out, bi_wkv(*(x.double() for x in inputs), backend="torch"))
        else:
            row["err"] = sampled_rel_err(inputs, out)
        del out
        row["triton_fwd"] = bench_ms(lambda: bi_wkv(*inputs, backend="triton"))
        if n <= opts.max_torch_elements:
            row["torch_fwd"] = bench_ms(lambda: bi_wkv(*inputs, backend="torch"))
    grad = torch.randn_like(inputs[3])
    if n <= opts.max_triton_backward_elements:
        row["triton_fwd_bwd"] = bench_ms(forward_backward("triton", inputs, grad))
    if n <= opts.max_backward_elements:
        row["grad_err"] = gradient_rel_err(inputs, grad)
        row["torch_fwd_bwd"] = bench_ms(forward_backward("torch", inputs, grad))
    torch.cuda.empty_cache()
    return row


SWEEP_SHAPES = [(1, 1 << 16, 48), (1, 1 << 20, 48), (4, 1 << 18, 384)]


def settings_sweep(opts: argparse.Namespace) -> tuple[list[str], dict[str, int]]:
    """Forward time of the Triton kernels for each launch setting; returns the table and the fastest setting
    (smallest sum of log-times over the shapes)."""
    import itertools
    import math

    from monai_rwkv.ops import _triton_wkv

    device = torch.device("cuda")
    sweep_shapes = opts.sweep_shapes or SWEEP_SHAPES
    shapes = [make_inputs(b, t, c, device, seed=1) for b, t, c in sweep_shapes]
    head = "| chunk | chunk_block | scan_block_c | block_c | bounded | "
    head += " | ".join(f"B={b}, T={t:,}, C={c}" for b, t, c in sweep_shapes) + " |"
    lines = ["Launch settings sweep (Triton forward, ms; the fastest overall is used above):", ""]
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    best: tuple[float, dict[str, int]] = (math.inf, {})
    grid = itertools.product(opts.chunks, opts.chunk_blocks, opts.scan_block_cs, opts.block_cs, opts.bounded)
    for chunk, block, scan_c, block_c, bounded in grid:
        setting = {"chunk": chunk, "chunk_block": block, "scan_block_c": scan_c, "block_c": block_c, "bounded": bounded}
        times = [bench_ms(lambda a=inputs, st=setting: _triton_wkv.wkv_forward(*a, **st)) for inputs in shapes]
        score = sum(math.log(t) for t in times)
        if score < best[0]:
            best = (score, setting)
        lines.append(
            f"| {chunk} | {block} | {scan_c} | {block_c} | {bounded} | " + " | ".join(f"{t:.3f}" for t in times) + " |"
        )
        print(lines[-1], flush=True)
    return lines, best[1]


def fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(batch: int, channels: int, cells: dict[int, dict[str, Optional[float]]]) -> list[str]:
    head = (
        "| T | copy ms (GB/s) | triton fwd ms | triton GB/s (% copy) | torch fwd ms | fwd speed-up "
        "| triton fwd+bwd ms (/ fwd) | torch fwd+bwd ms | triton err | grad err |"
    )
    lines = [f"B = {batch}, C = {channels}:", "", head, "|" + "---|" * (head.count("|") - 1)]
    for seq_len, r in cells.items():
        nbytes = batch * seq_len * channels * FWD_BYTES
        copy_bw = nbytes / (r["copy"] * 1e-3) / 1e9
        bw = nbytes / (r["triton_fwd"] * 1e-3) / 1e9
        speedup = None if r["torch_fwd"] is None else r["torch_fwd"] / r["triton_fwd"]
        fwd_bwd = fmt(r["triton_fwd_bwd"])
        if r["triton_fwd_bwd"] is not None:
            fwd_bwd += f" ({r['triton_fwd_bwd'] / r['triton_fwd']:.1f}x)"
        lines.append(
            f"| {seq_len:,} | {r['copy']:.3f} ({copy_bw:.0f}) | {r['triton_fwd']:.3f} "
            f"| {bw:.0f} ({100 * bw / copy_bw:.0f} %) | {fmt(r['torch_fwd'])} "
            f"| {fmt(speedup, '.0f')}x | {fwd_bwd} | {fmt(r['torch_fwd_bwd'])} "
            f"| {r['err']:.1e} | {fmt(r['grad_err'], '.1e')} |"
        )
    return lines


def _shape(text: str) -> tuple[int, int, int]:
    b, t, c = (int(x) for x in text.lower().split("x"))
    return b, t, c


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-tokens", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=1 << 22, help="largest T (powers of 4 from --min-tokens)")
    p.add_argument("--channels", type=int, nargs="+", default=[48, 384])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--max-elements", type=int, default=1 << 31, help="skip larger B x T x C cells")
    p.add_argument("--max-torch-elements", type=int, default=1 << 22, help="pure PyTorch forward (float64) up to")
    p.add_argument("--max-backward-elements", type=int, default=1 << 21, help="float64 PyTorch backward up to")
    p.add_argument("--max-triton-backward-elements", type=int, default=1 << 28, help="Triton fwd+bwd up to")
    p.add_argument("--sweep", action="store_true", help="first time each launch setting, then use the fastest")
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--chunk-blocks", type=int, nargs="+", default=[256, 2048])
    p.add_argument("--scan-block-cs", type=int, nargs="+", default=[4, 16])
    p.add_argument(
        "--block-cs", type=int, nargs="+", default=[0], help="channels per chunk-kernel program (0: the default rule)"
    )
    p.add_argument(
        "--sweep-shapes",
        type=_shape,
        nargs="+",
        metavar="BxTxC",
        help="default: " + " ".join(f"{b}x{t}x{c}" for b, t, c in SWEEP_SHAPES),
    )
    p.add_argument("--sweep-only", action="store_true", help="only the sweep, no table")
    p.add_argument("--bounded", type=int, nargs="+", default=[1], help="1: plain-sum chunk states where safe")
    p.add_argument("--write", type=Path, default=None, help="markdown file to write/update the section in")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/wkv_cuda.py needs a CUDA device")
    load_before = os.getloadavg()
    from monai_rwkv.ops import _triton_wkv

    sweep_lines: list[str] = []
    if opts.sweep:
        sweep_lines, best = settings_sweep(opts)
        _triton_wkv.SETTINGS.update(best)
    settings = dict(_triton_wkv.SETTINGS)
    out_lines = [] if opts.sweep_only else sweep_grid(opts, bench_cell, table, opts.max_elements)
    out_lines += sweep_lines
    lines = header_lines(torch.device("cuda"), load_before, os.getloadavg())
    lines += [
        f"- float32 inputs; medians of triton.testing.do_bench; Triton launch settings {settings}"
        f"{' (fastest of the sweep below)' if opts.sweep else ''}; pure PyTorch forward up to"
        f" {opts.max_torch_elements:,} elements, forward+backward up to {opts.max_backward_elements:,}; Triton"
        f" forward+backward up to {opts.max_triton_backward_elements:,}; err against the float64 PyTorch result, or"
        " beyond its limit against bi_wkv_at at 8 positions; grad err: gradients of k and v against float64 autograd",
        "",
        *out_lines,
    ]
    print("\n".join(lines))
    if opts.write:
        write_section(opts.write, SECTION, lines)


if __name__ == "__main__":
    main()
