"""
Inputs that cannot be restored: every one fails with one ``error: <file>: <problem>`` line, exit status 1, the input
untouched and nothing (not even a temporary file) under the output folder. One case runs as a real subprocess,
the others call ``main(argv)`` in-process (same code, no interpreter start-up).
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.data.conftest import pydicom_file
from tests.robustness.conftest import (
    assert_failed_cleanly,
    error_lines,
    leftovers,
    run_cli,
    run_main,
    tree_digest,
    write_ct_series,
)


def _volume(path: Path, shape=(16, 16, 16)) -> Path:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_truncated_nifti_as_a_subprocess(bundle: Path, tmp_path: Path) -> None:
    good = _volume(tmp_path / "good.nii.gz")
    raw = gzip.decompress(good.read_bytes())
    source = tmp_path / "in" / "truncated.nii.gz"
    source.parent.mkdir()
    source.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    digest, output = tree_digest(source), tmp_path / "out" / "restored.nii.gz"
    result = run_cli(bundle, source, output)
    problem = assert_failed_cleanly(result.returncode, result.stderr.splitlines(), source, output, digest)
    assert problem.startswith("truncated or corrupt NIfTI: header needs 16736 bytes, the file holds 8368")
    assert not output.parent.exists()  # the folder made for the output is removed too


def _truncated_uncompressed(tmp_path: Path) -> Path:
    source = tmp_path / "short.nii"
    source.write_bytes(gzip.decompress(_volume(tmp_path / "full.nii.gz").read_bytes())[:-100])
    return source


def _corrupt_gzip(tmp_path: Path) -> Path:
    good = _volume(tmp_path / "full.nii.gz")
    source = tmp_path / "corrupt.nii.gz"
    data = bytearray(good.read_bytes())
    data[400:420] = b"\xff" * 20  # inside the deflate stream
    source.write_bytes(bytes(data))
    return source


def _text_named_nifti(tmp_path: Path) -> Path:
    source = tmp_path / "notes.nii.gz"
    source.write_text("this is a text file, not an image\n" * 20)
    return source


def _gzipped_text(tmp_path: Path) -> Path:
    source = tmp_path / "report.nii.gz"
    source.write_bytes(gzip.compress(b"<html>not an image</html>\n" * 40))
    return source


def _empty_file(tmp_path: Path) -> Path:
    source = tmp_path / "empty.nii.gz"
    source.touch()
    return source


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _non_dicom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.dcm").write_text("hello")
    (folder / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _folder_of_nifti_files(tmp_path: Path) -> Path:
    """A folder of volumes given where one scan is expected: the error names them and says what to pass."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    for name in ("b.nii.gz", "a.NII", "c.nrrd", "d.mha"):
        (folder / name).write_bytes(b"not read")
    (folder / "notes.txt").write_text("hello")
    return folder


def _rtstruct_and_sr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "objects"
    folder.mkdir()
    shutil.copy2(pydicom_file("rtstruct.dcm"), folder / "rtstruct.dcm")
    shutil.copy2(pydicom_file("test-SR.dcm"), folder / "report.dcm")
    return folder


def _rtstruct_file(tmp_path: Path) -> Path:
    return Path(shutil.copy2(pydicom_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm"))


def _unsupported_transfer_syntax(tmp_path: Path) -> Path:
    """A DICOM file labelled MPEG-2 (video): neither SimpleITK/GDCM nor pydicom decodes it."""
    ds = pydicom.dcmread(pydicom_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(tmp_path / "mpeg2.dcm", implicit_vr=False, little_endian=True)
    return tmp_path / "mpeg2.dcm"


def _huge_header(tmp_path: Path) -> Path:
    """A NIfTI-2 header (64-bit dims; NIfTI-1 stops at 32767) claiming 10^15 voxels, followed by almost no data."""
    header = nib.Nifti2Header()
    header.set_data_shape((100000, 100000, 100000))
    header.set_data_dtype(np.int16)
    source = tmp_path / "huge.nii"
    source.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return source


CASES = {
    "truncated .nii": (_truncated_uncompressed, r"truncated or corrupt NIfTI: header needs \d+ bytes"),
    "corrupt gzip stream": (_corrupt_gzip, r"truncated or corrupt|not a readable image"),
    "text named .nii.gz": (_text_named_nifti, r"not a readable image"),
    "gzipped text named .nii.gz": (_gzipped_text, r"not a readable image"),
    "empty file": (_empty_file, r"^file is empty$"),
    "empty folder": (_empty_folder, r"^folder is empty"),
    "folder of non-DICOM files": (_non_dicom_folder, r"^no DICOM files among 4 file\(s\)$"),
    "folder of NIfTI and other volumes": (
        _folder_of_nifti_files,
        r"^no DICOM files among 5 file\(s\); it holds 4 image file\(s\) of another format \(a\.NII, b\.nii\.gz, "
        r"c\.nrrd, \.\.\.\): a folder is read as one DICOM series, give such a file by its own path$",
    ),
    "RTSTRUCT and SR only": (_rtstruct_and_sr_folder, r"only non-image DICOM objects.*rtstruct\.dcm \(RTSTRUCT\)"),
    "RTSTRUCT file": (_rtstruct_file, r"^DICOM object without pixel data \(Modality RTSTRUCT\)$"),
    "undecodable transfer syntax": (
        _unsupported_transfer_syntax,
        r"cannot decode the pixel data \(MPEG2 Main Profile / Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\)\)",
    ),
    "header claims 100000^3 voxels": (
        _huge_header,
        r"header claims 100000x100000x100000 = 1000000000000000 voxels \(3\.73e\+06 GiB as float32\), more than",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_unreadable_input_fails_cleanly(case: str, bundle: Path, tmp_path: Path, capsys) -> None:
    make, expected = CASES[case]
    source = make(tmp_path)
    digest = tree_digest(source) if any(source.rglob("*")) or source.is_file() else {}
    for output in (tmp_path / "out" / "restored.nii.gz", tmp_path / "out" / "series"):
        if output.name == "series" and source.is_file() and source.name.endswith((".nii", ".nii.gz")):
            continue  # NIfTI to DICOM is a usage error, tested elsewhere
        code, lines, _ = run_main(capsys, bundle, source, output)
        problem = assert_failed_cleanly(code, lines, source, output, digest)
        assert re.search(expected, problem), problem
        assert not (tmp_path / "out").exists()


def test_non_image_dicom_beside_a_series_is_skipped_with_a_warning(bundle: Path, tmp_path: Path, capsys) -> None:
    series = tmp_path / "series"
    write_ct_series(series, n=3)
    shutil.copy2(pydicom_file("rtstruct.dcm"), series / "rtstruct.dcm")
    shutil.copy2(pydicom_file("test-SR.dcm"), series / "sr.dcm")
    code, lines, _ = run_main(capsys, bundle, series, tmp_path / "out.nii.gz")
    assert code == 0, lines
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and "skipped 2 non-image DICOM file(s)" in warnings[0], lines
    assert nib.load(tmp_path / "out.nii.gz").shape == (16, 16, 3)


def test_missing_input_and_folder_given_as_file(bundle: Path, tmp_path: Path, capsys) -> None:
    code, lines, _ = run_main(capsys, bundle, tmp_path / "nope.nii.gz", tmp_path / "o.nii.gz")
    assert code == 1 and error_lines(lines) == [f"error: {tmp_path / 'nope.nii.gz'}: no such file or folder"]
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.nii.gz").exists()
