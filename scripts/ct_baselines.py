#!/usr/bin/env python
"""Classical low-dose CT denoising baselines, tuned on validation, scored on test with the bundle's protocol.

Baselines (pure torch, :mod:`monai_rwkv.networks.nets.classical`): Gaussian smoothing, the bilateral filter and
pixel-wise non-local means. They run through exactly the pipeline of the network
(:class:`~monai_rwkv.inference.SliceWiseRestorer`: [-1024, 3072] HU -> [0, 1], filter, clip, back to HU), with the
whole slice as the sliding-window ROI so that their result does not depend on patching.

1. Tuning, on the VALIDATION split of ``scripts/prepare_ct_data.py`` (``<data-dir>/split.json``): one simulated
   low-dose scan (:class:`~monai_rwkv.transforms.LowDoseCT`, ``--dose``, seed ``--val-seed``),
   objective the mean PSNR in the CT window [-160, 240] HU over slices whose windowed label is not constant. A grid
   search, then a line search on each continuous parameter from the best grid point (multiplicative steps, going
   on while it improves, so an optimum beyond the grid's edge is still found).
2. Test, on the TEST split: :func:`~monai_rwkv.apps.evaluate.evaluate_restoration` with ``--dose`` and ``--seed`` (the
   bundle's evaluation defaults 0.25 and 0), so every method, and the low-dose input row, sees the same noisy scan.
   With ``--model-weights`` the trained network (``RestoreRWKV.from_preset(--preset)``) is scored too, with the
   bundle's inference settings (ROI 128 x 128, overlap 0.25, Gaussian blending).
3. With ``--oracle`` also rows of each baseline tuned on the test scan itself (the very noise realisation it is
   scored on): an upper bound of what the filter can do here, not a fair baseline. Worth showing because the
   validation split (upper brain to vertex) holds far less soft tissue than the test split, so validation-tuned
   parameters favour edges over noise removal (Gaussian smoothing is tuned to almost nothing).

Outputs: ``<output-dir>/<method>/{summary.json,metrics.csv}`` (per-slice CSV and summary of evaluate_restoration),
``<output-dir>/<method>/tuning.json`` (every parameter set tried and its validation PSNR) and the markdown table
``--out`` (also printed): method, parameters, PSNR / SSIM / RMSE as mean +- std over the test slices.

A baseline whose ``summary.json`` already exists (same dose and seed) is reused, not recomputed, unless
``--overwrite``: adding the model row later only evaluates the model (which is always recomputed).

Example::

    python scripts/ct_baselines.py --out runs/ct_baselines.md --output-dir runs/ct_baselines --threads 1
    python scripts/ct_baselines.py --out runs/ct_baselines.md --output-dir runs/ct_baselines \\
        --model-weights runs/ct_light/model.pt --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_rwkv.apps.evaluate import evaluate_restoration, volume_slice_metrics
from monai_rwkv.apps.restore import find_inputs, read_volume
from monai_rwkv.inference import CT_INTENSITY_RANGE, SliceWiseRestorer, load_network
from monai_rwkv.metrics import CT_EVAL_WINDOW
from monai_rwkv.networks.nets import BilateralDenoiser, GaussianDenoiser, NonLocalMeansDenoiser, RestoreRWKV
from monai_rwkv.transforms import LowDoseCT

#: one HU in the restorers' normalised units.
HU = 1.0 / (CT_INTENSITY_RANGE[1] - CT_INTENSITY_RANGE[0])
#: the bundle's inference settings (bundles/restore_rwkv_ct_denoise/configs/inference.json) for the model row.
MODEL_ROI, MODEL_OVERLAP, MODEL_SW_BATCH = (128, 128), 0.25, 4


class Baseline:
    """A tunable classical denoiser: its grid, which parameters are continuous, and how to build it."""

    def __init__(
        self,
        name: str,
        label: str,
        build: Callable[..., nn.Module],
        grid: Mapping[str, Sequence[Any]],
        continuous: Sequence[str],
        describe: Callable[[Mapping[str, Any]], str],
    ) -> None:
        self.name, self.label, self.build, self.grid = name, label, build, dict(grid)
        self.continuous, self.describe = tuple(continuous), describe


# Intensity parameters are tuned in HU (the noise of the quarter-dose scans is about 20 HU in soft tissue) and
# converted to the normalised units of the filters (x / 4096).
BASELINES = {
    "gaussian": Baseline(
        "gaussian",
        "Gaussian smoothing",
        lambda sigma: GaussianDenoiser(sigma),
        {"sigma": [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]},
        ["sigma"],
        lambda p: f"sigma = {p['sigma']:.3g} px",
    ),
    "bilateral": Baseline(
        "bilateral",
        "Bilateral filter",
        lambda sigma_spatial, sigma_range_hu: BilateralDenoiser(sigma_spatial, sigma_range_hu * HU),
        {"sigma_spatial": [1.0, 1.5, 2.0, 3.0], "sigma_range_hu": [10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0]},
        ["sigma_spatial", "sigma_range_hu"],
        lambda p: (
            f"sigma_spatial = {p['sigma_spatial']:.3g} px, sigma_range = {p['sigma_range_hu']:.3g} HU, "
            f"radius = {math.ceil(2 * p['sigma_spatial'])} px"
        ),
    ),
    "nlm": Baseline(
        "nlm",
        "Non-local means",
        lambda h_hu, patch_radius, search_radius: NonLocalMeansDenoiser(h_hu * HU, patch_radius, search_radius),
        {"h_hu": [10.0, 14.0, 20.0, 28.0, 40.0, 56.0], "patch_radius": [1, 2], "search_radius": [5]},
        ["h_hu"],
        lambda p: (
            f"h = {p['h_hu']:.3g} HU, patch {2 * p['patch_radius'] + 1}x{2 * p['patch_radius'] + 1}, "
            f"search {2 * p['search_radius'] + 1}x{2 * p['search_radius'] + 1}"
        ),
    ),
}


def split_file(data_dir: Path, split: str) -> Path:
    """The NIfTI file of ``split`` listed in ``<data_dir>/split.json``."""
    return data_dir / json.loads((data_dir / "split.json").read_text())["splits"][split]["file"]


def read_clean(path: Path):
    """``(1, i, j, k)`` HU MetaTensor of a split file."""
    return read_volume(find_inputs(path)[0])


def slice_roi(volume: torch.Tensor) -> tuple[int, int]:
    """The whole axial slice as restorer ROI: ``(rows, columns) = (j, i)``."""
    return int(volume.shape[2]), int(volume.shape[1])


def whole_slice_restorer(module: nn.Module, roi: tuple[int, int], device: str) -> SliceWiseRestorer:
    return SliceWiseRestorer(module, roi_size=roi, overlap=0.0, sw_batch_size=1, device=device, progress=False)


class Objective:
    """Mean windowed PSNR over the non-constant slices of the validation split, memoised per parameter set."""

    def __init__(self, baseline: Baseline, clean, low, device: str) -> None:
        self.baseline, self.clean, self.low, self.device = baseline, clean, low, device
        windowed = clean.as_tensor().clamp(*CT_EVAL_WINDOW)
        self.keep = windowed.amax(dim=(0, 1, 2)) > windowed.amin(dim=(0, 1, 2))  # (k,)
        self.roi = slice_roi(clean)
        self.results: dict[tuple, dict[str, float]] = {}

    def __call__(self, params: Mapping[str, Any]) -> float:
        key = tuple(sorted(params.items()))
        if key not in self.results:
            t0 = time.time()
            restorer = whole_slice_restorer(self.baseline.build(**params), self.roi, self.device)
            metrics = volume_slice_metrics(restorer(self.low), self.clean, CT_EVAL_WINDOW)
            self.results[key] = {m: float(v[self.keep].mean()) for m, v in metrics.items()}
            psnr = self.results[key]["psnr"]
            print(f"  {self.baseline.name} {dict(params)}: PSNR {psnr:.3f} dB ({time.time() - t0:.1f} s)", flush=True)
        return self.results[key]["psnr"]

    def records(self) -> list[dict[str, Any]]:
        return [{"params": dict(k), **v} for k, v in sorted(self.results.items(), key=lambda kv: -kv[1]["psnr"])]


def tune(baseline: Baseline, objective: Objective, max_moves: int = 6) -> dict[str, Any]:
    """Grid search, then a multiplicative line search on each continuous parameter (two step sizes)."""
    names = list(baseline.grid)
    grid = [dict(zip(names, values)) for values in itertools.product(*(baseline.grid[n] for n in names))]
    best = max(grid, key=objective)
    for name in baseline.continuous:
        values = sorted(baseline.grid[name])
        ratio = max(b / a for a, b in zip(values, values[1:])) if len(values) > 1 else 1.5
        for step in (ratio, math.sqrt(ratio), ratio**0.25):
            for direction in (step, 1 / step):
                for _ in range(max_moves):
                    candidate = {**best, name: round(best[name] * direction, 4)}
                    if objective(candidate) <= objective(best):
                        break
                    best = candidate
    return best


def summary_path(output_dir: Path, method: str) -> Path:
    return output_dir / method / "summary.json"


def same_scores(a: dict[str, Any], b: dict[str, Any], rtol: float = 1e-6) -> bool:
    """Whether two ``{metric: {mean, std}}`` score sets agree (to float rounding across thread counts)."""
    return a.keys() == b.keys() and all(
        math.isclose(a[m][s], b[m][s], rel_tol=rtol, abs_tol=1e-9) for m in a for s in ("mean", "std")
    )


def reusable(output_dir: Path, method: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The existing summary of ``method`` when it matches the protocol and ``--overwrite`` is not set."""
    path = summary_path(output_dir, method)
    if args.overwrite or not path.exists():
        return None
    summary = json.loads(path.read_text())
    protocol = summary["protocol"]
    if protocol.get("dose_fraction") != args.dose or protocol.get("seed") != args.seed:
        raise SystemExit(f"{path}: made with another dose or seed ({protocol}); use --overwrite to recompute")
    print(f"{method}: reusing {path}")
    return summary


