"""DICOM series and NIfTI writers: real files written and read back with SimpleITK, pydicom and nibabel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from pydicom.uid import ExplicitVRLittleEndian

import monai_rwkv.data.dicom_writer as dicom_writer
from monai_rwkv.data import (
    DICOM_SOURCE_FILES,
    SimpleITKReader,
    atomic_output_dir,
    choose_rescale,
    sanitize_filename,
    sitk_load_image,
    source_files_from_meta,
    write_dicom_series,
    write_nifti,
)
from monai_rwkv.data.provenance import (
    DICOM_SLICE_DERIVATIONS,
    RESTORED_MARK,
    nifti_restoration_note,
    restoration_note,
    restored_note,
)
from tests.data.conftest import copy_series, tree_digest

GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness")
KEPT_TAGS = ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "FrameOfReferenceUID", "Modality")


def _restored(img: MetaTensor) -> MetaTensor:
    """A stand-in for a network output: float HU values, not integers."""
    gen = torch.Generator().manual_seed(0)
    return img.float() * 0.97 + torch.rand(img.shape, generator=gen) * 3.0 - 20.0


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_derived_ct_series_round_trip(ct5n: Path, tmp_path: Path) -> None:
    before = tree_digest(ct5n)
    img = sitk_load_image(image_only=True)(ct5n)
    restored = _restored(img)
    out = tmp_path / "restored"
    files = write_dicom_series(restored, img.meta, out, "RestoreRWKV-CT", "1.2.3")
    assert [f.name for f in files] == [f"IM{k:06d}.dcm" for k in range(1, 6)]
    assert sorted(os.listdir(tmp_path)) == ["ct5n", "restored"]  # no temporary folder left behind
    assert tree_digest(ct5n) == before
    # SimpleITK / GDCM, independently of our reader: same geometry, values within the rescale quantisation
    itk_src, itk_out = _sitk_series(ct5n), _sitk_series(out)
    for get in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        np.testing.assert_allclose(getattr(itk_out, get)(), getattr(itk_src, get)(), atol=1e-6)
    itk_values = sitk.GetArrayFromImage(itk_out).T  # (k, j, i) -> (i, j, k)
    np.testing.assert_allclose(itk_values, restored.numpy(), atol=0.5 + 1e-4)
    # pydicom: tags
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in img.meta[DICOM_SOURCE_FILES]]
    outputs = [pydicom.dcmread(f) for f in files]
    assert len({d.SeriesInstanceUID for d in outputs}) == 1
    assert outputs[0].SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in outputs} | {d.SOPInstanceUID for d in sources}) == 10
    for k, (src, dst) in enumerate(zip(sources, outputs)):
        assert dst.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert list(dst.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert "RestoreRWKV-CT" in dst.SeriesDescription and "1.2.3" in dst.SeriesDescription
        assert "RestoreRWKV-CT" in dst.DerivationDescription
        assert dst.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert (float(dst.RescaleSlope), float(dst.RescaleIntercept)) == (1.0, -1024.0)
        assert dst.pixel_array.dtype == np.int16 and dst.InstanceNumber == k + 1
        for tag in GEOMETRY_TAGS + KEPT_TAGS:
            assert dst.get(tag) == src.get(tag), tag
        hu = dst.pixel_array.T * float(dst.RescaleSlope) + float(dst.RescaleIntercept)
        np.testing.assert_allclose(hu, restored[:, :, k].numpy(), atol=0.5 + 1e-4)
    # our reader on the output: identical affine and the same slice order; the output is recognised as restored
    back = sitk_load_image(image_only=True)(out)
    np.testing.assert_allclose(back.affine.numpy(), img.affine.numpy(), atol=1e-9)
    note = "Image restoration by RestoreRWKV-CT version 1.2.3 (monai_rwkv)"
    assert outputs[0].DerivationDescription == note
    assert back.meta[DICOM_SLICE_DERIVATIONS] == [note] * 5 and restored_note(back.meta) == note
    assert restored_note(img.meta) is None and img.meta[DICOM_SLICE_DERIVATIONS] == [""] * 5


def test_gap_series_keeps_true_positions(ct2: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="non-uniform"):
        img = sitk_load_image(image_only=True)(ct2)
    files = write_dicom_series(img, img.meta, tmp_path / "out", "m", "v")
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    np.testing.assert_allclose(z, img.meta["dicom_image_position_patient"][:, 2])


def test_compressed_mr_source_gives_uncompressed_float_rescale(tmp_path: Path) -> None:
    src = copy_series("MR_small_jp2klossless.dcm", tmp_path / "src")
    img = sitk_load_image(image_only=True)(src)
    restored = img.float() / 1000.0  # small non-integer values: needs a non-unit slope
    files = write_dicom_series(restored, [src], tmp_path / "out", "RestoreRWKV-MR", "0.1", stored_dtype="uint16")
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and ds.PixelRepresentation == 0
    slope = float(ds.RescaleSlope)
    assert 0 < slope < 1e-4
    back = SimpleITKReader().get_data(SimpleITKReader().read(files[0]))[0]
    np.testing.assert_allclose(back, restored.numpy(), atol=slope / 2 + 1e-6)


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_any_source_encoding_gives_explicit_little_endian(name: str, tmp_path: Path) -> None:
    src = copy_series(name, tmp_path / "src")
    img = sitk_load_image(image_only=True)(src)
    files = write_dicom_series(img, img.meta, tmp_path / "out", "m", "v")
    ds, ref = pydicom.dcmread(files[0]), pydicom.dcmread(src)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    for tag in GEOMETRY_TAGS + KEPT_TAGS:
        assert ds.get(tag) == ref.get(tag), tag
    assert "RescaleSlope" not in ref or ds.RescaleSlope == ref.RescaleSlope  # no Modality LUT added to MR
    np.testing.assert_array_equal(ds.pixel_array.T[:, :, None] * float(ds.get("RescaleSlope", 1)), img.numpy())


def test_no_overwrite_and_atomic_replace(ct5n: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = sitk_load_image(image_only=True)(ct5n)
    out = tmp_path / "out"
    write_dicom_series(img, img.meta, out, "m", "1")
    first = tree_digest(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_dicom_series(img, img.meta, out, "m", "2")
    assert tree_digest(out) == first
    # fault injection: the third slice fails; the old output must survive untouched, no temporary folder left
    real = dicom_writer._derive_slice

    def failing(src, pixels, index, ctx):
        if index == 2:
            raise OSError("disk full (injected)")
        return real(src, pixels, index, ctx)

    monkeypatch.setattr(dicom_writer, "_derive_slice", failing)
    with pytest.raises(OSError, match="injected"):
        write_dicom_series(img, img.meta, out, "m", "3", overwrite=True)
    with pytest.raises(OSError, match="injected"):
        write_dicom_series(img, img.meta, tmp_path / "new", "m", "3")
    assert tree_digest(out) == first and sorted(os.listdir(tmp_path)) == ["ct5n", "out"]
    monkeypatch.undo()
    write_dicom_series(img, img.meta, out, "m", "4", overwrite=True)
    assert "m 4" in pydicom.dcmread(out / "IM000001.dcm").SeriesDescription
    assert sorted(os.listdir(tmp_path)) == ["ct5n", "out"]


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path: Path) -> None:
    final = tmp_path / "result"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(final) as tmp:
            (tmp / "a.dcm").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_refuses_mismatched_volume(ct5n: Path, tmp_path: Path) -> None:
    img = sitk_load_image(image_only=True)(ct5n)
    with pytest.raises(ValueError, match="does not match the source series"):
        write_dicom_series(img[:, :, :4], img.meta, tmp_path / "a", "m", "v")
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    flipped = MetaTensor(torch.from_numpy(img.numpy().copy()), affine=img.affine.clone() @ flip)
    with pytest.raises(ValueError, match="affine differs"):
        write_dicom_series(flipped, img.meta, tmp_path / "b", "m", "v")
    nan = img.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        write_dicom_series(nan, img.meta, tmp_path / "c", "m", "v")
    rtdose = copy_series("rtdose.dcm", tmp_path / "dose")  # a 15-frame file
    with pytest.raises(ValueError, match="multi-frame"):
        write_dicom_series(np.zeros((10, 10, 15)), [rtdose], tmp_path / "d", "m", "v")
    assert sorted(os.listdir(tmp_path)) == ["ct5n", "dose"]


def test_source_as_folder_and_collated_meta(ct5n: Path, tmp_path: Path) -> None:
    img = sitk_load_image(image_only=True)(ct5n)
    collated = {DICOM_SOURCE_FILES: [[f] for f in img.meta[DICOM_SOURCE_FILES]]}
    assert source_files_from_meta(collated) == img.meta[DICOM_SOURCE_FILES]
    files = write_dicom_series(img.numpy()[None], ct5n, tmp_path / "o", "m", "v")  # channel-first numpy, folder
    np.testing.assert_allclose(sitk.GetArrayFromImage(_sitk_series(tmp_path / "o")).T, img.numpy())
    assert len(files) == 5


@pytest.mark.parametrize(
    "vmin, vmax, modality, dtype, expected",
    [
        (-1024.3, 3071.0, "CT", "int16", (1.0, -1024.0)),
        (-1024.0, 3071.0, "CT", "uint16", (1.0, -1024.0)),
        (-1100.0, 3071.0, "CT", "uint16", (1.0, -1100.0)),
        (-1000.0, 32000.0, "CT", "int16", (1.0, 0.0)),
        (0.0, 4000.0, "MR", "int16", (1.0, 0.0)),
    ],
)
def test_choose_rescale_simple_cases(vmin, vmax, modality, dtype, expected) -> None:
    rescale = choose_rescale(vmin, vmax, modality, dtype)
    assert (rescale.slope, rescale.intercept) == expected


@pytest.mark.parametrize("vmin, vmax, dtype", [(-5e4, 9e4, "int16"), (0.0, 1.0, "uint16"), (-0.37, 12.9, "int16")])
def test_choose_rescale_linear_fit(vmin: float, vmax: float, dtype: str) -> None:
    rescale = choose_rescale(vmin, vmax, "CT" if vmax > 1e4 else "PT", dtype)
    assert len(rescale.slope_ds) <= 16 and len(rescale.intercept_ds) <= 16
    values = np.linspace(vmin, vmax, 10001)
    back = rescale.quantise(values) * rescale.slope + rescale.intercept
    assert np.max(np.abs(back - values)) <= rescale.slope / 2 * (1 + 1e-6)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("nul\x00byte", "nul_byte"),
        ("Müller^Jürgen", "Muller_Jurgen"),
        ("..", "unnamed"),
        ("", "unnamed"),
        ("CON", "_CON"),
        ("日本語", "unnamed"),
        (".hidden", "hidden"),
    ],
)
def test_sanitize_filename(text: str, expected: str) -> None:
    assert sanitize_filename(text) == expected


def test_sanitize_filename_long_names_stay_distinct() -> None:
    a, b = sanitize_filename("x" * 500 + "a"), sanitize_filename("x" * 500 + "b")
    assert len(a) <= 100 and len(b) <= 100 and a != b


def test_nifti_writer_keeps_affine_and_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(0, 300, (7, 6, 5)).astype(np.float64)
    affine = np.array([[-0.7, 0.1, 0.0, 12.3], [0.05, 0.69, 0.2, -4.5], [0.0, -0.1, 2.5, 33.3], [0, 0, 0, 1]])
    f32 = write_nifti(torch.from_numpy(data), tmp_path / "a.nii.gz", affine)
    i16 = write_nifti(
        MetaTensor(torch.from_numpy(data), affine=torch.from_numpy(affine)), tmp_path / "b.nii", dtype="int16"
    )
    for path, dtype in ((f32, np.float32), (i16, np.int16)):
        img = nib.load(path)
        assert img.get_data_dtype() == dtype and img.header["sform_code"] == 1
        np.testing.assert_array_equal(img.affine, affine.astype(np.float32))
        np.testing.assert_allclose(np.asarray(img.dataobj), data, atol=0.5 if dtype == np.int16 else 1e-4)
    assert nib.load(f32).header["qform_code"] == 0  # sheared: only the sform can hold it exactly
    with pytest.raises(FileExistsError):
        write_nifti(data, f32, affine)
    write_nifti(data * 0, f32, affine, overwrite=True)
    assert float(np.abs(nib.load(f32).get_fdata()).max()) == 0.0
    with pytest.raises(ValueError, match="do not fit int16"):
        write_nifti(data * 1000, tmp_path / "c.nii.gz", affine, dtype="int16")
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz", "b.nii"]


def test_nifti_writer_channel_first_and_qform(tmp_path: Path) -> None:
    affine = np.diag([-0.5, -0.5, 2.0, 1.0])
    out = write_nifti(np.ones((1, 4, 5, 6), np.float32), tmp_path / "x.nii.gz", affine, channel_first=True)
    img = nib.load(out)
    assert img.shape == (4, 5, 6) and img.header["qform_code"] == 1
    np.testing.assert_allclose(img.header.get_qform(), affine, atol=1e-6)


def test_restoration_notes_fit_their_fields_and_are_found_again(tmp_path: Path) -> None:
    long_name = "Restore-RWKV " + "very long model name " * 10
    for limit in (79, 1024):
        note = restoration_note(long_name, "0.14.0", limit)
        assert len(note) <= limit and note.endswith(" " + RESTORED_MARK) and note.startswith("Image restoration by")
    assert restoration_note("CT", "1.0") == "Image restoration by CT version 1.0 (monai_rwkv)"
    nifti_note = nifti_restoration_note("Réseau CT", "1.0")  # ASCII for the NIfTI header
    assert nifti_note == "Restored by R?seau CT 1.0 (monai_rwkv)"
    shortened = nifti_restoration_note(long_name, "0.14.0")
    assert len(shortened) <= 79 and shortened.startswith("Restored by Restore-RWKV very long model name")
    assert shortened.endswith(" ... " + RESTORED_MARK)  # cut at a word, and it says so
    note = nifti_restoration_note("Restore-RWKV CT denoising (light)", "0.15.0 coarse fusion residual smoothing")
    assert note == "Restored by Restore-RWKV CT denoising (light) 0.15.0 coarse ... (monai_rwkv)"
    with pytest.raises(ValueError, match="max_length"):
        restoration_note("CT", "1.0", 5)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    out = write_nifti(np.ones((4, 5, 6), np.float32), tmp_path / "r.nii.gz", affine, description=nifti_note)
    assert nib.load(out).header["descrip"].item().decode() == nifti_note
    back = sitk_load_image(image_only=True)(out)
    assert restored_note(back.meta) == nifti_note
    plain = write_nifti(np.ones((4, 5, 6), np.float32), tmp_path / "p.nii.gz", affine)
    assert restored_note(sitk_load_image(image_only=True)(plain).meta) is None
    assert restored_note({"descrip": "Image restoration by someone else"}) is None
    for bad in ("x" * 80, "caf\u00e9"):
        with pytest.raises(ValueError, match="ASCII of at most 79"):
            write_nifti(np.ones((4, 5, 6), np.float32), tmp_path / "bad.nii.gz", affine, description=bad)
    assert not (tmp_path / "bad.nii.gz").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_sanitize_filename_is_always_a_safe_component(text: str) -> None:
    name = sanitize_filename(text)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name) and ".." not in name and len(name) <= 100


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(0, 2e6, allow_nan=False),
    st.sampled_from(["CT", "MR", "PT"]),
    st.sampled_from(["int16", "uint16"]),
)
def test_choose_rescale_error_bound(vmin: float, span: float, modality: str, dtype: str) -> None:
    rescale = choose_rescale(vmin, vmin + span, modality, dtype)
    values = np.array([vmin, vmin + span / 3, vmin + span])
    back = rescale.quantise(values) * rescale.slope + rescale.intercept
    assert np.max(np.abs(back - values)) <= rescale.slope / 2 * (1 + 1e-6) + 1e-9 * max(1.0, abs(vmin) + span)


def test_whole_units_are_kept_for_sources_that_store_their_units(seed: int) -> None:
    """An MR source without a Modality LUT: restored values are rounded to whole units when that loses little."""
    rng = np.random.default_rng(seed)
    vmax = float(rng.uniform(300, 60000))
    vmin = float(rng.uniform(0, vmax - 256))
    rescale = choose_rescale(vmin + 0.3, vmax - 0.2, "MR", "uint16", integer_units=True)
    assert (rescale.slope_ds, rescale.intercept_ds) == ("1", "0")
    values = rng.uniform(vmin, vmax, 100)
    np.testing.assert_array_equal(rescale.quantise(values), np.rint(values).astype(np.uint16))
    narrow = choose_rescale(0.01, 4.2, "MR", "uint16", integer_units=True)  # too few whole units: a fine slope
    assert float(narrow.slope_ds) < 1e-3
    negative = choose_rescale(-5.5, 900.0, "MR", "uint16", integer_units=True)  # does not fit uint16 as is
    assert (negative.slope_ds, negative.intercept_ds) != ("1", "0")
