#!/usr/bin/env python
"""How much of the CT model's restoration to keep: PSNR / SSIM of ``input + s * (restored - input)`` (the bundle's
``strength`` setting, :class:`~monai_rwkv.networks.nets.BlendWithInput`) for a range of strengths ``s``, by group
of slices, on the validation and test pairs of both CT reports.

Groups: the in-distribution head (``scripts/prepare_ct_data.py``; validation and test splits) simulated by the
bundle evaluation's scanner (:class:`~monai_rwkv.transforms.LowDoseCT`, ``incident_photons`` 2e6 x level, the
levels of ``scripts/ct_dose_sweep.py``; validation seed 1, test seed 0), and the shifted pairs of
``scripts/prepare_ct_shifted.py`` by file and scanner (``datalist_shifted.json``'s ``slices`` record).

Each slice is restored once by the bundle's own ``restorer`` (strength 1, device cpu); a strength ``s`` is then
``low + s * (restored - low)`` in HU: inside the window, the bundle run with ``strength`` s (which blends before
clipping to [-1024, 3072] HU; the two differ only at a pixel restored beyond that range whose blend falls inside the
window). Metrics: the bundle's
protocol (window [-160, 240] HU, per-slice data range), slices with a constant windowed reference left out; per
group the mean over slices, and the least-squares strength of each slice (``<c - l, p - l> / |p - l|^2`` over the
windowed pixels: the blend closest to the reference), median over the group; beside it the noise level of the
group's input estimated from the image itself (:func:`~monai_rwkv.transforms.estimate_noise_level` in HU, median
over the slices): whether the strength a group wants follows the noise a network could measure.

Example::

    python scripts/ct_strength.py --model bundles/restore_rwkv_ct_denoise/models/model.pt --out runs/strength.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.apps import baselines as lib
from monai_rwkv.apps import find_inputs, load_bundle_config, read_volume, volume_slice_metrics
from monai_rwkv.apps.evaluate import constant_slices
from monai_rwkv.metrics import CT_EVAL_WINDOW
from monai_rwkv.transforms import LowDoseCT, estimate_noise_level

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct_baselines import SOFT_TISSUE  # noqa: E402 - the figures' detail, as the baseline report's
from ct_dose_sweep import BUNDLE, FULL_DOSE_PHOTONS  # noqa: E402 - the bundle and the levels of the noise sweep
from prepare_ct_shifted import slice_scanners  # noqa: E402 - the scanner of each shifted slice


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path("data/ct"), help="prepare_ct_data.py / _shifted.py output")
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle whose inference pipeline runs the model")
    p.add_argument("--model", type=Path, required=True, help="the weights")
    p.add_argument("--strengths", default="0.25,0.5,0.6,0.7,0.8,0.9,1", help="comma-separated strengths in [0, 1]")
    p.add_argument("--levels", default="0.025,0.1,0.25,1,4,16", help="in-distribution doses (x 2e6 photons per ray)")
    p.add_argument("--sets", default="validation,test", help="comma-separated subset of validation,test")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, help="the markdown report (also printed)")
    p.add_argument("--figure", type=Path, help="a PNG of one test slice of --figure-group at the strengths")
    p.add_argument("--figure-group", default="in-distribution head, level 4", help="the group the figure shows")
    p.add_argument("--figure-strengths", default="0.5,0.7,1", help="comma-separated strengths the figure shows")
    lib.add_override_option(p)  # e.g. network_def#dim=32 for weights of another width
    return p


def _volume(path: Path) -> torch.Tensor:
    return read_volume(find_inputs(path)[0])


def groups(args: argparse.Namespace, split: str) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, np.ndarray]]:
    """``(name, low, clean, slice indices)`` of every group of ``split`` (validation or test)."""
    splits = json.loads((args.data_dir / "split.json").read_text())["splits"]
    clean = _volume(args.data_dir / splits["test" if split == "test" else "val"]["file"])
    seed = 0 if split == "test" else 1
    for level in (float(v) for v in args.levels.split(",")):
        low = LowDoseCT(1.0, seed, incident_photons=FULL_DOSE_PHOTONS * level)(clean.clone())
        yield f"in-distribution head, level {level:g}", low, clean, np.arange(clean.shape[-1])
    shifted = json.loads((args.data_dir / "datalist_shifted.json").read_text())
    for pair in shifted[split]:
        name = Path(pair["label"]).name.removesuffix(".nii.gz")
        low, full = _volume(args.data_dir / pair["image"]), _volume(args.data_dir / pair["label"])
        scanners = slice_scanners(shifted, split, name)
        for scanner in dict.fromkeys(scanners):
            yield f"shifted {name}, {scanner}", low, full, np.array([i for i, s in enumerate(scanners) if s == scanner])


def least_squares_strength(low: torch.Tensor, pred: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
    """Per slice (last axis), the ``s`` minimising the windowed squared error of ``low + s (pred - low)``."""
    lo, hi = CT_EVAL_WINDOW
    values = []
    for k in range(clean.shape[-1]):
        c, lw, p = (v[..., k].double().clamp(lo, hi) for v in (clean, low, pred))
        d = p - lw
        values.append(float(((c - lw) * d).sum() / (d * d).sum().clamp_min(1e-12)))
    return np.array(values)


def pipeline_note(settings: dict, overrides: list[tuple[str, object]]) -> str:
    """The inference settings a report's figures depend on, from the restorer's ``describe()``: figures of runs with
    ``coarse_fusion`` on and off differ on fine-grid sparse-view slices and must not be compared with each other."""
    flags = ", ".join(f"`{key}` {'on' if settings.get(key) else 'off'}" for key in ("coarse_fusion", "self_ensemble"))
    note = f"the bundle's pipeline with {flags}"
    if overrides:
        note += " (overrides: " + ", ".join(f"`{key}={json.dumps(value)}`" for key, value in overrides) + ")"
    return note


def report(args: argparse.Namespace) -> str:
    overrides = {**dict(args.override), "weights": os.path.abspath(args.model), "device": "cpu", "progress": False}
    restorer = load_bundle_config(args.bundle, "inference.json", overrides).get_parsed_content("restorer")
    strengths = [float(s) for s in args.strengths.split(",")]
    lines = [
        f"Model `{args.model}`; {pipeline_note(restorer.describe(), args.override)}; window [-160, 240] HU; PSNR (dB) "
        "/ SSIM, mean over the group's slices, for each strength; noise: median over the slices of the input's noise "
        "level estimated from the image (HU); s*: median over the slices of the least-squares strength.",
    ]
    for split in args.sets.split(","):
        lines += [
            "",
            f"### {split}",
            "",
            "| group | slices | input | " + " | ".join(f"strength {s:g}" for s in strengths) + " | noise (HU) | s* |",
            "|---|---|---|" + "---|" * (len(strengths) + 2),
        ]
        restored_from = None  # the groups of a shifted file share its volumes: restore and check them once
        for name, low, clean, index in groups(args, split):
            if low is not restored_from:
                restored_from, pred = low, restorer(low.clone())
                keep = ~constant_slices(clean, CT_EVAL_WINDOW).numpy()
            index = index[keep[index]]
            pick = torch.as_tensor(index)
            low_k, pred_k, clean_k = (v[..., pick] for v in (low, pred, clean))
            cells = []
            for s in [0.0, *strengths]:
                m = volume_slice_metrics(low_k + s * (pred_k - low_k), clean_k, CT_EVAL_WINDOW)
                cells.append(f"{float(m['psnr'].mean()):.2f} / {float(m['ssim'].mean()):.4f}")
            best = np.median(least_squares_strength(low_k, pred_k, clean_k))
            noise = float(np.median(estimate_noise_level(low_k[0].permute(2, 1, 0).float()).numpy()))
            lines.append(f"| {name} | {len(index)} | " + " | ".join(cells) + f" | {noise:.1f} | {best:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
            if args.figure is not None and split == "test" and name == args.figure_group:
                figure(args, low_k, pred_k, clean_k)
    return "\n".join(lines) + "\n"


def figure(args: argparse.Namespace, low: torch.Tensor, pred: torch.Tensor, clean: torch.Tensor) -> None:
    """``args.figure``: the input, the ``--figure-strengths`` and the reference on the group's slice of median PSNR
    at strength 1, each with its PSNR, and a zoomed detail of soft tissue (as ``scripts/ct_baselines.py``)."""
    psnr = volume_slice_metrics(pred, clean, CT_EVAL_WINDOW)["psnr"].numpy()
    k = int(np.argsort(psnr)[len(psnr) // 2])
    panels = []
    for s in [0.0, *(float(v) for v in args.figure_strengths.split(","))]:
        blend = low + s * (pred - low)
        value = float(volume_slice_metrics(blend[..., k : k + 1], clean[..., k : k + 1], CT_EVAL_WINDOW)["psnr"][0])
        panels.append(("Input" if s == 0 else f"Strength {s:g}", f"{value:.2f} dB", lib.display_slice(blend, k)))
    panels.append(("Reference", args.figure_group.rsplit(", ", 1)[-1], lib.display_slice(clean, k)))
    lib.panel_figure(panels, CT_EVAL_WINDOW, lib.detail_window(panels[-1][2], 64, SOFT_TISSUE), args.figure)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lib.emit_report(report(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
