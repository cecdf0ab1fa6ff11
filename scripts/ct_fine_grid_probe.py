#!/usr/bin/env python
"""What the CT bundle's ``coarse_fusion`` does to slices whose detail reaches the pixel.

The shifted set's ``head_fine`` slices are the 0.96 mm head interpolated onto a 0.48 mm grid: nothing in their
references is finer than 0.96 mm, which flatters any method that works on a coarser grid. This probe makes slices
that are fine on their own grid: synthetic CT (:func:`monai_rwkv.transforms.synthetic_ct`, detail down to a
fraction of a pixel) of ``--size`` pixels of ``--pixel`` mm, each scanned by the ``reference`` scanner of
``scripts/prepare_ct_shifted.py`` (the full-dose slice) and that scan scanned again by one of ``--scanners`` (the
low-dose slice): the shifted set's ``soft``, ``sharp`` and ``quiet`` scanners and ``evaluation``, the
in-distribution protocol's (``LowDoseCT`` defaults: quarter of 2e6 photons per ray, Ram-Lak). Slice ``k`` is drawn
with seed 77000 + k (the shifted set's bodies use 1000-2999 and their offsets). Each slice is restored by the
bundle's inference pipeline with ``coarse_fusion`` off and on; the table gives, per scanner, PSNR / SSIM in the
bundle's window (mean over the scanner's slices) and the per-slice difference on minus off (mean +- std, the
fraction of slices where on is better). With ``--oracle-nlm`` a non-local means filter is tuned on each slice itself
(``scripts/ct_baselines.py``'s per-slice oracle: an upper bound for it), and the table adds its PSNR / SSIM and the
per-slice difference off minus it.

Usage::

    python scripts/ct_fine_grid_probe.py --pixel 0.48 --region head --slices 8 --scanners soft,sharp,quiet,evaluation \
        [--oracle-nlm]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from monai_rwkv.apps import baselines as lib
from monai_rwkv.apps import load_bundle_config, volume_slice_metrics
from monai_rwkv.metrics import CT_EVAL_WINDOW
from monai_rwkv.transforms import SYNTHETIC_CT_REGIONS, synthetic_ct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct_baselines import BASELINES, describe_per_slice, slice_oracle_baseline, tune_on_slice  # noqa: E402 - the filters
from ct_dose_sweep import BUNDLE  # noqa: E402 - the CT bundle
from prepare_ct_shifted import SCANNERS, scan  # noqa: E402 - the shifted set's scanners and simulator

#: the in-distribution evaluation's scanner (``LowDoseCT``'s defaults at the protocol's quarter dose).
PROBE_SCANNERS = {**SCANNERS, "evaluation": {"dose_fraction": 0.25}}
FIRST_SEED = 77000  # the shifted set's bodies use 1000-2999 (+500, +5000)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="the CT bundle whose inference pipeline runs")
    p.add_argument("--model", type=Path, default=None, help="weights (default: the bundle's models/model.pt)")
    p.add_argument("--pixel", type=float, default=0.48, help="pixel size in mm")
    p.add_argument("--size", type=int, default=512, help="slice size in pixels (square)")
    p.add_argument("--region", choices=SYNTHETIC_CT_REGIONS, default="head")
    p.add_argument("--slices", type=int, default=8, help="slices, the scanners taken in turn")
    p.add_argument("--scanners", default="soft,sharp,quiet,evaluation", help="comma-separated subset")
    p.add_argument("--oracle-nlm", action="store_true", help="add non-local means tuned on each slice itself")
    p.add_argument("--threads", type=int, default=None)
    lib.add_override_option(p)
    p.add_argument("--out", type=Path, default=None, help="the markdown table (also printed)")
    return p


def make_pairs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Full- and low-dose ``(1, i, j, n)`` volumes (rows j) and the scanner of each slice."""
    scanners = args.scanners.split(",")
    unknown = sorted(set(scanners) - set(PROBE_SCANNERS))
    if unknown:
        raise SystemExit(f"error: --scanners: unknown {unknown}; choose from {sorted(PROBE_SCANNERS)}")
    full, low, used = [], [], []
    spacing = (args.pixel, args.pixel)
    for k in range(args.slices):
        rng = np.random.RandomState(FIRST_SEED + k)
        contrast = bool(rng.uniform() < 0.5)
        hu = synthetic_ct((args.size,) * 2, args.pixel, args.region, rng, contrast, False, blur=rng.uniform(0.3, 0.9))
        reference = scan(hu, spacing, PROBE_SCANNERS["reference"], FIRST_SEED + 1000 + k)
        used.append(scanners[k % len(scanners)])
        full.append(reference.T)
        low.append(scan(reference, spacing, PROBE_SCANNERS[used[-1]], FIRST_SEED + 2000 + k).T)
    return torch.stack(full, -1)[None], torch.stack(low, -1)[None], used