def tuning_set(args: argparse.Namespace, split: str) -> dict[str, Any]:
    """Clean volume and its simulated low-dose scan used for tuning: ``val`` (seed ``--val-seed``) or ``test``
    (seed ``--seed``: exactly the scan of the test evaluation, for the oracle rows)."""
    path = split_file(args.data_dir, split)
    seed = args.val_seed if split == "val" else args.seed
    clean = read_clean(path)
    return {
        "split": split,
        "file": path,
        "seed": seed,
        "clean": clean,
        "low": LowDoseCT(args.dose, seed)(clean),
    }


def run_baseline(
    baseline: Baseline, args: argparse.Namespace, tuning: dict[str, Any], test_file: Path, name: str, label: str
) -> dict[str, Any]:
    """Tune ``baseline`` on ``tuning``, evaluate it on test: the summary (parameters in ``model.version``)."""
    out = args.output_dir / name
    t0 = time.time()
    objective = Objective(baseline, tuning["clean"], tuning["low"], args.device)
    best = tune(baseline, objective)
    description = baseline.describe(best)
    print(f"{name}: tuned {best} -> {tuning['split']} PSNR {objective(best):.3f} dB ({time.time() - t0:.0f} s)")
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "method": baseline.name,
        "objective": f"mean PSNR (dB) in the CT window over non-constant {tuning['split']} slices",
        "tuning_scan": {
            "split": tuning["split"],
            "file": str(tuning["file"]),
            "dose_fraction": args.dose,
            "seed": tuning["seed"],
        },
        "grid": baseline.grid,
        "best": best,
        "best_metrics": objective.results[tuple(sorted(best.items()))],
        "tried": objective.records(),
    }
    (out / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
    restorer = whole_slice_restorer(baseline.build(**best), slice_roi(tuning["clean"]), args.device)
    return evaluate_restoration(
        restorer,
        test_file,
        out,
        model_name=label,
        model_version=description,
        degradation=LowDoseCT(args.dose, args.seed),
        window=CT_EVAL_WINDOW,
        overwrite=True,
    )


def run_model(args: argparse.Namespace, test_file: Path) -> dict[str, Any]:
    """Evaluate the trained network on test (always recomputed: the weights file may have changed)."""
    network = load_network(RestoreRWKV.from_preset(args.preset), args.model_weights, device=args.device)
    restorer = SliceWiseRestorer(
        network,
        roi_size=MODEL_ROI,
        overlap=MODEL_OVERLAP,
        sw_batch_size=MODEL_SW_BATCH,
        device=args.device,
        progress=False,
    )
    return evaluate_restoration(
        restorer,
        test_file,
        args.output_dir / "model",
        model_name=f"Restore-RWKV ({args.preset})",
        model_version=str(args.model_weights),
        degradation=LowDoseCT(args.dose, args.seed),
        window=CT_EVAL_WINDOW,
        overwrite=True,
    )


def fmt(stats: Mapping[str, float], digits: int) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def table(rows: Sequence[tuple[str, str, Mapping[str, Any]]], first: Mapping[str, Any], args) -> str:
    """Markdown table: the low-dose input row, then one row per method (``pred`` statistics)."""
    lines = [
        f"Low-dose CT denoising, test split ({first['slices_used']} slices used, "
        f"{first['slices_excluded_constant_label']} excluded: constant windowed label), simulated dose "
        f"{args.dose:g}, seed {args.seed}; metrics in the window [{CT_EVAL_WINDOW[0]:g}, {CT_EVAL_WINDOW[1]:g}] HU, "
        "mean ± std over slices. Baselines tuned on the validation split (seed "
        f"{args.val_seed}), run on the whole slice"
        + ("; oracle rows: tuned on this very test scan (upper bound)." if args.oracle else "."),
        "",
        "| Method | Parameters | PSNR (dB) | SSIM | RMSE (HU) |",
        "|---|---|---|---|---|",
    ]
    cells = [("Low-dose input", "", first["input"])] + [(label, params, s["pred"]) for label, params, s in rows]
    for label, params, stats in cells:
        lines.append(
            f"| {label} | {params} | {fmt(stats['psnr'], 2)} | {fmt(stats['ssim'], 4)} | {fmt(stats['rmse'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/ct"), help="output of scripts/prepare_ct_data.py")
    p.add_argument("--out", type=Path, default=Path("runs/ct_baselines.md"), help="markdown table")
    p.add_argument("--output-dir", type=Path, default=Path("runs/ct_baselines"), help="per-method reports")
    p.add_argument("--methods", default=",".join(BASELINES), help=f"comma-separated subset of {','.join(BASELINES)}")
    p.add_argument("--model-weights", type=Path, default=None, help="also score this RestoreRWKV state dict")
    p.add_argument("--preset", default="light", help="RestoreRWKV preset of --model-weights")
    p.add_argument("--dose", type=float, default=0.25, help="simulated dose fraction (validation and test)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the test scan (bundle evaluation default)")
    p.add_argument("--val-seed", type=int, default=1, help="noise seed of the validation scan used for tuning")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--oracle",
        action="store_true",
        help="also rows of each baseline tuned on the test scan itself (an upper bound, not a fair baseline)",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute methods whose reports exist")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(BASELINES))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {sorted(BASELINES)}")
    if args.model_weights is not None and not args.model_weights.is_file():
        raise SystemExit(f"{args.model_weights}: model weights not found")

    test_file = split_file(args.data_dir, "test")
    scans: dict[str, dict[str, Any]] = {}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for split in ("val", "test") if args.oracle else ("val",):
        for method in methods:
            name = method if split == "val" else f"{method}_oracle"
            label = BASELINES[method].label + ("" if split == "val" else " (oracle: tuned on test)")
            summary = reusable(args.output_dir, name, args)
            if summary is None:
                if split not in scans:
                    scans[split] = tuning_set(args, split)
                summary = run_baseline(BASELINES[method], args, scans[split], test_file, name, label)
            rows.append((summary["model"]["name"], summary["model"]["version"], summary))
    if args.model_weights is not None:
        summary = run_model(args, test_file)
        rows.append((summary["model"]["name"], f"weights {args.model_weights}", summary))
    if not rows:
        raise SystemExit("nothing to evaluate")
    for _, _, s in rows:
        if s["errors"]:
            raise SystemExit(f"{s['model']['name']}: evaluation errors {s['errors']}")
        if not same_scores(s["input"], rows[0][2]["input"]):
            raise SystemExit("the methods saw different low-dose inputs (reports from another run?); use --overwrite")
    text = table(rows, rows[0][2], args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    print(text)
    if args.model_weights is not None:
        model = rows[-1][2]["pred"]
        for oracle in (False, True) if args.oracle else (False,):
            baselines = [s["pred"] for label, _, s in rows[:-1] if ("(oracle" in label) == oracle]
            kind = "oracle (test-tuned) baseline" if oracle else "baseline (tuned on validation)"
            if not baselines:
                print(f"no {kind} rows to compare the model with")
                continue
            ok = all(model[m]["mean"] > b[m]["mean"] for b in baselines for m in ("psnr", "ssim"))
            print(f"model beats every {kind} on mean PSNR and SSIM: {'yes' if ok else 'NO'}")
    print(f"wrote {args.out} and the reports under {args.output_dir}")


if __name__ == "__main__":
    sys.exit(main())
