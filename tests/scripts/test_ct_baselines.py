"""scripts/ct_baselines.py on tiny CT data: both sets (simulated in-distribution pairs and stored shifted pairs),
tuning, oracle rows, model rows through a tiny bundle, paired differences, reuse, figure."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_rwkv.data import write_nifti
from tests.bundles.utils import CT_BUNDLE, phantom_ct_volume, tiny_inference_bundle
from tests.scripts import load_script

AFFINE = np.diag([-3.0, 3.0, 5.0, 1.0])


def _data(root: Path, seed: int) -> Path:
    """split.json with validation and test volumes, and shifted pairs (noisy copies) with datalist_shifted.json."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("val", "test"):
        write_nifti(phantom_ct_volume(rng, 2, size=32), root / f"{split}.nii.gz", AFFINE, dtype="int16")
        splits[split] = {"file": f"{split}.nii.gz"}
    (root / "split.json").write_text(json.dumps({"splits": splits}))
    for split in ("validation", "test"):
        for name in ("head", "body"):
            clean = phantom_ct_volume(rng, 2, size=32).astype(np.float32)
            write_nifti(clean, root / "shifted" / split / "full" / f"{name}.nii.gz", AFFINE)
            noisy = clean + rng.normal(0, 40, clean.shape).astype(np.float32)
            write_nifti(noisy, root / "shifted" / split / "low" / f"{name}.nii.gz", AFFINE)
    # each test slice's scanner, as prepare_ct_shifted.py records it (names for the head, dicts for the bodies)
    slices = {"head": ["soft", "sharp"], "body": [{"region": "thorax", "scanner": "soft"}, {"scanner": "sharp"}]}
    (root / "datalist_shifted.json").write_text(json.dumps({"slices": {"test": slices}}))
    return root


