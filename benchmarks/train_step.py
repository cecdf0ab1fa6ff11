"""One training step (forward, L1 loss, backward, AdamW step) per model and Bi-WKV backend.

Usage (from the repository root)::

    python benchmarks/train_step.py                                   # CPU: numba kernels against pure PyTorch
    python benchmarks/train_step.py --device cuda --batch 16 --write benchmarks/RESULTS.md

The bundles train on random 128 x 128 patches; this times the same step on random data (the cost does not depend
on the values): median of ``--repeats`` steps after two warm-up steps, float32, ``train()`` mode. Peak memory:
max_memory_allocated on CUDA; on the CPU each row runs in a process of its own, whose peak RSS it reports.
Backend ``auto`` is what users get (Triton forward and backward on CUDA, numba on the CPU); ``torch`` forces the
pure PyTorch Bi-WKV (float64 graph), which before the Triton backward was also what every CUDA backward ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import header_lines, write_section  # noqa: E402
from benchmarks.network import _status_mb, build, sync, timed  # noqa: E402
from monai_rwkv.networks.blocks import rwkv as rwkv_block  # noqa: E402
from monai_rwkv.ops import bi_wkv  # noqa: E402
from monai_rwkv.runtime import reuse_freed_memory  # noqa: E402

SECTION = "## Training step (benchmarks/train_step.py)"
CUDA_SECTION = "## Training step, CUDA (benchmarks/train_step.py)"
MODELS = ("restore-rwkv-paper", "restore-rwkv-light", "restormer")


def step_time(name: str, backend: str, opts: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """Median seconds per training step and peak memory (MiB) of ``name`` with Bi-WKV ``backend``."""
    rwkv_block.bi_wkv = partial(bi_wkv, backend=backend)
    try:
        net = build(name).train().to(device)
        fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        net = net.to(memory_format=fmt)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        shape = (opts.batch, 1, opts.patch, opts.patch)
        x = torch.rand(shape, generator=g).to(device).contiguous(memory_format=fmt)
        y = torch.rand(shape, generator=g).to(device).contiguous(memory_format=fmt)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.l1_loss(net(x), y).backward()
            opt.step()

        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = [timed(step, device) for _ in range(opts.repeats)]
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _status_mb("VmHWM")
        return statistics.median(times), peak
    finally:
        rwkv_block.bi_wkv = bi_wkv


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--backends", nargs="+", default=["auto", "torch"], choices=["auto", "torch", "numba", "triton"])
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--write", type=Path, help="write the results into this markdown file")
    p.add_argument("--cell", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def measure(name: str, backend: str, opts: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """:func:`step_time`, on the CPU in a fresh process (peak RSS never goes down within one)."""
    if device.type == "cuda":
        return step_time(name, backend, opts, device)
    args = [sys.executable, __file__, "--cell", name, backend, "--device", "cpu", "--threads", str(opts.threads)]
    args += ["--patch", str(opts.patch), "--batch", str(opts.batch), "--repeats", str(opts.repeats)]
    result = subprocess.run(args, check=True, capture_output=True, text=True)
    return tuple(json.loads(result.stdout.splitlines()[-1]))


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    reuse_freed_memory()
    device = torch.device(opts.device)
    if opts.cell:
        print(json.dumps(step_time(*opts.cell, opts, device)))
        return
    load_before = os.getloadavg()
    head = "| model | Bi-WKV backend | ms per step | patches per s | peak MiB | time / auto |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in opts.models:
        backends = ["auto"] if name == "restormer" else opts.backends
        first = None
        for backend in backends:
            seconds, peak = measure(name, backend, opts, device)
            first = first or seconds
            rows.append(
                f"| {name} | {backend} | {1e3 * seconds:.1f} | {opts.batch / seconds:.1f} | {peak:.0f} "
                f"| {seconds / first:.2f} |"
            )
            print(rows[-1], flush=True)
    lines = header_lines(device, load_before, os.getloadavg())
    lines += [
        f"- step: forward, L1 loss, backward, AdamW; batch {opts.batch} x 1 x {opts.patch} x {opts.patch}, float32,"
        f" median of {opts.repeats} after 2 warm-up steps; peak memory: "
        + ("max_memory_allocated" if device.type == "cuda" else "peak RSS of a process per row"),
        "",
        *rows,
    ]
    print("\n".join(lines))
    if opts.write:
        write_section(opts.write, CUDA_SECTION if device.type == "cuda" else SECTION, lines)


if __name__ == "__main__":
    main()
