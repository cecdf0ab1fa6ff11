"""End-to-end restoration and evaluation on real files, in process, with an identity network (exact expectations)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from torch import nn

from monai_rwkv.apps import (
    InputImage,
    evaluate_restoration,
    find_inputs,
    plan_tasks,
    restore_dataset,
    volume_slice_metrics,
    volume_slices,
)
from monai_rwkv.apps.restore import read_volume
from monai_rwkv.data import ImageReadError
from monai_rwkv.inference import SliceWiseRestorer
from monai_rwkv.metrics import CT_EVAL_WINDOW
from monai_rwkv.transforms import LowDoseCT
from tests.data.conftest import CT5N, copy_series, tree_digest

AFFINE = np.array([[0, -0.7, 0, 90.0], [0.8, 0, 0, -120.0], [0, 0, 2.5, 33.0], [0, 0, 0, 1]])


def identity_restorer(**kwargs) -> SliceWiseRestorer:
    return SliceWiseRestorer(nn.Identity(), roi_size=(16, 16), device="cpu", progress=False, **kwargs)


def write_volume(path: Path, shape=(20, 23, 3), dtype=np.int16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(-1024, 2000, size=shape).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return data


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_find_inputs_and_output_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_volume(data / "a.nii.gz")
    write_volume(data / "sub" / "b.nii")
    copy_series(CT5N, data / "patient 1" / "ct")
    (data / "notes.txt").write_text("not an image")
    (data / ".hidden.nii.gz").write_text("ignored")
    inputs = find_inputs(data)
    assert [(i.name, i.suffix, i.is_dicom) for i in inputs] == [
        ("a", ".nii.gz", False),
        ("patient_1/ct", ".nii.gz", True),
        ("sub/b", ".nii", False),
    ]
    tasks = plan_tasks(inputs, tmp_path / "out")
    assert [t.nifti_output.relative_to(tmp_path / "out").as_posix() for t in tasks] == [
        "a_restored.nii.gz",
        "patient_1/ct_restored.nii.gz",
        "sub/b_restored.nii",
    ]
    assert tasks[1].dicom_output == tmp_path / "out" / "patient_1" / "ct_restored" and tasks[0].dicom_output is None
    assert find_inputs(data / "a.nii.gz")[0].name == "a"
    colliding = plan_tasks(
        [InputImage(data / "a.nii.gz", "a", key="a.nii.gz"), InputImage(data / "a.nii", "a", key="a.nii")], tmp_path
    )
    names = [t.nifti_output.name for t in colliding]
    assert len(set(names)) == 2 and all(re.fullmatch(r"a_[0-9a-f]{8}_restored\.nii\.gz", n) for n in names), names
    assert plan_tasks([t.image for t in colliding], tmp_path) == colliding  # stable: names are already unique
    with pytest.raises(ImageReadError, match="no such file or folder"):
        find_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no NIfTI files"):
        find_inputs(tmp_path / "empty")


def test_nifti_restored_with_geometry_and_dtype(tmp_path: Path) -> None:
    data = tmp_path / "data"
    original = write_volume(data / "vol.nii.gz", shape=(20, 23, 3))
    digest = tree_digest(data)
    report = restore_dataset(identity_restorer(), data, tmp_path / "out", "test model", "0.0")
    assert report.ok and report.written == [tmp_path / "out" / "vol_restored.nii.gz"]
    out = nib.load(report.written[0])
    assert out.shape == original.shape and out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(out.get_fdata(), original, atol=2e-3)  # identity network, HU in range
    assert tree_digest(data) == digest

    int16 = restore_dataset(identity_restorer(output_dtype="int16"), data, tmp_path / "out16", "m", "0")
    out16 = nib.load(int16.written[0])
    assert out16.get_data_dtype() == np.int16 and np.array_equal(np.asarray(out16.dataobj), original)


def test_a_bad_file_is_one_error_line_and_the_others_still_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_volume(data / "good.nii.gz", shape=(8, 8, 1))
    (data / "bad.nii.gz").write_bytes(b"this is not an image")
    report = restore_dataset(identity_restorer(), data, tmp_path / "out", "m", "0")
    assert report.written == [tmp_path / "out" / "good_restored.nii.gz"]
    assert len(report.errors) == 1 and "\n" not in report.errors[0]
    assert report.errors[0].startswith(str(data / "bad.nii.gz") + ": ")
    visible = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert visible == ["good_restored.nii.gz", "restore_summary.csv"]  # resume and summary: tests/apps/test_batch.py


def test_dicom_series_restored_to_nifti_and_dicom(tmp_path: Path) -> None:
    series = copy_series(CT5N, tmp_path / "in" / "CT5N")
    digest = tree_digest(series)
    report = restore_dataset(identity_restorer(), series, tmp_path / "out", "Restore-RWKV test", "9.9")
    assert report.ok
    nifti, dicom = tmp_path / "out" / "CT5N_restored.nii.gz", tmp_path / "out" / "CT5N_restored"
    assert report.written == [nifti, dicom]
    src, out = sitk_series(series), sitk_series(dicom)
    assert out.GetSize() == src.GetSize() == (16, 16, 5)
    np.testing.assert_allclose(out.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out.GetSpacing(), src.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(out.GetDirection(), src.GetDirection(), atol=1e-6)
    hu_in, hu_out = sitk.GetArrayFromImage(src), sitk.GetArrayFromImage(out)
    np.testing.assert_array_equal(hu_out, np.clip(hu_in, -1024, 3072))  # identity: integer HU back exactly
    first = pydicom.dcmread(sorted(dicom.iterdir())[0])
    source_first = pydicom.dcmread(sorted(series.iterdir())[0])
    assert first.SeriesInstanceUID != source_first.SeriesInstanceUID and "DERIVED" in first.ImageType
    assert "Restore-RWKV test 9.9" in first.SeriesDescription
    image = read_volume(find_inputs(series)[0])
    restored = nib.load(nifti)
    np.testing.assert_allclose(restored.affine, image.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(restored.get_fdata(), np.clip(image[0].numpy(), -1024, 3072), atol=2e-3)
    assert tree_digest(series) == digest


def clean_phantom(path: Path, slices: int = 2) -> np.ndarray:
    """A water disk with a bone insert in air, HU, 32 x 32 pixels of 0.8 mm."""
    i, j = np.mgrid[:32, :32]
    vol = np.full((32, 32, slices), -1000.0, dtype=np.float32)
    disk = (i - 16) ** 2 + (j - 15) ** 2 < 12**2
    for k in range(slices):
        vol[..., k][disk] = 40.0 + 20 * k
        vol[14:18, 10:13, k] = 700.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 3.0, 1.0])), path)
    return vol


def test_low_dose_simulation_is_reproducible(tmp_path: Path) -> None:
    clean_phantom(tmp_path / "c.nii.gz")
    image = read_volume(find_inputs(tmp_path / "c.nii.gz")[0])
    a, b = LowDoseCT(0.25, 3)(image), LowDoseCT(0.25, 3)(image)
    assert a.shape == image.shape and torch.equal(a.as_tensor(), b.as_tensor())
    torch.testing.assert_close(a.affine, image.affine)
    assert not torch.equal(a.as_tensor(), LowDoseCT(0.25, 4)(image).as_tensor())
    noise = (a - image).as_tensor()[..., 8:24, 8:24, :]
    assert 1.0 < float(noise.std()) < 500.0  # noisy, yet a CT image


def test_volume_slices_are_the_last_axis_as_float32() -> None:
    data = np.random.default_rng().integers(-1024, 3000, size=(1, 7, 5, 3)).astype(np.int16)
    volume = MetaTensor(torch.as_tensor(data), affine=torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0])))
    slices = volume_slices(volume)
    assert slices.shape == (3, 1, 7, 5) and slices.dtype == torch.float32 and type(slices) is torch.Tensor
    for k in range(3):
        assert torch.equal(slices[k, 0], torch.as_tensor(data[0, :, :, k], dtype=torch.float32))
    assert torch.equal(volume_slices(torch.as_tensor(data[..., 1])), slices[1:2])  # (1, i, j): one slice
    with pytest.raises(ValueError, match="single-channel"):
        volume_slices(torch.zeros(2, 7, 5, 3))


def test_evaluation_protocol_writes_per_slice_csv_and_summary(tmp_path: Path) -> None:
    data = tmp_path / "clean"
    clean_phantom(data / "phantom.nii.gz")
    shutil.copy(data / "phantom.nii.gz", data / "copy.nii.gz")
    ct = {"degradation": LowDoseCT(0.25, 0), "window": CT_EVAL_WINDOW}
    summary = evaluate_restoration(identity_restorer(), data, tmp_path / "eval", **ct, model_name="m", save_images=True)
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["slice"]) for r in rows] == [("copy", "0"), ("copy", "1"), ("phantom", "0"), ("phantom", "1")]
    for row in rows:  # identity network: the prediction is the (range-clipped) input
        for metric in ("psnr", "ssim", "rmse"):
            assert float(row[f"{metric}_pred"]) == pytest.approx(float(row[f"{metric}_input"]), rel=1e-4, abs=1e-4)
    assert rows[0]["psnr_input"] == rows[2]["psnr_input"]  # same seed for every volume
    written = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert summary["slices"] == 4 and summary["slices_used"] == 4 and summary["errors"] == []
    assert summary["protocol"]["degradation"] == {"name": "LowDoseCT", "dose_fraction": 0.25, "seed": 0}
    assert summary["protocol"]["window"] == [-160.0, 240.0] and summary["model"]["name"] == "m"
    assert 10 < summary["input"]["psnr"]["mean"] < 60 and 0 < summary["input"]["rmse"]["mean"] < 200
    images = tmp_path / "eval" / "images"
    # the restored image is marked as restored (the bundles refuse it as an input), the degraded one is not
    descrip = {
        tag: nib.load(images / f"phantom_{tag}.nii.gz").header["descrip"].item() for tag in ("restored", "degraded")
    }
    assert descrip == {"restored": b"Restored by m (monai_rwkv)", "degraded": b""}
    with pytest.raises(FileExistsError):
        evaluate_restoration(identity_restorer(), data, tmp_path / "eval", **ct)


def test_evaluation_on_given_low_dose_scans_pairs_them_by_name(tmp_path: Path) -> None:
    clean_phantom(tmp_path / "clean" / "head.nii.gz")
    image = read_volume(find_inputs(tmp_path / "clean")[0])
    low = LowDoseCT(0.25, 0)(image)
    (tmp_path / "low").mkdir()
    nib.save(nib.Nifti1Image(low[0].numpy(), image.affine.numpy()), tmp_path / "low" / "head_dose25.nii.gz")
    clean, ct = tmp_path / "clean", LowDoseCT(0.25, 0)
    given = evaluate_restoration(identity_restorer(), clean, tmp_path / "e1", ct, degraded_dir=tmp_path / "low")
    simulated = evaluate_restoration(identity_restorer(), clean, tmp_path / "e2", ct)
    assert given["errors"] == [] and given["protocol"]["degraded_input"] == "real"
    assert given["input"]["psnr"]["mean"] == pytest.approx(simulated["input"]["psnr"]["mean"], rel=1e-6)
    (tmp_path / "low" / "head_dose10.nii.gz").write_bytes((tmp_path / "low" / "head_dose25.nii.gz").read_bytes())
    low_dir = tmp_path / "low"
    ambiguous = evaluate_restoration(identity_restorer(), clean, tmp_path / "e3", ct, degraded_dir=low_dir)
    assert len(ambiguous["errors"]) == 1 and "several degraded images" in ambiguous["errors"][0]


def test_evaluation_takes_the_degradation_from_the_config(tmp_path: Path) -> None:
    """Any degradation transform (here MRI k-space truncation) replaces the CT simulator; the summary names it."""
    from monai_rwkv.transforms import KSpaceTruncate

    clean_phantom(tmp_path / "clean" / "head.nii.gz")
    summary = evaluate_restoration(identity_restorer(), tmp_path / "clean", tmp_path / "eval", KSpaceTruncate(4))
    assert summary["errors"] == [] and summary["protocol"]["degraded_input"] == "simulated"
    assert summary["protocol"]["degradation"] == {"name": "KSpaceTruncate", "factor": 4.0, "spatial_axes": [0, 1]}
    image = read_volume(find_inputs(tmp_path / "clean")[0])
    expected = volume_slice_metrics(KSpaceTruncate(4)(image), image, None)
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["rmse_input"]) for r in rows] == pytest.approx(expected["rmse"].tolist(), rel=1e-6)
