#!/usr/bin/env python
"""Low-dose CT denoising report: classical baselines and the CT bundle's network, in distribution and shifted.

Two test settings, each with its own validation set for tuning (the paper's protocol: whole slices, PSNR / SSIM /
RMSE in the window [-160, 240] HU, mean over slices whose windowed reference is not constant):

* ``in-distribution``: the head CT's test split (``scripts/prepare_ct_data.py``) scanned by the bundle's evaluation
  scanner (:class:`~monai_rwkv.transforms.LowDoseCT`, quarter dose, seed ``--seed``); tuning on the validation
  split (seed ``--val-seed``).
* ``shifted``: the pairs of ``scripts/prepare_ct_shifted.py`` (head regions on two grids and synthetic bodies,
  two scanners outside the training ranges): tuning on its ``validation`` pairs, scoring on its ``test`` pairs;
* ``--pairs NAME=DIR``: a set of your own, e.g. real scans: ``DIR/{validation,test}/{full,low}/`` NIfTI volumes
  in HU, paired by file name (``scripts/ct_make_pairs.py`` makes them from full-dose scans; pairs from another
  simulator or real low-dose scans go in the same layout), scored like the shifted set; by group of slices from
  the ``slices`` record of ``DIR/pairs.json`` when there is one (file and scanner), else by file.

Rows: the low-dose input; Gaussian smoothing, the bilateral filter, non-local means and, when the optional ``bm3d``
package is installed, BM3D (:mod:`monai_rwkv.networks.nets.classical`, slice by slice in HU) tuned on validation (a
grid search, then a line search on the continuous parameter: :func:`monai_rwkv.apps.baselines.tune`); with
``--oracle`` the same filters tuned on the test pairs themselves (one parameter set for the whole test set: an
upper bound for the filter, not a fair baseline); with ``--slice-oracle METHODS`` those filters tuned on each test
slice itself (every slice its own parameters: the tighter upper bound, "tuned on the test image"); and one row per
``--model LABEL=WEIGHTS``, restored by the bundle's own inference pipeline (``configs/inference.json``'s
``restorer`` with those weights and any ``--override KEY=JSON`` settings, e.g. ``roi_size=[256,256]``). The first
model row is compared slice by slice with every other row. Every row
also gets its RMSE over flat soft tissue (residual noise and streaks), its RMSE over the soft tissue within 2 pixels
of bone (edges and the streaks leaving the bone) and, on the shifted set, its means by group of slices (file and
scanner, from the ``slices`` record of ``datalist_shifted.json``; on a ``--pairs`` set as above).

Outputs, under ``--output-dir``: ``<set>/pairs/{validation,test}/{full,low}/`` (the in-distribution scans, written
once per source, dose and seed), ``<set>/<method>/{summary.json,metrics.csv,tuning.json}``, ``<set>/figure.png``
and the markdown report ``--out`` (also printed). A baseline row is reused while its ``summary.json`` exists and
the SHA-256 of its pair files, stored in its ``tuning.json``, still matches (``--overwrite`` recomputes every row);
model rows are always recomputed.

Example::

    python scripts/ct_baselines.py --oracle --model "Restore-RWKV light=bundles/restore_rwkv_ct_denoise/models/model.pt"
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_rwkv.apps import baselines as lib
from monai_rwkv.apps.evaluate import constant_slices, evaluate_restoration, volume_slices
from monai_rwkv.apps.restore import find_inputs, read_volume
from monai_rwkv.metrics import CT_EVAL_WINDOW, CT_FLAT_GRADIENT, edge_band_rmse, flat_region_rmse
from monai_rwkv.networks.nets import BilateralDenoiser, BM3DDenoiser, GaussianDenoiser, NonLocalMeansDenoiser
from monai_rwkv.transforms import LowDoseCT

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "restore_rwkv_ct_denoise"

# Filters run on HU: intensity parameters are in HU.
BASELINES = {
    "gaussian": lib.Baseline(
        "gaussian",
        "Gaussian smoothing",
        lambda sigma: GaussianDenoiser(sigma),
        {"sigma": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0]},
        "sigma",
        (0.05, 20.0),
        1.5,
        lambda p: f"sigma {p['sigma']:.3g} px",
    ),
    "bilateral": lib.Baseline(
        "bilateral",
        "Bilateral filter",
        lambda sigma_spatial, sigma_range_hu: BilateralDenoiser(sigma_spatial, sigma_range_hu),
        {"sigma_spatial": [1.0, 1.5, 2.0, 3.0], "sigma_range_hu": [10.0, 20.0, 40.0, 80.0]},
        "sigma_range_hu",
        (1.0, 1000.0),
        2.0,
        lambda p: f"sigma {p['sigma_spatial']:.3g} px, range {p['sigma_range_hu']:.3g} HU",
    ),
    "nlm": lib.Baseline(
        "nlm",
        "Non-local means",
        lambda h_hu, patch_radius, search_radius: NonLocalMeansDenoiser(h_hu, patch_radius, search_radius),
        {"h_hu": [10.0, 14.0, 20.0, 28.0, 40.0, 56.0], "patch_radius": [1, 2], "search_radius": [5]},
        "h_hu",
        (1.0, 1000.0),
        1.4,
        lambda p: f"h {p['h_hu']:.3g} HU, patch {2 * p['patch_radius'] + 1}, search {2 * p['search_radius'] + 1}",
    ),
    "bm3d": lib.Baseline(
        "bm3d",
        "BM3D",
        lambda sigma_hu: BM3DDenoiser(sigma_hu),
        {"sigma_hu": [15.0, 30.0, 60.0]},
        "sigma_hu",
        (1.0, 1000.0),
        1.4,
        lambda p: f"sigma {p['sigma_hu']:.3g} HU",
    ),
}
#: The per-slice oracle's grids, wider than the tuned rows' (an upper bound may cost more): non-local means also with
#: 7 x 7 patches and a 23 x 23 search window, scikit-image's ``denoise_nl_means`` defaults, which remove more of the
#: sparse-view streaks than 11 x 11, and with larger filter strengths to start the line search from.
SLICE_ORACLE_GRIDS = {
    "nlm": {"h_hu": [10.0, 20.0, 40.0, 80.0, 160.0], "patch_radius": [1, 2, 3], "search_radius": [5, 11]},
}
DEFAULT_METHODS = [name for name in BASELINES if name != "bm3d" or importlib.util.find_spec("bm3d") is not None]
SETS = ("in-distribution", "shifted")
#: the figures' zoomed detail: the most structured window of soft tissue (HU), not its edges against air and bone.
SOFT_TISSUE = (-150.0, 230.0)


# ------------------------------------------------------------------------------------------------------ the pairs


def _write(volume: torch.Tensor, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(volume[0], dtype=np.float32), affine), tmp)
    os.replace(tmp, path)


def pair_folders(args: argparse.Namespace, set_name: str, split: str) -> tuple[Path, Path]:
    """``(full, low)`` folders of one set's split. The in-distribution scans are simulated once per source volume, dose
    and seed (recorded in the split's ``scan.json``) and rewritten when these change."""
    if set_name in args.pairs:
        return args.pairs[set_name] / split / "full", args.pairs[set_name] / split / "low"
    if set_name == "shifted":
        root = args.data_dir / "shifted" / split
        if not (args.data_dir / "datalist_shifted.json").is_file():
            raise SystemExit(f"error: {args.data_dir / 'datalist_shifted.json'}: run scripts/prepare_ct_shifted.py")
        return root / "full", root / "low"
    root = args.output_dir / set_name / "pairs" / split
    full, low, record = root / "full", root / "low", root / "scan.json"
    split_info = json.loads((args.data_dir / "split.json").read_text())["splits"]
    source = args.data_dir / split_info["val" if split == "validation" else "test"]["file"]
    seed = args.val_seed if split == "validation" else args.seed
    scan = {"source": os.fspath(source), "dose": args.dose, "seed": seed}
    written = json.loads(record.read_text()) if record.is_file() else None
    if not (low / "head.nii.gz").is_file() or written != scan:
        clean = read_volume(find_inputs(source)[0])
        affine = np.asarray(clean.affine, dtype=np.float64)
        _write(clean, affine, full / "head.nii.gz")
        _write(LowDoseCT(args.dose, seed)(clean), affine, low / "head.nii.gz")
        record.write_text(json.dumps(scan) + "\n")
    return full, low


BONE_HU = 300.0  # the edge-band table: reference values from which a pixel is bone
EDGE_BAND_PX = 2.0  # the edge-band table: soft tissue within this many pixels of bone


def evaluate(restorer, method: str, label: str, version: str, args, set_name: str) -> dict[str, Any]:
    full, low = pair_folders(args, set_name, "test")
    return evaluate_restoration(
        restorer,
        full,
        args.output_dir / set_name / method,
        degradation=None,
        model_name=label,
        model_version=version,
        window=CT_EVAL_WINDOW,
        degraded_dir=low,
        save_images=True,
        overwrite=True,
    )


def data_fingerprint(args, set_name: str, tuning_split: str) -> str:
    """SHA-256 over the pair files a baseline row depends on: its tuning split's and the test split's ``full`` and
    ``low`` volumes (names and uncompressed bytes, so a rewrite of the same data keeps it). A cached row is reused
    only while this is unchanged."""
    digest = hashlib.sha256()
    for split in dict.fromkeys((tuning_split, "test")):
        for folder in pair_folders(args, set_name, split):
            for path in sorted(folder.glob("*.nii*")):
                digest.update(f"{split}/{folder.name}/{path.name}\0".encode())
                with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()


def cached_row(
    out: Path, baseline: lib.Baseline, fingerprint: str, args, set_name: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(summary, tuning)`` of the baseline row in ``out`` when both files exist, ``--overwrite`` is off, the
    tuning record's ``data_sha256`` equals ``fingerprint`` (:func:`data_fingerprint`) and its search space (grid,
    continuous parameter, bounds) is ``baseline``'s; otherwise None."""
    if not ((out / "summary.json").is_file() and (out / "tuning.json").is_file()) or args.overwrite:
        return None
    summary, tuning = json.loads((out / "summary.json").read_text()), json.loads((out / "tuning.json").read_text())
    if tuning.get("data_sha256") != fingerprint:
        print(f"{set_name}/{out.name}: the pairs differ from those of {out / 'tuning.json'}: recomputing")
        return None
    space = search_space(baseline)
    if {key: tuning.get(key) for key in space} != space:
        print(f"{set_name}/{out.name}: the search space differs from that of {out / 'tuning.json'}: recomputing")
        return None
    print(f"{set_name}/{out.name}: reusing {out / 'summary.json'}")
    return summary, tuning


def search_space(baseline: lib.Baseline) -> dict[str, Any]:
    """A baseline's search space as its tuning record stores it (JSON values)."""
    return {
        "grid": {k: list(v) for k, v in baseline.grid.items()},
        "continuous": baseline.continuous,
        "bounds": [b if math.isfinite(b) else None for b in baseline.bounds],
    }


def run_baseline(baseline: lib.Baseline, tuning_split: str, method: str, label: str, args, set_name: str) -> lib.Row:
    out = args.output_dir / set_name / method
    fingerprint = data_fingerprint(args, set_name, tuning_split)
    cached = cached_row(out, baseline, fingerprint, args, set_name)
    if cached is not None:
        summary, tuning = cached
        return lib.Row(method, label, baseline.describe(tuning["best"]), summary, args.output_dir / set_name)
    start = time.time()
    full, low = pair_folders(args, set_name, tuning_split)
    pairs = [(read_volume(find_inputs(low / i.path.name)[0]), read_volume(i)) for i in find_inputs(full)]
    objective = lib.filter_objective(baseline, pairs, CT_EVAL_WINDOW)
    best = lib.tune(baseline, objective)
    out.mkdir(parents=True, exist_ok=True)
    record = objective.record(
        baseline,
        best,
        tuned_on=f"{set_name} {tuning_split}",
        objective=f"mean PSNR (dB), window {list(CT_EVAL_WINDOW)}, over the non-constant slices",
    )
    record["data_sha256"] = fingerprint
    (out / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
    restorer = lib.SliceFilterRestorer(baseline.build(**best), {"method": baseline.name, **best})
    summary = evaluate(restorer, method, label, baseline.describe(best), args, set_name)
    print(f"{set_name}/{method}: {best} in {time.time() - start:.0f} s")
    return lib.Row(method, label, baseline.describe(best), summary, args.output_dir / set_name)


class PerSliceFilterRestorer:
    """
    The per-slice oracle's :class:`~monai_rwkv.inference.VolumeRestorer`: slice ``k`` (last axis) of the volume
    restored for the reference file ``desc`` (the file name that
    :func:`~monai_rwkv.apps.evaluate.evaluate_restoration` passes) filtered by ``baseline`` with
    ``params[desc][k]``; a slice whose parameters are None (constant windowed reference, left out of every metric)
    is kept as it is. Float32 result with the input's meta.
    """

    output_dtype = "float32"

    def __init__(self, baseline: lib.Baseline, params: dict[str, list[dict[str, Any] | None]]) -> None:
        self.baseline, self.params = baseline, params

    def __call__(self, volume: torch.Tensor, desc: str | None = None) -> torch.Tensor:
        chosen = self.params.get(desc or "")
        if chosen is None or len(chosen) != volume.shape[-1]:
            tuned = ", ".join(self.params)
            raise ValueError(f"{desc}: no per-slice parameters for its {volume.shape[-1]} slices (tuned: {tuned})")
        data = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
        out = []
        for k, p in enumerate(chosen):
            one = data[..., k : k + 1].float()
            out.append(one if p is None else lib.SliceFilterRestorer(self.baseline.build(**p), p)(one))
        restored = torch.cat(out, dim=-1)
        return MetaTensor(restored, meta=dict(volume.meta)) if isinstance(volume, MetaTensor) else restored

    def describe(self) -> dict[str, Any]:
        return {"method": self.baseline.name, "parameters": "per slice, tuned on that slice (oracle)"}


def describe_per_slice(chosen: Sequence[dict[str, Any]]) -> str:
    """The parameter text of a per-slice row: each parameter's value, or its range and median over the slices."""
    parts = []
    for name in chosen[0] if chosen else ():
        values = sorted(p[name] for p in chosen)
        if values[0] == values[-1]:
            parts.append(f"{name} {values[0]:.3g}")
        else:
            parts.append(f"{name} {values[0]:.3g} to {values[-1]:.3g} (median {values[len(values) // 2]:.3g})")
    return "per slice: " + ", ".join(parts)


def tune_on_slice(
    baseline: lib.Baseline, low: torch.Tensor, full: torch.Tensor, k: int, name: str | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """The parameters of ``baseline`` that maximise the PSNR of slice ``k`` (last axis) of the ``(1, i, j, n)`` pair
    ``(low, full)``, and their scores (PSNR, SSIM, RMSE) with the number of points tried (``points``):
    :func:`monai_rwkv.apps.baselines.tune` on that slice."""
    pair = [(low[..., k : k + 1], full[..., k : k + 1])]
    objective = lib.filter_objective(baseline, pair, CT_EVAL_WINDOW, name=name)
    best = lib.tune(baseline, objective)
    return best, {**objective.results[tuple(sorted(best.items()))], "points": len(objective.results)}


def slice_oracle_baseline(baseline: lib.Baseline) -> lib.Baseline:
    """``baseline`` with the per-slice oracle's search grid (:data:`SLICE_ORACLE_GRIDS`, where it has one)."""
    return dataclasses.replace(baseline, grid=SLICE_ORACLE_GRIDS.get(baseline.name, baseline.grid))


def run_slice_oracle(baseline: lib.Baseline, method: str, label: str, args, set_name: str) -> lib.Row:
    """The oracle tuned on each test image itself: every non-constant test slice filtered with the parameters that
    maximise its own PSNR (the search of the other rows, :func:`monai_rwkv.apps.baselines.tune`, on that one slice,
    over :data:`SLICE_ORACLE_GRIDS`' wider grid where the method has one). Stronger than the ``oracle_`` row, which
    shares one parameter set over the test set."""
    out = args.output_dir / set_name / method
    baseline = slice_oracle_baseline(baseline)
    fingerprint = data_fingerprint(args, set_name, "test")
    cached = cached_row(out, baseline, fingerprint, args, set_name)
    if cached is not None:
        summary, tuning = cached
        chosen = [s["best"] for s in tuning["slices"]]
        return lib.Row(method, label, describe_per_slice(chosen), summary, args.output_dir / set_name)
    start = time.time()
    full, low = pair_folders(args, set_name, "test")
    params: dict[str, list[dict[str, Any] | None]] = {}
    record = []
    for image in find_inputs(full):
        clean = read_volume(image)
        noisy = read_volume(find_inputs(low / image.path.name)[0])
        constant = constant_slices(clean, CT_EVAL_WINDOW).tolist()
        params[image.path.name] = []
        for k, is_constant in enumerate(constant):
            if is_constant:
                params[image.path.name].append(None)
                continue
            best, scores = tune_on_slice(baseline, noisy, clean, k, name=f"{method} {image.name}[{k}]")
            params[image.path.name].append(best)
            record.append({"file": image.name, "slice": k, "best": best, **scores})
    out.mkdir(parents=True, exist_ok=True)
    tuning = {
        "method": baseline.name,
        "tuned_on": f"{set_name} test, each slice on itself",
        "objective": f"PSNR (dB) of the slice, window {list(CT_EVAL_WINDOW)}",
        **search_space(baseline),
        "slices": record,
        "data_sha256": fingerprint,
    }
    (out / "tuning.json").write_text(json.dumps(tuning, indent=2) + "\n")
    summary = evaluate(PerSliceFilterRestorer(baseline, params), method, label, "per-slice oracle", args, set_name)
    print(f"{set_name}/{method}: {len(record)} slices tuned in {time.time() - start:.0f} s")
    chosen = [r["best"] for r in record]
    return lib.Row(method, label, describe_per_slice(chosen), summary, args.output_dir / set_name)


def run_model(label: str, weights: Path, index: int, args, set_name: str) -> lib.Row:
    from monai_rwkv.apps import load_bundle_config  # noqa: PLC0415

    overrides = {**args.override, "weights": os.fspath(weights), "device": "cpu", "progress": False}
    restorer = load_bundle_config(args.bundle, "inference.json", overrides=overrides).get_parsed_content("restorer")
    method = f"model{index}"
    summary = evaluate(restorer, method, label, os.fspath(weights), args, set_name)
    return lib.Row(method, label, f"`{weights.name}`", summary, args.output_dir / set_name)


# ---------------------------------------------------------------------------------------------------- the report


def set_table(set_name: str, rows: Sequence[lib.Row], models: Sequence[lib.Row], args) -> str:
    first = rows[0].summary
    lines = [
        f"### {set_name}",
        "",
        f"{first['slices_used']} test slices ({first['slices_excluded_constant_label']} excluded: constant windowed "
        f"reference); window [{CT_EVAL_WINDOW[0]:g}, {CT_EVAL_WINDOW[1]:g}] HU; mean ± std over slices.",
        "",
        "| Method | Parameters | PSNR (dB) | SSIM | RMSE (HU) |",
        "|---|---|---|---|---|",
        f"| Low-dose input | | {lib.fmt(first['input']['psnr'], 2)} | {lib.fmt(first['input']['ssim'], 4)} | "
        f"{lib.fmt(first['input']['rmse'], 1)} |",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {row.params} | {lib.fmt(row.stats('psnr'), 2)} | "
            f"{lib.fmt(row.stats('ssim'), 4)} | {lib.fmt(row.stats('rmse'), 1)} |"
        )
    lines += [
        "",
        lib.paired_table(models[0], [r for r in rows if r is not models[0]]),
    ]
    regions = {m: region_errors(set_name, m, args) for m in [None] + [r.method for r in rows]}
    flat = {m: None if e is None else e["flat"] for m, e in regions.items()}
    edge = {m: None if e is None else e["edge"] for m, e in regions.items()}
    lines.append(flat_table(rows, flat))
    lines.append(
        region_table(
            f"Error next to bone (reference inside the window and below {BONE_HU:g} HU, within {EDGE_BAND_PX:g} "
            f"pixels of a pixel at or above {BONE_HU:g} HU: where edges blur and streaks leave the bone): RMSE in HU, "
            "mean ± std over slices that have such pixels; Δ: first model minus row, per slice; wins: fraction of "
            "slices where the model's is lower.",
            "edge-band RMSE (HU)",
            rows,
            edge,
        )
    )
    groups = slice_groups(set_name, args)
    if groups:
        lines.append(group_table(rows, flat, groups))
    return "\n".join(lines)


#: The per-slice region errors of the report, ``(pred, reference)`` slices ``(N, H, W)`` in HU -> ``(N,)``.
REGION_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "flat": lambda pred, ref: flat_region_rmse(pred, ref, CT_EVAL_WINDOW, CT_FLAT_GRADIENT),
    "edge": lambda pred, ref: edge_band_rmse(pred, ref, CT_EVAL_WINDOW, BONE_HU, EDGE_BAND_PX),
}


def region_errors(set_name: str, method: str | None, args) -> dict[str, dict[tuple[str, int], float]] | None:
    """Per-slice :data:`REGION_METRICS` of a row's restored test images (``method`` None: the low-dose input), by
    metric name, each keyed like :attr:`lib.Row.slices`; slices whose windowed reference is constant or whose value
    is NaN (no pixel in the region) left out; None when the row's images were not kept."""
    full, low = pair_folders(args, set_name, "test")
    errors: dict[str, dict[tuple[str, int], float]] = {name: {} for name in REGION_METRICS}
    for reference in find_inputs(full):
        path = low / reference.path.name
        if method is not None:
            path = args.output_dir / set_name / method / "images" / f"{reference.name}_restored.nii.gz"
        if not path.is_file():
            return None
        clean = read_volume(reference)
        pred, ref = volume_slices(read_volume(find_inputs(path)[0]))[:, 0], volume_slices(clean)[:, 0]
        constant = constant_slices(clean, CT_EVAL_WINDOW).tolist()
        for name, metric in REGION_METRICS.items():
            for k, (value, is_constant) in enumerate(zip(metric(pred, ref).tolist(), constant)):
                if not is_constant and math.isfinite(value):
                    errors[name][(reference.name, k)] = value
    return errors


def flat_table(rows: Sequence[lib.Row], flat: dict[str | None, dict[tuple[str, int], float] | None]) -> str:
    """Residual noise and streaks: the RMSE over flat soft tissue per row (``flat``: :func:`region_errors`' "flat" by
    method, None for the low-dose input), and the first model's paired difference."""
    return region_table(
        f"Residual error in flat soft tissue (reference inside the window, Sobel gradient < {CT_FLAT_GRADIENT:g} "
        "HU/pixel: where noise and streaks show): RMSE in HU, mean ± std over slices; Δ: first model minus row, "
        "per slice; wins: fraction of slices where the model's is lower.",
        "flat-region RMSE (HU)",
        rows,
        flat,
    )


def region_table(
    title: str, column: str, rows: Sequence[lib.Row], region: dict[str | None, dict[tuple[str, int], float] | None]
) -> str:
    """Markdown: a per-slice error per row (``region``: one metric of :func:`region_errors` by method, None for the
    low-dose input), mean ± std over the slices it shares with the first model, and the first model's paired
    difference."""
    lines = [title, "", f"| Method | {column} | Δ (HU) | wins |", "|---|---|---|---|"]
    model = region[rows[0].method]
    for label, method in [("Low-dose input", None)] + [(r.label, r.method) for r in rows]:
        errors = region[method]
        if errors is None or model is None:
            lines.append(f"| {label} | (images not kept: rerun with --overwrite) | | |")
            continue
        keys = sorted(errors.keys() & model.keys())
        mean, std = lib.mean_std([errors[k] for k in keys])
        diff = [model[k] - errors[k] for k in keys]
        d_mean, d_std = lib.mean_std(diff)
        wins = sum(d < 0 for d in diff) / max(len(diff), 1)
        lines.append(f"| {label} | {mean:.1f} ± {std:.1f} | {d_mean:+.1f} ± {d_std:.1f} | {wins:.0%} |")
    return "\n".join(lines) + "\n"


def slice_groups(set_name: str, args) -> dict[tuple[str, int], str] | None:
    """The test slices of the shifted set or a ``--pairs`` set by group, ``"<file>, <scanner>"`` keyed like
    :attr:`lib.Row.slices`, from the ``slices`` record of ``datalist_shifted.json`` or the pairs folder's
    ``pairs.json`` (per file, one scanner name or ``{"scanner": ...}`` per slice); a ``--pairs`` set without that
    record by file (``"<file>"``); None for the in-distribution set or a datalist without that record."""
    if set_name in args.pairs:
        record_file = args.pairs[set_name] / "pairs.json"
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        if not (isinstance(record, dict) and record.get("slices", {}).get("test")):
            full, _ = pair_folders(args, set_name, "test")
            return {
                (image.name, k): image.name for image in find_inputs(full) for k in range(read_volume(image).shape[-1])
            }
    elif set_name != "shifted":
        return None
    else:
        record = json.loads((args.data_dir / "datalist_shifted.json").read_text())
    slices = record.get("slices", {}).get("test") if isinstance(record, dict) else None
    if not slices:
        return None
    groups = {}
    for name, entries in slices.items():
        for k, entry in enumerate(entries):
            scanner = entry.get("scanner") if isinstance(entry, dict) else entry
            if not isinstance(scanner, str):
                return None
            groups[(name, k)] = f"{name}, {scanner}"
    return groups


def group_table(
    rows: Sequence[lib.Row],
    flat: dict[str | None, dict[tuple[str, int], float] | None],
    groups: dict[tuple[str, int], str],
) -> str:
    """Markdown: mean PSNR / SSIM / flat-region RMSE of every row over each group of slices (``groups``:
    :func:`slice_groups`; groups in order of first appearance), the low-dose input first."""
    names = list(dict.fromkeys(groups.values()))
    members = {g: [k for k in rows[0].slices if groups.get(k) == g] for g in names}
    names = [g for g in names if members[g]]
    lines = [
        "By group of test slices (file, scanner): mean PSNR (dB) / SSIM / flat-region RMSE (HU) over the group.",
        "",
        "| Method | " + " | ".join(f"{g} ({len(members[g])})" for g in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    first = rows[0].input_slices
    entries = [("Low-dose input", first, flat[None])] + [(r.label, r.slices, flat[r.method]) for r in rows]
    for label, metrics, errors in entries:
        cells = []
        for g in names:
            keys = [k for k in members[g] if k in metrics]
            if not keys:
                cells.append("n/a")
                continue
            psnr = sum(metrics[k]["psnr"] for k in keys) / len(keys)
            ssim = sum(metrics[k]["ssim"] for k in keys) / len(keys)
            values = [errors[k] for k in keys if errors is not None and k in errors]
            rmse = f"{sum(values) / len(values):.1f}" if values else "n/a"
            cells.append(f"{psnr:.2f} / {ssim:.4f} / {rmse}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure_slice(set_name: str, rows: Sequence[lib.Row], args) -> tuple[str, int]:
    """The test slice the figure shows, ``(file, k)``: on a set with groups (:func:`slice_groups`), the median-PSNR
    slice (first model) of the group where the first model trails the oracle non-local means the most (or leads it
    the least), so that the figure shows the model at its weakest; otherwise the median-PSNR slice of the ``body``
    file when there is one, else of the first file."""
    model = next(r for r in rows if r.method.startswith("model"))
    by_method = {r.method: r for r in rows}
    nlm = next((by_method[m] for m in ("slice_oracle_nlm", "oracle_nlm", "nlm") if m in by_method), None)
    groups = slice_groups(set_name, args)
    if groups and nlm is not None:
        members: dict[str, list[tuple[str, int]]] = {}
        for key in model.slices:
            if key in nlm.slices and key in groups:
                members.setdefault(groups[key], []).append(key)

        def lead(group: str) -> float:
            keys = members[group]
            return sum(model.slices[k]["psnr"] - nlm.slices[k]["psnr"] for k in keys) / len(keys)

        keys = members[min(members, key=lead)]
    else:
        files = [f.name for f in find_inputs(pair_folders(args, set_name, "test")[0])]
        name = "body" if "body" in files else files[0]
        keys = [key for key in model.slices if key[0] == name]
    ranked = sorted((model.slices[key]["psnr"], key) for key in keys)
    return ranked[len(ranked) // 2][1]


def figure(set_name: str, rows: Sequence[lib.Row], args) -> Path:
    """Low-dose input, the val-tuned and oracle NLM rows, the model rows and the reference for the test slice of
    :func:`figure_slice`; the zoomed detail is the most structured soft-tissue window."""
    full, low = pair_folders(args, set_name, "test")
    name, k = figure_slice(set_name, rows, args)
    image = next(f for f in find_inputs(full) if f.name == name)
    clean = read_volume(image)
    noisy = read_volume(find_inputs(low / image.path.name)[0])
    panels = [("Low-dose input", "", lib.display_slice(noisy, k))]
    for row in rows:
        if row.method in ("nlm", "oracle_nlm", "slice_oracle_nlm") or row.method.startswith("model"):
            images = args.output_dir / set_name / row.method / "images"
            restored = read_volume(find_inputs(images / f"{image.name}_restored.nii.gz")[0])
            panels.append((row.label, f"{row.slices[(image.name, k)]['psnr']:.2f} dB", lib.display_slice(restored, k)))
    panels.append(("Full dose", "", lib.display_slice(clean, k)))
    path = args.output_dir / set_name / "figure.png"
    lib.panel_figure(panels, CT_EVAL_WINDOW, lib.detail_window(panels[-1][2], 64, SOFT_TISSUE), path)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path("data/ct"), help="prepare_ct_data.py / _shifted.py output")
    p.add_argument("--output-dir", type=Path, default=Path("runs/ct_baselines"), help="per-method reports")
    p.add_argument("--out", type=Path, default=Path("runs/ct_baselines.md"), help="the markdown report")
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle whose inference pipeline runs the models")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        type=lib.parse_model,
        metavar="LABEL=WEIGHTS",
        help="a model row (repeatable)",
    )
    p.add_argument(
        "--sets",
        default=None,
        help=f"comma-separated subset of {','.join(SETS)} and the --pairs names (default: the --pairs sets if any, "
        f"else {','.join(SETS)})",
    )
    p.add_argument(
        "--pairs",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a set of your own: DIR/{validation,test}/{full,low}/ NIfTI pairs in HU (scripts/ct_make_pairs.py)",
    )
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated subset of {','.join(BASELINES)} (default: those installed)",
    )
    lib.add_override_option(p)
    p.add_argument("--oracle", action="store_true", help="also rows tuned on the test pairs (upper bounds)")
    p.add_argument(
        "--slice-oracle",
        default="",
        help="comma-separated methods that also get a row tuned on each test slice itself (e.g. nlm; slow)",
    )
    p.add_argument("--dose", type=float, default=0.25, help="in-distribution dose fraction")
    p.add_argument("--seed", type=int, default=0, help="in-distribution test scan seed")
    p.add_argument("--val-seed", type=int, default=1, help="in-distribution validation scan seed")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--overwrite", action="store_true", help="recompute baseline rows whose reports exist")
    args = p.parse_args(argv)
    args.override = dict(args.override)
    args.models = args.model
    if not args.models:
        p.error("give at least one --model LABEL=WEIGHTS")
    args.slice_oracle = [name for name in args.slice_oracle.split(",") if name]
    args.pairs = dict(_pairs_set(p, item) for item in args.pairs)
    if args.sets is None:
        args.sets = ",".join(args.pairs or SETS)
    for name in args.sets.split(","):
        if name not in SETS and name not in args.pairs:
            p.error(f"--sets: unknown set {name!r}; choose from {','.join([*SETS, *args.pairs])}")
    for name in args.methods.split(",") + args.slice_oracle:
        if name not in BASELINES:
            p.error(f"--methods/--slice-oracle: unknown method {name!r}; choose from {','.join(BASELINES)}")
        if name == "bm3d" and importlib.util.find_spec("bm3d") is None:
            p.error("--methods bm3d needs the optional bm3d package: pip install bm3d")
    return args


def _pairs_set(p: argparse.ArgumentParser, item: str) -> tuple[str, Path]:
    """``NAME=DIR`` of ``--pairs``, checked: a new set name and a folder with the four pair folders."""
    name, sep, folder = item.partition("=")
    name = name.strip()
    if not sep or not name or not folder or "/" in name or name in SETS:
        p.error(f"--pairs {item!r}: expected NAME=DIR with a NAME other than {' and '.join(SETS)} and without '/'")
    root = Path(folder)
    for split in ("validation", "test"):
        for kind in ("full", "low"):
            if not (root / split / kind).is_dir():
                p.error(
                    f"--pairs {name}: {root / split / kind}: no such folder (a pairs folder has validation/ and "
                    "test/, each with full/ and low/; scripts/ct_make_pairs.py writes one)"
                )
    return name, root


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = ["## Low-dose CT denoising: classical baselines and Restore-RWKV", ""]
    for set_name in args.sets.split(","):
        rows = []
        for name in args.methods.split(","):
            rows.append(run_baseline(BASELINES[name], "validation", name, BASELINES[name].label, args, set_name))
        if args.oracle:
            for name in args.methods.split(","):
                label = f"{BASELINES[name].label}, oracle"
                rows.append(run_baseline(BASELINES[name], "test", f"oracle_{name}", label, args, set_name))
        for name in args.slice_oracle:
            label = f"{BASELINES[name].label}, oracle per slice"
            rows.append(run_slice_oracle(BASELINES[name], f"slice_oracle_{name}", label, args, set_name))
        models = [run_model(label, path, i, args, set_name) for i, (label, path) in enumerate(args.models)]
        report.append(set_table(set_name, models + rows, models, args))
        report.append(f"![{set_name}]({figure(set_name, models + rows, args).resolve()})\n")
    lib.emit_report("\n".join(report), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
