"""
The paper's evaluation protocol on clean volumes.

For every clean volume: degrade it with the bundle's degradation (a transform from its config, e.g.
:class:`~monai_rwkv.transforms.LowDoseCT` with a fixed seed or :class:`~monai_rwkv.transforms.KSpaceTruncate`) or
take the matching file of a folder of real degraded scans, restore it, and compute PSNR / SSIM / RMSE of every slice
along the last axis in the metric window (the bundle's ``window``, physical units; CT:
:data:`~monai_rwkv.metrics.CT_EVAL_WINDOW`, [-160, 240] HU) for the degraded input and for the prediction, both
against the clean slice. The metrics do not depend on how a slice is oriented (rows and columns may be swapped).
Writes one CSV row per slice and a summary JSON.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor

from monai_rwkv.apps.restore import InputImage, error_line, find_inputs, read_volume
from monai_rwkv.data import atomic_output_file, write_nifti
from monai_rwkv.data.provenance import nifti_restoration_note
from monai_rwkv.inference import VolumeRestorer
from monai_rwkv.metrics import slice_metrics

__all__ = ["METRICS", "constant_slices", "evaluate_restoration", "volume_slice_metrics", "volume_slices"]

METRICS = ("psnr", "ssim", "rmse")
_CSV_FIELDS = ["file", "slice", "label_constant"] + [f"{m}_{w}" for w in ("input", "pred") for m in METRICS]

logger = logging.getLogger(__name__)


def volume_slices(volume: torch.Tensor) -> torch.Tensor:
    """
    A single-channel volume ``(1, i, j, k)`` (tensor or MetaTensor; ``(1, i, j)`` is one slice) as float32 slices
    ``(k, 1, i, j)`` along its last axis, the axis every evaluation here scores slice by slice.

    Raises:
        ValueError: the volume has more than one channel.
    """
    if volume.shape[0] != 1:
        raise ValueError(f"expected a single-channel volume (1, i, j, k), got shape {tuple(volume.shape)}.")
    data = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
    data = data[..., None] if data.ndim == 3 else data
    return data.float().permute(3, 0, 1, 2)


def volume_slice_metrics(
    pred: torch.Tensor, label: torch.Tensor, window: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """:func:`~monai_rwkv.metrics.slice_metrics` of every slice (last axis) of two ``(1, i, j, k)`` volumes, (k,)."""
    return slice_metrics(volume_slices(pred), volume_slices(label), window)


def constant_slices(label: torch.Tensor, window: Sequence[float] | None) -> torch.Tensor:
    """(k,) True where the (windowed) label slice is constant: PSNR/SSIM are meaningless there."""
    slices = volume_slices(label)
    if window is not None:
        slices = slices.clamp(*window)
    return slices.amax(dim=(1, 2, 3)) == slices.amin(dim=(1, 2, 3))


def _rows(name: str, constant: torch.Tensor, inp: Mapping, pred: Mapping) -> list[dict[str, Any]]:
    rows = []
    for k in range(constant.numel()):
        row: dict[str, Any] = {"file": name, "slice": k, "label_constant": int(constant[k])}
        for tag, values in (("input", inp), ("pred", pred)):
            row.update({f"{m}_{tag}": float(values[m][k]) for m in METRICS})
        rows.append(row)
    return rows


def _mean_std(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    values = [float(r[key]) for r in rows]
    if not values:
        return {"mean": math.nan, "std": math.nan}
    mean = sum(values) / len(values)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))}


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    used = [r for r in rows if not r["label_constant"]]
    return {
        "slices": len(rows),
        "slices_used": len(used),
        "slices_excluded_constant_label": len(rows) - len(used),
        "input": {m: _mean_std(used, f"{m}_input") for m in METRICS},
        "pred": {m: _mean_std(used, f"{m}_pred") for m in METRICS},
    }


def _match_degraded(image: InputImage, candidates: Sequence[InputImage], degraded_dir: str | os.PathLike) -> InputImage:
    """The degraded image named like ``image``: the same name, else the only one named ``<name>_<anything>``."""
    for matches in (
        [c for c in candidates if c.name == image.name],
        [c for c in candidates if c.name.startswith(image.name + "_")],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise ValueError(f"{image.path}: several degraded images match in {degraded_dir}: {names}")
    raise ValueError(f"{image.path}: no degraded image named {image.name!r} (or {image.name}_*) in {degraded_dir}")


def _degraded_for(
    image: InputImage, clean: MetaTensor, degraded_dir: str | os.PathLike | None, degradation: Callable
) -> MetaTensor:
    """The real degraded scan matching ``image`` (see :func:`_match_degraded`) or ``degradation(clean)``."""
    if degraded_dir is None:
        return degradation(clean)
    match = _match_degraded(image, find_inputs(degraded_dir), degraded_dir)
    low = read_volume(match)
    if tuple(low.shape) != tuple(clean.shape):
        raise ValueError(f"{match.path}: shape {tuple(low.shape)} differs from the clean {tuple(clean.shape)}")
    return low


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], overwrite: bool) -> None:
    with atomic_output_file(path, overwrite=overwrite) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, content: Mapping[str, Any], overwrite: bool) -> None:
    with atomic_output_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(content, indent=2, allow_nan=True) + "\n")


def evaluate_restoration(
    restorer: VolumeRestorer,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    degradation: Callable[[MetaTensor], MetaTensor],
    model_name: str = "",
    model_version: str = "",
    window: Sequence[float] | None = None,
    degraded_dir: str | os.PathLike | None = None,
    save_images: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Run the evaluation protocol on every clean volume under ``dataset_dir`` (see the module docstring).

    Writes ``<output_dir>/metrics.csv`` (one row per slice: file, slice, whether the windowed label is constant,
    PSNR dB / SSIM / RMSE in physical units of the input and of the prediction) and ``<output_dir>/summary.json``
    (mean and standard deviation over slices whose windowed label is not constant, settings, per-file errors). With
    ``save_images`` also ``<output_dir>/images/<name>_{degraded,restored}.nii.gz``.

    Args:
        restorer: the restorer under test (its ``output_dtype`` should be float32).
        dataset_dir: clean volumes (NIfTI files / DICOM series) in physical units.
        output_dir: where the reports go.
        degradation: the degradation of a clean ``(1, i, j, k)`` volume (a bundle config's ``degradation``, e.g.
            ``LowDoseCT(dose_fraction, seed)``, ``KSpaceTruncate(factor)``); a random one should carry a fixed seed
            so that every volume and every run sees the same noise.
        model_name, model_version: recorded in the summary.
        window: truncation in physical units before the metrics (None: none).
        degraded_dir: real (or previously simulated) degraded scans instead of ``degradation``, matched by relative
            name: ``a.nii.gz`` pairs with ``a.nii.gz`` or, failing that, with the only ``a_*.nii.gz``.
        save_images: also write the degraded inputs and the predictions.
        overwrite: replace existing reports (otherwise ``FileExistsError`` before any work).

    Returns:
        the summary (also written as JSON).
    """
    out = Path(output_dir)
    csv_path, json_path = out / "metrics.csv", out / "summary.json"
    for path in (csv_path, json_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: output exists; set overwrite to replace it")
    note = nifti_restoration_note(model_name, model_version)
    protocol = _Protocol(degradation, window, degraded_dir, save_images, overwrite, note)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for image in find_inputs(dataset_dir):
        try:
            rows += _evaluate_one(restorer, image, out, protocol)
        except Exception as e:  # noqa: BLE001 - report the file, go on with the others
            errors.append(error_line(image.path, e))
            logger.error("error: %s", errors[-1])
    summary = {
        "model": {"name": model_name, "version": model_version},
        "protocol": {
            "degraded_input": "real" if degraded_dir is not None else "simulated",
            "degradation": {"name": type(degradation).__name__, **_parameters(degradation)}
            if degraded_dir is None
            else None,
            "window": list(window) if window is not None else None,
            "data_range": "max(label) - min(label) per windowed slice",
            "ssim": "11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03",
        },
        "restorer": restorer.describe(),
        "dataset_dir": os.fspath(dataset_dir),
        **_summary(rows),
        "errors": errors,
    }
    _write_csv(csv_path, rows, overwrite)
    _write_json(json_path, summary, overwrite)
    logger.info("wrote %s and %s", csv_path, json_path)
    return summary


def _parameters(transform: Callable) -> dict[str, Any]:
    """The public settings of a degradation transform (``dose_fraction``, ``seed``, ``factor``, axes...)."""
    scalar = (bool, int, float, str)
    found: dict[str, Any] = {}
    for key, value in vars(transform).items():
        if key.startswith("_") or key == "prob":
            continue
        if isinstance(value, scalar):
            found[key] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, scalar) for v in value):
            found[key] = list(value)
    return found


@dataclass(frozen=True)
class _Protocol:
    degradation: Callable[[MetaTensor], MetaTensor]
    window: Sequence[float] | None
    degraded_dir: str | os.PathLike | None
    save_images: bool
    overwrite: bool
    note: str = ""  # the restored images' NIfTI descrip (marks them as restored)


def _evaluate_one(restorer: VolumeRestorer, image: InputImage, out: Path, p: _Protocol) -> list[dict[str, Any]]:
    """Rows of the per-slice CSV for one clean volume (and its images when ``p.save_images``)."""
    clean = read_volume(image)
    low = _degraded_for(image, clean, p.degraded_dir, p.degradation)
    pred = restorer(low, desc=image.path.name)
    if p.save_images:
        for tag, volume in (("degraded", low), ("restored", pred)):
            path = out / "images" / f"{image.name}_{tag}.nii.gz"
            note = p.note if tag == "restored" else None
            write_nifti(volume, path, affine=clean.affine, overwrite=p.overwrite, channel_first=True, description=note)
    inp_metrics = volume_slice_metrics(low, clean, p.window)
    pred_metrics = volume_slice_metrics(pred, clean, p.window)
    return _rows(image.name, constant_slices(clean, p.window), inp_metrics, pred_metrics)
