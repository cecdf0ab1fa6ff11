#!/usr/bin/env python
"""
Figure of the all-in-one bundle: one row per task (CT, MRI x4, PET), each with the degraded test slice, the task
bundle's own weights, the all-in-one weights (both through the task bundle's pipeline) and the reference, a zoomed
detail under each, and the slice's PSNR in the task's protocol window above each restored image.

Inputs are the held-out test data of the task bundles (``scripts/prepare_ct_shifted.py``,
``scripts/prepare_mri_data.py``, ``scripts/prepare_pet_phantoms.py``): the CT row shows a shifted test slice (another
scanner and anatomy than training), the MRI row a k-space-truncated test slab slice, the PET row a low-count test
phantom slice.

Usage::

    python scripts/all_in_one_figure.py --weights bundles/restore_rwkv_all_in_one/models/model.pt \\
        --out bundles/restore_rwkv_all_in_one/docs/tasks.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.apps import load_bundle_config
from monai_rwkv.apps.baselines import detail_window, display_slice, panel_figure
from monai_rwkv.data import sitk_load_imaged
from monai_rwkv.metrics import slice_metrics
from monai_rwkv.transforms import KSpaceTruncate

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
#: per task: its bundle, the protocol window (also the grey range; None: [0, 99.5th percentile of the reference]).
TASKS = {
    "ct": ("restore_rwkv_ct_denoise", (-160.0, 240.0)),
    "mri": ("restore_rwkv_mri_sr", (0.0, 4095.0)),
    "pet": ("restore_rwkv_pet_synthesis", (0.0, 20.0)),
}


def _load(path: Path) -> torch.Tensor:
    return sitk_load_imaged("image", image_only=True, ensure_channel_first=True)({"image": str(path)})["image"].float()


def task_pair(task: str, data: Path, ct_file: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(degraded, reference) test volumes ``(1, i, j, k)`` of a task and the slice shown (the middle one)."""
    if task == "ct":
        low, full = (_load(data / "ct" / "shifted" / "test" / d / ct_file) for d in ("low", "full"))
    elif task == "mri":
        full = _load(data / "mri" / "colin05mm_test.nii.gz")
        low = KSpaceTruncate(4.0, spatial_axes=(0, 1))(full)
    else:
        low, full = (_load(data / "pet" / f"{d}_test_v0.nii.gz") for d in ("low", "full"))
    return low, full, full.shape[-1] // 2


def restore(task: str, weights: Path, volume: torch.Tensor) -> torch.Tensor:
    """``volume`` through the task bundle's pipeline with ``weights``."""
    bundle = BUNDLES / TASKS[task][0]
    overrides = {"weights": str(weights), "device": "cpu", "progress": False}
    return load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("restorer")(volume)


def psnr(image: np.ndarray, reference: np.ndarray, window: tuple[float, float]) -> float:
    pred, ref = (torch.from_numpy(np.ascontiguousarray(a))[None] for a in (image, reference))
    return float(slice_metrics(pred, ref, window)["psnr"][0])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=BUNDLES / "restore_rwkv_all_in_one" / "models" / "model.pt")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--ct-file", default="head.nii.gz", help="shifted CT test volume shown")
    p.add_argument("--out", type=Path, default=Path("runs/all_in_one_tasks.png"))
    args = p.parse_args(argv)
    from PIL import Image  # noqa: PLC0415 - only the figure needs Pillow

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, (bundle, window) in TASKS.items():
            low, full, k = task_pair(task, args.data_dir, args.ct_file)
            low, full = low[..., k : k + 1], full[..., k : k + 1]  # slices are restored independently
            own = restore(task, BUNDLES / bundle / "models" / "model.pt", low.clone())
            aio = restore(task, args.weights, low.clone())
            reference = display_slice(full, 0)
            shown = [("input", low), (f"{task} bundle", own), ("all-in-one", aio)]
            scale = 2 if task == "pet" else 1  # 128 x 128 PET slices, enlarged (nearest neighbour) to be seen
            panels = []
            for title, volume in shown:
                image = display_slice(volume, 0)
                score = f"PSNR {psnr(image, reference, window):.2f} dB"
                panels.append((f"{task.upper()} {title}", score, np.kron(image, np.ones((scale, scale)))))
            reference = np.kron(reference, np.ones((scale, scale)))
            panels.append((f"{task.upper()} reference", f"slice {k}", reference))
            grey = window if task != "mri" else (0.0, float(np.percentile(reference, 99.5)))
            if task == "ct":  # the brain at the centre: the highest gradients are the couch and the skull
                size = 64
                detail = ((reference.shape[0] - size) // 2, (reference.shape[1] - size) // 2, size)
            else:
                detail = detail_window(reference, 48)
            path = Path(tmp) / f"{task}.png"
            panel_figure(panels, grey, detail, path)
            rows.append(Image.open(path).copy())
            print(f"{task}: slice {k}: " + ", ".join(f"{t} {s}" for t, s, _ in panels[:-1]))
    width = max(r.width for r in rows)
    canvas = Image.new("L", (width, sum(r.height + 6 for r in rows)), 0)
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height + 6
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
