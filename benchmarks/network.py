"""Whole-network inference: Restore-RWKV (paper and light presets) against MONAI's Restormer, and CT volume throughput.

Usage (from the repository root)::

    python benchmarks/network.py                                  # 128^2 .. 2048^2, CPU (CUDA when available)
    python benchmarks/network.py --sizes 128 256 --repeats 3
    python benchmarks/network.py --write benchmarks/RESULTS.md    # also write/update the markdown sections

Inference settings: ``eval()``, ``torch.inference_mode()``, float32, batch 1, one channel, channels-last on CPU
(fused Omni-Shift is what RestoreRWKV uses in eval mode). Restormer is ``monai.networks.nets.restormer.Restormer``
configured like the paper's baseline: dim 48, blocks 4/6/6/8, heads 1/2/4/8, 4 refinement blocks, FFN expansion
2.66, no bias. Unless ``--default-malloc``, the process runs with ``monai_rwkv.runtime.reuse_freed_memory()``
(what the package's inference does on CPU), for every model alike.

Time: at each size every model runs once to warm up, then the models take turns (model A, B, C, A, B, C, ...) so
that a change of machine load hits all of them alike; the table gives the median (and the fastest run) and the
ratio of medians. A cell whose predicted time (the previous size's median times the pixel ratio) exceeds
``--max-forward-s`` is skipped and marked so. Peak memory: each (model, size) runs once more in a fresh process;
CPU: the process's peak RSS after the forward minus its RSS just before it (``VmHWM`` and ``VmRSS`` of
/proc/self/status; not ``ru_maxrss``, which Linux carries over from the parent process across exec), i.e. the
memory the forward pass needs beyond the model; with glibc also the "in-use" peak of a second forward in that
process: the most ``malloc`` memory handed out and not yet freed (``mallinfo2``), sampled after every operator.
RSS also counts what the allocator keeps freed but mapped, which with ``reuse_freed_memory()`` moves by +-25 %
from process to process (fragmentation); the in-use peak moves by well under 1 % (paper preset, 512^2: 1,182 and
1,187 MiB). CUDA: ``torch.cuda.max_memory_allocated``. Scaling: the slope of log(time) and log(memory) against
log(pixels) from 256^2 up (least squares).

Volume throughput: the CT denoising bundle's own restorer (``configs/inference.json``: light preset, 128^2 sliding
window, overlap 0.25, Gaussian blending) on a 512 x 512 x ``--volume-slices`` volume (the real head CT upsampled
when ``data/ct`` exists, else a phantom); slices per second, and the time a 64-slice volume would take at that rate.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import header_lines, write_section  # noqa: E402
from monai_rwkv.networks.utils import count_parameters  # noqa: E402
from monai_rwkv.runtime import reuse_freed_memory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Whole network inference (benchmarks/network.py)"
VOLUME_SECTION = "## CT volume throughput (benchmarks/network.py)"
MODELS = ("restore-rwkv-paper", "restore-rwkv-light", "restormer")
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(name: str) -> torch.nn.Module:
    """A freshly initialised model (weights do not change the cost)."""
    if name == "restormer":
        from monai.networks.nets.restormer import Restormer

        return Restormer(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            dim=48,
            num_blocks=(4, 6, 6, 8),
            heads=(1, 2, 4, 8),
            num_refinement_blocks=4,
            ffn_expansion_factor=2.66,
            bias=False,
        )
    from monai_rwkv.networks.nets import RestoreRWKV

    return RestoreRWKV.from_preset(name.removeprefix("restore-rwkv-"))


def prepare(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    net = net.eval().to(device)
    return net.to(memory_format=torch.channels_last) if device.type == "cpu" else net


def make_input(size: int, device: torch.device) -> torch.Tensor:
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else x


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _status_mb(field: str) -> float:
    """A ``kB`` field of /proc/self/status (``VmRSS``: resident now, ``VmHWM``: peak resident) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_cell(name: str, size: int, device_name: str) -> dict[str, float]:
    """Run in a fresh process: one forward of ``name`` at ``size``; the memory it needs beyond the model, in MiB."""
    device = torch.device(device_name)
    net, x = prepare(build(name), device), make_input(size, device)
    with torch.inference_mode():
        net(make_input(16, device))  # load the kernels' libraries (numba, oneDNN) before measuring
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            net(x)
            sync(device)
            return {"peak_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
        before = _status_mb("VmRSS")
        net(x)
        peak = _status_mb("VmHWM")
        cell = {"peak_mb": max(peak - before, 0.0), "process_peak_mb": peak}
        if _mallinfo2() is not None:
            with _InUsePeak():  # first calls under a dispatch mode (custom ops' one-time setup: ~6 MiB) not counted
                net(make_input(16, device))
            base, sampler = _in_use_bytes(), _InUsePeak()
            with sampler:
                net(x)
            cell["in_use_peak_mb"] = (sampler.peak - base) / 2**20
        return cell


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


@cache
def _mallinfo2() -> Optional[Callable[[], _MallInfo2]]:
    """glibc's ``mallinfo2`` (2.33+), or None elsewhere; looked up once (``find_library`` runs ``ldconfig``, and
    :class:`_InUsePeak` reads the counters after every operator)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


def _in_use_bytes() -> int:
    """Bytes of ``malloc`` memory handed out and not freed: heap chunks in use plus ``mmap``-ed blocks."""
    info = _mallinfo2()()
    return info.uordblks + info.hblkhd


class _InUsePeak(TorchDispatchMode):
    """Largest :func:`_in_use_bytes` seen after any ATen operator (or custom op) while active: the memory the
    tensors and kernel temporaries hold, unlike RSS free of what the allocator keeps freed but mapped."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = _in_use_bytes()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, _in_use_bytes())
        return out


def cuda_memory(net: torch.nn.Module, size: int, device: torch.device, autocast: Optional[torch.dtype]) -> float:
    """CUDA: the allocator's peak during one forward beyond what was allocated before it, in MiB (in-process:
    the peak counter is per process and resettable, unlike RSS)."""
    x = make_input(size, device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), autocast_context(device, autocast):
        net(x)
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def measure_memory(
    name: str, size: int, device: torch.device, timeout_s: float, opts_default_malloc: bool = False
) -> dict[str, float]:
    """:func:`memory_cell` in a fresh process: ``peak_mb`` (RSS) and, with glibc, ``in_use_peak_mb``; empty if it
    failed."""
    cmd = [sys.executable, __file__, "--memory-cell", name, str(size), "--device", str(device)]
    cmd += ["--default-malloc"] if opts_default_malloc else []
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        print(f"memory cell {name} {size}: failed ({type(e).__name__})", file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_size(
    nets: dict[str, torch.nn.Module],
    size: int,
    device: torch.device,
    repeats: int,
    skip: set[str],
    autocast: Optional[torch.dtype] = None,
) -> dict[str, list[float]]:
    """Interleaved timings of the models not in ``skip``: one warm-up each, then ``repeats`` rounds."""
    x = make_input(size, device)
    runs: dict[str, list[float]] = {name: [] for name in nets if name not in skip}
    with torch.inference_mode(), autocast_context(device, autocast):
        for name in runs:
            timed(lambda net=nets[name]: net(x), device)
        for _ in range(repeats):
            for name in runs:
                runs[name].append(timed(lambda net=nets[name]: net(x), device))
    return runs


def slope(sizes: list[int], values: list[float]) -> Optional[float]:
    """Least-squares slope of log(value) against log(pixels)."""
    points = [(math.log(s * s), math.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len(points) < 2:
        return None
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    return sum((px - mx) * (py - my) for px, py in points) / sum((px - mx) ** 2 for px, _ in points)


def network_table(opts: argparse.Namespace, device: torch.device) -> list[str]:
    nets = {name: prepare(build(name), device) for name in opts.models}
    params = {name: count_parameters(net) for name, net in nets.items()}
    results: dict[int, dict[str, Any]] = {}
    previous: dict[str, float] = {}
    for i, size in enumerate(opts.sizes):
        ratio = (size / opts.sizes[i - 1]) ** 2 if i else 1.0
        skip = {n for n in nets if n in previous and previous[n] * ratio > opts.max_forward_s}
        skip |= {n for n in nets if i and n not in previous}  # skipped before: larger sizes too
        # memory first: with reuse_freed_memory this process keeps its peak after timing, and both must fit
        limit = opts.max_forward_s * 4 + 120
        in_use: dict[str, Optional[float]] = {}
        if device.type == "cuda":
            memory = {n: cuda_memory(nets[n], size, device, AUTOCAST[opts.autocast]) for n in nets if n not in skip}
        else:
            cells = {n: measure_memory(n, size, device, limit, opts.default_malloc) for n in nets if n not in skip}
            memory = {n: cell.get("peak_mb") for n, cell in cells.items()}
            in_use = {n: cell.get("in_use_peak_mb") for n, cell in cells.items()}
        runs = time_size(nets, size, device, opts.repeats, skip, AUTOCAST[opts.autocast])
        results[size] = {"runs": runs, "memory": memory, "in_use": in_use}
        previous = {n: statistics.median(r) for n, r in runs.items()}
        print(f"{size}^2: " + ", ".join(f"{n} {t:.3f} s" for n, t in previous.items()), flush=True)

    counted = ", ".join(f"{n} {params[n]:,}" for n in opts.models)
    lines = [f"Parameters (Omni-Shift counted fused, as the paper): {counted}", ""]
    head = "| size | " + " | ".join(f"{n} s (fastest)" for n in opts.models)
    head += " | " + " | ".join(f"{n} peak MiB" for n in opts.models)
    has_in_use = any(v is not None for cell in results.values() for v in cell["in_use"].values())
    if has_in_use:
        head += " | " + " | ".join(f"{n} in-use peak MiB" for n in opts.models)
    ratios = [n for n in opts.models if n != "restormer"] if "restormer" in opts.models else []
    head += "".join(f" | {n} / restormer time | {n} / restormer memory" for n in ratios)
    head += "".join(f" | {n} / restormer memory in use" for n in ratios if has_in_use) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for size, cell in results.items():
        runs, memory = cell["runs"], cell["memory"]
        med = {n: statistics.median(r) for n, r in runs.items()}
        row = [f"{size}^2"]
        row += [f"{med[n]:.3f} ({min(runs[n]):.3f})" if n in med else "skipped" for n in opts.models]
        row += [_mib(memory.get(n)) for n in opts.models]
        row += [_mib(cell["in_use"].get(n)) for n in opts.models] if has_in_use else []
        for n in ratios:
            row.append(f"{med[n] / med['restormer']:.2f}" if n in med and "restormer" in med else "-")
            row.append(_ratio(memory.get(n), memory.get("restormer")))
        row += [_ratio(cell["in_use"].get(n), cell["in_use"].get("restormer")) for n in ratios if has_in_use]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    scaled = [s for s in results if s >= 256]
    for n in opts.models:
        sizes = [s for s in scaled if n in results[s]["runs"]]
        t = slope(sizes, [statistics.median(results[s]["runs"][n]) for s in sizes])
        m = slope(sizes, [results[s]["memory"].get(n) or 0 for s in sizes])
        m_in_use = slope(sizes, [results[s]["in_use"].get(n) or 0 for s in sizes])
        if t is not None:
            span = f"{sizes[0]}^2 .. {sizes[-1]}^2"
            mem = f"{m:.2f}" if m is not None else "-"
            mem += f", in use {m_in_use:.2f}" if m_in_use is not None else ""
            lines.append(f"- scaling exponent vs pixels, {span}: {n} time {t:.2f}, peak memory {mem}")
    if "restore-rwkv-light" in nets and "restore-rwkv-paper" in nets:
        both = [s for s in results if {"restore-rwkv-light", "restore-rwkv-paper"} <= set(results[s]["runs"])]
        speed = [
            statistics.median(results[s]["runs"]["restore-rwkv-paper"])
            / statistics.median(results[s]["runs"]["restore-rwkv-light"])
            for s in both
        ]
        if speed:
            lines.append(
                "- light preset speed-up over the paper preset: "
                + ", ".join(f"{s}^2 {v:.1f}x" for s, v in zip(both, speed))
            )
    return lines


def _mib(value: Optional[float]) -> str:
    return f"{value:.0f}" if value is not None else "-"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def ct_volume(slices: int) -> torch.Tensor:
    """A (1, 512, 512, slices) HU volume: the real head CT upsampled from data/ct when present, else a phantom."""
    clean = REPO / "data" / "ct" / "cranium_ct_test.nii.gz"
    if clean.is_file():
        import nibabel

        vol = torch.as_tensor(nibabel.load(clean).get_fdata(dtype="float32"))[None]  # (1, i, j, k)
        vol = vol[..., : min(slices, vol.shape[-1])]
        vol = vol.repeat(1, 1, 1, math.ceil(slices / vol.shape[-1]))[..., :slices]
        up = torch.nn.functional.interpolate(vol.permute(3, 0, 1, 2), size=(512, 512), mode="bilinear")
        return up.permute(1, 2, 3, 0).contiguous()
    yy, xx = torch.meshgrid(torch.arange(512.0) - 255.5, torch.arange(512.0) - 255.5, indexing="ij")
    disc = torch.where(yy**2 + xx**2 < 200.0**2, 40.0, -1000.0)
    return disc[None, :, :, None].repeat(1, 1, 1, slices) + torch.randn(1, 512, 512, slices) * 20


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def volume_lines(opts: argparse.Namespace, device: torch.device) -> list[str]:
    from monai_rwkv.apps.bundle import load_bundle_config

    bundle = REPO / "bundles" / "restore_rwkv_ct_denoise"
    volume = ct_volume(opts.volume_slices)
    lines = [f"- volume: 512 x 512 x {opts.volume_slices} (float32 HU)"]
    for sw_batch, amp in itertools.product(opts.volume_sw_batch or [None], opts.volume_amp or [None]):
        overrides = {"device": str(device), "progress": False}
        if sw_batch is not None:
            overrides["sw_batch_size"] = sw_batch
        if amp is not None:
            overrides["amp"] = amp == "on"
        restorer = load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("restorer")
        restorer(volume[..., :1])  # warm-up (numba compile, caches)
        seconds = timed(partial(restorer, volume), device)
        rate = opts.volume_slices / seconds
        settings = restorer.describe()
        lines += [
            f"- bundle: {bundle.relative_to(REPO)} (light preset), roi {settings['roi_size']}, overlap "
            f"{settings['overlap']}, sw_batch_size {settings['sw_batch_size']}, amp {settings['amp']}, device "
            f"{settings['device']}: {seconds:.1f} s for {opts.volume_slices} slices: {rate:.3f} slices/s; a "
            f"512 x 512 x 64 volume at this rate: {_duration(64 / rate)} (extrapolated from {opts.volume_slices} "
            "slices)",
        ]
    return lines


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-forward-s", type=float, default=120.0, help="skip a cell predicted to take longer")
    p.add_argument("--volume-slices", type=int, default=4, help="slices of the 512^2 throughput volume (0: skip)")
    p.add_argument(
        "--volume-sw-batch", type=int, nargs="+", help="sw_batch_size values to time (default: the bundle's)"
    )
    p.add_argument(
        "--volume-amp", nargs="+", choices=["on", "off"], help="the bundle's amp setting(s) to time (default: its own)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--autocast", default="none", choices=AUTOCAST, help="torch.autocast dtype for every model")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's malloc defaults (default: monai_rwkv.runtime.reuse_freed_memory, for every model)",
    )
    p.add_argument("--write", type=Path, help="write the results into this markdown file")
    p.add_argument("--memory-cell", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    if not opts.default_malloc:
        reuse_freed_memory()
    if opts.memory_cell:
        print(json.dumps(memory_cell(opts.memory_cell[0], int(opts.memory_cell[1]), opts.device)))
        return
    device = torch.device(opts.device)
    load_before = os.getloadavg()
    lines = network_table(opts, device)
    volume = volume_lines(opts, device) if opts.volume_slices > 0 else []
    header = header_lines(device, load_before, os.getloadavg())
    settings = f"- medians of {opts.repeats} interleaved runs after one warm-up; cells predicted over "
    settings += f"{opts.max_forward_s:g} s per forward are skipped; malloc: "
    settings += "glibc defaults" if opts.default_malloc else "reuse_freed_memory() for every model"
    settings += f"; autocast: {opts.autocast}"
    report = [*header, settings, "", *lines]
    print("\n".join(report + [""] + volume))
    if opts.write:
        suffix = "" if device.type == "cpu" else f", {device.type.upper()}"
        suffix += "" if opts.autocast == "none" else f", autocast {opts.autocast}"
        write_section(opts.write, SECTION.replace(" (", suffix + " (", 1), report)
        if volume:
            write_section(opts.write, VOLUME_SECTION.replace(" (", suffix + " (", 1), [*header, "", *volume])


if __name__ == "__main__":
    main()
