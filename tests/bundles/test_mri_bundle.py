"""The MRI super-resolution bundle: metadata, configs, a real ``python -m monai.bundle run`` on NIfTI and a DICOM MR
series (derived MR series with the source's intensity representation), and evaluation with k-space truncation.

A tiny random network exercises the plumbing; nothing here is a super-resolution result.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import verify_net_in_out

from monai_rwkv.apps import load_bundle_config
from monai_rwkv.transforms import KSpaceTruncate
from tests.bundles.test_ct_bundle import MANDATORY, TENSOR_KEYS, bundle_run
from tests.bundles.utils import REPO, make_tiny_bundle
from tests.data.conftest import tree_digest
from tests.robustness.conftest import write_mr_series

MRI_BUNDLE = REPO / "bundles" / "restore_rwkv_mri_sr"
CONFIGS = MRI_BUNDLE / "configs"


def test_metadata_declares_a_magnitude_mr_input_in_any_units() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in (*MANDATORY, "copyright", "network_data_format", "required_packages_version", "changelog"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"]
    for spec in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
        assert all(key in spec for key in TENSOR_KEYS)
        assert spec["modality"] == "MR" and spec["num_channels"] == 1 and spec["value_range"][0] == 0
    assert "not for clinical use" in meta["intended_use"].lower()


def test_network_matches_the_metadata_shapes() -> None:
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        n=2,
        device="cpu",
    )


def test_restoration_follows_the_input_units(tmp_path: Path, seed: int) -> None:
    """Per-volume scaling: the same image in other units is restored in those units (a * x -> a * f(x))."""
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=MRI_BUNDLE)
    overrides = {"network_def#dim": 8, "network_def#num_blocks": [1, 1, 1, 1], "network_def#num_refinement_blocks": 1}
    restorer = load_bundle_config(
        bundle, overrides={**overrides, "roi_size": [16, 16], "device": "cpu", "progress": False}
    )
    restorer = restorer.get_parsed_content("restorer")
    rng = np.random.default_rng(seed)
    volume = torch.from_numpy(rng.gamma(2.0, 200.0, (1, 21, 18, 3)).astype(np.float32))
    gain = float(rng.uniform(0.001, 50))
    a, b = restorer(volume), restorer(volume * gain)
    assert float(a.min()) >= 0
    np.testing.assert_allclose(b.numpy(), a.numpy() * gain, rtol=1e-4, atol=1e-5 * float(b.max()))


def test_bundle_run_on_nifti_and_a_dicom_mr_series(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=MRI_BUNDLE)
    sample = bundle / "sample" / "x4"
    sample.mkdir(parents=True)
    data = np.random.default_rng(2).gamma(2.0, 400.0, size=(20, 17, 2)).astype(np.float32)
    affine = np.array([[0, 0.9, 0, -5], [-0.9, 0, 0, 12], [0, 0, 2.5, 40], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), sample / "t1.nii.gz")
    sources = write_mr_series(sample / "T1_series", n=3)
    digest = tree_digest(sample)
    work = tmp_path / "work"
    work.mkdir()
    result = bundle_run(str(bundle / "configs" / "inference.json"), work)
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "restore_rwkv_mri_sr_output"
    restored = nib.load(out / "t1_restored.nii.gz")
    assert restored.shape == data.shape and restored.get_fdata().min() >= 0
    np.testing.assert_allclose(restored.affine, affine, atol=1e-5)
    nifti = nib.load(out / "T1_series_restored.nii.gz").get_fdata()
    derived = sorted((out / "T1_series_restored").iterdir())
    assert len(derived) == 3
    src = pydicom.dcmread(sources[0])
    for k, path in enumerate(derived):
        ds = pydicom.dcmread(path)
        assert ds.Modality == "MR" and ds.SOPClassUID == src.SOPClassUID
        assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds  # the source stores its units directly
        assert ds.PixelRepresentation == 0 and ds.EchoTime == src.EchoTime and ds.RepetitionTime == src.RepetitionTime
        assert "DERIVED" in ds.ImageType
        np.testing.assert_array_equal(ds.pixel_array.T, np.rint(nifti[..., k]).astype(np.uint16))
    assert tree_digest(sample) == digest


def test_a_ct_image_is_refused_by_the_mr_bundle(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=MRI_BUNDLE)
    ct = tmp_path / "in"
    ct.mkdir()
    volume = np.full((16, 16, 2), -1000.0, np.float32)
    volume[4:12, 4:12] = 40.0
    nib.save(nib.Nifti1Image(volume, np.eye(4)), ct / "head_ct.nii.gz")
    result = bundle_run(
        str(bundle / "configs" / "inference.json"), tmp_path, "--dataset_dir", ct, "--output_dir", tmp_path / "o"
    )
    assert result.returncode != 0
    assert "head_ct.nii.gz" in result.stderr and "outside" in result.stderr
    assert not any((tmp_path / "o").glob("*.nii.gz"))


def test_evaluate_degrades_by_kspace_truncation_and_reports_the_protocol(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=MRI_BUNDLE)
    clean = tmp_path / "reference"
    clean.mkdir()
    i, j = np.mgrid[:32, :32]
    volume = np.where((i - 16) ** 2 + (j - 14) ** 2 < 100, 3000.0, 200.0).astype(np.float32)[..., None]
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.0, 1.0])), clean / "disk.nii.gz")
    configs = [bundle / "configs" / "inference.json", bundle / "configs" / "evaluate.json"]
    result = bundle_run(
        configs, tmp_path, "--dataset_dir", clean, "--output_dir", tmp_path / "eval", "--save_images", "true"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["slice"]) for r in rows] == [("disk", "0")]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["protocol"]["degradation"]["name"] == "KSpaceTruncate"
    assert summary["protocol"]["degradation"]["factor"] == 4.0
    degraded = KSpaceTruncate(4.0)(torch.from_numpy(volume)[None])[0].numpy()
    window = np.clip(degraded, 0, 4095)
    rmse = float(np.sqrt(np.mean((window - volume) ** 2)))
    assert float(rows[0]["rmse_input"]) == pytest.approx(rmse, rel=1e-4)


def test_a_low_resolution_acquisition_is_zero_filled_onto_a_finer_grid(tmp_path: Path) -> None:
    """--zero_fill_factor 2: NIfTI and derived DICOM outputs on the 2x finer grid, same field of view and origin."""
    import SimpleITK as sitk

    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=MRI_BUNDLE)
    inputs = tmp_path / "in"
    write_mr_series(inputs / "T1_lowres", n=3, spacing=1.8)
    result = bundle_run(
        str(bundle / "configs" / "inference.json"),
        tmp_path,
        "--dataset_dir",
        inputs,
        "--output_dir",
        tmp_path / "out",
        "--zero_fill_factor",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reader = sitk.ImageSeriesReader()
    source = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(inputs / "T1_lowres")))
    derived = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(tmp_path / "out" / "T1_lowres_restored")))
    assert derived.GetSize() == (32, 32, 3) and source.GetSize() == (16, 16, 3)
    np.testing.assert_allclose(derived.GetSpacing(), (0.9, 0.9, source.GetSpacing()[2]), atol=1e-6)
    np.testing.assert_allclose(derived.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(derived.GetDirection(), source.GetDirection(), atol=1e-6)
    nifti = nib.load(tmp_path / "out" / "T1_lowres_restored.nii.gz")
    assert nifti.shape == (32, 32, 3)
    np.testing.assert_allclose(np.abs(np.diag(nifti.affine))[:3], (0.9, 0.9, source.GetSpacing()[2]), atol=1e-5)
    ds = pydicom.dcmread(sorted((tmp_path / "out" / "T1_lowres_restored").iterdir())[0])
    assert (ds.Rows, ds.Columns) == (32, 32) and [float(v) for v in ds.PixelSpacing] == [0.9, 0.9]


def test_each_factor_restores_with_its_own_shipped_weights() -> None:
    """``factor`` picks the checkpoint (x4: models/model.pt, x2: models/model_x2.pt); each ships and fits."""
    from monai_rwkv.inference import load_network

    for factor, name in (
        (None, "model.pt"),
        (4, "model.pt"),
        (2, "model_x2.pt"),
        (2.0, "model_x2.pt"),
        ("2", "model_x2.pt"),
    ):
        overrides = {} if factor is None else {"factor": factor}
        parser = load_bundle_config(MRI_BUNDLE, "inference.json", overrides=overrides)
        assert Path(parser.get_parsed_content("weights")) == MRI_BUNDLE.absolute() / "models" / name
    files = json.loads((CONFIGS / "inference.json").read_text())["weights_files"]
    assert sorted(files, key=float) == ["2", "4"]
    network_def = load_bundle_config(MRI_BUNDLE, "inference.json").get_parsed_content("network_def")
    outputs = []
    for name in files.values():
        net = load_network(network_def, MRI_BUNDLE / name, device="cpu")
        with torch.no_grad():
            outputs.append(net(torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))))
    assert not torch.equal(*outputs)  # two trained networks, not one file twice


def test_a_factor_without_weights_is_one_line_error(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=MRI_BUNDLE)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.ones((16, 16, 2), np.float32), np.eye(4)), inputs / "t1.nii.gz")
    args = ("--dataset_dir", inputs, "--output_dir", tmp_path / "out", "--factor", "3")
    result = bundle_run(str(bundle / "configs" / "inference.json"), tmp_path, *args)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "no trained weights for factor 3 (weights exist for factor 2, 4)" in last and str(bundle) in last
    assert "--weights FILE with monai.bundle run" in last and "--set weights=FILE with monai-rwkv" in last
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nii.gz"))
    # the advice works: weights of one's own serve any factor
    own = ("--weights", bundle / "models" / "model.pt", "--progress", "False")
    result = bundle_run(str(bundle / "configs" / "inference.json"), tmp_path, *args, *own)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "out").rglob("*.nii.gz"))) == 1
