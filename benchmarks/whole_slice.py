#!/usr/bin/env python
"""Does restoring whole slices instead of 128 x 128 patches change the CT bundle's accuracy?

The network is linear in pixels, so on a GPU a whole 512 x 512 slice in one call is the cheapest way to run it; the
bundle's default is a 128 x 128 sliding window with 25 % overlap and Gaussian blending. This script restores the
same low-dose test pairs both ways with the bundle's own inference pipeline (``configs/inference.json``'s
``restorer``, only ``roi_size`` and ``overlap`` overridden) and reports, per set, the mean PSNR / SSIM of each in
the paper's window, the per-slice PSNR difference (whole minus patches) and the largest voxel difference in HU.
Speed is not measured here (see ``benchmarks/run_cuda.sh`` on a GPU); this is the accuracy half of the decision.

Pairs: folders of ``full/`` and ``low/`` NIfTI volumes matched by name, e.g. the shifted CT sets of
``scripts/prepare_ct_shifted.py`` (``data/ct/shifted/test``) and the in-distribution pairs that
``scripts/ct_baselines.py`` writes (``runs/ct_baselines/in-distribution/pairs/test``).

Each folder gets a row over all its slices, then one per file when it holds several (the shifted set's scanners
and anatomy), with the number of slices that whole slices make worse by more than 0.1 dB. Run it on the
validation pairs as well: a default is chosen there, not on the test slices.

Usage::

    python benchmarks/whole_slice.py --pairs runs/ct_baselines/in-distribution/pairs/test data/ct/shifted/test \\
        runs/ct_baselines/in-distribution/pairs/validation data/ct/shifted/validation --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import header_lines, write_section  # noqa: E402
from monai_rwkv.apps import load_bundle_config  # noqa: E402
from monai_rwkv.apps.evaluate import constant_slices, volume_slice_metrics  # noqa: E402
from monai_rwkv.apps.restore import find_inputs, read_volume  # noqa: E402
from monai_rwkv.metrics import CT_EVAL_WINDOW  # noqa: E402

SECTION = "## Whole-slice against patch-wise CT restoration (benchmarks/whole_slice.py)"
#: a slice counts as lower with whole slices when its PSNR drops by more than this (dB)
LOSS_DB = 0.1


def restorer(bundle: Path, roi: Optional[list[int]], overlap: Optional[float]):
    overrides = {"device": "cpu", "progress": False}
    if roi is not None:
        overrides.update(roi_size=roi, overlap=overlap)
    return load_bundle_config(bundle, "inference.json", overrides=overrides).get_parsed_content("restorer")


def _row(label: str, slices: list[dict[str, Any]], largest: float) -> str:
    """One table row over ``slices`` (dicts of ``name``, ``psnr`` and ``ssim`` per way)."""
    psnr = {way: torch.tensor([s["psnr"][way] for s in slices]) for way in ("patches", "whole")}
    ssim = {way: torch.tensor([s["ssim"][way] for s in slices]) for way in ("patches", "whole")}
    diff = psnr["whole"] - psnr["patches"]
    worst = slices[int(diff.argmin())]["name"]
    return (
        f"| {label} | {len(diff)} | {float(psnr['patches'].mean()):.3f} / {float(ssim['patches'].mean()):.4f} | "
        f"{float(psnr['whole'].mean()):.3f} / {float(ssim['whole'].mean()):.4f} | "
        f"{float(diff.mean()):+.3f} ± {float(diff.std()) if len(diff) > 1 else 0.0:.3f} | "
        f"{float(diff.min()):+.3f} .. {float(diff.max()):+.3f} | {int((diff < -LOSS_DB).sum())} | {worst} | "
        f"{largest:.1f} |"
    )


def compare(bundle: Path, pairs: Path) -> list[str]:
    """Table rows for one folder of pairs: all its slices, then each file's when it holds several."""
    default = restorer(bundle, None, None)
    whole = restorer(bundle, [-1, -1], 0.0)  # a non-positive ROI component is the slice's size (MONAI's rule)
    per_file: dict[str, tuple[list[dict[str, Any]], float]] = {}
    for image in find_inputs(pairs / "full"):
        clean = read_volume(image)
        low = read_volume(find_inputs(pairs / "low" / image.path.name)[0])
        outputs = {"patches": default(low), "whole": whole(low)}
        keep = ~constant_slices(clean, CT_EVAL_WINDOW)
        metrics = {way: volume_slice_metrics(out, clean, CT_EVAL_WINDOW) for way, out in outputs.items()}
        slices = [
            {
                "name": f"{image.path.name}:{k}",
                **{m: {way: float(metrics[way][m][k]) for way in outputs} for m in ("psnr", "ssim")},
            }
            for k in range(len(keep))
            if keep[k]
        ]
        largest = float((outputs["whole"].as_tensor() - outputs["patches"].as_tensor()).abs().max())
        per_file[image.path.name] = (slices, largest)
    label = os.path.relpath(pairs, REPO)
    everything = [s for slices, _ in per_file.values() for s in slices]
    rows = [_row(label, everything, max(largest for _, largest in per_file.values()))]
    if len(per_file) > 1:
        rows += [_row(f"{label}: {name}", slices, largest) for name, (slices, largest) in per_file.items() if slices]
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=REPO / "bundles" / "restore_rwkv_ct_denoise")
    p.add_argument("--pairs", type=Path, nargs="+", required=True, help="folders holding full/ and low/")
    p.add_argument("--write", type=Path, default=None, help="replace this script's section of RESULTS.md")
    opts = p.parse_args(argv)
    load_before = os.getloadavg()
    rows = [line for pairs in opts.pairs for line in compare(opts.bundle, pairs)]
    lines = header_lines(torch.device("cpu"), load_before, os.getloadavg())
    lines += [
        f"- bundle: {os.path.relpath(opts.bundle, REPO)} (weights models/model.pt); patches: its default ROI and "
        "overlap; whole: ROI = the slice, overlap 0",
        f"- metrics: PSNR (dB) / SSIM per slice in the window [{CT_EVAL_WINDOW[0]:g}, {CT_EVAL_WINDOW[1]:g}] HU",
        "",
        "| pairs | slices | patches PSNR / SSIM | whole PSNR / SSIM | ΔPSNR whole - patches (mean ± std) | "
        f"ΔPSNR range | slices lower by > {LOSS_DB:g} dB | lowest ΔPSNR at (file:slice) | "
        "largest voxel difference (HU) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if opts.write:
        write_section(opts.write, SECTION, lines)


if __name__ == "__main__":
    main()
