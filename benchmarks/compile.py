"""Eager against ``torch.compile`` (inductor) inference of one network: median time per forward.

Usage (from the repository root)::

    python benchmarks/compile.py --model restore-rwkv-light --size 256
    python benchmarks/compile.py --model restore-rwkv-paper --size 512 --device cuda

Settings as benchmarks/network.py (``eval()``, ``torch.inference_mode()``, float32, batch 1, channels-last on
CPU, ``reuse_freed_memory()``). The first compiled call (tracing and code generation) is timed on its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.network import MODELS, build, make_input, prepare, sync  # noqa: E402
from monai_rwkv.runtime import reuse_freed_memory  # noqa: E402


def median_s(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="restore-rwkv-light", choices=MODELS)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    opts = p.parse_args()
    reuse_freed_memory()
    device = torch.device(opts.device)
    net, x = prepare(build(opts.model), device), make_input(opts.size, device)
    with torch.inference_mode():
        reference = net(x)
        eager = median_s(lambda: net(x), device, opts.repeats)
        compiled_net = torch.compile(net)
        start = time.perf_counter()
        out = compiled_net(x)
        sync(device)
        first = time.perf_counter() - start
        compiled = median_s(lambda: compiled_net(x), device, opts.repeats)
    diff = (out - reference).abs().max().item()
    print(
        f"{opts.model} at {opts.size}^2 on {device.type} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads): "
        f"eager {eager:.3f} s, compiled {compiled:.3f} s ({compiled / eager:.2f}x), first compiled call {first:.1f} s, "
        f"largest difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
