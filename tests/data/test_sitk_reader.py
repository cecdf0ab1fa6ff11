"""SimpleITKReader on real DICOM and NIfTI files: geometry vs pydicom headers and vs NIfTI through NibabelReader."""

from __future__ import annotations

import gzip
import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.data import MetaTensor, NibabelReader
from monai.transforms import LoadImage, LoadImaged

from monai_rwkv.data import (
    DICOM_SOURCE_FILES,
    ImageReadError,
    SimpleITKReader,
    sitk_load_image,
    sitk_load_imaged,
    write_nifti,
)
from tests.data.conftest import CT2, CT5N, NIBABEL_DATA, copy_series, pydicom_file, tree_digest

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _read(path, **kwargs):
    reader = SimpleITKReader(**kwargs)
    return reader.get_data(reader.read(path))


def _nibabel(path):
    reader = NibabelReader()
    return reader.get_data(reader.read(str(path)))


def _itk_nifti(src: Path, out: Path) -> Path:
    """Convert DICOM to NIfTI with SimpleITK's own series reader / writer (an independent path)."""
    if src.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(src)))
        img = reader.Execute()
    else:
        img = sitk.ReadImage(str(src))
    sitk.WriteImage(img, str(out))
    return out


def _physical(path: str) -> tuple[np.ndarray, pydicom.Dataset]:
    """pydicom's own decoding with the Modality LUT: (columns, rows) physical values and the dataset."""
    ds = pydicom.dcmread(path)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    return ds.pixel_array.T * slope + intercept, ds


