"""scripts/mri_baselines.py on a tiny synthetic MRI data folder: rows, tuning, reuse, model row, figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_rwkv.data import write_nifti
from tests.bundles.utils import tiny_inference_bundle
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "restore_rwkv_mri_sr"
#: odd and even sizes, non-square slices; three slices per slab.
SOURCES = {"colin1mm": (45, 52), "colin05mm": (50, 44), "mni152": (40, 40)}


@pytest.fixture(scope="module")
def mri() -> object:
    return load_script("mri_baselines")


def _dataset(folder: Path, seed: int) -> Path:
    """A folder shaped like scripts/prepare_mri_data.py's: smooth random slabs in [0, 4095] and split.json."""
    rng = np.random.default_rng(seed)
    files, ranges = {}, {}
    for source, shape in SOURCES.items():
        ranges[source] = {"shape": [*shape, 9]}
        for index, split in enumerate(("train_0", "val", "test")):
            volume = ndimage.gaussian_filter(rng.random((*shape, 3)), (1.5, 1.5, 0))
            volume = (volume - volume.min()) / (volume.max() - volume.min()) * 4095
            name = f"{source}_{split}.nii.gz"
            write_nifti(volume.astype(np.float32), folder / name, np.diag([1.0, 1.0, 1.0, 1.0]))
            files[name] = "0" * 64
            ranges[source][split] = [3 * index, 3 * index + 3]
    (folder / "split.json").write_text(json.dumps({"files": files, "slabs_index_ranges_along_axis_2": ranges}))
    return folder


@pytest.mark.parametrize("shape", [(32, 32), (45, 52), (181, 217), (7, 6)])
def test_bicubic_keeps_a_constant(mri, shape: tuple[int, int]) -> None:
    const = torch.full((2, 1, *shape), 1234.5, dtype=torch.float64)
    torch.testing.assert_close(mri.LowResolutionBicubic(4.0)(const), const, rtol=0, atol=1e-9)
    volume = torch.full((1, *shape, 3), 4095.0)
    restorer = mri.SliceFilterRestorer(mri.LowResolutionBicubic(4.0), {})
    torch.testing.assert_close(restorer(volume), volume, rtol=1e-5, atol=0)  # float32 FFTs


@pytest.mark.parametrize("shape", [(64, 48), (45, 52)])
def test_bicubic_low_resolution_voxel_centres(mri, shape: tuple[int, int]) -> None:
    """Small-matrix voxel m is the band-limited image at fine coordinate (m + 0.5) H / kh - 0.5."""
    h, w = shape
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")

    def image(yy, xx):
        return 3 + np.cos(2 * np.pi * 2 * yy / h + 0.3) + np.sin(2 * np.pi * 3 * xx / w)

    module = mri.LowResolutionBicubic(4.0)
    small = module.low_resolution(torch.from_numpy(image(y, x))[None, None])[0, 0].numpy()
    kh, kw = small.shape
    yc = (np.arange(kh) + 0.5) * h / kh - 0.5
    xc = (np.arange(kw) + 0.5) * w / kw - 0.5
    np.testing.assert_allclose(small, image(*np.meshgrid(yc, xc, indexing="ij")), rtol=0, atol=1e-9)


