#!/usr/bin/env python
"""PET low-count -> full-count restoration: the low-count input, classical post-filters tuned on validation, and the
trained network, scored on the test phantoms in the paper's protocol plus what PET readers look at.

Data: ``scripts/prepare_pet_phantoms.py`` (``<data-dir>/datalist.json`` and ``split.json``): for every validation and
test phantom its low-count (1/12) scan ``image``, full-count scan ``label``, the phantom itself, its tissue maps and
lesion labels. Every row is scored with :func:`~monai_rwkv.apps.evaluate.evaluate_restoration` on the axial slices
of the test scans against the full-count scan (the paper's reference), window [0, 20] SUV, PSNR / SSIM / RMSE per
slice (data range: the windowed reference slice's max - min).

Rows:

- ``low_count``, "low-count input": the input itself.
- ``gaussian``, "Gaussian post-filter": :class:`~monai_rwkv.networks.nets.classical.GaussianDenoiser` on each axial
  slice, its FWHM (mm) tuned; the usual clinical answer to a noisy PET image.
- ``nlm``, "non-local means": :class:`~monai_rwkv.networks.nets.classical.NonLocalMeansDenoiser`, ``h`` (SUV) and
  the patch size tuned, 11 x 11 search window.
- with ``--oracle``: ``gaussian_oracle`` and ``nlm_oracle``, tuned on the test scans themselves (an upper bound of
  the method here, not a fair baseline).
- with ``--model-weights``: ``model``, the network through the bundle's own ``restorer`` (``--bundle``'s
  ``inference.json``, device cpu).
- ``full_count`` appears in the lesion and noise table only (it is the reference of the image metrics).

Tuning (``tuning.json`` in each method's folder): objective the mean PSNR over the validation slices, a grid search,
then a multiplicative line search on the continuous parameter (:func:`monai_rwkv.apps.baselines.tune`).

Lesions and noise, from the restored test volumes and the phantoms (:func:`lesion_rows`, :func:`noise_rows`):

- contrast recovery of every lesion of the test phantoms: ``CR = (mean(lesion) - mean(ring)) / (same in the
  phantom)``, the ring being the brain voxels 2-5 voxels (4-10 mm) from the lesion outside every lesion (a local
  background: activity varies across the brain). Lesions with fewer than 5 voxels or a true contrast below 1 SUV
  are left out. Hot (true contrast > 0) and cold lesions are averaged separately; a CR of 1 is perfect, the
  resolution of the scanner and the post-filters lower it.
- background noise: in every axial slice with at least 20 voxels of white matter (probability >= 0.9, further than
  3 voxels from any lesion), the coefficient of variation std / mean of the image there, averaged over slices; the
  phantom's own value is its anatomical variation (a floor).

Outputs: ``<output-dir>/<method>/{summary.json,metrics.csv,images/,tuning.json}``, ``<output-dir>/test_{full,low}``
(links to the test scans, named ``test_v<v>.nii.gz``: the evaluated folders), ``<output-dir>/lesions.csv`` and the
markdown ``--out`` (also printed): the metrics table, with the model the per-slice paired differences, and the lesion
and noise table. ``--figure PATH``: a PNG of the test slice holding the largest hot lesion (low count, the
validation-tuned Gaussian, the model when scored, full count, phantom), grey scale [0, 99.5th percentile of the
phantom], with a 3x zoom on the lesion.

A method whose ``summary.json`` exists with the same protocol and settings is reused unless ``--overwrite`` (the
model is always recomputed).

Example::

    python scripts/pet_baselines.py --oracle --model-weights bundles/restore_rwkv_pet_synthesis/models/model.pt \\
        --figure runs/pet_baselines/figure.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Identity
from scipy import ndimage
from torch import nn

from monai_rwkv.apps.baselines import (
    Baseline,
    Objective,
    Row,
    SliceFilterRestorer,
    add_override_option,
    display_slice,
    fmt,
    mean_std,
    paired_table,
    panel_figure,
    same_scores,
    tune,
)
from monai_rwkv.apps.evaluate import evaluate_restoration, volume_slice_metrics
from monai_rwkv.apps.restore import find_inputs, read_volume
from monai_rwkv.networks.nets.classical import GaussianDenoiser, NonLocalMeansDenoiser

WINDOW = (0.0, 20.0)
METRICS = ("psnr", "ssim", "rmse")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
MIN_LESION_VOXELS, MIN_TRUE_CONTRAST_SUV = 5, 1.0
RING_VOXELS = (2.0, 5.0)
WM_PROBABILITY, WM_LESION_MARGIN, WM_MIN_VOXELS = 0.9, 3.0, 20


def baselines(voxel_mm: float) -> dict[str, Baseline]:
    """The tuned post-filters for ``voxel_mm`` pixels."""
    return {
        "gaussian": Baseline(
            "gaussian",
            "Gaussian post-filter",
            lambda fwhm_mm: GaussianDenoiser(fwhm_mm / FWHM_PER_SIGMA / voxel_mm),
            {"fwhm_mm": [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]},
            "fwhm_mm",
            (0.0, math.inf),
            1.5,
            lambda p: f"FWHM {p['fwhm_mm']:.3g} mm",
        ),
        "nlm": Baseline(
            "nlm",
            "non-local means",
            lambda h, patch_radius: NonLocalMeansDenoiser(h, patch_radius, 5),
            {"h": [0.25, 0.5, 1.0, 2.0, 4.0], "patch_radius": [1, 2]},
            "h",
            (0.0, math.inf),
            1.5,
            lambda p: (
                f"h {p['h']:.3g} SUV, patch {2 * p['patch_radius'] + 1}x{2 * p['patch_radius'] + 1}, search 11x11"
            ),
        ),
    }


# ---------------------------------------------------------------------------------------------------------- data


class Scan:
    """One validation or test phantom: its scans (``(1, i, j, k)`` MetaTensors) and the paths of its maps."""

    def __init__(self, data_dir: Path, item: Mapping[str, str], name: str) -> None:
        self.name = name
        self.paths = {key: data_dir / value for key, value in item.items()}
        for key in ("image", "label", "phantom", "lesions", "tissue"):
            if key not in self.paths or not self.paths[key].is_file():
                raise SystemExit(f"{self.paths.get(key, key)}: missing; run scripts/prepare_pet_phantoms.py")
        self.low = read_volume(find_inputs(self.paths["image"])[0])
        self.full = read_volume(find_inputs(self.paths["label"])[0])


def load_scans(data_dir: Path, split: str) -> list[Scan]:
    path = data_dir / "datalist.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; run scripts/prepare_pet_phantoms.py first")
    items = json.loads(path.read_text())[split]
    prefix = "val" if split == "validation" else split
    return [Scan(data_dir, item, f"{prefix}_v{v}") for v, item in enumerate(items)]


def link_test_scans(output_dir: Path, scans: Sequence[Scan]) -> tuple[Path, Path]:
    """``<output-dir>/test_full`` and ``test_low``: the test scans under one name per phantom (links, or copies)."""
    folders = []
    for tag, key in (("full", "label"), ("low", "image")):
        folder = output_dir / f"test_{tag}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for scan in scans:
            link, target = folder / f"{scan.name}.nii.gz", scan.paths[key].resolve()
            try:
                link.symlink_to(target)
            except OSError:
                shutil.copy2(target, link)
        folders.append(folder)
    return folders[0], folders[1]


# -------------------------------------------------------------------------------------------------------- tuning


# ---------------------------------------------------------------------------------------------------- evaluation


def settings_for(method: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"data_dir": os.fspath(args.data_dir.resolve()), "voxel_mm": args.voxel_mm}


def reusable(method: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The existing summary of ``method`` when its settings match and ``--overwrite`` is not set."""
    path = args.output_dir / method / "summary.json"
    if args.overwrite or not path.exists() or not (path.parent / "metrics.csv").exists():
        return None
    summary = json.loads(path.read_text())
    if summary["restorer"].get("settings") != settings_for(method, args) or summary["protocol"]["window"] != list(
        WINDOW
    ):
        print(f"{method}: {path} was made with other settings; recomputing")
        return None
    print(f"{method}: reusing {path}")
    return summary


