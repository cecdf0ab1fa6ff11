"""
Unusual but valid inputs: restored with their geometry kept, or refused with one clear line where a restoration
would be wrong (see docs/robustness.md for the table).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from monai_rwkv.apps import find_inputs, load_bundle_config
from monai_rwkv.apps.restore import InputImage, read_volume
from tests.bundles.utils import TINY_NETWORK
from tests.robustness.conftest import (
    assert_failed_cleanly,
    compress_slice,
    leftovers,
    run_cli,
    run_main,
    tree_digest,
    write_ct_series,
    write_enhanced_ct,
)

AFFINE = np.array([[-0.7, 0.1, 0, 90], [0.1, 0.7, 0, -60], [0, 0, 2.5, 35], [0, 0, 0, 1]])


def _restore_nifti(capsys, bundle: Path, source: Path, output: Path, *extra: str) -> tuple[nib.Nifti1Image, list]:
    digest = tree_digest(source)
    code, lines, _ = run_main(capsys, bundle, source, output, *extra)
    assert code == 0, lines
    assert tree_digest(source) == digest and leftovers(output.parent) == []
    return nib.load(output), [line for line in lines if line.startswith("warning: ")]


def test_2d_nifti_becomes_one_slice_with_its_plane_kept(bundle: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "plane.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(40, 300, (20, 12)).astype(np.float32), AFFINE), source)
    restored, warnings = _restore_nifti(capsys, bundle, source, tmp_path / "out.nii.gz")
    assert restored.shape == (20, 12, 1) and warnings == []
    np.testing.assert_allclose(restored.affine, AFFINE, atol=1e-5)  # z offset 35 mm kept (ITK alone drops it)
    assert np.isfinite(restored.get_fdata()).all()


def test_single_dicom_file_to_nifti_and_to_dicom(bundle: Path, tmp_path: Path, capsys) -> None:
    (source,) = write_ct_series(tmp_path / "one", n=1, orientation=(0.8, 0.6, 0, -0.6, 0.8, 0))
    restored, _ = _restore_nifti(capsys, bundle, source, tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(restored.affine, read_volume(InputImage(source, "ct")).affine.numpy(), atol=1e-4)
    assert restored.shape == (16, 16, 1)
    code, lines, _ = run_main(capsys, bundle, source, tmp_path / "ct_series")
    assert code == 0, lines
    (out,) = sorted((tmp_path / "ct_series").iterdir())
    src, dst = pydicom.dcmread(source), pydicom.dcmread(out)
    assert dst.ImagePositionPatient == src.ImagePositionPatient
    assert dst.ImageOrientationPatient == src.ImageOrientationPatient


def test_4d_nifti_is_restored_frame_by_frame(bundle: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "dynamic.nii.gz"
    data = np.random.default_rng(1).integers(-1000, 1500, (18, 14, 3, 2)).astype(np.int16)
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, source)
    restored, _ = _restore_nifti(capsys, bundle, source, tmp_path / "out.nii.gz")
    assert restored.shape == (18, 14, 3, 2)
    np.testing.assert_allclose(restored.affine, AFFINE, atol=1e-5)
    out = restored.get_fdata()
    assert not np.allclose(out[..., 0], out[..., 1])  # each frame restored from its own data


def test_enhanced_multiframe_ct_is_read_with_its_geometry(bundle: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "enhanced.dcm"
    hu = write_enhanced_ct(source)
    volume = read_volume(InputImage(source, "e"))
    np.testing.assert_array_equal(volume[0].numpy(), hu.transpose(2, 1, 0))  # (frames, rows, cols) -> (i, j, k)
    expected = np.array([[-0.6, 0, 0, 5.0], [0, -0.8, 0, 3.0], [0, 0, 2.0, 10.0], [0, 0, 0, 1]])  # RAS
    np.testing.assert_allclose(volume.affine.numpy(), expected, atol=1e-5)  # 2 mm frame step, not 3 mm thickness
    restored, _ = _restore_nifti(capsys, bundle, source, tmp_path / "out.nii.gz")
    np.testing.assert_allclose(restored.affine, expected, atol=1e-5)
    digest, output = tree_digest(source), tmp_path / "series"
    code, lines, _ = run_main(capsys, bundle, source, output)
    problem = assert_failed_cleanly(code, lines, source, output, digest)
    assert problem == (
        "a derived DICOM series needs single-frame grey-level source slices, this is a multi-frame file (4 frames); "
        "write NIfTI (.nii.gz) instead"
    )


def test_nan_and_inf_voxels_warn_and_give_a_finite_output(bundle: Path, tmp_path: Path) -> None:
    """A real subprocess: the warning is one line on stderr; NaN and -inf become -1024 HU, +inf 3072 HU."""
    data = np.full((16, 16, 2), 40.0, np.float32)
    data[0, 0, 0], data[1, 1, 0], data[2, 2, 1] = np.nan, np.inf, -np.inf
    source = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), source)
    digest, output = tree_digest(source), tmp_path / "out.nii.gz"
    result = run_cli(bundle, source, output)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: nan.nii.gz: 3 NaN/infinite voxel(s) restored as the intensity range's edges "
        "(NaN and -inf as -1024, +inf as 3072); the output is finite"
    ], result.stderr
    assert np.isfinite(nib.load(output).get_fdata()).all() and tree_digest(source) == digest


@pytest.mark.parametrize(
    ("dtype", "values", "expect_warning"),
    [
        ("int8", (-100, 100), False),
        ("uint16", (0, 3000), False),
        ("float64", (-1000.5, 2000.25), False),
        ("int16", (500, 500), False),  # constant image
        ("float32", (-2000, 3500), False),  # partly outside the CT range: clipped, or kept beyond keep_outside's
    ],
)
def test_dtypes_constant_and_out_of_range_values(dtype, values, expect_warning, bundle, tmp_path, capsys) -> None:
    rng = np.random.default_rng(2)
    data = rng.uniform(values[0], values[1], (9, 11, 2)).astype(dtype)
    data.flat[0], data.flat[-1] = values
    source = tmp_path / f"{dtype}.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), source)
    restored, warnings = _restore_nifti(capsys, bundle, source, tmp_path / "out.nii.gz")
    out = restored.get_fdata()
    assert restored.shape == data.shape and restored.get_data_dtype() == np.float32
    kept = (data < -1500) | (data > 3072)  # the CT bundle's keep_outside: handed through unchanged
    assert np.isfinite(out).all() and -1024 <= out[~kept].min() and out[~kept].max() <= 3072
    np.testing.assert_array_equal(out[kept], data[kept])
    np.testing.assert_allclose(restored.affine, AFFINE, atol=1e-5)
    assert len(warnings) == int(expect_warning), warnings


def test_image_smaller_than_the_roi(bundle: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "tiny.nii.gz"
    data = np.random.default_rng(3).integers(-1000, 1000, (5, 7, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, AFFINE), source)
    restored, _ = _restore_nifti(capsys, bundle, source, tmp_path / "out.nii.gz")  # the tiny bundle's ROI: 16 x 16
    assert restored.shape == (5, 7, 3)
    np.testing.assert_allclose(restored.affine, AFFINE, atol=1e-5)
    # one window of the slice itself (rows j = 7, columns i = 5), never a constant-padded 16 x 16 one
    overrides = {f"network_def#{k}": v for k, v in TINY_NETWORK.items()}
    overrides.update(roi_size=[7, 5], device="cpu", progress=False)
    restorer = load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("restorer")
    exact = restorer(read_volume(find_inputs(source)[0]))
    np.testing.assert_allclose(restored.get_fdata(), exact[0].numpy(), rtol=0, atol=1e-2)


def test_nifti2_is_read_although_simpleitk_cannot(bundle: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "v2.nii"
    data = np.random.default_rng(4).integers(-1000, 1000, (10, 8, 2)).astype(np.int16)
    nib.save(nib.Nifti2Image(data, AFFINE), source)
    restored, _ = _restore_nifti(capsys, bundle, source, tmp_path / "out.nii.gz")
    assert restored.shape == data.shape
    np.testing.assert_allclose(restored.affine, AFFINE, atol=1e-5)


def _rle(path: Path) -> str:
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return str(RLELossless)


@pytest.mark.parametrize(
    ("encode", "syntax"),
    [
        (lambda p: compress_slice(p, "JPEG2000"), "1.2.840.10008.1.2.4.90"),  # JPEG 2000 lossless
        (lambda p: compress_slice(p, "JPEG"), "1.2.840.10008.1.2.4.70"),  # JPEG lossless, process 14 SV1
        (_rle, "1.2.840.10008.1.2.5"),  # RLE lossless (pydicom's encoder)
    ],
    ids=["jpeg2000", "jpeg-lossless", "rle"],
)
def test_compressed_series_decodes_like_the_uncompressed_one(encode, syntax, bundle, tmp_path, capsys) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    write_ct_series(plain, n=3)
    shutil.copytree(plain, packed)
    assert {encode(p) for p in sorted(packed.iterdir())} == {syntax}
    reference, decoded = (read_volume(InputImage(f, f.name, is_dicom=True)) for f in (plain, packed))
    np.testing.assert_array_equal(decoded.numpy(), reference.numpy())
    np.testing.assert_allclose(decoded.affine.numpy(), reference.affine.numpy())
    digest, output = tree_digest(packed), tmp_path / "restored"
    code, lines, _ = run_main(capsys, bundle, packed, output)
    assert code == 0 and tree_digest(packed) == digest, lines
    written = [pydicom.dcmread(p) for p in sorted(output.iterdir())]
    assert len(written) == 3 and {str(d.file_meta.TransferSyntaxUID) for d in written} == {"1.2.840.10008.1.2.1"}
