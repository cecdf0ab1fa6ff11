"""
Shared pieces of the classical-baseline reports (``scripts/*_baselines.py``): a slice-wise restorer for a 2D
filter, tuning by grid and line search, per-slice paired differences, and the before/after figure.

Every modality's report follows the paper's protocol: classical methods tuned on the validation images, scored on
the test images with :func:`~monai_rwkv.apps.evaluate.evaluate_restoration`, and compared slice by slice with the
trained network. What differs between modalities (the data, the degradation, the methods and their grids) stays in
the scripts.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_rwkv.apps.cli import json_or_text
from monai_rwkv.apps.evaluate import constant_slices, volume_slice_metrics

__all__ = [
    "Baseline",
    "Objective",
    "Row",
    "SliceFilterRestorer",
    "add_override_option",
    "emit_report",
    "detail_window",
    "display_slice",
    "filter_objective",
    "fmt",
    "mean_std",
    "paired_table",
    "panel_figure",
    "parse_model",
    "same_scores",
    "tune",
]

METRICS = ("psnr", "ssim", "rmse")


class SliceFilterRestorer:
    """
    A :class:`~monai_rwkv.inference.VolumeRestorer` that applies a 2D module ``(N, 1, H, W) -> (N, 1, H, W)`` to
    every slice ``(i, j)`` of a channel-first volume ``(C, i, j, k)`` (or ``(C, i, j)``) in physical units,
    ``slices_per_call`` slices at a time; float32 result with the input's meta (affine).

    Args:
        module: the 2D filter (any ``nn.Module`` or callable on tensors).
        description: what :meth:`describe` returns (method, parameters, settings), recorded in the reports.
        slices_per_call: slices filtered together (memory).
    """

    output_dtype = "float32"

    def __init__(self, module: nn.Module, description: Mapping[str, Any], slices_per_call: int = 16) -> None:
        self.module, self.description, self.slices_per_call = module, dict(description), int(slices_per_call)

    def restore_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` float32 -> the module's result, in chunks of ``slices_per_call``."""
        with torch.no_grad():
            return torch.cat([self.module(c) for c in slices.split(self.slices_per_call)]).float()

    def __call__(self, volume: torch.Tensor, desc: str | None = None) -> torch.Tensor:
        data = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
        squeeze = data.ndim == 3
        data = data[..., None] if squeeze else data
        c, i, j, k = data.shape
        slices = data.float().permute(0, 3, 1, 2).reshape(c * k, 1, i, j)
        out = self.restore_slices(slices).reshape(c, k, i, j).permute(0, 2, 3, 1).contiguous()
        out = out[..., 0] if squeeze else out
        if isinstance(volume, MetaTensor):
            return MetaTensor(out, meta=dict(volume.meta))
        return out

    def describe(self) -> dict[str, Any]:
        return dict(self.description)


@dataclass
class Baseline:
    """
    A tunable classical method.

    Attributes:
        name: folder and row key (``"gaussian"``).
        label: row label in the tables.
        build: ``build(**params)`` -> the 2D module.
        grid: the parameter grid searched first (fixed settings as one-element lists, so they are recorded).
        continuous: the parameter refined by the line search after the grid.
        bounds: its ``(low, high)`` bounds (``math.inf`` for none).
        ratio: the first multiplicative step of the line search.
        describe: ``describe(params)`` -> the parameter text of the row.
    """

    name: str
    label: str
    build: Callable[..., nn.Module]
    grid: Mapping[str, Sequence[Any]]
    continuous: str
    bounds: tuple[float, float]
    ratio: float
    describe: Callable[[Mapping[str, Any]], str] = field(default=lambda p: ", ".join(f"{k} {v}" for k, v in p.items()))


