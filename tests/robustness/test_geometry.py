"""
Geometry is never invented: gantry tilt and oblique series keep their affine (NIfTI) and each slice's
ImageOrientationPatient / ImagePositionPatient (DICOM); gaps warn; series are never mixed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_rwkv.apps.restore import InputImage, read_volume
from tests.robustness.conftest import (
    assert_failed_cleanly,
    error_lines,
    leftovers,
    run_cli,
    run_main,
    tree_digest,
    write_ct_series,
)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _restore_both(capsys, bundle: Path, series: Path, tmp_path: Path) -> tuple[list[str], nib.Nifti1Image, Path]:
    digest = tree_digest(series)
    code, lines, _ = run_main(capsys, bundle, series, tmp_path / "out.nii.gz")
    assert code == 0, lines
    code, more, _ = run_main(capsys, bundle, series, tmp_path / "out_series")
    assert code == 0, more
    assert tree_digest(series) == digest and leftovers(tmp_path) == []
    return lines + more, nib.load(tmp_path / "out.nii.gz"), tmp_path / "out_series"


def _assert_dicom_geometry_mirrors_the_source(source: Path, output: Path) -> None:
    """Each output slice carries the orientation and position of the source slice it references."""
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in source.iterdir()}
    written = [pydicom.dcmread(p) for p in sorted(output.iterdir())]
    assert len(written) == len(by_uid)
    for ds in written:
        src = by_uid[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose(np.asarray(ds.ImageOrientationPatient, float), src.ImageOrientationPatient)
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), src.ImagePositionPatient)


@pytest.mark.parametrize(
    ("orientation", "step", "tilted"),
    [
        ((1, 0, 0, 0, np.cos(np.radians(15)), np.sin(np.radians(15))), (0, 0, 2.0), True),  # 15 deg gantry tilt
        (tuple(_rotation("z", 30)[:, 0]) + tuple((_rotation("x", 20) @ _rotation("z", 30))[:, 1]), None, False),
    ],
    ids=["gantry-tilt", "oblique"],
)
def test_tilted_and_oblique_series_keep_their_geometry(orientation, step, tilted, bundle, tmp_path, capsys) -> None:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    col = col - (col @ row) * row  # exact orthonormal cosines for the oblique case
    orientation = tuple(row) + tuple(col / np.linalg.norm(col))
    series = tmp_path / "series"
    write_ct_series(series, n=4, orientation=orientation, step=step)
    with warnings.catch_warnings():  # the test's own reads: only the runs' warnings are counted below
        warnings.simplefilter("ignore")
        expected = read_volume(InputImage(series, "s", is_dicom=True)).affine.numpy()
    if tilted:  # slices stacked along z, not along the normal: a sheared affine
        columns = expected[:3, :3] / np.linalg.norm(expected[:3, :3], axis=0)
        assert abs(columns[:, 1] @ columns[:, 2]) > 0.2  # sin(15 deg) = 0.26
    lines, restored, out_series = _restore_both(capsys, bundle, series, tmp_path)
    np.testing.assert_allclose(restored.affine, expected, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reread = read_volume(InputImage(out_series, "o", is_dicom=True))
    np.testing.assert_allclose(reread.affine.numpy(), expected, atol=1e-4)
    _assert_dicom_geometry_mirrors_the_source(series, out_series)
    tilt_warnings = [line for line in lines if "gantry tilt" in line]
    assert len(tilt_warnings) == (2 if tilted else 0), lines  # one per run


def test_missing_slices_warn_and_the_dicom_output_keeps_true_positions(bundle, tmp_path, capsys) -> None:
    z = np.array([0.0, 2.0, 4.0, 10.0, 12.0])  # two slices missing between 4 and 10 mm
    series = tmp_path / "gappy"
    write_ct_series(series, positions=np.stack([np.full(5, -70.0), np.full(5, -140.0), z], axis=1))
    lines, restored, out_series = _restore_both(capsys, bundle, series, tmp_path)
    gap_warnings = [line for line in lines if line.startswith("warning: ") and "non-uniform slice spacing" in line]
    assert len(gap_warnings) == 2 and "~2 slice(s) missing" in gap_warnings[0], lines
    assert "a DICOM output keeps each slice's true position" in gap_warnings[0]
    assert restored.affine[2, 2] == pytest.approx(2.0, abs=1e-5)  # NIfTI: the median step
    _assert_dicom_geometry_mirrors_the_source(series, out_series)
    written_z = sorted(float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in out_series.iterdir())
    np.testing.assert_allclose(written_z, z, atol=1e-4)


def _two_series(folder: Path) -> tuple[str, str]:
    write_ct_series(folder, n=3, series_uid="1.2.826.0.1.3680043.10.1.1", description="head", prefix="A")
    write_ct_series(folder, n=4, series_uid="1.2.826.0.1.3680043.10.1.2", description="neck", seed=1, prefix="B")
    return "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"


def test_cli_refuses_a_folder_of_two_series_and_lists_them(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    uid_a, uid_b = _two_series(folder)
    digest, output = tree_digest(folder), tmp_path / "out.nii.gz"
    result = run_cli(bundle, folder, output)
    problem = assert_failed_cleanly(result.returncode, result.stderr.splitlines(), folder, output, digest)
    assert problem == (
        f"2 DICOM series in this folder (never mixed); restore one at a time with --series-uid UID: "
        f"{uid_a} [CT 'head', 3 file(s)]; {uid_b} [CT 'neck', 4 file(s)]"
    )


def test_cli_series_uid_picks_one_series(bundle: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mixed"
    _, uid_b = _two_series(folder)
    code, lines, _ = run_main(capsys, bundle, folder, tmp_path / "neck", "--series-uid", uid_b)
    assert code == 0, lines
    written = [pydicom.dcmread(p) for p in (tmp_path / "neck").iterdir()]
    assert len(written) == 4 and {d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in written} == {
        pydicom.dcmread(p).SOPInstanceUID for p in folder.glob("B*")
    }
    code, lines, _ = run_main(capsys, bundle, folder, tmp_path / "x.nii.gz", "--series-uid", "1.2.3")
    assert code == 1 and error_lines(lines)[0].startswith(f"error: {folder}: --series-uid 1.2.3 not found; series")