def evaluate(restorer, method: str, label: str, version: str, args, folders: tuple[Path, Path]) -> dict[str, Any]:
    full_dir, low_dir = folders
    return evaluate_restoration(
        restorer,
        full_dir,
        args.output_dir / method,
        degradation=Identity(),
        model_name=label,
        model_version=version,
        window=WINDOW,
        degraded_dir=low_dir,
        save_images=True,
        overwrite=True,
    )


def run_baseline(
    baseline: Baseline, scans: Sequence[Scan], split: str, name: str, label: str, args, folders
) -> dict[str, Any]:
    print(f"{name}: tuning on the {split} scans", flush=True)
    pairs = [(scan.low, scan.full) for scan in scans]
    objective = Objective(
        baseline.name, lambda p: SliceFilterRestorer(baseline.build(**p), {}, args.slices_per_call), pairs, WINDOW
    )
    best = tune(baseline, objective)
    out = args.output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    record = objective.record(
        baseline, best, objective=f"mean PSNR (dB), window {list(WINDOW)}, over the axial slices of the {split} scans"
    )
    (out / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
    description = {"method": name, "params": best, "settings": settings_for(name, args)}
    restorer = SliceFilterRestorer(baseline.build(**best), description, args.slices_per_call)
    return evaluate(restorer, name, label, baseline.describe(best), args, folders)


def run_model(args: argparse.Namespace, folders) -> dict[str, Any]:
    from monai_rwkv.apps import load_bundle_config  # noqa: PLC0415

    overrides = {**args.override, "weights": os.fspath(args.model_weights), "device": "cpu", "progress": False}
    restorer = load_bundle_config(args.bundle, "inference.json", overrides=overrides).get_parsed_content("restorer")
    return evaluate(
        restorer, "model", f"Restore-RWKV ({Path(args.bundle).name})", os.fspath(args.model_weights), args, folders
    )


# ---------------------------------------------------------------------------------------------- lesions, noise


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def lesion_rows(image: np.ndarray, phantom: np.ndarray, labels: np.ndarray, tissue: np.ndarray) -> list[dict]:
    """Contrast recovery of every usable lesion (see the module docstring); arrays (i, j, k), tissue (i, j, k, 3)."""
    brain = tissue[..., 0] + tissue[..., 1] >= 0.5
    rows = []
    for label in np.unique(labels[labels > 0]):
        lesion = labels == label
        if lesion.sum() < MIN_LESION_VOXELS:
            continue
        distance = ndimage.distance_transform_edt(~lesion)
        ring = (distance > RING_VOXELS[0]) & (distance <= RING_VOXELS[1]) & (labels == 0) & brain
        if ring.sum() < 10:
            continue
        true_contrast = phantom[lesion].mean() - phantom[ring].mean()
        if abs(true_contrast) < MIN_TRUE_CONTRAST_SUV:
            continue
        contrast = image[lesion].mean() - image[ring].mean()
        rows.append(
            {
                "label": int(label),
                "voxels": int(lesion.sum()),
                "true_contrast": float(true_contrast),
                "recovery": float(contrast / true_contrast),
            }
        )
    return rows


def noise_values(image: np.ndarray, labels: np.ndarray, tissue: np.ndarray) -> list[float]:
    """Coefficient of variation of ``image`` in the white matter of every axial slice that has enough of it."""
    far = ndimage.distance_transform_edt(labels == 0) > WM_LESION_MARGIN if labels.any() else np.ones_like(labels, bool)
    region = (tissue[..., 1] >= WM_PROBABILITY) & far
    values = []
    for k in range(image.shape[-1]):
        voxels = image[..., k][region[..., k]]
        if voxels.size >= WM_MIN_VOXELS and voxels.mean() > 0:
            values.append(float(voxels.std() / voxels.mean()))
    return values


def reader_metrics(rows: Sequence[Row], scans: Sequence[Scan], args) -> tuple[dict[str, dict[str, Any]], list[dict]]:
    """Per row (and the full-count scan and the phantom): mean hot / cold contrast recovery and white-matter noise."""
    images: dict[str, dict[str, np.ndarray]] = {}
    for scan in scans:
        images[scan.name] = {"full_count": _array(scan.paths["label"]), "phantom": _array(scan.paths["phantom"])}
        for row in rows:
            restored = args.output_dir / row.method / "images" / f"{scan.name}_restored.nii.gz"
            images[scan.name][row.method] = _array(restored)
    methods = [r.method for r in rows] + ["full_count", "phantom"]
    results: dict[str, dict[str, Any]] = {m: {"hot": [], "cold": [], "noise": []} for m in methods}
    records = []
    for scan in scans:
        phantom, labels = images[scan.name]["phantom"], _array(scan.paths["lesions"]).astype(np.int64)
        tissue = _array(scan.paths["tissue"])
        for method in methods:
            lesions = lesion_rows(images[scan.name][method], phantom, labels, tissue)
            for lesion in lesions:
                results[method]["hot" if lesion["true_contrast"] > 0 else "cold"].append(lesion["recovery"])
                records.append({"method": method, "scan": scan.name, **lesion})
            results[method]["noise"] += noise_values(images[scan.name][method], labels, tissue)
    return results, records


# -------------------------------------------------------------------------------------------------------- report


def table(rows: Sequence[Row], args: argparse.Namespace) -> str:
    first = rows[0].summary
    lines = [
        f"PET low-count (1/12) -> full-count, axial slices of the {len(find_inputs(args.output_dir / 'test_full'))} "
        f"test phantoms ({first['slices_used']} slices), against the full-count scan; window [0, 20] SUV, mean ± std "
        "over slices. Tuned rows: mean validation PSNR"
        + ("; oracle rows: tuned on the test scans themselves (upper bound)." if args.oracle else "."),
        "",
        "| Method | Parameters | PSNR (dB) | SSIM | RMSE (SUV) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {row.params} | {fmt(row.stats('psnr'), 2)} | {fmt(row.stats('ssim'), 4)} | "
            f"{fmt(row.stats('rmse'), 3)} |"
        )
    return "\n".join(lines) + "\n"


def reader_table(results: Mapping[str, Mapping[str, list]], labels: Mapping[str, str]) -> str:
    n_hot, n_cold = len(results["phantom"]["hot"]), len(results["phantom"]["cold"])
    lines = [
        f"Lesions and noise on the test phantoms: contrast recovery (mean ± std over {n_hot} hot and {n_cold} cold "
        "lesions of >= 5 voxels and >= 1 SUV true contrast, local background 4-10 mm around each; 1 is perfect) and "
        "white-matter noise (std / mean per slice, mean over slices; the phantom's value is its own anatomical "
        "variation).",
        "",
        "| Image | CR hot lesions | CR cold lesions | WM noise (CoV) |",
        "|---|---|---|---|",
    ]
    for method, values in results.items():
        cells = []
        for key, digits in (("hot", 3), ("cold", 3), ("noise", 4)):
            mean, std = mean_std(values[key])
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def make_figure(rows: Sequence[Row], records: Sequence[Mapping[str, Any]], scans: Sequence[Scan], args) -> None:
    """The PNG of ``--figure`` (see the module docstring)."""
    hot = [r for r in records if r["method"] == "phantom" and r["true_contrast"] > 0]
    by_name = {s.name: s for s in scans}
    if hot:
        best = max(hot, key=lambda r: r["voxels"])
        scan = by_name[best["scan"]]
        labels = _array(scan.paths["lesions"]) == best["label"]
        k = int(np.argmax(labels.sum(axis=(0, 1))))
    else:
        scan, labels, k = scans[0], None, scans[0].full.shape[-1] // 2
    read = lambda path: read_volume(find_inputs(path)[0])  # noqa: E731
    panels: list[tuple[str, np.ndarray]] = [("low count", display_slice(scan.low, k))]
    by_method = {r.method: r for r in rows}
    for method in ("gaussian", "model"):
        if method in by_method:
            restored = read(args.output_dir / method / "images" / f"{scan.name}_restored.nii.gz")
            panels.append(
                ({"gaussian": "Gaussian (tuned)", "model": "Restore-RWKV"}[method], display_slice(restored, k))
            )
    reference = display_slice(scan.full, k)
    phantom = display_slice(read(scan.paths["phantom"]), k)
    high = float(np.percentile(phantom, 99.5)) or WINDOW[1]
    size = 32
    if labels is not None:
        mask = display_slice(torch.from_numpy(labels[None].astype(np.float32)), k) > 0
        rows_idx, cols_idx = np.nonzero(mask)
        centre = (int(rows_idx.mean()), int(cols_idx.mean()))
    else:
        centre = (reference.shape[0] // 2, reference.shape[1] // 2)
    top = min(max(centre[0] - size // 2, 0), reference.shape[0] - size)
    left = min(max(centre[1] - size // 2, 0), reference.shape[1] - size)
    shown = []
    for label, image in panels:
        psnr = float(
            volume_slice_metrics(
                torch.from_numpy(image)[None, :, :, None], torch.from_numpy(reference)[None, :, :, None], WINDOW
            )["psnr"][0]
        )
        shown.append((label, f"PSNR {psnr:.2f} dB", image))
    shown += [("full count (ref.)", "", reference), ("phantom", "", phantom)]
    panel_figure(shown, (0.0, high), (top, left, size), args.figure, zoom=4)
    print(f"wrote {args.figure} ({scan.name}, slice {k}; grey scale [0, {high:.1f}] SUV)")


# ---------------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/pet"), help="output of scripts/prepare_pet_phantoms.py")
    p.add_argument("--out", type=Path, default=Path("runs/pet_baselines.md"), help="markdown tables")
    p.add_argument("--output-dir", type=Path, default=Path("runs/pet_baselines"), help="per-method reports")
    p.add_argument("--methods", default="gaussian,nlm", help="comma-separated subset of the tuned baselines")
    p.add_argument("--model-weights", type=Path, default=None, help="also score this checkpoint with --bundle")
    add_override_option(p)
    p.add_argument(
        "--bundle", type=Path, default=Path("bundles/restore_rwkv_pet_synthesis"), help="bundle of the model"
    )
    p.add_argument("--voxel-mm", type=float, default=2.0, help="in-plane pixel size of the scans")
    p.add_argument("--slices-per-call", type=int, default=16, help="slices filtered together (memory)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--oracle", action="store_true", help="also rows tuned on the test scans (upper bound)")
    p.add_argument("--overwrite", action="store_true", help="recompute methods whose reports exist")
    p.add_argument("--figure", type=Path, default=None, help="PNG of one test slice for every method")
    args = p.parse_args(argv)
    args.override = dict(args.override)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tuned = baselines(args.voxel_mm)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(tuned))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {sorted(tuned)}")
    if args.model_weights is not None and not args.model_weights.is_file():
        raise SystemExit(f"{args.model_weights}: model weights not found")
    scans = {"test": load_scans(args.data_dir, "test")}
    folders = link_test_scans(args.output_dir, scans["test"])

    identity = SliceFilterRestorer(nn.Identity(), {"method": "low_count", "settings": settings_for("low_count", args)})
    summary = reusable("low_count", args) or evaluate(identity, "low_count", "low-count input", "", args, folders)
    rows = [Row("low_count", "low-count input", "1/12 of the full counts", summary, args.output_dir)]
    for split in ("validation", "test") if args.oracle else ("validation",):
        for method in methods:
            name = method if split == "validation" else f"{method}_oracle"
            label = tuned[method].label + ("" if split == "validation" else " (oracle: tuned on test)")
            summary = reusable(name, args)
            if summary is None:
                if split not in scans:
                    scans[split] = load_scans(args.data_dir, split)
                summary = run_baseline(tuned[method], scans[split], split, name, label, args, folders)
            rows.append(Row(name, label, summary["model"]["version"] + " (tuned)", summary, args.output_dir))
    if args.model_weights is not None:
        summary = run_model(args, folders)
        rows.append(Row("model", summary["model"]["name"], f"weights {args.model_weights}", summary, args.output_dir))

    for row in rows:
        if row.summary["errors"]:
            raise SystemExit(f"{row.label}: evaluation errors {row.summary['errors']}")
        if not same_scores(row.summary["input"], rows[0].summary["input"]):
            raise SystemExit(f"{row.label}: saw other inputs than the low-count row; use --overwrite")
    text = table(rows, args)
    if args.model_weights is not None:
        text += "\n" + paired_table(rows[-1], rows[:-1], rmse_digits=3)
    results, records = reader_metrics(rows, scans["test"], args)
    labels = {r.method: r.label for r in rows} | {"full_count": "full-count scan (reference)", "phantom": "phantom"}
    text += "\n" + reader_table(results, labels)
    with open(args.output_dir / "lesions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "scan", "label", "voxels", "true_contrast", "recovery"])
        writer.writeheader()
        writer.writerows(records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    print(text)
    if args.figure is not None:
        make_figure(rows, records, scans["test"], args)
    print(f"wrote {args.out} and the reports under {args.output_dir} ({time.time() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
