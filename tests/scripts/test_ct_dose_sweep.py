"""scripts/ct_dose_sweep.py on a tiny CT volume through a tiny bundle: one row per level, the input's metrics the
bundle protocol's, the model's per-slice gain over the input, the report written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.apps import find_inputs, load_bundle_config, read_volume, volume_slice_metrics, volume_slices
from monai_rwkv.data import write_nifti
from monai_rwkv.metrics import flat_region_rmse
from monai_rwkv.networks.nets import GaussianDenoiser
from monai_rwkv.transforms import LowDoseCT
from tests.bundles.utils import CT_BUNDLE, phantom_ct_volume, tiny_inference_bundle
from tests.scripts import load_script


def mean_flat_rmse(pred: torch.Tensor, label: torch.Tensor) -> float:
    """Mean over slices of the flat-region RMSE of two ``(1, i, j, k)`` volumes (window [-160, 240] HU, 20 HU/px)."""
    slices = [volume_slices(v)[:, 0] for v in (pred, label)]
    return float(np.nanmean(flat_region_rmse(*slices, (-160.0, 240.0), 20.0).numpy()))


def sweep_inputs(tmp_path: Path, seed: int) -> tuple[Path, Path, Path]:
    """A 3-slice phantom head as the test volume of a data folder, and a tiny CT bundle: (data, bundle, weights)."""
    data = tmp_path / "ct"
    volume = phantom_ct_volume(np.random.default_rng(seed), 3, size=32)
    write_nifti(volume, data / "test.nii.gz", np.diag([0.8, 0.8, 3.0, 1.0]), dtype="int16")
    (data / "split.json").write_text(json.dumps({"splits": {"test": {"file": "test.nii.gz"}}}))
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    return data, bundle, weights


def test_rows_per_level_and_gain_over_the_input(tmp_path: Path, seed: int, capsys) -> None:
    script = load_script("ct_dose_sweep")
    data, bundle, weights = sweep_inputs(tmp_path, seed)
    out = tmp_path / "sweep.md"
    argv = ["--data-dir", str(data), "--bundle", str(bundle), "--model", f"tiny={weights}", "--levels", "0.05,2"]
    assert script.main([*argv, "--seed", str(seed), "--threads", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 0.05") or line.startswith("| 2 ")]
    assert len(rows) == 2
    clean = read_volume(find_inputs(data / "test.nii.gz")[0])
    overrides = {"weights": str(weights), "device": "cpu", "progress": False}
    restorer = load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("restorer")
    for row, level in zip(rows, (0.05, 2.0)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        low = LowDoseCT(1.0, seed, incident_photons=2e6 * level)(clean.clone())
        expected = volume_slice_metrics(low, clean, (-160.0, 240.0))["psnr"]
        assert cells[1].startswith(f"{float(torch.mean(expected)):.2f} / ")  # the input row is the protocol's
        assert cells[1].endswith(f" / {mean_flat_rmse(low, clean):.1f}")  # and its flat-region residual
        model_psnr, _, model_flat = (float(v) for v in cells[2].split(" / "))
        assert abs(model_flat - mean_flat_rmse(restorer(low.clone()), clean)) <= 0.051  # the model's flat residual
        gain = float(cells[3].split(" +- ")[0])
        assert abs(model_psnr - float(torch.mean(expected)) - gain) < 0.011  # the gain is the model's over the input
        assert cells[4].endswith("%")
    psnr_in = [float(r.split("|")[2].split("/")[0]) for r in rows]
    assert psnr_in[1] > psnr_in[0] + 2  # 40 times the photons: a cleaner input
    assert capsys.readouterr().out.strip() == out.read_text().strip()


def test_oracle_filter_is_tuned_on_each_level_and_compared_per_slice(tmp_path: Path, seed: int, capsys) -> None:
    script = load_script("ct_dose_sweep")
    data, bundle, weights = sweep_inputs(tmp_path, seed)
    argv = ["--data-dir", str(data), "--bundle", str(bundle), "--model", f"tiny={weights}", "--levels", "0.05"]
    assert script.main([*argv, "--seed", str(seed), "--threads", "1", "--oracle", "gaussian"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "Gaussian smoothing (oracle) PSNR / SSIM / flat RMSE (parameters)" in lines[2]
    assert "tiny minus Gaussian smoothing (oracle) (dB, better)" in lines[2]
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert len(cells) == len(lines[2].strip("|").split("|")) == 7
    scores, params = cells[5].split(" (")
    oracle_psnr = float(scores.split(" / ")[0])
    sigma = float(params.removeprefix("sigma ").removesuffix(" px)"))
    clean = read_volume(find_inputs(data / "test.nii.gz")[0])
    low = LowDoseCT(1.0, seed, incident_photons=2e6 * 0.05)(clean.clone())

    def gaussian_psnr(s: float) -> float:
        slices = GaussianDenoiser(s)(volume_slices(low))
        restored = slices[:, 0].permute(1, 2, 0)[None]
        return float(torch.mean(volume_slice_metrics(restored, clean, (-160.0, 240.0))["psnr"]))

    assert abs(gaussian_psnr(sigma) - oracle_psnr) < 0.011  # the row is the reported parameter's
    for grid_sigma in (0.5, 1.0, 2.0, 3.0):  # tuned on the answer: no grid point does better
        assert gaussian_psnr(grid_sigma) <= oracle_psnr + 0.005
    model_psnr = float(cells[2].split(" / ")[0])
    lead, better = cells[6].split(" (")
    assert abs(float(lead.split(" +- ")[0]) - (model_psnr - oracle_psnr)) < 0.011
    assert better.endswith("%)")


def test_override_reaches_the_model_rows(tmp_path: Path, seed: int, capsys) -> None:
    """``--override strength=0`` (keep none of the network's change): every model row is the input's."""
    script = load_script("ct_dose_sweep")
    data, bundle, weights = sweep_inputs(tmp_path, seed)
    out = tmp_path / "sweep.md"
    argv = ["--data-dir", str(data), "--bundle", str(bundle), "--model", f"tiny={weights}", "--levels", "0.05,2"]
    assert script.main([*argv, "--override", "strength=0", "--threads", "1", "--out", str(out)]) == 0
    report = out.read_text()
    assert 'Model settings: {"strength": 0}.' in report
    rows = [line for line in report.splitlines() if line.startswith("| 0.05") or line.startswith("| 2 ")]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        gain, spread = (float(v) for v in cells[3].split(" +- "))
        assert cells[2] == cells[1] and gain == 0.0 and spread == 0.0  # "+0.00" or "-0.00": the round trip's rounding
    capsys.readouterr()