def test_both_sets_rows_models_reuse_and_figures(tmp_path: Path, seed: int, capsys) -> None:
    script = load_script("ct_baselines")
    data = _data(tmp_path / "ct", seed)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    reports, out = tmp_path / "runs", tmp_path / "report.md"
    argv = ["--data-dir", str(data), "--output-dir", str(reports), "--out", str(out), "--bundle", str(bundle)]
    argv += ["--methods", "gaussian", "--oracle", "--threads", "1"]
    argv += ["--model", f"tiny A={weights}", "--model", f"tiny B={weights}"]
    assert script.main(argv) == 0

    text = out.read_text()
    for set_name in ("in-distribution", "shifted"):
        section = text.split(f"### {set_name}")[1].split("###")[0]
        table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
        labels = [line.split(" | ")[0].removeprefix("| ") for line in table[:6]]
        assert labels == [
            "Method",
            "Low-dose input",
            "tiny A",
            "tiny B",
            "Gaussian smoothing",
            "Gaussian smoothing, oracle",
        ]
        assert "| Compared with |" in section and "| tiny B |" in section  # the first model against the others
        for column in ("flat-region RMSE (HU)", "edge-band RMSE (HU)"):  # residual noise; soft tissue next to bone
            region = section.split(f"| {column} |")[1].split("![")[0].split("By group")[0].split("Error next to")[0]
            region_rows = {
                line.split(" | ")[0].removeprefix("| "): line for line in region.splitlines() if line.startswith("| ")
            }
            assert set(region_rows) >= {"Low-dose input", "tiny A", "tiny B", "Gaussian smoothing, oracle"}, column
            assert "| +0.0 ± 0.0 | 0% |" in region_rows["tiny B"]  # the same weights: no difference
            assert "not kept" not in region and "nan" not in region.lower(), column
        for method in ("gaussian", "oracle_gaussian", "model0", "model1"):
            summary = json.loads((reports / set_name / method / "summary.json").read_text())
            assert summary["protocol"]["degraded_input"] == "real" and summary["protocol"]["window"] == [-160.0, 240.0]
            assert summary["slices_used"] > 0 and not summary["errors"]
            assert math.isfinite(summary["pred"]["psnr"]["mean"])
        tuned = json.loads((reports / set_name / "gaussian" / "tuning.json").read_text())
        oracle = json.loads((reports / set_name / "oracle_gaussian" / "tuning.json").read_text())
        assert tuned["tuned_on"] == f"{set_name} validation" and oracle["tuned_on"] == f"{set_name} test"
        best = max(oracle["tried"], key=lambda t: t["psnr"])
        assert best["params"] == oracle["best"]  # the line search keeps the best point it tried
        assert (reports / set_name / "figure.png").stat().st_size > 1000
    # the shifted set's groups: one column per (file, scanner), each cell the row's mean over the group's slices
    groups = text.split("### shifted")[1].split("By group of test slices")[1].split("![")[0]
    table = [line.split(" | ") for line in groups.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0][1:] == ["head, soft (1)", "head, sharp (1)", "body, soft (1)", "body, sharp (1) |"]
    assert [r[0].removeprefix("| ") for r in table[1:]] == [
        "Low-dose input",
        "tiny A",
        "tiny B",
        "Gaussian smoothing",
        "Gaussian smoothing, oracle",
    ]
    with open(reports / "shifted" / "model0" / "metrics.csv", newline="") as f:
        metrics = {(r["file"], r["slice"]): r for r in csv.DictReader(f)}
    body_sharp, head_soft = metrics[("body", "1")], metrics[("head", "0")]
    cell = dict(zip(table[0], table[2]))["body, sharp (1) |"].removesuffix(" |").split(" / ")
    assert float(cell[0]) == round(float(body_sharp["psnr_pred"]), 2)
    assert float(cell[1]) == round(float(body_sharp["ssim_pred"]), 4)
    low = dict(zip(table[0], table[1]))["head, soft (1)"].split(" / ")
    assert float(low[0]) == round(float(head_soft["psnr_input"]), 2)
    assert math.isfinite(float(cell[2])) and float(cell[2]) > 0  # flat-region RMSE of that slice
    assert "By group" not in text.split("### shifted")[0]  # the in-distribution set has no groups
    same = json.loads((reports / "shifted" / "model0" / "summary.json").read_text())["pred"]
    assert same == json.loads((reports / "shifted" / "model1" / "summary.json").read_text())["pred"]
    # in-distribution pairs were simulated once from the split volumes
    pairs = reports / "in-distribution" / "pairs" / "test"
    assert sorted(p.name for p in pairs.iterdir()) == ["full", "low", "scan.json"]

    capsys.readouterr()
    assert script.main(argv) == 0  # baselines are reused, models recomputed
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 4 and out.read_text() == text

    # a rewrite of the same data keeps the cache; changed shifted pairs recompute that set's rows only
    head = data / "shifted" / "validation" / "full" / "head.nii.gz"
    clean = nib.load(head)
    write_nifti(np.asarray(clean.dataobj), head, clean.affine, overwrite=True)
    body = data / "shifted" / "test" / "low" / "body.nii.gz"
    noisy = np.asarray(nib.load(body).dataobj)
    write_nifti(noisy + np.float32(5.0), body, AFFINE, overwrite=True)
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("in-distribution/gaussian: reusing") == 1 and "shifted/gaussian: reusing" not in printed
    assert printed.count("pairs differ") == 2 and out.read_text() != text
    # another in-distribution dose rewrites those pairs and recomputes their rows
    assert script.main(argv + ["--dose", "0.5", "--sets", "in-distribution"]) == 0
    printed = capsys.readouterr().out
    assert "reusing" not in printed and printed.count("pairs differ") == 2
    scan = json.loads((reports / "in-distribution" / "pairs" / "test" / "scan.json").read_text())
    assert scan["dose"] == 0.5 and scan["seed"] == 0


