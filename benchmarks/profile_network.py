"""Where a network's inference time goes: torch.profiler's operator table for one forward.

Usage (from the repository root)::

    python benchmarks/profile_network.py --model restore-rwkv-paper --size 512 --device cuda
    python benchmarks/profile_network.py --model restormer --size 256 --device cpu --rows 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.network import MODELS, build, make_input, prepare, sync  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="restore-rwkv-paper", choices=MODELS)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rows", type=int, default=20)
    opts = p.parse_args()
    device = torch.device(opts.device)
    net, x = prepare(build(opts.model), device), make_input(opts.size, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        for _ in range(2):
            net(x)
        sync(device)
        with profile(activities=activities) as prof:
            net(x)
            sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{opts.model} at {opts.size}^2 on {device}:")
    print(prof.key_averages().table(sort_by=key, row_limit=opts.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
