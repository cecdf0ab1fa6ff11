#!/usr/bin/env python
"""Classical MRI super-resolution (k-space truncation, x4 or x2) baselines, tuned on validation, scored on test.

The task (bundle ``bundles/restore_rwkv_mri_sr``): each axial slice keeps the central 1/s x 1/s of its 2D k-space
(:class:`~monai_rwkv.transforms.KSpaceTruncate` ``(s)``, ``--factor`` s, 4 by default), zero-filled, inverse FFT,
magnitude, same matrix size.
Data: ``scripts/prepare_mri_data.py`` (``<data-dir>/split.json``, slabs ``<source>_<split>.nii.gz`` of the sources
colin1mm, colin05mm and mni152 in [0, 4095]). Every row is scored with
:func:`~monai_rwkv.apps.evaluate.evaluate_restoration` on the axial slices (last axis) of the three TEST slabs,
window [0, 4095], PSNR / SSIM / RMSE per slice against the clean slice (data range: its max - min).

Rows:

- ``zero_filled``, "zero-filled input": the degraded input itself (an identity restorer): the starting point.
- ``bicubic``: the truly low-resolution acquisition, then bicubic interpolation. The central k-space block of the
  CLEAN slice is transformed back on the small ``kh x kw`` matrix (scaled by ``kh kw / (H W)`` so that intensities
  keep their units), with a linear phase that puts small-matrix voxel ``m`` at the centre of the fine voxels it
  covers (fine coordinate ``(m + 0.5) H / kh - 0.5``, where ``F.interpolate(align_corners=False)`` expects it;
  without that half-voxel alignment the row loses about 5 dB), magnitude, then
  ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`` back to ``H x W``, clipped at 0 (a
  magnitude image). It is run as a restorer of the clean volume with an identity degradation, so the "input"
  columns of its own summary (clean against clean: PSNR inf) are meaningless; only its prediction is reported.
- ``apodization``, "k-space apodisation (Tukey)": :class:`~monai_rwkv.networks.nets.classical.KSpaceApodizer`
  ``(s, alpha)`` on the zero-filled input, ``alpha`` in [0, 1] tuned. Note that ``alpha`` 0 is not the identity
  here: the magnitude of the zero-filled image is no longer band-limited, and re-truncating it removes that part.
- ``tv``, "total variation": :class:`~monai_rwkv.networks.nets.classical.TotalVariationDenoiser` on the zero-filled
  input, ``weight`` tuned in the intensity units of the data ([0, 4095] scale, no per-slice normalisation),
  ``--tv-iter`` iterations.
- ``tv_recon``, "TV reconstruction (data-consistent)": :class:`~monai_rwkv.networks.nets.classical.
  TVKSpaceReconstruction` ``(s, weight, --recon-iter, --recon-tv-iter, start)`` on the zero-filled input, a
  compressed-sensing style reconstruction (POCS variant): ``--recon-iter`` times a TV denoising step of
  ``--recon-tv-iter`` Chambolle iterations (clipped at 0), then the projection that puts the measured central k-space
  block back (taken from the FFT of the zero-filled magnitude input itself, the only data a restorer sees); the
  output keeps that block exactly. ``weight`` (intensity units) and ``start`` (the zero-filled real image or the
  input) tuned.
- with ``--oracle``: ``apodization_oracle``, ``tv_oracle`` and ``tv_recon_oracle``, the same baselines tuned on the
  test slabs themselves (an upper bound of what the method can do here, not a fair baseline).
- with ``--model-weights``: ``model``, the trained network through the bundle's own ``restorer`` (``--bundle``'s
  ``inference.json``: percentile scaling, 128 x 128 sliding window; device cpu), degradation ``KSpaceTruncate(s)``.

The classical restorers apply their 2D module to every axial slice ``(i, j)`` of the ``(1, i, j, k)`` volume in
physical units (float32, ``--slices-per-call`` slices at a time); they are equivariant to transposing the slice.

Tuning (``tuning.json`` in each method's folder: every parameter set tried and its scores): objective the mean PSNR
over all non-constant validation slices of the three validation slabs pooled (``<source>_val``); a grid search, then
a multiplicative line search on the continuous parameter from the best grid point (steps ``ratio``,
``sqrt(ratio)``, ``ratio ** 0.25`` up and down, clipped to the parameter's bounds, going on while it improves), so
that an optimum between or beyond grid points is found.

Outputs: ``<output-dir>/<method>/{summary.json,metrics.csv[,tuning.json]}``, ``<output-dir>/test_slabs/`` (links
to the three test slabs: the evaluated folder) and the markdown ``--out`` (also printed): method, parameters, PSNR
/ SSIM / RMSE mean ± std over the test slices and the mean PSNR per source; with the model also the per-slice
paired differences model minus every other row (mean ± std of the PSNR / SSIM / RMSE differences, fraction of
slices the model wins on PSNR and on SSIM). ``--figure PATH``: a PNG of one test slice (``--figure-file``,
``--figure-slice``): zero-filled input, bicubic, the best validation-tuned classical row, the model (when scored)
and the reference, grey scale [0, 99.5th percentile of the reference slice], anterior up, each panel with its
PSNR and a 3x zoom of the 48 x 48 window of highest reference gradient energy (marked by a rectangle) underneath.

A method whose ``summary.json`` exists with the same protocol and settings is reused unless ``--overwrite`` (the
model is always recomputed).

Example::

    python scripts/mri_baselines.py --out runs/mri_baselines.md --output-dir runs/mri_baselines --threads 1
    python scripts/mri_baselines.py --out runs/mri_baselines.md --output-dir runs/mri_baselines --threads 1 \\
        --model-weights runs/mri_light/model.pt --figure runs/mri_baselines/figure.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Identity
from torch import nn

from monai_rwkv.apps import baselines as baselines_lib
from monai_rwkv.apps.baselines import (
    Baseline,
    SliceFilterRestorer,
    detail_window,
    fmt,
    paired_table,
    panel_figure,
    same_scores,
    tune,
)
from monai_rwkv.apps.baselines import display_slice as display
from monai_rwkv.apps.evaluate import evaluate_restoration, volume_slice_metrics
from monai_rwkv.apps.restore import find_inputs, read_volume
from monai_rwkv.networks.nets.classical import KSpaceApodizer, TotalVariationDenoiser, TVKSpaceReconstruction
from monai_rwkv.transforms import KSpaceTruncate
from monai_rwkv.transforms.kspace import kspace_keep

FACTOR = 4.0
WINDOW = (0.0, 4095.0)
METRICS = ("psnr", "ssim", "rmse")


class LowResolutionBicubic(nn.Module):
    """
    The low-resolution acquisition of a slice and its bicubic interpolation back to the full matrix.

    For each ``(H, W)`` image: its k-space block kept by :func:`~monai_rwkv.transforms.kspace.kspace_keep` for
    ``factor`` (``kh x kw``), times the phase ``exp(2 pi i (u sh / H + v sw / W))`` with ``sh = (H / kh - 1) / 2``
    (resp. ``sw``; ``u``, ``v`` the signed frequencies), inverse FFT on the ``kh x kw`` matrix scaled by
    ``kh kw / (H W)``, magnitude: small-matrix voxel ``m`` is the band-limited image at fine coordinate
    ``(m + 0.5) H / kh - 0.5``, the centre of the fine voxels it covers. ``F.interpolate(size=(H, W),
    mode="bicubic", align_corners=False)`` maps it back to exactly that position; the result is clipped at 0.
    A constant image is returned unchanged.

    Shapes:
        ``(N, C, H, W) -> (N, C, H, W)``, float64 for float64 input, else float32.
    """

    def __init__(self, factor: float = FACTOR) -> None:
        super().__init__()
        kspace_keep(1, factor)  # validates factor
        self.factor = float(factor)

    def low_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the ``(N, C, kh, kw)`` low-resolution magnitude images."""
        h, w = x.shape[-2:]
        rows, cols = kspace_keep(h, self.factor), kspace_keep(w, self.factor)
        kh, kw = rows.stop - rows.start, cols.stop - cols.start
        real = x if x.dtype in (torch.float32, torch.float64) else x.float()
        block = torch.fft.fftshift(torch.fft.fft2(real), dim=(-2, -1))[..., rows, cols]
        u = torch.arange(kh, dtype=torch.float64, device=x.device) - kh // 2
        v = torch.arange(kw, dtype=torch.float64, device=x.device) - kw // 2
        shift_h, shift_w = (h / kh - 1) / 2, (w / kw - 1) / 2
        phase = torch.exp(2j * math.pi * (u[:, None] * (shift_h / h) + v[None, :] * (shift_w / w)))
        block = block * phase.to(block.dtype)
        return torch.fft.ifft2(torch.fft.ifftshift(block, dim=(-2, -1))).abs() * (kh * kw / (h * w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.low_resolution(x)
        return F.interpolate(small, size=tuple(x.shape[-2:]), mode="bicubic", align_corners=False).clamp_min(0)


def baselines(
    tv_iter: int, recon_iter: int = 10, recon_tv_iter: int = 5, factor: float = FACTOR
) -> dict[str, Baseline]:
    """
    The tuned baselines (``tv_iter``: iterations of the TV solver; ``recon_iter``, ``recon_tv_iter``: outer
    iterations of the TV reconstruction and Chambolle iterations of each of its TV steps; fixed settings recorded
    in the grid).
    """
    return {
        "apodization": Baseline(
            "apodization",
            "k-space apodisation (Tukey)",
            lambda alpha: KSpaceApodizer(factor, alpha),
            {"alpha": [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]},
            "alpha",
            (0.0, 1.0),
            2.0,
            lambda p: f"Tukey alpha = {p['alpha']:.3g}",
        ),
        "tv": Baseline(
            "tv",
            "total variation",
            lambda weight, n_iter: TotalVariationDenoiser(weight, n_iter=n_iter),
            {"weight": [2.0, 4.0, 8.0, 16.0, 32.0, 64.0], "n_iter": [int(tv_iter)]},
            "weight",
            (0.0, math.inf),
            2.0,
            lambda p: f"weight = {p['weight']:.3g} (units of [0, 4095]), {p['n_iter']} iterations",
        ),
        "tv_recon": Baseline(
            "tv_recon",
            "TV reconstruction (data-consistent)",
            lambda weight, n_iter, tv_iter, start: TVKSpaceReconstruction(factor, weight, n_iter, tv_iter, start),
            {
                "weight": [16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                "n_iter": [int(recon_iter)],
                "tv_iter": [int(recon_tv_iter)],
                "start": ["zero_filled", "input"],
            },
            "weight",
            (0.0, math.inf),
            2.0,
            lambda p: (
                f"weight = {p['weight']:.3g} (units of [0, 4095]), {p['n_iter']} x ({p['tv_iter']} TV iterations + "
                f"k-space projection), start {p['start'].replace('_', '-')}"
            ),
        ),
    }


def module_for(method: str, params: Mapping[str, Any], tv_iter: int, factor: float) -> nn.Module:
    """The 2D module of a row from its recorded parameters (``params`` empty for the untuned rows)."""
    if method == "zero_filled":
        return nn.Identity()
    if method == "bicubic":
        return LowResolutionBicubic(factor)
    return baselines(tv_iter, factor=factor)[method.removesuffix("_oracle")].build(**params)


def settings_for(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The fixed settings of a row (recorded in its summary: a report made with others is not reused)."""
    settings = {"data_dir": os.fspath(args.data_dir.resolve()), "factor": args.factor}
    if method.removesuffix("_oracle") == "tv":
        settings["tv_iter"] = args.tv_iter
    if method.removesuffix("_oracle") == "tv_recon":
        settings.update(recon_iter=args.recon_iter, recon_tv_iter=args.recon_tv_iter)
    return settings


def restorer_for(method: str, params: Mapping[str, Any], args: argparse.Namespace) -> SliceFilterRestorer:
    description = {"method": method, "params": dict(params), "settings": settings_for(method, args)}
    return SliceFilterRestorer(module_for(method, params, args.tv_iter, args.factor), description, args.slices_per_call)


# ---------------------------------------------------------------------------------------------------------- data


def load_split(data_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """The sources of ``<data_dir>/split.json`` and the split record (exits when a slab is missing)."""
    path = data_dir / "split.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; run scripts/prepare_mri_data.py first")
    split = json.loads(path.read_text())
    sources = list(split["slabs_index_ranges_along_axis_2"])
    for source in sources:
        for part in ("val", "test"):
            name = f"{source}_{part}.nii.gz"
            if name not in split["files"] or not (data_dir / name).is_file():
                raise SystemExit(f"{data_dir / name}: missing (listed in split.json: {name in split['files']})")
    return sources, split


def link_test_slabs(args: argparse.Namespace, sources: Sequence[str]) -> Path:
    """``<output-dir>/test_slabs``: links to the test slabs of every source (copies where links fail)."""
    folder = args.output_dir / "test_slabs"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{s}_test.nii.gz" for s in sources}
    for entry in folder.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name in sorted(wanted):
        target, link = (args.data_dir / name).resolve(), folder / name
        if link.is_symlink() and link.resolve() == target:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        try:
            link.symlink_to(target)
        except OSError:
            shutil.copy2(target, link)
    return folder


class Slab:
    """A clean slab and its degraded version."""

    def __init__(self, path: Path, factor: float) -> None:
        self.path = path
        self.clean = read_volume(find_inputs(path)[0])
        self.low = KSpaceTruncate(factor)(self.clean)


# -------------------------------------------------------------------------------------------------------- tuning


def degradation_for(method: str, factor: float) -> Identity | KSpaceTruncate:
    """What a row's restorer is fed: the clean slab for bicubic (it degrades it itself), else the truncated one."""
    return Identity() if method == "bicubic" else KSpaceTruncate(factor)


def expected_protocol(method: str, factor: float) -> dict[str, Any]:
    degradation = degradation_for(method, factor)
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(degradation).items() if k[0] != "_"}
    return {"degradation": {"name": type(degradation).__name__, **params}, "window": list(WINDOW)}


def reusable(method: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The existing summary of ``method`` when protocol and settings match and ``--overwrite`` is not set."""
    path = args.output_dir / method / "summary.json"
    if args.overwrite or not path.exists() or not (path.parent / "metrics.csv").exists():
        return None
    summary = json.loads(path.read_text())
    protocol = {k: summary["protocol"].get(k) for k in ("degradation", "window")}
    if protocol != expected_protocol(method, args.factor) or summary["restorer"].get("settings") != settings_for(
        method, args
    ):
        print(f"{method}: {path} was made with other settings; recomputing")
        return None
    print(f"{method}: reusing {path}")
    return summary


def evaluate(method: str, label: str, params: Mapping[str, Any], description: str, args, test_dir: Path):
    """Score a classical row on the test slabs (its restorer applied to the degraded, or for bicubic clean, slabs)."""
    return evaluate_restoration(
        restorer_for(method, params, args),
        test_dir,
        args.output_dir / method,
        degradation=degradation_for(method, args.factor),
        model_name=label,
        model_version=description,
        window=WINDOW,
        overwrite=True,
    )


def run_baseline(baseline: Baseline, tuning_slabs: Sequence[Slab], split: str, name: str, label: str, args, test_dir):
    """Tune ``baseline`` on ``tuning_slabs``, record the search, evaluate the best parameters on test."""
    t0 = time.time()
    pairs = [(slab.low, slab.clean) for slab in tuning_slabs]
    objective = baselines_lib.Objective(baseline.name, lambda p: restorer_for(baseline.name, p, args), pairs, WINDOW)
    best = tune(baseline, objective)
    print(f"{name}: tuned {best} -> {split} PSNR {objective(best):.4f} dB ({time.time() - t0:.0f} s)", flush=True)
    out = args.output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    record = objective.record(
        baseline,
        best,
        objective=f"mean PSNR (dB), window {list(WINDOW)}, over the non-constant axial slices of the {split} slabs",
        tuning_slabs=[str(s.path) for s in tuning_slabs],
    )
    (out / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
    return evaluate(name, label, best, baseline.describe(best), args, test_dir)


def run_model(args: argparse.Namespace, test_dir: Path) -> dict[str, Any]:
    """The trained network through the bundle's own restorer (always recomputed)."""
    from monai_rwkv.apps import load_bundle_config

    overrides = {**args.override, "weights": os.fspath(args.model_weights), "device": "cpu", "progress": False}
    restorer = load_bundle_config(args.bundle, "inference.json", overrides=overrides).get_parsed_content("restorer")
    return evaluate_restoration(
        restorer,
        test_dir,
        args.output_dir / "model",
        degradation=KSpaceTruncate(args.factor),
        model_name=f"Restore-RWKV ({Path(args.bundle).name})",
        model_version=os.fspath(args.model_weights),
        window=WINDOW,
        save_images=args.figure is not None,
        overwrite=True,
    )


# -------------------------------------------------------------------------------------------------------- report


class Row(baselines_lib.Row):
    """A table row (see :class:`monai_rwkv.apps.baselines.Row`) with the mean PSNR per source."""

    def source_psnr(self, source: str) -> float:
        values = [v["psnr"] for (f, _), v in self.slices.items() if f == f"{source}_test"]
        return sum(values) / len(values) if values else math.nan


def table(rows: Sequence[Row], sources: Sequence[str], args: argparse.Namespace) -> str:
    first = rows[0].summary
    lines = [
        f"MRI super-resolution x{args.factor:g} (central 1/{args.factor:g} x 1/{args.factor:g} of k-space, zero-filled "
        "magnitude), "
        f"axial slices of the test slabs of {', '.join(sources)} ({first['slices_used']} slices used, "
        f"{first['slices_excluded_constant_label']} excluded: constant reference); window [{WINDOW[0]:g}, "
        f"{WINDOW[1]:g}], mean ± std over slices. Tuned rows: mean validation PSNR"
        + ("; oracle rows: tuned on the test slabs themselves (upper bound)." if args.oracle else ".")
        + " Bicubic: interpolation of the truly low-resolution acquisition (the clean slice's kept k-space on the"
        " small matrix)."
        + (
            " TV reconstruction: iterated TV step and projection onto the measured central k-space block, taken from"
            " the FFT of the zero-filled magnitude input (the output keeps it exactly); tuned on all validation slices."
            if any(r.method.startswith("tv_recon") for r in rows)
            else ""
        ),
        "",
        "| Method | Parameters | PSNR (dB) | SSIM | RMSE | " + " | ".join(f"PSNR {s}" for s in sources) + " |",
        "|---|---|---|---|---|" + "---|" * len(sources),
    ]
    for row in rows:
        per_source = " | ".join(f"{row.source_psnr(s):.2f}" for s in sources)
        lines.append(
            f"| {row.label} | {row.params} | {fmt(row.stats('psnr'), 2)} | {fmt(row.stats('ssim'), 4)} | "
            f"{fmt(row.stats('rmse'), 1)} | {per_source} |"
        )
    return "\n".join(lines) + "\n"


def slice_psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) of one displayed slice in the evaluation window."""
    pred, ref = (torch.from_numpy(a)[None, :, :, None] for a in (image, reference))
    return float(volume_slice_metrics(pred, ref, WINDOW)["psnr"][0])


def make_figure(rows: Sequence[Row], sources: Sequence[str], test_dir: Path, args: argparse.Namespace) -> None:
    """The PNG of ``--figure`` (see the module docstring)."""

    name = (args.figure_file or f"{sources[0]}_test").removesuffix(".nii.gz")
    clean = read_volume(find_inputs(test_dir / f"{name}.nii.gz")[0])
    k = clean.shape[-1] // 2 if args.figure_slice is None else args.figure_slice
    one = clean[..., k : k + 1]
    by_method = {r.method: r for r in rows}
    panels: list[tuple[str, np.ndarray]] = []
    zero = SliceFilterRestorer(nn.Identity(), {})(KSpaceTruncate(args.factor)(one))
    panels.append(("zero-filled input", display(zero, 0)))
    panels.append(("bicubic", display(SliceFilterRestorer(LowResolutionBicubic(args.factor), {})(one), 0)))
    tuned = [r for r in rows if r.method in baselines(args.tv_iter)]
    if tuned:
        best = max(tuned, key=lambda r: r.stats("psnr")["mean"])
        module = module_for(best.method, best.summary["restorer"]["params"], args.tv_iter, args.factor)
        panels.append((best.label, display(SliceFilterRestorer(module, {})(KSpaceTruncate(args.factor)(one)), 0)))
    if "model" in by_method:
        restored = read_volume(find_inputs(args.output_dir / "model" / "images" / f"{name}_restored.nii.gz")[0])
        panels.append(("model", display(restored, k)))
    reference = display(one, 0)
    high = float(np.percentile(reference, 99.5)) or WINDOW[1]
    shown = [(label, f"PSNR {slice_psnr(image, reference):.2f} dB", image) for label, image in panels]
    shown.append(("reference", "", reference))
    panel_figure(shown, (0.0, high), detail_window(reference, 48), args.figure)
    print(f"wrote {args.figure} ({name}, slice {k}; grey scale [0, {high:.0f}])")


# ---------------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/mri"), help="output of scripts/prepare_mri_data.py")
    p.add_argument("--out", type=Path, default=Path("runs/mri_baselines.md"), help="markdown table")
    p.add_argument("--output-dir", type=Path, default=Path("runs/mri_baselines"), help="per-method reports")
    p.add_argument("--methods", default="apodization,tv,tv_recon", help="comma-separated subset of the tuned baselines")
    p.add_argument("--model-weights", type=Path, default=None, help="also score this checkpoint with --bundle")
    baselines_lib.add_override_option(p)
    p.add_argument("--bundle", type=Path, default=Path("bundles/restore_rwkv_mri_sr"), help="bundle of the model")
    p.add_argument("--factor", type=float, default=FACTOR, help="k-space truncation factor s (central 1/s x 1/s kept)")
    p.add_argument("--tv-iter", type=int, default=50, help="iterations of the total-variation solver")
    p.add_argument("--recon-iter", type=int, default=10, help="outer iterations of the TV reconstruction")
    p.add_argument(
        "--recon-tv-iter", type=int, default=5, help="Chambolle iterations of each TV step of the TV reconstruction"
    )
    p.add_argument("--slices-per-call", type=int, default=16, help="slices filtered together (memory)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--oracle", action="store_true", help="also rows tuned on the test slabs (upper bound)")
    p.add_argument("--overwrite", action="store_true", help="recompute methods whose reports exist")
    p.add_argument("--figure", type=Path, default=None, help="PNG of one test slice for every method")
    p.add_argument("--figure-file", default=None, help="test slab of the figure (default: the first, by name)")
    p.add_argument("--figure-slice", type=int, default=None, help="slice of the figure (default: the middle one)")
    args = p.parse_args(argv)
    args.override = dict(args.override)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tuned = baselines(args.tv_iter, args.recon_iter, args.recon_tv_iter, args.factor)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(tuned))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {sorted(tuned)}")
    if args.model_weights is not None and not args.model_weights.is_file():
        raise SystemExit(f"{args.model_weights}: model weights not found")
    sources, _ = load_split(args.data_dir)
    test_dir = link_test_slabs(args, sources)

    rows: list[Row] = []
    untuned = {
        "zero_filled": ("zero-filled input", f"central 1/{args.factor:g} x 1/{args.factor:g} of k-space, magnitude"),
        "bicubic": ("bicubic", f"{args.factor:g}x smaller matrix (from the clean slice), bicubic"),
    }
    for method, (label, description) in untuned.items():
        summary = reusable(method, args) or evaluate(method, label, {}, description, args, test_dir)
        rows.append(Row(method, label, summary["model"]["version"], summary, args.output_dir))
    slabs: dict[str, list[Slab]] = {}
    for split in ("val", "test") if args.oracle else ("val",):
        for method in methods:
            name = method if split == "val" else f"{method}_oracle"
            label = tuned[method].label + ("" if split == "val" else " (oracle: tuned on test)")
            summary = reusable(name, args)
            if summary is None:
                if split not in slabs:
                    slabs[split] = [Slab(args.data_dir / f"{s}_{split}.nii.gz", args.factor) for s in sources]
                summary = run_baseline(tuned[method], slabs[split], split, name, label, args, test_dir)
            rows.append(Row(name, label, summary["model"]["version"], summary, args.output_dir))
    if args.model_weights is not None:
        summary = run_model(args, test_dir)
        rows.append(Row("model", summary["model"]["name"], f"weights {args.model_weights}", summary, args.output_dir))

    reference_input = rows[0].summary["input"]
    for row in rows:
        if row.summary["errors"]:
            raise SystemExit(f"{row.label}: evaluation errors {row.summary['errors']}")
        if row.method != "bicubic" and not same_scores(row.summary["input"], reference_input):
            raise SystemExit(f"{row.label}: saw other degraded inputs than the zero-filled row; use --overwrite")
    text = table(rows, sources, args)
    if args.model_weights is not None:
        text += "\n" + paired_table(rows[-1], rows[:-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    print(text)
    if args.figure is not None:
        make_figure(rows, sources, test_dir, args)
    print(f"wrote {args.out} and the reports under {args.output_dir} ({time.time() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
