"""scripts/pet_baselines.py on a tiny phantom data set (scripts/prepare_pet_phantoms.py on synthetic tissue maps):
rows, tuning, the model row through a tiny bundle, paired differences, lesion and noise table, reuse, figure."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tests.bundles.utils import tiny_inference_bundle
from tests.scripts import load_script
from tests.scripts.test_prepare_pet_phantoms import write_maps

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "restore_rwkv_pet_synthesis"


def test_main_rows_tuning_model_lesions_reuse_and_figure(tmp_path: Path, seed: int, capsys) -> None:
    prep, baselines = load_script("prepare_pet_phantoms"), load_script("pet_baselines")
    data = tmp_path / "pet"
    maps = write_maps(tmp_path / "maps", seed)
    argv = ["--maps-dir", str(maps), "--out", str(data), "--fov", "32", "--seed", str(seed)]
    assert prep.main([*argv, "--variants", "2", "--train-variants", "1", "--train-scans", "1"]) == 0
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", BUNDLE)
    out, reports, figure = tmp_path / "table.md", tmp_path / "runs", tmp_path / "figure.png"
    common = ["--data-dir", str(data), "--out", str(out), "--output-dir", str(reports), "--threads", "1"]
    model = ["--model-weights", str(weights), "--bundle", str(bundle), "--override", "self_ensemble=true"]
    assert baselines.main([*common, "--oracle", *model, "--figure", str(figure)]) == 0
    assert json.loads((reports / "model" / "summary.json").read_text())["restorer"]["self_ensemble"] is True

    text = out.read_text()
    labels = [
        "low-count input",
        "Gaussian post-filter",
        "non-local means",
        "Gaussian post-filter (oracle: tuned on test)",
        "non-local means (oracle: tuned on test)",
        "Restore-RWKV (bundle)",
    ]
    first_table = text.split("\n\n")[1].splitlines()[2:]
    assert [line.split(" | ")[0].removeprefix("| ") for line in first_table] == labels
    assert "paired differences" in text and "| Compared with |" in text
    assert "full-count scan (reference)" in text and "| phantom |" in text
    for method in ("low_count", "gaussian", "nlm", "gaussian_oracle", "nlm_oracle", "model"):
        summary = json.loads((reports / method / "summary.json").read_text())
        assert summary["protocol"]["degraded_input"] == "real" and summary["protocol"]["window"] == [0.0, 20.0]
        assert summary["slices_used"] > 0 and not summary["errors"]
        assert math.isfinite(summary["pred"]["psnr"]["mean"])
    low = json.loads((reports / "low_count" / "summary.json").read_text())
    assert low["pred"]["psnr"] == pytest.approx(low["input"]["psnr"], rel=1e-9)  # the input row is the input
    for method, name in (("gaussian", "fwhm_mm"), ("nlm", "h")):
        tuning = json.loads((reports / method / "tuning.json").read_text())
        tried = [t["params"][name] for t in tuning["tried"]]
        assert tuning["best"][name] in tried and tuning["tried"][0]["params"] == tuning["best"]
    for method in ("gaussian", "nlm"):  # the oracle row is the best of its search on the test scans
        tuned = json.loads((reports / method / "summary.json").read_text())["pred"]["psnr"]["mean"]
        oracle = json.loads((reports / f"{method}_oracle" / "summary.json").read_text())["pred"]["psnr"]["mean"]
        search = json.loads((reports / f"{method}_oracle" / "tuning.json").read_text())
        assert oracle == pytest.approx(max(t["psnr"] for t in search["tried"]), rel=1e-6)
        best = json.loads((reports / method / "tuning.json").read_text())["best"]
        if best in [t["params"] for t in search["tried"]]:
            assert oracle >= tuned - 1e-6
    with open(reports / "lesions.csv", newline="") as f:
        lesions = list(csv.DictReader(f))
    phantom = [r for r in lesions if r["method"] == "phantom"]
    assert all(float(r["recovery"]) == pytest.approx(1.0) for r in phantom)  # the phantom recovers itself exactly
    if phantom:  # every image is scored on the same lesions
        methods = {"phantom", "full_count", "low_count", "gaussian", "nlm", "gaussian_oracle", "nlm_oracle", "model"}
        assert {r["method"] for r in lesions} == methods
    assert figure.stat().st_size > 0

    capsys.readouterr()
    assert baselines.main([*common, "--oracle"]) == 0  # the classical rows are reused
    assert capsys.readouterr().out.count("reusing") == 5