def test_main_rows_tuning_reuse_model_and_figure(mri, tmp_path: Path, seed: int, capsys) -> None:
    data = _dataset(tmp_path / "data", seed)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", BUNDLE)
    out, reports, figure = tmp_path / "table.md", tmp_path / "runs", tmp_path / "figure.png"
    common = ["--data-dir", str(data), "--out", str(out), "--output-dir", str(reports), "--threads", "1"]
    assert mri.main([*common, "--oracle", "--tv-iter", "20", "--figure", str(figure)]) == 0

    text = out.read_text()
    labels = [
        "zero-filled input",
        "bicubic",
        "k-space apodisation (Tukey)",
        "total variation",
        "TV reconstruction (data-consistent)",
        "k-space apodisation (Tukey) (oracle: tuned on test)",
        "total variation (oracle: tuned on test)",
        "TV reconstruction (data-consistent) (oracle: tuned on test)",
    ]
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in table_rows] == labels
    assert all(f"PSNR {s}" in text for s in SOURCES)
    assert "paired differences" not in text
    tuned = ("apodization", "tv", "tv_recon")
    for method in ("zero_filled", "bicubic", *tuned, *(f"{m}_oracle" for m in tuned)):
        summary = json.loads((reports / method / "summary.json").read_text())
        assert summary["slices_used"] == 3 * len(SOURCES) and not summary["errors"]
        assert math.isfinite(summary["pred"]["psnr"]["mean"])
    # the zero-filled row is the degraded input; bicubic was fed the clean slabs (its input columns: clean vs clean)
    zero = json.loads((reports / "zero_filled" / "summary.json").read_text())
    assert zero["pred"]["psnr"] == pytest.approx(zero["input"]["psnr"], rel=1e-9)
    assert json.loads((reports / "bicubic" / "summary.json").read_text())["input"]["rmse"]["mean"] == 0.0

    bounds = {"apodization": (0.0, 1.0), "tv": (0.0, math.inf), "tv_recon": (0.0, math.inf)}
    for method, name in (("apodization", "alpha"), ("tv", "weight"), ("tv_recon", "weight")):
        for folder in (method, f"{method}_oracle"):
            tuning = json.loads((reports / folder / "tuning.json").read_text())
            tried = [t["params"][name] for t in tuning["tried"]]
            best = tuning["best"][name]
            assert best in tried and min(tried) <= best <= max(tried)
            assert bounds[method][0] <= best <= bounds[method][1]
            assert tuning["tried"][0]["params"] == tuning["best"]  # the best score of all that were tried
            assert set(tuning["grid"][name]) <= set(tried)
            summary = json.loads((reports / folder / "summary.json").read_text())
            assert summary["restorer"]["params"] == tuning["best"]
    assert figure.stat().st_size > 0
    # the TV reconstruction: both starts tried on every grid weight, its fixed settings recorded
    tuning = json.loads((reports / "tv_recon" / "tuning.json").read_text())
    tried = {(t["params"]["weight"], t["params"]["start"]) for t in tuning["tried"]}
    assert {(w, s) for w in tuning["grid"]["weight"] for s in ("zero_filled", "input")} <= tried
    assert {(t["params"]["n_iter"], t["params"]["tv_iter"]) for t in tuning["tried"]} == {(10, 5)}
    summary = json.loads((reports / "tv_recon" / "summary.json").read_text())
    assert summary["restorer"]["settings"]["recon_iter"] == 10 and summary["restorer"]["settings"]["recon_tv_iter"] == 5
    assert "TV reconstruction: iterated TV step" in text

    # second run: every classical row reused, the model scored and compared per slice
    capsys.readouterr()
    model = ["--model-weights", str(weights), "--bundle", str(bundle), "--tv-iter", "20"]
    assert mri.main([*common, *model, "--figure", str(figure), "--override", "overlap=0.5"]) == 0
    printed = capsys.readouterr().out
    assert all(f"{m}: reusing" in printed for m in ("zero_filled", "bicubic", "apodization", "tv", "tv_recon"))
    assert json.loads((reports / "model" / "summary.json").read_text())["restorer"]["overlap"] == 0.5
    text = out.read_text()
    assert "| Restore-RWKV (bundle) |" in text and "paired differences" in text
    paired = text.split("paired differences")[1]
    assert all(f"| {label} |" in paired for label in labels[:5])

    # another TV setting is not mixed with the reports made with the old one
    assert mri.main([*common, "--methods", "tv", "--tv-iter", "10"]) == 0
    assert "made with other settings; recomputing" in capsys.readouterr().out
    assert json.loads((reports / "tv" / "summary.json").read_text())["restorer"]["settings"]["tv_iter"] == 10
    assert mri.main([*common, "--methods", "tv_recon", "--recon-iter", "3"]) == 0
    assert "tv_recon: " + str(reports / "tv_recon" / "summary.json") + " was made with other settings" in (
        capsys.readouterr().out
    )
    tuning = json.loads((reports / "tv_recon" / "tuning.json").read_text())
    assert {t["params"]["n_iter"] for t in tuning["tried"]} == {3}

    # another factor: no report of x4 is reused, degradation, model row and table follow --factor
    assert mri.main([*common, "--methods", "tv", "--tv-iter", "10", "--factor", "2", *model[:4]]) == 0
    printed = capsys.readouterr().out
    assert all(
        f"{m}: {reports / m / 'summary.json'} was made with other settings" in printed for m in ("zero_filled", "tv")
    )
    for method in ("zero_filled", "tv", "model"):
        summary = json.loads((reports / method / "summary.json").read_text())
        assert summary["protocol"]["degradation"] == {"name": "KSpaceTruncate", "factor": 2.0, "spatial_axes": [0, 1]}
    zero2 = json.loads((reports / "zero_filled" / "summary.json").read_text())
    assert zero2["input"]["psnr"]["mean"] > zero["input"]["psnr"]["mean"]  # half the k-space lost, not 15/16
    assert "MRI super-resolution x2 (central 1/2 x 1/2 of k-space" in out.read_text()
