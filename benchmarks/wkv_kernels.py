"""Single-thread CPU time of the numba Bi-WKV kernels: fast path vs running-maximum kernels, same process.

Usage (from the repository root)::

    python benchmarks/wkv_kernels.py --shapes 1x65536x48 1x1048576x48 1x262144x384

For each (B, T, C): best-of-N ``time.process_time`` of one ``bi_wkv`` forward (numba backend, float32,
``torch.set_num_threads(1)``) with the fast path on and off (``_FAST_CHUNK = 0``), the backward kernel likewise,
and a single-thread copy of 12 bytes per element (``Tensor.copy_`` of 6 bytes per element) for the "% of memcpy".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_rwkv.ops import _numba_wkv as kernels  # noqa: E402
from monai_rwkv.ops import bi_wkv  # noqa: E402


def best_cpu_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def measure(batch: int, seq_len: int, channels: int, repeats: int) -> str:
    """One markdown table row for (B, T, C)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(channels, generator=g) * 10 / seq_len
    u = torch.randn(channels, generator=g) * 10 / seq_len
    k = torch.randn(batch, seq_len, channels, generator=g) * 3
    v = torch.randn(batch, seq_len, channels, generator=g)
    n = batch * seq_len * channels
    src = torch.randn(n * 3 // 2)
    dst = torch.empty_like(src)
    copy_s = best_cpu_s(lambda: dst.copy_(src), repeats)
    with torch.no_grad():
        out = bi_wkv(w, u, k, v, backend="numba").numpy()
    arrays = [x.double().numpy() for x in (w, u)] + [x.numpy() for x in (k, v)]
    grad = torch.randn(batch, seq_len, channels, generator=g).numpy()

    def forward() -> None:
        with torch.no_grad():
            bi_wkv(w, u, k, v, backend="numba")

    def backward() -> None:
        kernels.set_threads(1)
        kernels.wkv_backward(*arrays, out, grad)

    fast_chunk = kernels._FAST_CHUNK
    try:
        kernels._FAST_CHUNK = 0
        slow_s = best_cpu_s(forward, repeats)
        slow_bwd_s = best_cpu_s(backward, max(1, repeats - 1))
    finally:
        kernels._FAST_CHUNK = fast_chunk
    fast_s = best_cpu_s(forward, repeats)
    bwd_s = best_cpu_s(backward, repeats)

    def cell(sec: float) -> str:
        return f"{sec / n * 1e9:.2f} ({12 * n / sec / 1e9:.2f} GB/s, {100 * copy_s / sec:.1f} %)"

    return (
        f"| {batch} x {seq_len:,} x {channels} | {copy_s * 1e3:.1f} ({12 * n / copy_s / 1e9:.1f}) | {cell(slow_s)} "
        f"| {cell(fast_s)} | {slow_s / fast_s:.1f}x | {slow_bwd_s / n * 1e9:.1f} ({slow_bwd_s / fast_s:.1f}x) "
        f"| {bwd_s / n * 1e9:.1f} ({bwd_s / fast_s:.1f}x) |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["1x65536x48", "1x1048576x48", "1x262144x384"])
    p.add_argument("--repeats", type=int, default=3)
    opts = p.parse_args()
    torch.set_num_threads(1)
    print(
        "| B x T x C | memcpy ms (GB/s) | running-max fwd ns/el (GB/s, % memcpy) | fast fwd ns/el (GB/s, % memcpy) "
        "| speedup | running-max backward ns/el (x fast fwd) | fast backward ns/el (x fast fwd) |"
    )
    print("|---|---|---|---|---|---|---|")
    for shape in opts.shapes:
        batch, seq_len, channels = (int(x) for x in shape.split("x"))
        print(measure(batch, seq_len, channels, opts.repeats), flush=True)


if __name__ == "__main__":
    main()
