"""
First-call cost of the numba Bi-WKV kernels: compile (empty cache) against load (cache written).

numba compiles each kernel on first use and caches the machine code next to the module
(``monai_rwkv/ops/__pycache__``); a fresh install or a changed source pays the compile once per signature. This
copies the package to a temporary folder (an empty cache there), then times in two fresh processes, one after
the other, a light-preset inference forward and one training step on a 64 x 64 input; then, in a second empty
copy, ``python -m monai_rwkv.ops.precompile`` (every kernel; the forward and the backward pair in two processes)::

    python benchmarks/numba_first_call.py            # prints a markdown table
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name  # noqa: E402

PROBE = """
import time, torch
t0 = time.perf_counter()
from monai_rwkv.networks.nets import RestoreRWKV
model = RestoreRWKV.from_preset("light").eval()
x = torch.randn(1, 1, 64, 64)
with torch.no_grad():
    model(x)
t1 = time.perf_counter()
model.train()
model(x).mean().backward()
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f}")
"""


def _copy_package(folder: Path) -> None:
    """The package under ``folder`` without numba's cache (the copy compiles from scratch)."""
    shutil.copytree(ROOT / "monai_rwkv", folder / "monai_rwkv", ignore=shutil.ignore_patterns("__pycache__"))


def _probe(folder: Path, threads: int) -> tuple[float, float]:
    env = {"OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=folder, env=env, capture_output=True, text=True, check=True
    )
    forward, step = (float(v) for v in done.stdout.split()[-2:])
    return forward, step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _copy_package(folder)
        cold = _probe(folder, args.threads)
        warm = _probe(folder, args.threads)
        fresh = Path(tmp) / "precompiled"
        _copy_package(fresh)
        env = {"PATH": "/usr/bin:/bin"}
        start = time.perf_counter()
        command = [sys.executable, "-m", "monai_rwkv.ops.precompile", "--quiet", "--jobs", str(args.threads)]
        subprocess.run(command, cwd=fresh, env=env, check=True)
        precompile = time.perf_counter() - start
    print(f"numba first call, {cpu_name()}, {args.threads} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| process | import + first forward (s) | first training step (s) |")
    print("|---|---|---|")
    print(f"| empty cache (compiles) | {cold[0]:.1f} | {cold[1]:.1f} |")
    print(f"| cache written (loads) | {warm[0]:.1f} | {warm[1]:.1f} |")
    print(f"\n`python -m monai_rwkv.ops.precompile --jobs {args.threads}` on an empty cache: {precompile:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
