"""Compile the numba Bi-WKV kernels into numba's on-disk cache ahead of their first use.

The first call of each kernel otherwise compiles it in the calling process (about 45 s for a forward and 85 s
more for a training step on a 2-core machine; benchmarks/NOTES.md), and processes started together (test
workers, batch workers) each compile the same kernels. This runs the compilation once, the forward kernels in
one process and the backward kernels in another, in parallel::

    python -m monai_rwkv.ops.precompile            # two processes (one with --jobs 1)
    python -m monai_rwkv.ops.precompile --jobs 1

With the cache already written it only loads it (a few seconds). Exit status 0 also when numba cannot load:
the package then runs the pure PyTorch Bi-WKV and there is nothing to compile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def _compile(names: tuple[str, ...]) -> list[tuple[str, float]]:
    """Compile kernels in this (worker) process; each one's name and the seconds it took."""
    from monai_rwkv.ops import _numba_wkv

    times = []
    for name in names:
        start = time.perf_counter()
        _numba_wkv.compile_kernel(name)
        times.append((name, time.perf_counter() - start))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_rwkv.ops.precompile", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes (1 or 2)")
    parser.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        from monai_rwkv.ops import _numba_wkv
    except Exception as err:  # the same failures that make the package fall back to the pure path
        print(f"numba kernels unavailable ({type(err).__name__}: {err}); nothing to compile", file=sys.stderr)
        return 0
    start = time.perf_counter()
    # a group per process (see KERNEL_GROUPS); numba's cache index of a function is rewritten whole by the process
    # that compiles it, so no function is compiled by two processes
    groups = _numba_wkv.KERNEL_GROUPS if args.jobs > 1 else (_numba_wkv.KERNELS,)
    with ProcessPoolExecutor(max_workers=len(groups), mp_context=get_context("spawn")) as pool:
        for times in pool.map(_compile, groups):
            for name, seconds in times:
                if not args.quiet:
                    print(f"{name}: {seconds:.1f} s")
    if not args.quiet:
        print(f"numba Bi-WKV kernels ready in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
