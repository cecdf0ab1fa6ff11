"""The CT denoising bundle: metadata, configs, and a real ``python -m monai.bundle run`` on a copy with a tiny network.

The tiny random network only exercises the plumbing; nothing here is a denoising result.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.bundle import ConfigParser, verify_net_in_out

from monai_rwkv.apps import flag, load_bundle_config
from monai_rwkv.data.provenance import nifti_restoration_note
from monai_rwkv.networks.nets import PRESETS
from tests.bundles.utils import CT_BUNDLE, TINY_BUNDLE_ARGS, make_tiny_bundle
from tests.data.conftest import CT5N, copy_series, tree_digest

CONFIGS = CT_BUNDLE / "configs"
#: keys the MONAI bundle specification makes mandatory in metadata.json.
MANDATORY = ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors")
TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "channel_def")


def test_metadata_follows_the_bundle_specification() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in (*MANDATORY, "copyright", "network_data_format", "required_packages_version", "changelog"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    for spec in (fmt["inputs"]["image"], fmt["outputs"]["pred"]):
        for key in TENSOR_KEYS:
            assert key in spec, key
        assert spec["format"] == "hounsfield" and spec["num_channels"] == 1 and spec["dtype"] == "float32"
        assert spec["value_range"] == [-1024, 3072]  # HU
    assert "GPL-2" in meta["data_source"] and "not for clinical use" in meta["intended_use"].lower()


def test_inference_config_is_the_light_preset_reading_models_model_pt() -> None:
    parser = load_bundle_config(CT_BUNDLE)
    net_def = parser.get("network_def")
    assert net_def["_target_"] == "monai_rwkv.networks.nets.RestoreRWKV"
    assert (net_def["spatial_dims"], net_def["in_channels"], net_def["out_channels"]) == (2, 1, 1)
    light = PRESETS["light"]
    assert net_def["dim"] == light["dim"] and tuple(net_def["num_blocks"]) == tuple(light["num_blocks"])
    assert net_def["num_refinement_blocks"] == light["num_refinement_blocks"]
    assert Path(parser.get_parsed_content("weights")) == CT_BUNDLE.absolute() / "models" / "model.pt"
    assert parser.get("intensity_range") == [-1024.0, 3072.0]
    assert json.loads((CONFIGS / "evaluate.json").read_text())["dose_fraction"] == 0.25


def test_network_matches_the_metadata_shapes() -> None:
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        n=2,
        device="cpu",
    )


def test_missing_weights_exit_with_one_line(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle")
    (bundle / "models" / "model.pt").unlink()
    parser = load_bundle_config(bundle, overrides={"device": "cpu"})
    with pytest.raises(SystemExit, match=r"^error: .*model\.pt: model weights not found$"):
        parser.get_parsed_content("network")


def bundle_run(config: str | list[Path], cwd: Path, *args: str | Path) -> subprocess.CompletedProcess:
    files = config if isinstance(config, str) else str([str(c) for c in config])
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *map(str, args), *TINY_BUNDLE_ARGS]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_bundle_run_restores_its_sample_with_no_other_argument(tmp_path: Path) -> None:
    """The documented command: bundle_root from the config's location, sample/lowdose/ in, ./<name>_output out."""
    bundle = make_tiny_bundle(tmp_path / "bundle")
    sample = bundle / "sample" / "lowdose"
    data = np.random.default_rng(1).integers(-1000, 1200, size=(18, 14, 2)).astype(np.int16)
    affine = np.array([[0, 0.7, 0, -5], [-0.7, 0, 0, 12], [0, 0, 3, 40], [0, 0, 0, 1.0]])
    sample.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, affine), sample / "small.nii.gz")
    copy_series(CT5N, sample / "CT5N")
    digest = tree_digest(sample)
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = bundle_run(str(bundle / "configs" / "inference.json"), work)
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "restore_rwkv_ct_denoise_output"
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # hidden: resume manifests
    assert visible == ["CT5N_restored", "CT5N_restored.nii.gz", "restore_summary.csv", "small_restored.nii.gz"]
    restored = nib.load(out / "small_restored.nii.gz")
    assert restored.shape == data.shape and restored.get_data_dtype() == np.float32
    np.testing.assert_allclose(restored.affine, affine, atol=1e-5)
    assert -1024 <= restored.get_fdata().min() and restored.get_fdata().max() <= 3072
    reader = sitk.ImageSeriesReader()
    series = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(out / "CT5N_restored")))
    source = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(sample / "CT5N")))
    assert series.GetSize() == source.GetSize()
    np.testing.assert_allclose(series.GetOrigin(), source.GetOrigin(), atol=1e-4)
    assert tree_digest(sample) == digest


