"""scripts/ct_restored_figure.py: the slice of median PSNR among a scanner's slices (or the one asked for), one panel
per row between the input and the reference, a PNG; a row folder without metrics.csv is refused by argparse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_rwkv.data import write_nifti
from tests.scripts import load_script

AFFINE = np.diag([-1.0, 1.0, 2.0, 1.0])


def _data(root: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    for kind in ("low", "full"):
        volume = rng.normal(40, 30, (48, 40, 5)).astype(np.float32)
        write_nifti(volume, root / "shifted" / "test" / kind / "head.nii.gz", AFFINE)
    slices = {"test": {"head": ["soft", "sharp", "soft", "sharp", "sharp"]}}
    (root / "datalist_shifted.json").write_text(json.dumps({"slices": slices}))
    row = root / "row"
    write_nifti(rng.normal(40, 5, (48, 40, 5)).astype(np.float32), row / "images" / "head_restored.nii.gz", AFFINE)
    psnr = [30.0, 25.0, 31.0, 27.0, 26.0]  # sharp slices 1, 3, 4: median PSNR at slice 4
    with open(row / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "slice", "psnr_pred"])
        writer.writerows(["head", k, v] for k, v in enumerate(psnr))
    return root, row


def test_median_slice_of_a_scanner_and_one_panel_per_row(tmp_path: Path, seed: int, capsys) -> None:
    script = load_script("ct_restored_figure")
    data, row = _data(tmp_path, np.random.default_rng(seed))
    out = tmp_path / "figure.png"
    args = ["--data-dir", str(data), "--file", "head", "--row", f"a={row}", "--row", f"b={row}", "--out", str(out)]
    assert script.main([*args, "--scanner", "sharp", "--detail", "16"]) == 0
    assert capsys.readouterr().out.strip().endswith("head slice 4")
    width, height = Image.open(out).size
    assert width == 4 * (48 + 4) and height > 40  # input, two rows, reference: columns i, 48 pixels
    assert script.main([*args, "--slice", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("head slice 2")


def test_a_row_without_metrics_is_refused(tmp_path: Path) -> None:
    script = load_script("ct_restored_figure")
    with pytest.raises(SystemExit):
        script.main(["--file", "head", "--row", f"a={tmp_path}", "--out", str(tmp_path / "f.png")])
