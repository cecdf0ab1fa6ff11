"""The ``monai-rwkv`` command, run as a subprocess on real files with a tiny random network in a bundle copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.bundles.utils import REPO, TINY_CLI_ARGS, make_tiny_bundle
from tests.data.conftest import CT5N, copy_series, tree_digest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("cli") / "bundle")


def cli(*args: str | Path, bundle: Path | None = None, tiny: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai_rwkv.apps.cli", "restore"]
    if bundle is not None:
        command += ["--bundle", str(bundle)]
    command += [str(a) for a in args] + (TINY_CLI_ARGS if tiny else [])
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_nifti_in_nifti_out(bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in" / "head.nii.gz"
    source.parent.mkdir()
    data = np.random.default_rng(0).integers(-1000, 1500, size=(20, 12, 2)).astype(np.int16)
    affine = np.array([[-0.9, 0, 0, 100], [0, 0.9, 0, -80], [0, 0, 1.5, 20], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), source)
    digest = tree_digest(source.parent)
    output = tmp_path / "out" / "restored.nii.gz"
    result = cli(source, output, "--dtype", "int16", bundle=bundle)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {output}"
    restored = nib.load(output)
    assert restored.shape == data.shape and restored.get_data_dtype() == np.int16
    np.testing.assert_allclose(restored.affine, affine, atol=1e-5)
    values = np.asarray(restored.dataobj)
    assert values.min() >= -1024 and values.max() <= 3072
    assert tree_digest(source.parent) == digest


def test_verbose_names_the_device_and_the_bi_wkv_kernels(bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "head.nii.gz"
    data = np.random.default_rng(1).integers(-1000, 1500, size=(16, 12, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 1.5, 1.0])), source)
    result = cli(source, tmp_path / "out.nii.gz", "--verbose", "--device", "cpu", bundle=bundle)
    assert result.returncode == 0, result.stderr
    info = [line for line in result.stderr.splitlines() if line.startswith("info: ")]
    assert len(info) == 1 and info[0].startswith("info: device cpu, ") and "CPU threads" in info[0]
    assert info[0].endswith("Bi-WKV kernels: numba (fused CPU kernels)")
    quiet = cli(source, tmp_path / "out2.nii.gz", "--device", "cpu", bundle=bundle)
    assert quiet.returncode == 0 and "info: " not in quiet.stderr


def test_dicom_series_in_dicom_series_out(bundle: Path, tmp_path: Path) -> None:
    series = copy_series(CT5N, tmp_path / "CT5N")
    digest = tree_digest(series)
    output = tmp_path / "restored_series"
    result = cli(series, output, bundle=bundle)
    assert result.returncode == 0, result.stderr
    reader = sitk.ImageSeriesReader()
    src = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(series)))
    out = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(output)))
    assert out.GetSize() == src.GetSize() == (16, 16, 5)
    np.testing.assert_allclose(out.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out.GetSpacing(), src.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(out.GetDirection(), src.GetDirection(), atol=1e-6)
    hu = sitk.GetArrayFromImage(out)
    assert hu.min() >= -1024 and hu.max() <= 3072
    assert tree_digest(series) == digest


def test_missing_input_or_bundle(bundle: Path, tmp_path: Path) -> None:
    result = cli(tmp_path / "nope.nii.gz", tmp_path / "out.nii.gz", bundle=bundle)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {tmp_path / 'nope.nii.gz'}: no such file or folder"]
    assert not (tmp_path / "out.nii.gz").exists()
    result = cli(tmp_path / "nope.nii.gz", tmp_path / "out.nii.gz", bundle=tmp_path)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {tmp_path}: not a bundle (no configs/inference.json)"]


def test_existing_output_is_kept_without_overwrite(bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.int16), np.eye(4)), source)
    output = tmp_path / "out.nii.gz"
    output.write_bytes(b"previous result")
    result = cli(source, output, bundle=bundle)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {output}: output exists; pass --overwrite to replace it"]
    assert output.read_bytes() == b"previous result"


def test_non_image_input_fails_with_one_line_and_no_output(bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "fake.nii.gz"
    source.write_text("this is a text file, not NIfTI\n")
    digest = tree_digest(source)
    result = cli(source, tmp_path / "out" / "fake_restored.nii.gz", bundle=bundle)
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert tree_digest(source) == digest


def test_usage_errors_exit_2(bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.int16), np.eye(4)), source)
    assert cli(source, tmp_path / "o.nii.gz", tiny=False).returncode == 2  # no --bundle
    result = cli(source, tmp_path / "series_folder", bundle=bundle)  # NIfTI in, DICOM out
    assert result.returncode == 2 and "DICOM" in result.stderr
    assert cli(source, tmp_path / "o.nii.gz", "--overlap", "1.5", bundle=bundle).returncode == 2
