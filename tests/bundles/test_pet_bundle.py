"""The PET low-count -> full-count bundle: metadata, the real ``python -m monai.bundle run`` on a NIfTI volume in SUV
and on a DICOM PET series in Bq/ml (SUV from the header, output back in Bq/ml, derived PET series), refusal of PET
series whose units cannot be converted, and evaluation on the bundled sample pair.

A tiny random network exercises the plumbing; nothing here is a restoration result.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from monai_rwkv.data.pet_units import suv_bw_factor
from tests.bundles.test_ct_bundle import MANDATORY, TENSOR_KEYS, bundle_run
from tests.bundles.utils import REPO, make_tiny_bundle
from tests.data.conftest import tree_digest
from tests.robustness.conftest import F18_HALF_LIFE_S, pet_header, write_pet_series

PET_BUNDLE = REPO / "bundles" / "restore_rwkv_pet_synthesis"
CONFIGS = PET_BUNDLE / "configs"


def test_metadata_declares_a_pet_input_in_suv() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in (*MANDATORY, "copyright", "network_data_format", "required_packages_version", "changelog"):
        assert meta.get(key) is not None, key
    assert meta["version"] in meta["changelog"]
    for spec in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
        assert all(key in spec for key in TENSOR_KEYS)
        assert spec["modality"] == "PT" and spec["num_channels"] == 1 and spec["value_range"] == [0, 20]
    assert "not for clinical use" in meta["intended_use"].lower()
    assert "phantom" in meta["description"]


def test_suv_factor_from_the_header(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weight, dose, minutes = rng.uniform(40, 120), rng.uniform(1e8, 5e8), rng.uniform(30, 120)
    ds = Dataset()
    pet_header(ds, weight, dose, minutes)
    weight, dose = float(ds.PatientWeight), float(ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose)
    elapsed = round(minutes * 60)
    expected = 1000 * weight / (dose * 0.5 ** (elapsed / F18_HALF_LIFE_S))
    assert suv_bw_factor(ds) == pytest.approx(expected, rel=1e-9)
    ds.DecayCorrection = "ADMIN"  # already decay corrected to the injection
    assert suv_bw_factor(ds) == pytest.approx(1000 * weight / dose, rel=1e-12)
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = "20261202083000.00+0100"
    ds.DecayCorrection = "START"  # the DateTime wins over the time: 30 minutes earlier, more decay
    assert suv_bw_factor(ds) == pytest.approx(expected * 2.0 ** (1800 / F18_HALF_LIFE_S), rel=1e-9)
    ds.Units = "GML"
    assert suv_bw_factor(ds) == 1.0
    for change, message in (
        ({"Units": "CNTS"}, "Units CNTS"),
        ({"PatientWeight": None}, "PatientWeight"),
        ({"PatientWeight": "0"}, "PatientWeight"),
        ({"DecayCorrection": "NONE"}, "DecayCorrection NONE"),
        ({"SeriesTime": ""}, "SeriesTime"),
        ({"SeriesTime": "083000"}, "before the injection"),
    ):
        broken = Dataset()
        pet_header(broken, weight, dose, minutes)
        for keyword, value in change.items():
            if value is None:
                delattr(broken, keyword)
            else:
                setattr(broken, keyword, value)
        with pytest.raises(ValueError, match=message):
            suv_bw_factor(broken)


def test_bundle_run_on_nifti_in_suv_and_a_dicom_pet_series_in_bqml(tmp_path: Path, seed: int) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=PET_BUNDLE)
    rng = np.random.default_rng(seed)
    suv = rng.gamma(2.0, 2.0, size=(16, 16, 3)).clip(0, 19).astype(np.float32)
    inputs = tmp_path / "in"
    factor = write_pet_series(inputs / "pet_series", suv, rng.uniform(50, 100), rng.uniform(1e8, 4e8), 60.0)
    # the same image as a NIfTI file in SUV: read the series back in Bq/ml as the reader sees it
    work = tmp_path / "work"
    work.mkdir()
    digest = tree_digest(inputs)
    result = bundle_run(str(bundle / "configs" / "inference.json"), work, "--dataset_dir", inputs)
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "restore_rwkv_pet_synthesis_output"
    bqml_in = nib.load(out / "pet_series_restored.nii.gz")
    restored_bqml = bqml_in.get_fdata()
    assert restored_bqml.shape == suv.shape and restored_bqml.min() >= 0
    # a NIfTI volume in SUV with the series' geometry gives the same restoration, in SUV
    nifti_dir = tmp_path / "nifti"
    nifti_dir.mkdir()
    from monai_rwkv.apps.restore import find_inputs, read_volume

    series_bqml = read_volume(find_inputs(inputs / "pet_series")[0])
    nib.save(
        nib.Nifti1Image((series_bqml[0].numpy() * factor).astype(np.float32), bqml_in.affine), nifti_dir / "p.nii.gz"
    )
    result = bundle_run(
        str(bundle / "configs" / "inference.json"),
        work,
        "--dataset_dir",
        nifti_dir,
        "--output_dir",
        tmp_path / "out_suv",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    restored_suv = nib.load(tmp_path / "out_suv" / "p_restored.nii.gz").get_fdata()
    np.testing.assert_allclose(restored_bqml * factor, restored_suv, rtol=1e-4, atol=1e-4)
    # the derived series: PET, Bq/ml, the source's PET headers
    derived = sorted((out / "pet_series_restored").iterdir())
    assert len(derived) == 3
    for path in derived:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "PT" and ds.Units == "BQML" and ds.DecayCorrection == "START"
        assert ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
        assert "DERIVED" in ds.ImageType
    assert tree_digest(inputs) == digest


def test_a_pet_series_in_counts_is_refused(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=PET_BUNDLE)
    inputs = tmp_path / "in"
    write_pet_series(inputs / "counts", np.full((16, 16, 2), 3.0, np.float32), 70.0, 3e8, 60.0)
    for path in (inputs / "counts").iterdir():
        ds = pydicom.dcmread(path)
        ds.Units = "CNTS"
        ds.save_as(path, enforce_file_format=True)
    result = bundle_run(
        str(bundle / "configs" / "inference.json"), tmp_path, "--dataset_dir", inputs, "--output_dir", tmp_path / "o"
    )
    assert result.returncode != 0
    assert "Units CNTS" in result.stderr and "counts" in result.stderr
    assert not any((tmp_path / "o").glob("*.nii.gz"))


def test_evaluate_on_the_sample_pair(tmp_path: Path) -> None:
    """evaluate.json on the bundled sample: low-count scans restored and scored against the full-count scans."""
    bundle = make_tiny_bundle(tmp_path / "bundle", bundle=PET_BUNDLE)
    import shutil

    shutil.copytree(PET_BUNDLE / "sample", bundle / "sample")
    configs = [str(bundle / "configs" / name) for name in ("inference.json", "evaluate.json")]
    result = bundle_run(configs, tmp_path, "--output_dir", tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["protocol"]["degraded_input"] == "real" and summary["protocol"]["window"] == [0.0, 20.0]
    assert summary["slices_used"] == 4 and not summary["errors"]
    assert 15 < summary["input"]["psnr"]["mean"] < 60