def oracle_nlm(low: torch.Tensor, full: torch.Tensor) -> tuple[str, dict[str, torch.Tensor]]:
    """Non-local means tuned on each slice of the ``(1, i, j, n)`` pair itself (``scripts/ct_baselines.py``'s
    per-slice oracle: its wider grid, the same line search): its parameters in words and its per-slice metrics."""
    baseline = slice_oracle_baseline(BASELINES["nlm"])
    chosen = [tune_on_slice(baseline, low, full, k)[0] for k in range(low.shape[-1])]
    restored = [lib.SliceFilterRestorer(baseline.build(**p), {})(low[..., k : k + 1]) for k, p in enumerate(chosen)]
    return describe_per_slice(chosen), volume_slice_metrics(torch.cat(restored, dim=-1), full, CT_EVAL_WINDOW)


def report(args: argparse.Namespace) -> str:
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    full, low, used = make_pairs(args)
    affine = torch.diag(torch.tensor([args.pixel, args.pixel, 1.0, 1.0], dtype=torch.float64))
    weights = os.path.abspath(args.model or args.bundle / "models" / "model.pt")
    restored = {}
    for fusion in (False, True):
        overrides = {**dict(args.override), "weights": weights, "device": "cpu", "progress": False}
        overrides["coarse_fusion"] = fusion
        restorer = load_bundle_config(args.bundle, "inference.json", overrides).get_parsed_content("restorer")
        restored[fusion] = restorer(MetaTensor(low.clone(), affine=affine)).as_tensor().float()
    groups = {scanner: torch.tensor([k for k, s in enumerate(used) if s == scanner]) for scanner in dict.fromkeys(used)}
    nlm = (
        {s: oracle_nlm(low[..., i].float(), full[..., i].float()) for s, i in groups.items()} if args.oracle_nlm else {}
    )
    lines = [
        f"{args.slices} synthetic {args.region} slices of {args.size} x {args.size} pixels of {args.pixel:g} mm "
        f"(seeds {FIRST_SEED}+), window [{CT_EVAL_WINDOW[0]:g}, {CT_EVAL_WINDOW[1]:g}] HU; "
        f"{time.time() - start:.0f} s.",
        "",
        "| scanner | slices | input | coarse_fusion off | coarse_fusion on | on minus off (dB) | on better |"
        + (" non-local means, oracle per slice | off minus it (dB) | off better |" if args.oracle_nlm else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|---|" if args.oracle_nlm else ""),
    ]
    for scanner, index in groups.items():
        metrics = [
            volume_slice_metrics(v[..., index], full[..., index].float(), CT_EVAL_WINDOW)
            for v in (low.float(), restored[False], restored[True])
        ]
        cells = [f"{float(m['psnr'].mean()):.2f} / {float(m['ssim'].mean()):.4f}" for m in metrics]
        diff = (metrics[2]["psnr"] - metrics[1]["psnr"]).numpy()
        line = (
            f"| {scanner} | {len(index)} | " + " | ".join(cells) + f" | {diff.mean():+.2f} +- {diff.std():.2f} | "
            f"{100 * float(np.mean(diff > 0)):.0f} % |"
        )
        if args.oracle_nlm:
            params, m = nlm[scanner]
            lead = (metrics[1]["psnr"] - m["psnr"]).numpy()
            line += (
                f" {float(m['psnr'].mean()):.2f} / {float(m['ssim'].mean()):.4f} ({params}) | "
                f"{lead.mean():+.2f} +- {lead.std():.2f} | {100 * float(np.mean(lead > 0)):.0f} % |"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    lib.emit_report(report(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