def test_bm3d_row_and_method_errors(tmp_path: Path, seed: int, capsys) -> None:
    import pytest  # noqa: PLC0415

    script = load_script("ct_baselines")
    data = _data(tmp_path / "ct", seed)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    argv = ["--data-dir", str(data), "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "r.md")]
    argv += ["--bundle", str(bundle), "--model", f"tiny={weights}", "--sets", "shifted", "--threads", "1"]
    with pytest.raises(SystemExit):
        script.main([*argv, "--methods", "gaussian,median"])
    assert "unknown method 'median'" in capsys.readouterr().err
    if importlib.util.find_spec("bm3d") is None:
        assert "bm3d" not in script.DEFAULT_METHODS
        with pytest.raises(SystemExit):
            script.main([*argv, "--methods", "bm3d"])
        assert "pip install bm3d" in capsys.readouterr().err
        return
    assert script.DEFAULT_METHODS[-1] == "bm3d"
    # one point, pinned by its bounds (BM3D costs about a second per image): the row's plumbing, not the search
    script.BASELINES["bm3d"] = dataclasses.replace(script.BASELINES["bm3d"], grid={"sigma_hu": [40.0]}, bounds=(40, 40))
    assert script.main([*argv, "--methods", "bm3d"]) == 0
    tuning = json.loads((tmp_path / "runs" / "shifted" / "bm3d" / "tuning.json").read_text())
    assert tuning["best"]["sigma_hu"] == 40.0 and len(tuning["tried"]) == 1
    summary = json.loads((tmp_path / "runs" / "shifted" / "bm3d" / "summary.json").read_text())
    assert summary["pred"]["psnr"]["mean"] > summary["input"]["psnr"]["mean"]  # noise std 40 HU is removed in part
    assert "| BM3D | sigma " in (tmp_path / "r.md").read_text()


def test_the_figure_shows_the_group_where_the_model_trails_non_local_means_most(tmp_path: Path) -> None:
    script = load_script("ct_baselines")
    slices = {
        "head": ["soft", "sharp", "soft"],
        "body": [{"scanner": "soft"}, {"scanner": "sharp"}, {"scanner": "sharp"}],
    }
    (tmp_path / "datalist_shifted.json").write_text(json.dumps({"slices": {"test": slices}}))
    args = type("Args", (), {"data_dir": tmp_path, "pairs": {}})()

    def row(method: str, psnr: dict[tuple[str, int], float]):
        return dataclasses.make_dataclass("R", ["method", "slices"])(method, {k: {"psnr": v} for k, v in psnr.items()})

    keys = [("head", 0), ("head", 1), ("head", 2), ("body", 0), ("body", 1), ("body", 2)]
    nlm = dict(zip(keys, [30.0, 35.0, 30.0, 30.0, 28.0, 28.0]))
    model = dict(zip(keys, [33.0, 34.0, 33.0, 33.0, 26.0, 27.5]))
    # body/sharp trails by 1.25 dB on average, head/sharp by 1: the body/sharp slice of median PSNR (the upper one)
    assert script.figure_slice("shifted", [row("model0", model), row("oracle_nlm", nlm)], args) == ("body", 2)
    model[("head", 1)] = 30.0  # now head/sharp trails most (its only slice)
    assert script.figure_slice("shifted", [row("model0", model), row("nlm", nlm)], args) == ("head", 1)


def test_override_reaches_the_model_rows(tmp_path: Path, seed: int, capsys) -> None:
    """``--override KEY=JSON`` sets an inference.json value for the model rows (recorded in their summary); a value
    that is not JSON stays a string; a spec without ``=`` is a usage error."""
    import pytest  # noqa: PLC0415

    script = load_script("ct_baselines")
    assert script.lib.parse_override("roi_size=[256, 256]") == ("roi_size", [256, 256])
    assert script.lib.parse_override("overlap=0.5") == ("overlap", 0.5)
    assert script.lib.parse_override("device=cpu") == ("device", "cpu")
    data = _data(tmp_path / "ct", seed)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    argv = ["--data-dir", str(data), "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "r.md")]
    argv += ["--bundle", str(bundle), "--model", f"tiny={weights}", "--sets", "shifted", "--threads", "1"]
    argv += ["--methods", "gaussian", "--override", "roi_size=[16,16]", "--override", "overlap=0.5"]
    assert script.main(argv) == 0
    restorer = json.loads((tmp_path / "runs" / "shifted" / "model0" / "summary.json").read_text())["restorer"]
    assert restorer["roi_size"] == [16, 16] and restorer["overlap"] == 0.5
    with pytest.raises(SystemExit):
        script.main([*argv, "--override", "overlap"])
    assert "expected KEY=JSON" in capsys.readouterr().err


def test_the_per_slice_oracle_tunes_every_test_slice_on_itself(tmp_path: Path, seed: int, capsys) -> None:
    """``--slice-oracle``: each non-constant test slice gets the parameters that maximise its own PSNR (at least the
    best grid point on that slice, computed here independently; the noisier slice smoothed more), the row's scores
    are those its tuning recorded, and the row is reused while the pairs stay the same."""
    import torch  # noqa: PLC0415

    from monai_rwkv.apps.evaluate import volume_slice_metrics  # noqa: PLC0415
    from monai_rwkv.networks.nets import GaussianDenoiser  # noqa: PLC0415

    script = load_script("ct_baselines")
    data = _data(tmp_path / "ct", seed)
    rng = np.random.default_rng(seed + 1)
    clean = phantom_ct_volume(rng, 2, size=32).astype(np.float32)
    noisy = clean + rng.normal(0, 1, clean.shape).astype(np.float32) * np.float32([10.0, 80.0])  # per slice
    write_nifti(clean, data / "shifted" / "test" / "full" / "head.nii.gz", AFFINE, overwrite=True)
    write_nifti(noisy, data / "shifted" / "test" / "low" / "head.nii.gz", AFFINE, overwrite=True)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    reports, out = tmp_path / "runs", tmp_path / "r.md"
    argv = ["--data-dir", str(data), "--output-dir", str(reports), "--out", str(out), "--bundle", str(bundle)]
    argv += ["--model", f"tiny={weights}", "--sets", "shifted", "--threads", "1"]
    argv += ["--methods", "gaussian", "--oracle", "--slice-oracle", "gaussian"]
    assert script.main(argv) == 0

    row = next(line for line in out.read_text().splitlines() if line.startswith("| Gaussian smoothing, oracle per"))
    assert "| per slice: sigma " in row
    folder = reports / "shifted" / "slice_oracle_gaussian"
    tuning = json.loads((folder / "tuning.json").read_text())
    assert tuning["tuned_on"] == "shifted test, each slice on itself"
    with open(folder / "metrics.csv", newline="") as f:
        scored = {(r["file"], int(r["slice"])): float(r["psnr_pred"]) for r in csv.DictReader(f)}
    assert {(s["file"], s["slice"]) for s in tuning["slices"]} == set(scored)  # no constant slice here
    grid = script.BASELINES["gaussian"].grid["sigma"]
    for record in tuning["slices"]:
        k = record["slice"]
        assert math.isclose(scored[(record["file"], k)], record["psnr"], abs_tol=1e-4)
        pair = [
            torch.from_numpy(np.asarray(nib.load(data / "shifted" / "test" / d / f"{record['file']}.nii.gz").dataobj))
            for d in ("low", "full")
        ]
        low, ref = (v[None, :, :, k : k + 1].float() for v in pair)
        on_grid = [
            float(
                volume_slice_metrics(
                    GaussianDenoiser(s)(low.permute(3, 0, 1, 2)).permute(1, 2, 3, 0), ref, script.CT_EVAL_WINDOW
                )["psnr"][0]
            )
            for s in grid
        ]
        assert record["psnr"] >= max(on_grid) - 1e-4, (record, on_grid)
    sigma = {(s["file"], s["slice"]): s["best"]["sigma"] for s in tuning["slices"]}
    assert sigma[("head", 1)] > sigma[("head", 0)]  # 80 HU of noise against 10 HU

    capsys.readouterr()
    assert script.main(argv) == 0
    assert "shifted/slice_oracle_gaussian: reusing" in capsys.readouterr().out
    # another search space (the per-slice oracle's own grid) recomputes that row only, and is recorded
    script.SLICE_ORACLE_GRIDS["gaussian"] = {"sigma": [0.5, 4.0]}
    try:
        assert script.main(argv) == 0
    finally:
        del script.SLICE_ORACLE_GRIDS["gaussian"]
    printed = capsys.readouterr().out
    assert "shifted/slice_oracle_gaussian: the search space differs" in printed
    assert printed.count("reusing") == 2  # the validation-tuned and the set-wide oracle rows
    assert json.loads((folder / "tuning.json").read_text())["grid"] == {"sigma": [0.5, 4.0]}
