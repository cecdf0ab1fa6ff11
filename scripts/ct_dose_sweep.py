#!/usr/bin/env python
"""Where a CT denoising model helps, and where it starts to hurt: the in-distribution test head simulated over a
sweep of noise levels, from far noisier than the training scans to nearly clean, each restored by the model(s).

A model trained on noisy scans only may smooth a nearly clean scan below its input: on real scans with less noise
than its training data it then does harm. This measures the level at which that happens.

Data: ``scripts/prepare_ct_data.py`` (the test volume named in ``<data-dir>/split.json``). Each level simulates
the test volume with :class:`~monai_rwkv.transforms.LowDoseCT` (its default scanner: parallel beam, Ram-Lak, the
bundle evaluation's; seed ``--seed``) at ``incident_photons`` = 2e6 x the level and ``dose_fraction`` 1, so a level
is the dose relative to the in-distribution test's full dose (0.25 is the bundle's evaluation protocol; the
CT bundle's training scans span levels 0.025-8, ``dose_fraction`` 0.1-0.5 at 5e5-3.2e7 photons). Every model runs
through the bundle's own ``restorer`` (device cpu; ``--override KEY=JSON`` for its settings, e.g.
``strength=0.5``). Metrics: the bundle's protocol (:func:`~monai_rwkv.apps.volume_slice_metrics`, window
[-160, 240] HU, per-slice data range), slices with a constant
windowed reference left out, and the RMSE in flat soft tissue (:func:`~monai_rwkv.metrics.flat_region_rmse`, as
``scripts/ct_baselines.py`` reports it: where residual noise shows, and where smoothing removes the texture of a
clean scan).

Output (``--out``, also printed): per level, the input's and each model's PSNR / SSIM / flat-region RMSE (mean over
slices), each model's per-slice gain over the input (mean +- std) and the fraction of slices where the model is
better. With ``--oracle nlm`` (any method of ``scripts/ct_baselines.py``, repeatable), that classical filter is
tuned at each level on the test scan itself (the oracle of the baseline reports: an upper bound for the filter, the
comparison that real low-noise scans are judged by) and each model's per-slice difference with it is reported too.

Example::

    python scripts/ct_dose_sweep.py --model "0.11.0=bundles/restore_rwkv_ct_denoise/models/model.pt" \\
        --oracle nlm --out runs/ct_dose_sweep.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.apps import baselines as lib
from monai_rwkv.apps import find_inputs, load_bundle_config, read_volume, volume_slice_metrics
from monai_rwkv.apps.evaluate import constant_slices, volume_slices
from monai_rwkv.metrics import CT_EVAL_WINDOW, CT_FLAT_GRADIENT, flat_region_rmse
from monai_rwkv.transforms import LowDoseCT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct_baselines import BASELINES, DEFAULT_METHODS  # noqa: E402 - the CT filters and their search spaces, as the baseline report

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "restore_rwkv_ct_denoise"
#: photons per ray at level 1 (the in-distribution test's full dose, LowDoseCT's default).
FULL_DOSE_PHOTONS = 2e6


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/ct"), help="prepare_ct_data.py output")
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle whose inference pipeline runs the models")
    p.add_argument("--model", type=lib.parse_model, action="append", required=True, metavar="LABEL=WEIGHTS")
    p.add_argument(
        "--oracle",
        action="append",
        default=[],
        choices=DEFAULT_METHODS,
        help="a classical filter tuned at each level on the test scan itself (repeatable)",
    )
    p.add_argument(
        "--levels",
        default="0.00625,0.025,0.1,0.25,1,4,16",
        help="comma-separated doses relative to the test's full dose (photons per ray 2e6 x level)",
    )
    lib.add_override_option(p)
    p.add_argument("--seed", type=int, default=0, help="noise seed of every level")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, help="the markdown table (also printed)")
    return p


def _metrics(pred: torch.Tensor, label: torch.Tensor, keep: torch.Tensor) -> dict[str, np.ndarray]:
    values = volume_slice_metrics(pred, label, CT_EVAL_WINDOW)
    values["flat"] = flat_region_rmse(
        volume_slices(pred)[:, 0], volume_slices(label)[:, 0], CT_EVAL_WINDOW, CT_FLAT_GRADIENT
    )
    return {k: v[keep].numpy() for k, v in values.items()}


def _cell(values: dict[str, np.ndarray]) -> str:
    """``PSNR / SSIM / flat-region RMSE``, means over slices."""
    return f"{values['psnr'].mean():.2f} / {values['ssim'].mean():.4f} / {np.nanmean(values['flat']):.1f}"


def oracle(method: str, low: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``method`` of ``scripts/ct_baselines.py`` tuned on ``(low, clean)`` itself (progress on stderr); returns its
    restoration of ``low`` and its parameters in words."""
    baseline = BASELINES[method]
    objective = lib.filter_objective(baseline, [(low, clean)], CT_EVAL_WINDOW, f"{method} (oracle)")
    with contextlib.redirect_stdout(sys.stderr):
        best = lib.tune(baseline, objective)
    return lib.SliceFilterRestorer(baseline.build(**best), {})(low), baseline.describe(best)