def _affine_from_header(ds: pydicom.Dataset, step: np.ndarray) -> np.ndarray:
    """RAS affine built by hand from one slice's IPP/IOP/PixelSpacing and a slice step vector (LPS mm)."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(x) for x in ds.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = iop[:3] * col_spacing, iop[3:] * row_spacing, step
    lps[:3, 3] = np.asarray(ds.ImagePositionPatient, dtype=float)
    return LPS_TO_RAS @ lps


def test_ct_series_geometry_and_hu(ct5n: Path, tmp_path: Path) -> None:
    before = tree_digest(ct5n)
    data, meta = _read(ct5n)
    assert data.shape == (16, 16, 5) and tuple(meta["spatial_shape"]) == (16, 16, 5)
    assert meta["space"] == "RAS" and np.isnan(meta["original_channel_dim"])
    # slices sorted by position along the normal (+z here), which is the reverse of InstanceNumber
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in meta[DICOM_SOURCE_FILES]]
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert z == sorted(z) and [int(h.InstanceNumber) for h in headers] == [10, 9, 8, 7, 6]
    expected = _affine_from_header(headers[0], np.array([0.0, 0.0, 2.5]))
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], [0.488281, 0.488281, 2.5], atol=1e-6)
    for k, path in enumerate(meta[DICOM_SOURCE_FILES]):  # HU, slice by slice, vs pydicom's decoding
        np.testing.assert_array_equal(data[:, :, k], _physical(path)[0])
    assert data.min() < -800  # air in HU, i.e. the intercept was applied
    # same geometry as SimpleITK's own DICOM -> NIfTI conversion read by MONAI's NibabelReader
    nib_data, nib_meta = _nibabel(_itk_nifti(ct5n, tmp_path / "itk.nii.gz"))
    np.testing.assert_allclose(meta["affine"], nib_meta["affine"], atol=1e-4)
    np.testing.assert_array_equal(data, nib_data)
    # and a NIfTI round trip of our own output
    rt_data, rt_meta = _nibabel(write_nifti(data, tmp_path / "rt.nii.gz", meta["affine"], dtype="int16"))
    np.testing.assert_array_equal(rt_meta["affine"], meta["affine"].astype(np.float32))
    np.testing.assert_array_equal(rt_data, data)
    assert tree_digest(ct5n) == before  # inputs were only read


def test_gap_series_warns_and_keeps_positions(ct2: Path) -> None:
    with pytest.warns(UserWarning, match="non-uniform slice spacing.*missing"):
        data, meta = _read(ct2)
    assert data.shape == (16, 16, 4) and meta["dicom_uniform_spacing"] is False
    true_z = sorted(float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in ct2.iterdir())
    np.testing.assert_allclose(meta["dicom_image_position_patient"][:, 2], true_z, atol=1e-5)
    assert meta["affine"][2, 2] == pytest.approx(1.25, abs=1e-5)  # median step, not ITK's 68.3 mm mean
    assert meta["affine"][2, 3] == pytest.approx(true_z[0], abs=1e-5)
    with pytest.raises(ImageReadError, match="non-uniform"):
        _read(ct2, on_irregular="raise")


def test_radial_mr_folder_is_refused_and_oblique_slices_match(mr700: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not parallel"):
        _read(mr700)
    oblique = 0
    for path in sorted(mr700.iterdir()):
        data, meta = _read(path)
        ds = pydicom.dcmread(path)
        normal = np.cross(
            np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
        )
        expected = _affine_from_header(ds, normal / np.linalg.norm(normal))
        np.testing.assert_allclose(meta["affine"], expected, atol=1e-6)
        oblique += abs(meta["affine"][0, 0]) > 0.05 and abs(meta["affine"][1, 0]) > 0.05
        np.testing.assert_array_equal(data[:, :, 0], _physical(str(path))[0])
        _, nib_meta = _nibabel(_itk_nifti(path, tmp_path / "oblique.nii.gz"))
        np.testing.assert_allclose(meta["affine"], nib_meta["affine"], atol=1e-4)
    assert oblique >= 5  # the row direction is rotated away from the x axis in most slices


def test_single_ct_file(tmp_path: Path) -> None:
    path = copy_series("CT_small.dcm", tmp_path / "one")
    data, meta = _read(path)
    assert data.shape == (128, 128, 1)
    hu, ds = _physical(str(path))
    np.testing.assert_array_equal(data[:, :, 0], hu)
    expected = _affine_from_header(ds, np.array([0.0, 0.0, float(ds.SpacingBetweenSlices)]))
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-6)
    _, nib_meta = _nibabel(_itk_nifti(path, tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(meta["affine"], nib_meta["affine"], atol=1e-4)


def test_compressed_dicom_is_decoded(tmp_path: Path) -> None:
    ref, _ = _read(pydicom_file("MR_small.dcm"))
    data, _ = _read(copy_series("MR_small_jp2klossless.dcm", tmp_path / "j2k"))
    np.testing.assert_array_equal(data, ref)


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii"])
def test_nifti_matches_nibabel_reader(name: str) -> None:
    data, meta = _read(NIBABEL_DATA / name)
    ref, ref_meta = _nibabel(NIBABEL_DATA / name)
    assert data.shape == ref.shape
    np.testing.assert_array_equal(data, ref)
    np.testing.assert_allclose(meta["affine"], ref_meta["affine"], atol=1e-4)
    np.testing.assert_array_equal(meta["spatial_shape"], ref_meta["spatial_shape"])
    assert meta["original_channel_dim"] == ref_meta["original_channel_dim"] or (
        np.isnan(meta["original_channel_dim"]) and np.isnan(ref_meta["original_channel_dim"])
    )


def test_monai_load_image_and_load_imaged(ct5n: Path) -> None:
    img = LoadImage(reader=SimpleITKReader(), image_only=True)(ct5n)  # the plain MONAI way
    assert isinstance(img, MetaTensor) and img.shape == (16, 16, 5)
    assert img.meta[DICOM_SOURCE_FILES][0].startswith(str(ct5n)) and img.meta["filename_or_obj"] == str(ct5n)
    out = sitk_load_imaged("image", ensure_channel_first=True)({"image": str(ct5n)})
    np.testing.assert_allclose(out["image"].affine.numpy(), img.affine.numpy())
    assert out["image"].shape == (1, 16, 16, 5) and float(out["image"].min()) < -800
    out2 = LoadImaged("image", reader=SimpleITKReader(), image_only=True)({"image": str(ct5n)})
    assert out2["image"].meta["space"] == "RAS"


def test_two_series_in_one_folder(tmp_path: Path) -> None:
    mixed = copy_series(CT5N, tmp_path / "mixed")
    for f in Path(pydicom_file(CT2)).iterdir():
        shutil.copy2(f, mixed / f"ct2_{f.name}")
    uid5 = pydicom.dcmread(next(Path(pydicom_file(CT5N)).iterdir())).SeriesInstanceUID
    uid2 = pydicom.dcmread(next(Path(pydicom_file(CT2)).iterdir())).SeriesInstanceUID
    with pytest.raises(ImageReadError, match="2 DICOM series") as err:
        _read(mixed)
    assert uid5 in str(err.value) and uid2 in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageReadError):  # the strict loader does not fall back to readers that would mix them
        sitk_load_image()(mixed)
    data, meta = _read(mixed, series_uid=uid5)
    assert data.shape == (16, 16, 5) and meta["dicom_series_instance_uid"] == uid5
    with pytest.raises(ImageReadError, match="not found"):
        _read(mixed, series_uid="1.2.3.4")


def test_non_image_dicom_is_skipped(ct5n: Path, tmp_path: Path) -> None:
    shutil.copy2(pydicom_file("test-SR.dcm"), ct5n / "report.dcm")
    shutil.copy2(pydicom_file("rtstruct.dcm"), ct5n / "rtstruct")  # raw DICOM without preamble
    (ct5n / "notes.txt").write_text("not dicom")
    with pytest.warns(UserWarning, match="skipped 2 non-image"):
        data, _ = _read(ct5n)
    assert data.shape == (16, 16, 5)
    only = tmp_path / "only_sr"
    only.mkdir()
    shutil.copy2(pydicom_file("test-SR.dcm"), only / "sr.dcm")
    with pytest.raises(ImageReadError, match="only non-image DICOM"):
        _read(only)


def _one_line_error(path, match: str, **kwargs) -> str:
    with pytest.raises(ImageReadError, match=match) as err:
        _read(path, **kwargs)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))
    return str(err.value)


def test_clear_errors(tmp_path: Path) -> None:
    good = write_nifti(np.arange(4096, dtype=np.float32).reshape(16, 16, 16), tmp_path / "good.nii.gz", np.eye(4))
    raw = gzip.decompress(good.read_bytes())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _one_line_error(truncated, "truncated or corrupt NIfTI: header needs 16736 bytes, the file holds 8368")
    short_nii = tmp_path / "short.nii"  # SimpleITK alone zero-fills both of these silently
    short_nii.write_bytes(raw[:-100])
    _one_line_error(short_nii, "truncated or corrupt NIfTI")
    cut_gzip = tmp_path / "cut_gzip.nii.gz"
    cut_gzip.write_bytes(good.read_bytes()[:200])
    _one_line_error(cut_gzip, "truncated or corrupt|not a readable image")
    fake = tmp_path / "fake.nii.gz"
    fake.write_text("this is a text file, not an image\n" * 20)
    _one_line_error(fake, "not a readable image")
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", "folder is empty")
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(3):
        (texts / f"{i}.dcm").write_text("hello")
    _one_line_error(texts, "no DICOM files among 3")
    _one_line_error(tmp_path / "missing.nii", "no such file")


def test_voxel_limit_refused_before_reading(ct5n: Path, tmp_path: Path) -> None:
    msg = _one_line_error(ct5n, "more than the limit", max_voxels=1000)
    assert "16x16x5 = 1280 voxels" in msg
    header = nib.Nifti1Header()  # a header claiming 10^12 voxels, followed by almost no data
    header.set_data_shape((10000, 10000, 10000))
    header.set_data_dtype(np.float32)
    huge = tmp_path / "huge.nii"
    huge.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    msg = _one_line_error(huge, "more than the limit")
    assert "10000x10000x10000" in msg and "3.73e+03 GiB" in msg


def test_verify_suffix(ct5n: Path, tmp_path: Path) -> None:
    reader = SimpleITKReader()
    assert reader.verify_suffix(str(ct5n)) and reader.verify_suffix(next(ct5n.iterdir()))  # folder, bare DICOM
    assert reader.verify_suffix(["a.nii.gz", "b.nii"]) and not reader.verify_suffix("a.png")


def test_lps_space_option(ct5n: Path) -> None:
    _, ras = _read(ct5n)
    _, lps = _read(ct5n, affine_lps_to_ras=False)
    assert lps["space"] == "LPS"
    np.testing.assert_allclose(LPS_TO_RAS @ lps["affine"], ras["affine"])


def test_stacking_two_inputs_as_channels(ct5n: Path) -> None:
    reader = SimpleITKReader()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data, meta = reader.get_data(reader.read([ct5n, ct5n]))
    assert data.shape == (2, 16, 16, 5) and meta["original_channel_dim"] == 0
    assert os.fspath(ct5n) == meta["filename_or_obj"]