def test_bundle_evaluate_with_dataset_and_output_dirs(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle")
    clean = tmp_path / "clean"
    clean.mkdir()
    i, j = np.mgrid[:24, :24]
    volume = np.where((i - 12) ** 2 + (j - 12) ** 2 < 81, 40.0, -1000.0).astype(np.float32)[..., None]
    nib.save(nib.Nifti1Image(volume, np.diag([0.9, 0.9, 2.0, 1.0])), clean / "disk.nii.gz")
    configs = [bundle / "configs" / "inference.json", bundle / "configs" / "evaluate.json"]
    result = bundle_run(configs, tmp_path, "--dataset_dir", clean, "--output_dir", tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["slice"]) for r in rows] == [("disk", "0")]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["model"]["name"] == ConfigParser.load_config_file(str(CONFIGS / "metadata.json"))["name"]
    assert summary["protocol"]["degradation"]["seed"] == 0 and summary["slices_used"] == 1
    assert np.isfinite(summary["input"]["psnr"]["mean"]) and np.isfinite(summary["pred"]["ssim"]["mean"])

    missing = bundle_run(configs, tmp_path, "--dataset_dir", tmp_path / "nothing", "--output_dir", tmp_path / "e2")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing'}: no such file or folder"


def test_lowercase_booleans_on_the_command_line_mean_what_they_say(tmp_path: Path) -> None:
    """``--dicom_output false`` reaches the config as the string "false": it must not be taken as true."""
    bundle = make_tiny_bundle(tmp_path / "bundle")
    copy_series(CT5N, tmp_path / "in" / "CT5N")
    out = tmp_path / "out"
    config = str(bundle / "configs" / "inference.json")
    result = bundle_run(
        config, tmp_path, "--dataset_dir", tmp_path / "in", "--output_dir", out, "--dicom_output", "false"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "CT5N_restored.nii.gz").is_file() and not (out / "CT5N_restored").exists()
    bad = bundle_run(config, tmp_path, "--dataset_dir", tmp_path / "in", "--output_dir", out, "--overwrite", "maybe")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == "error: --overwrite: expected True or False, got 'maybe'"


def test_strength_is_in_the_derived_series_and_a_new_strength_redoes_the_study(tmp_path: Path) -> None:
    """``--strength 0.5`` with the real ``monai.bundle`` CLI: the derived DICOM series says so, a rerun at the same
    strength skips the finished study, a rerun at another strength redoes it, and a strength outside [0, 1] exits
    with one line and writes nothing."""
    bundle = make_tiny_bundle(tmp_path / "bundle")
    copy_series(CT5N, tmp_path / "in" / "CT5N")
    out = tmp_path / "out"
    config = str(bundle / "configs" / "inference.json")
    args = ("--dataset_dir", tmp_path / "in", "--output_dir", out)

    def statuses() -> list[str]:
        with open(out / "restore_summary.csv") as f:
            return [row["status"] for row in csv.DictReader(f)]

    result = bundle_run(config, tmp_path, *args, "--strength", "0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    first = sorted((out / "CT5N_restored").iterdir())[0]
    header = sitk.ReadImage(str(first))
    version = ConfigParser.load_config_file(str(CONFIGS / "metadata.json"))["version"]
    assert f"{version} strength 0.5" in header.GetMetaData("0008|103e")
    assert bundle_run(config, tmp_path, *args, "--strength", "0.5").returncode == 0 and statuses() == ["skipped"]
    assert bundle_run(config, tmp_path, *args).returncode == 0 and statuses() == ["redone"]
    header = sitk.ReadImage(str(sorted((out / "CT5N_restored").iterdir())[0]))
    assert "strength" not in header.GetMetaData("0008|103e")
    bad = bundle_run(config, tmp_path, *args[:3], tmp_path / "o2", "--strength", "1.5")
    assert bad.returncode == 1 and not (tmp_path / "o2").exists()
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --strength: strength must be a number in [0, 1]")


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (0, False), ("false", False), ("FALSE", False), ("yes", True), ("1", True)]
)
def test_flag_reads_command_line_booleans(value: object, expected: bool) -> None:
    assert flag(value) is expected


