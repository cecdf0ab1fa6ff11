"""
Property tests: volumes of random shape, spacing, origin and orientation written with ``write_nifti`` /
``write_dicom_series`` and read back with the package's reader keep their geometry and values.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_rwkv.data import sitk_load_image, write_dicom_series, write_nifti

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(*[st.integers(1, 7)] * 3)
spacings = st.tuples(*[st.floats(0.1, 5.0)] * 3)
origins = st.tuples(*[st.floats(-500.0, 500.0)] * 3)


@st.composite
def directions(draw: st.DrawFn) -> np.ndarray:
    """A 3x3 orthonormal matrix: an axis permutation with flips, or an oblique rotation (possibly with a flip)."""
    if draw(st.booleans()):
        perm = draw(st.permutations(range(3)))
        signs = draw(st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3))
        return np.eye(3)[:, list(perm)] * np.asarray(signs)
    seed = draw(st.integers(0, 2**32 - 1))
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))  # uniform over O(3): rotations and reflections


def make_affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def read(path: Path):
    """The package's reader as the bundles use it, native dtype kept: ``(1, i, j, k)`` MetaTensor (RAS affine)."""
    return sitk_load_image(image_only=True, ensure_channel_first=True, dtype=None)(str(path))


@st.composite
def volumes(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    """Random data of a random input dtype, and the NIfTI dtype to write it as (values fit it exactly)."""
    shape = draw(shapes)
    dtype = draw(st.sampled_from(["int16", "uint8", "float32", "float64"]))
    out_dtype = draw(st.sampled_from(["int16", "float32"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        data = rng.integers(0, 256, size=shape).astype(np.uint8)
    elif dtype == "int16" or out_dtype == "int16":
        data = rng.integers(-32768, 32768, size=shape).astype(dtype)
    else:
        data = (rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 4)).astype(dtype)
    return data, out_dtype


@SETTINGS
@given(volumes(), directions(), spacings, origins)
def test_nifti_round_trip(volume, direction, spacing, origin) -> None:
    data, out_dtype = volume
    affine = make_affine(direction, spacing, origin)
    folder = Path(tempfile.mkdtemp())
    try:
        path = write_nifti(data, folder / "v.nii.gz", affine, dtype=out_dtype)
        image = read(path)
    finally:
        shutil.rmtree(folder)
    assert tuple(image.shape) == (1, *data.shape)
    assert image.numpy().dtype == np.dtype(out_dtype)  # the reader keeps the stored type
    np.testing.assert_allclose(image.affine.numpy(), affine, rtol=1e-6, atol=1e-4)
    expected = data.astype(np.float32) if out_dtype == "float32" else data.astype(np.int16)
    np.testing.assert_array_equal(image[0].numpy(), expected)


def ct_series(folder: Path, direction: np.ndarray, spacing, origin, shape, seed: int) -> Path:
    """
    A CT source series written with pydicom: ``shape = (columns, rows, slices)``; the slice normal is the third
    column of the LPS ``direction`` (so slices are stacked along it) and pixels are int16 with slope 1.
    """
    rng = np.random.default_rng(seed)
    lps = np.diag([-1.0, -1.0, 1.0]) @ direction  # RAS -> LPS
    row, col, normal = lps[:, 0], lps[:, 1], lps[:, 2]
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    for k in range(shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "P1", "Test^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = datetime.date.today().strftime("%Y%m%d")
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) * [-1, -1, 1] + k * spacing[2] * normal]
        ds.PixelSpacing = [f"{spacing[1]:.8f}", f"{spacing[0]:.8f}"]  # row spacing (between rows), column spacing
        ds.SliceThickness = f"{spacing[2]:.8f}"
        ds.Rows, ds.Columns = shape[1], shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        ds.PixelData = rng.integers(-1024, 3000, size=(shape[1], shape[0])).astype("<i2").tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return folder


@SETTINGS
@given(
    directions(),
    spacings,
    origins,
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4)),
    st.integers(0, 2**32 - 1),
    st.floats(-3000.0, 3000.0),
    st.floats(1e-3, 60000.0),
)
def test_dicom_series_round_trip(direction, spacing, origin, shape, seed, low, span) -> None:
    if np.linalg.det(direction) < 0:  # DICOM slices are stacked along row x column (the reader's convention)
        direction = direction * [1.0, 1.0, -1.0]
    folder = Path(tempfile.mkdtemp())
    try:
        source = read(ct_series(folder / "src", direction, spacing, origin, shape, seed))
        # the source: its geometry as built (RAS); one slice: 1 mm along k (no SpacingBetweenSlices; ITK's convention)
        step = spacing if shape[2] > 1 else (*spacing[:2], 1.0)
        np.testing.assert_allclose(source.affine.numpy(), make_affine(direction, step, origin), atol=1e-4)
        values = np.random.default_rng(seed + 1).uniform(low, low + span, size=(1, *shape)).astype(np.float32)
        restored = source.clone().float()
        restored[:] = torch.from_numpy(values)
        files = write_dicom_series(restored, source.meta, folder / "out", "prop-model", "1")
        back = read(folder / "out")
        slope = float(pydicom.dcmread(files[0], stop_before_pixels=True).RescaleSlope)
    finally:
        shutil.rmtree(folder)
    assert tuple(back.shape) == tuple(source.shape)
    np.testing.assert_allclose(back.affine.numpy(), source.affine.numpy(), rtol=1e-6, atol=1e-4)
    tolerance = slope / 2 * (1 + 1e-6) + 1e-6 * max(abs(low), abs(low + span))
    np.testing.assert_allclose(back[0].numpy().astype(np.float64), values[0], rtol=0, atol=tolerance)
