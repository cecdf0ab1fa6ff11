"""Parallel-beam projector and FBP on CPU: the numba kernels against the torch ``grid_sample`` path.

Usage (from the repository root)::

    python benchmarks/tomography.py
    python benchmarks/tomography.py --write benchmarks/RESULTS.md

Per slice size (the default detector of half a pixel; view counts of the CT training range and the shifted set):
:func:`~monai_rwkv.transforms.radon` and :func:`~monai_rwkv.transforms.iradon` of one float32 slice with
``backend="torch"`` and ``backend="numba"``, and one fan-beam low-dose CT simulation
(:class:`~monai_rwkv.transforms.RandLowDoseCT`) with each (torch: as where numba cannot load). Every time is the
fastest of ``--repeats`` runs after one warm-up, with ``--threads`` torch threads (the numba kernels are
single-threaded, as in a data-loader worker); "max rel diff" is the largest difference of the numba float32
sinogram from the torch float64 one over the largest sinogram value.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fastest_seconds, header_lines, write_section  # noqa: E402
from monai_rwkv.transforms import ParallelBeamGeometry, RandLowDoseCT, iradon, radon, synthetic_ct, tomography  # noqa: E402

SECTION = "## Tomography on CPU (benchmarks/tomography.py)"
CASES = [(256, 0.9, 360), (384, 0.8, 120), (384, 0.8, 720), (512, 0.7, 90), (512, 0.8, 720), (512, 0.7, 960)]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", type=Path, help="write the results into this markdown file")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    if tomography._numba_kernels() is None:
        raise SystemExit("numba cannot be imported here: nothing to compare")
    load_before = os.getloadavg()
    columns = ("slice", "pixel mm", "views", "bins", "radon torch s", "radon numba s", "speed-up")
    columns += ("iradon torch s", "iradon numba s", "speed-up", "simulation torch s", "simulation numba s")
    lines = ["| " + " | ".join((*columns, "max rel diff")) + " |", "|---" * (len(columns) + 1) + "|"]
    rng = np.random.RandomState(0)
    for side, pixel, views in CASES:
        hu = synthetic_ct((side, side), pixel, "abdomen", rng)
        mu = (hu.clamp(min=-1000) / 1000 + 1) * 0.0192
        geom = ParallelBeamGeometry.create((side, side), pixel, n_views=views)
        times = {}
        for backend in ("torch", "numba"):
            sino = radon(mu, geom, backend=backend)
            times["radon", backend] = fastest_seconds(partial(radon, mu, geom, backend=backend), opts.repeats)
            times["iradon", backend] = fastest_seconds(partial(iradon, sino, geom, backend=backend), opts.repeats)
            simulate = partial(_simulate, hu, pixel, views, backend)
            times["sim", backend] = fastest_seconds(simulate, max(1, opts.repeats - 1))
        reference, fast = radon(mu.double(), geom, backend="torch"), radon(mu, geom, backend="numba")
        diff = float((fast.double() - reference).abs().max() / reference.abs().max())
        row = [f"{side}^2", f"{pixel:g}", str(views), str(geom.n_det)]
        for op in ("radon", "iradon"):
            row += [
                f"{times[op, 'torch']:.3f}",
                f"{times[op, 'numba']:.3f}",
                f"{times[op, 'torch'] / times[op, 'numba']:.1f}x",
            ]
        row += [f"{times['sim', 'torch']:.2f}", f"{times['sim', 'numba']:.2f}", f"{diff:.1e}"]
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    header = header_lines(torch.device("cpu"), load_before, os.getloadavg())
    section = [*header, "", *lines]
    print("\n".join(section))
    if opts.write:
        write_section(opts.write, SECTION, section)


def _simulate(hu: torch.Tensor, pixel: float, views: int, backend: str) -> torch.Tensor:
    """One fan-beam low-dose scan of ``hu``; ``backend="torch"`` hides numba, as on a platform where it cannot load."""
    saved = list(tomography._NUMBA_MODULE)
    if backend == "torch":
        tomography._NUMBA_MODULE[:] = [None]
    try:
        simulator = RandLowDoseCT(dose_fraction=0.25, n_views=views, beam="fan", spacing=pixel)
        simulator.set_random_state(0)
        return simulator(hu[None])
    finally:
        tomography._NUMBA_MODULE[:] = saved


if __name__ == "__main__":
    main()