def sweep(args: argparse.Namespace) -> str:
    """Run the sweep; return the markdown report."""
    split = json.loads((args.data_dir / "split.json").read_text())["splits"]
    source = args.data_dir / split["test"]["file"]
    clean = read_volume(find_inputs(source)[0])
    keep = ~constant_slices(clean, CT_EVAL_WINDOW)
    restorers = {
        label: load_bundle_config(
            args.bundle,
            "inference.json",
            {**dict(args.override), "weights": os.path.abspath(w), "device": "cpu", "progress": False},
        ).get_parsed_content("restorer")
        for label, w in args.model
    }
    levels = [float(v) for v in args.levels.split(",")]
    head = "| level (photons per ray) | input PSNR / SSIM / flat RMSE | " + " | ".join(
        f"{label} PSNR / SSIM / flat RMSE | {label} minus input (dB) | {label} better" for label in restorers
    )
    for method in args.oracle:
        name = f"{BASELINES[method].label} (oracle)"
        head += f" | {name} PSNR / SSIM / flat RMSE (parameters) | " + " | ".join(
            f"{label} minus {name} (dB, better)" for label in restorers
        )
    lines = [
        f"Test head `{source.name}` ({int(keep.sum())} slices), LowDoseCT seed {args.seed}, window [-160, 240] HU; "
        "mean over slices; differences per slice (mean +- std); flat RMSE: HU in flat soft tissue (Sobel gradient "
        f"< {CT_FLAT_GRADIENT:g} HU per pixel)."
        + (f" Model settings: {json.dumps(dict(args.override))}." if args.override else ""),
        "",
        head + " |",
        "|" + "---|" * (2 + 3 * len(restorers) + len(args.oracle) * (1 + len(restorers))),
    ]
    for level in levels:
        low = LowDoseCT(1.0, args.seed, incident_photons=FULL_DOSE_PHOTONS * level)(clean.clone())
        base = _metrics(low, clean, keep)
        row = [f"{level:g} ({FULL_DOSE_PHOTONS * level:.2g})", _cell(base)]
        models = []
        for restorer in restorers.values():
            models.append(_metrics(restorer(low.clone()), clean, keep))
            gain = models[-1]["psnr"] - base["psnr"]
            row += [
                _cell(models[-1]),
                f"{gain.mean():+.2f} +- {gain.std():.2f}",
                f"{100 * np.mean(gain > 0):.0f} %",
            ]
        for method in args.oracle:
            filtered, params = oracle(method, low.clone(), clean)
            theirs = _metrics(filtered, clean, keep)
            row.append(f"{_cell(theirs)} ({params})")
            for ours in models:
                lead = ours["psnr"] - theirs["psnr"]
                row.append(f"{lead.mean():+.2f} +- {lead.std():.2f} ({100 * np.mean(lead > 0):.0f} %)")
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lib.emit_report(sweep(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