def test_coarse_fusion_is_a_switch_of_the_config_for_fine_pixels_only(tmp_path: Path) -> None:
    """``--coarse_fusion True`` with the real CLI: slices of 0.5 mm pixels are restored differently (same grid and
    geometry), the same voxels with 0.9 mm pixels exactly as without it (the network does not see the pixel size);
    the outputs' resume records say so; a value that is not a boolean exits with one line. The per-slice gate
    (``coarse_fusion_min_change_hu``) is opened with 0 for this noise image, which has no flat soft tissue: with
    the config's gate the slices keep the fine pass exactly."""
    bundle = make_tiny_bundle(tmp_path / "bundle")
    config = str(bundle / "configs" / "inference.json")
    data = np.random.default_rng(3).integers(-1000, 1200, size=(40, 36, 2)).astype(np.int16)
    outputs = {}
    for pixel, fusion, gate in ((0.5, "False", "0"), (0.5, "True", "0"), (0.9, "True", "0"), (0.5, "True", None)):
        folder, out = tmp_path / f"in{pixel}", tmp_path / f"out{pixel}{fusion}{gate}"
        if not folder.exists():
            folder.mkdir()
            nib.save(nib.Nifti1Image(data, np.diag([pixel, pixel, 2.0, 1.0])), folder / "scan.nii.gz")
        args = ["--dataset_dir", folder, "--output_dir", out, "--coarse_fusion", fusion]
        args += ["--coarse_fusion_min_change_hu", gate] if gate is not None else []
        result = bundle_run(config, tmp_path, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        image = nib.load(out / "scan_restored.nii.gz")
        np.testing.assert_allclose(image.affine, np.diag([pixel, pixel, 2.0, 1.0]), atol=1e-5)
        outputs[pixel, fusion, gate] = image.get_fdata()
        manifest = json.loads((out / ".scan_restored.restore.json").read_text())  # the resume record
        assert ("coarse fusion" in manifest["model"]["version"]) == (fusion == "True")
        assert (manifest["settings"]["coarse_fusion"] is not None) == (fusion == "True")
    assert np.abs(outputs[0.5, "True", "0"] - outputs[0.5, "False", "0"]).max() > 0.1
    np.testing.assert_array_equal(outputs[0.9, "True", "0"], outputs[0.5, "False", "0"])
    np.testing.assert_array_equal(outputs[0.5, "True", None], outputs[0.5, "False", "0"])
    bad = bundle_run(
        config,
        tmp_path,
        "--dataset_dir",
        tmp_path / "in0.5",
        "--output_dir",
        tmp_path / "o",
        "--coarse_fusion",
        "maybe",
    )
    assert bad.returncode == 1 and not (tmp_path / "o").exists()
    assert bad.stderr.strip().splitlines()[-1] == "error: --coarse_fusion: expected True or False, got 'maybe'"


def test_residual_smoothing_is_a_switch_of_the_config(tmp_path: Path) -> None:
    """``--residual_smoothing`` with the real CLI: off, the network's result; on with the threshold at 0, a
    different restoration on the same grid; on with a threshold above any change, the network's result exactly.
    The resume records carry the setting, the NIfTI note the recorded version (as far as 79 characters hold it)."""
    bundle = make_tiny_bundle(tmp_path / "bundle")
    config = str(bundle / "configs" / "inference.json")
    rng = np.random.default_rng(5)
    data = rng.normal(0.0, 40.0, size=(40, 36, 2)).astype(np.float32)
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 2.0, 1.0])), folder / "scan.nii.gz")
    outputs = {}
    for smoothing, threshold in (("False", "0"), ("True", "0"), ("True", "100000")):
        out = tmp_path / f"out{smoothing}{threshold}"
        args = ["--dataset_dir", folder, "--output_dir", out, "--residual_smoothing", smoothing]
        args += ["--residual_smoothing_threshold_hu", threshold]
        # the tiny random network leaves no flat soft tissue: the whole slice is the flat region here
        args += ["--residual_smoothing_def#flat_gradient", "1.0", "--residual_smoothing_def#value_range", "[0.0, 1.0]"]
        result = bundle_run(config, tmp_path, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        image = nib.load(out / "scan_restored.nii.gz")
        np.testing.assert_allclose(image.affine, np.diag([0.9, 0.9, 2.0, 1.0]), atol=1e-5)
        outputs[smoothing, threshold] = image.get_fdata()
        manifest = json.loads((out / ".scan_restored.restore.json").read_text())
        assert manifest["model"]["version"].endswith("residual smoothing") == (smoothing == "True")
        assert (manifest["settings"]["residual_smoothing"] is not None) == (smoothing == "True")
        note = nifti_restoration_note(manifest["model"]["name"], manifest["model"]["version"])  # cut to 79 characters
        assert image.header["descrip"].item().decode() == note
    assert np.abs(outputs["True", "0"] - outputs["False", "0"]).max() > 0.1
    np.testing.assert_array_equal(outputs["True", "100000"], outputs["False", "0"])