class Objective:
    """
    The tuning objective of a baseline: mean windowed PSNR over the non-constant slices of some
    ``(degraded, clean)`` volume pairs (pooled), memoised per parameter set, with SSIM and RMSE recorded alongside.

    Args:
        name: the method, in the progress lines.
        restorer_for: ``restorer_for(params)`` -> a :class:`~monai_rwkv.inference.VolumeRestorer` (e.g. a
            :class:`SliceFilterRestorer`) for one parameter set.
        pairs: ``(degraded, clean)`` channel-first volumes ``(1, i, j, k)``; the restorer gets ``degraded``.
        window: the metric window (e.g. :data:`~monai_rwkv.metrics.CT_EVAL_WINDOW`).
    """

    def __init__(
        self,
        name: str,
        restorer_for: Callable[[Mapping[str, Any]], Callable[[torch.Tensor], torch.Tensor]],
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        window: Sequence[float] | None,
    ) -> None:
        self.name, self.restorer_for, self.pairs, self.window = name, restorer_for, list(pairs), window
        self.keep = [~constant_slices(clean, window) for _, clean in self.pairs]
        self.results: dict[tuple, dict[str, float]] = {}

    def __call__(self, params: Mapping[str, Any]) -> float:
        key = tuple(sorted(params.items()))
        if key not in self.results:
            start = time.time()
            restorer = self.restorer_for(params)
            values: dict[str, list[torch.Tensor]] = {m: [] for m in METRICS}
            for (degraded, clean), keep in zip(self.pairs, self.keep):
                metrics = volume_slice_metrics(restorer(degraded), clean, self.window)
                for m in METRICS:
                    values[m].append(metrics[m][keep])
            self.results[key] = {m: float(torch.cat(v).mean()) for m, v in values.items()}
            psnr = self.results[key]["psnr"]
            print(f"  {self.name} {dict(params)}: PSNR {psnr:.4f} dB ({time.time() - start:.1f} s)", flush=True)
        return self.results[key]["psnr"]

    def record(self, baseline: Baseline, best: Mapping[str, Any], **about: Any) -> dict[str, Any]:
        """What ``tuning.json`` holds: ``about`` (e.g. the objective in words), the search space, the best point and
        its scores, and every point tried, best first."""
        tried = sorted(self.results.items(), key=lambda kv: -kv[1]["psnr"])
        return {
            "method": baseline.name,
            **about,
            "grid": {k: list(v) for k, v in baseline.grid.items()},
            "continuous": baseline.continuous,
            "bounds": [b if math.isfinite(b) else None for b in baseline.bounds],
            "best": dict(best),
            "best_metrics": self.results[tuple(sorted(best.items()))],
            "tried": [{"params": dict(k), **v} for k, v in tried],
        }


def filter_objective(
    baseline: Baseline,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    window: Sequence[float] | None,
    name: str | None = None,
) -> Objective:
    """The :class:`Objective` of a 2D filter ``baseline`` run slice by slice (:class:`SliceFilterRestorer`) on the
    ``(degraded, clean)`` volume ``pairs``, scored in ``window``; ``name`` (default ``baseline.name``) in the progress
    lines."""
    return Objective(name or baseline.name, lambda p: SliceFilterRestorer(baseline.build(**p), {}), pairs, window)


def tune(baseline: Baseline, objective: Callable[[Mapping[str, Any]], float], max_moves: int = 8) -> dict[str, Any]:
    """
    The parameters that maximise ``objective`` (memoise it: points are asked again): the best point of the grid,
    then a multiplicative line search on ``baseline.continuous`` from there (steps ``ratio``, ``sqrt(ratio)``,
    ``ratio ** 0.25``, each up then down, clipped to the bounds, going on while it improves), so that an optimum
    between or beyond the grid points is found. Values are rounded to 4 significant digits, so that two paths to
    the same point (``60 / 1.4`` and ``30 * 1.4286``) meet in the memo instead of costing two evaluations.
    """
    names = list(baseline.grid)
    grid = [dict(zip(names, values)) for values in itertools.product(*(baseline.grid[n] for n in names))]
    best = max(grid, key=objective)
    name, (low, high) = baseline.continuous, baseline.bounds
    for step in (baseline.ratio, math.sqrt(baseline.ratio), baseline.ratio**0.25):
        for direction in (step, 1 / step):
            for _ in range(max_moves):
                value = min(max(float(f"{best[name] * direction:.4g}"), low), high)  # 4 significant digits
                if value == best[name]:  # at a bound, or at 0 where multiplying cannot move
                    break
                candidate = {**best, name: value}
                if objective(candidate) <= objective(best):
                    break
                best = candidate
    return best


def parse_model(spec: str) -> tuple[str, Path]:
    """``LABEL=WEIGHTS`` (a report's model row) as ``(label, path)``; the weights file must exist."""
    label, sep, path = spec.partition("=")
    if not sep or not label or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"expected LABEL=WEIGHTS with an existing weights file, got {spec!r}")
    return label, Path(path)


def parse_override(spec: str) -> tuple[str, Any]:
    """``KEY=JSON`` as ``(key, value)``; a value that is not JSON stays a string."""
    key, sep, text = spec.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=JSON, got {spec!r}")
    return key, json_or_text(text)


def add_override_option(parser: argparse.ArgumentParser) -> None:
    """``--override KEY=JSON`` (repeatable): inference.json settings for the model rows of a report, e.g.
    ``roi_size=[256,256]`` or ``self_ensemble=true``; parsed into a list of ``(key, value)``, use ``dict()``."""
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        type=parse_override,
        metavar="KEY=JSON",
        help="an inference.json setting for the model rows, e.g. roi_size=[256,256] (repeatable)",
    )


def emit_report(text: str, out: str | os.PathLike | None) -> None:
    """Print a markdown report and, when ``out`` is given, write it there (its folder created)."""
    print(text)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; NaN for no values."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def fmt(stats: Mapping[str, float], digits: int) -> str:
    """``mean ± std`` of a ``{"mean", "std"}`` mapping."""
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def same_scores(a: Mapping[str, Any], b: Mapping[str, Any], rtol: float = 1e-6) -> bool:
    """Whether two ``{metric: {mean, std}}`` score sets agree (to float rounding across thread counts)."""
    return a.keys() == b.keys() and all(
        math.isclose(a[m][s], b[m][s], rel_tol=rtol, abs_tol=1e-9) for m in a for s in ("mean", "std")
    )


class Row:
    """
    One table row: its method folder (``<output_dir>/<method>/{summary.json,metrics.csv}`` of
    :func:`~monai_rwkv.apps.evaluate.evaluate_restoration`), label, parameter text, summary and per-slice metrics
    of the prediction (``slices``) and of the degraded input (``input_slices``), slices whose reference is constant
    left out.
    """

    def __init__(self, method: str, label: str, params: str, summary: Mapping[str, Any], output_dir: Path) -> None:
        self.method, self.label, self.params, self.summary = method, label, params, summary
        with open(Path(output_dir) / method / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if not int(r["label_constant"])]
        self.slices = {(r["file"], int(r["slice"])): {m: float(r[f"{m}_pred"]) for m in METRICS} for r in rows}
        self.input_slices = {
            (r["file"], int(r["slice"])): {m: float(r[f"{m}_input"]) for m in METRICS}
            for r in rows
            if all(r.get(f"{m}_input") not in (None, "") for m in METRICS)
        }

    def stats(self, metric: str) -> dict[str, float]:
        return self.summary["pred"][metric]


def paired_table(model: Row, others: Sequence[Row], rmse_digits: int = 1) -> str:
    """Markdown: per-slice differences model minus each other row, over the slices both scored (RMSE shown with
    ``rmse_digits`` decimals: its units are the data's)."""
    lines = [
        "Per-slice paired differences, model minus row (mean ± std over test slices); wins: fraction of slices "
        "where the model is better.",
        "",
        "| Compared with | ΔPSNR (dB) | ΔSSIM | ΔRMSE | wins PSNR | wins SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for other in others:
        keys = sorted(model.slices.keys() & other.slices.keys())
        if not keys:
            continue
        diff = {m: [model.slices[k][m] - other.slices[k][m] for k in keys] for m in METRICS}
        cells = []
        for m, digits in (("psnr", 2), ("ssim", 4), ("rmse", rmse_digits)):
            mean, std = mean_std(diff[m])
            cells.append(f"{mean:+.{digits}f} ± {std:.{digits}f}")
        wins = [sum(d > 0 for d in diff[m]) / len(keys) for m in ("psnr", "ssim")]
        lines.append(f"| {other.label} | " + " | ".join(cells) + f" | {wins[0]:.0%} | {wins[1]:.0%} |")
    return "\n".join(lines) + "\n"


def display_slice(volume: torch.Tensor, k: int) -> np.ndarray:
    """Slice ``k`` of a ``(1, i, j, k)`` RAS volume as an image: rows ``j`` (anterior up), columns ``i``."""
    data = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
    return np.flipud(data[0, :, :, k].float().numpy().T).copy()


def detail_window(
    reference: np.ndarray, size: int, value_range: tuple[float, float] | None = None
) -> tuple[int, int, int]:
    """Top-left corner and side of the ``size x size`` window (clipped to the image) of highest gradient energy;
    with ``value_range`` ``(low, high)``, of the structure inside that range only (pixels outside it count as the
    median of those above ``low``: e.g. soft tissue, not its edges against air and bone)."""
    size = min(size, *reference.shape)
    if value_range is not None:
        low, high = value_range
        inside = (reference > low) & (reference < high)
        reference = np.where(inside, reference, np.median(reference[reference > low]))
    energy = np.zeros_like(reference, dtype=np.float64)
    energy[:-1, :] += np.diff(reference.astype(np.float64), axis=0) ** 2
    energy[:, :-1] += np.diff(reference.astype(np.float64), axis=1) ** 2
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    row, col = np.unravel_index(np.argmax(sums), sums.shape)
    return int(row), int(col), size


def panel_figure(
    panels: Sequence[tuple[str, str, np.ndarray]],
    grey_range: tuple[float, float],
    window: tuple[int, int, int],
    path: Path,
    zoom: int = 3,
) -> None:
    """
    A PNG of images side by side, each with two text lines above it and a ``zoom`` x nearest-neighbour enlargement
    of the detail ``window`` (``(top, left, size)``, marked by a rectangle) underneath.

    Args:
        panels: ``(title, subtitle, image)`` per panel, images ``(H, W)`` of one shape.
        grey_range: values shown black and white.
        window: the detail, e.g. from :func:`detail_window`.
        path: where the PNG goes (its folder is created).
        zoom: enlargement of the detail.
    """
    from PIL import Image, ImageDraw  # noqa: PLC0415 - only the figures need Pillow

    low, high = grey_range
    top, left, size = window
    h, w = panels[0][2].shape
    width = max(w, size * zoom)
    label_h = 26
    canvas = Image.new("L", ((width + 4) * len(panels), label_h + h + 4 + size * zoom), 0)
    draw = ImageDraw.Draw(canvas)
    for i, (title, subtitle, image) in enumerate(panels):
        grey = (np.clip((image - low) / ((high - low) or 1.0), 0, 1) * 255).round().astype(np.uint8)
        x0 = i * (width + 4)
        canvas.paste(Image.fromarray(grey), (x0, label_h))
        crop = Image.fromarray(grey[top : top + size, left : left + size])
        canvas.paste(crop.resize((size * zoom, size * zoom), Image.NEAREST), (x0, label_h + h + 4))
        draw.rectangle((x0 + left, label_h + top, x0 + left + size - 1, label_h + top + size - 1), outline=255)
        fits = max(8, (width - 4) // 7)  # characters of Pillow's default bitmap font (about 6 pixels wide each)
        draw.text((x0 + 2, 1), title[:fits], fill=255)
        if subtitle:
            draw.text((x0 + 2, 13), subtitle[:fits], fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
