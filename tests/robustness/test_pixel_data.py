"""
DICOM pixel data that cannot hold what the header describes is refused from the header, before anything is decoded
or allocated: one ``error: <slice file>: <problem>`` line, exit status 1, the input untouched, no output. Native
transfer syntaxes: the PixelData element's declared length and the bytes really in the file; encapsulated ones: the
items are walked up to the sequence delimiter; multi-frame files: the frame count, before and after decoding.
"""

from __future__ import annotations

import re
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from monai_rwkv.data import SimpleITKReader
from monai_rwkv.data.dicom_series import pixel_data_problem, read_slice_header
from monai_rwkv.data.errors import ImageReadError
from tests.robustness.conftest import (
    assert_failed_cleanly,
    compress_slice,
    error_lines,
    leftovers,
    run_cli,
    run_main,
    template_slice,
    tree_digest,
    write_ct_series,
    write_enhanced_ct,
)

NEEDS = "Rows x Columns x SamplesPerPixel x BitsAllocated/8 x frames"
DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _assert_refused(code: int, lines: list[str], bad: Path, source: Path, output: Path, digest: dict) -> str:
    """One error line naming the bad slice file, exit status 1, the input tree unchanged, no output."""
    if bad == source:
        return assert_failed_cleanly(code, lines, source, output, digest)
    errors = error_lines(lines)
    assert code == 1, lines
    assert len(errors) == 1, lines
    assert errors[0].startswith(f"error: {bad}: "), errors[0]
    assert not any("Traceback" in line for line in lines)
    assert not output.exists() and leftovers(output.parent) == []
    assert tree_digest(source) == digest
    return errors[0][len(f"error: {bad}: ") :]


def _refused(capsys, bundle: Path, tmp_path: Path, source: Path, bad: Path) -> str:
    digest, output = tree_digest(source), tmp_path / "out" / "restored.nii.gz"
    code, lines, _ = run_main(capsys, bundle, source, output)
    return _assert_refused(code, lines, bad, source, output, digest)


def _edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for name, value in values.items():
        setattr(ds, name, value)
    ds.save_as(path)


def _huge(path: Path) -> Path:
    """A slice whose header claims 16384 x 16384 int16 pixels, with 8 KB of pixel data."""
    _edit(path, Rows=16384, Columns=16384, PixelData=b"\0" * 8192)
    return path


# --- native transfer syntaxes ----------------------------------------------------------------------------------


def test_series_slice_with_short_declared_pixel_data(bundle: Path, tmp_path: Path, capsys) -> None:
    paths = write_ct_series(tmp_path / "series", n=4)
    _edit(paths[2], PixelData=pydicom.dcmread(paths[2]).PixelData[:300])
    problem = _refused(capsys, bundle, tmp_path, tmp_path / "series", paths[2])
    assert problem == f"pixel data holds 300 bytes, {NEEDS} = 16 x 16 x 1 x 2 x 1 needs 512 (truncated or corrupt file)"


def test_series_slice_file_cut_inside_pixel_data(bundle: Path, tmp_path: Path, capsys) -> None:
    paths = write_ct_series(tmp_path / "series", n=4)
    paths[1].write_bytes(paths[1].read_bytes()[:-100])  # declares 512 bytes, holds 412
    problem = _refused(capsys, bundle, tmp_path, tmp_path / "series", paths[1])
    assert problem.startswith("pixel data holds 412 bytes (the element declares 512, the file ends after 412), ")
    assert problem.endswith(" needs 512 (truncated or corrupt file)")


def test_large_slice_cut_inside_deferred_pixel_data(bundle: Path, tmp_path: Path, capsys) -> None:
    """Over 4 KB the value is not read with the header: the bytes present are counted from its offset."""
    source = tmp_path / "big.dcm"
    shutil.copy2(write_ct_series(tmp_path / "series", n=1)[0], source)
    _edit(source, Rows=64, Columns=64, PixelData=np.zeros((64, 64), "<i2").tobytes())
    source.write_bytes(source.read_bytes()[:-1000])
    problem = _refused(capsys, bundle, tmp_path, source, source)
    assert problem.startswith("pixel data holds 7192 bytes (the element declares 8192, the file ends after 7192)")


def test_huge_header_with_8_kb_of_data_is_refused_at_once(bundle: Path, tmp_path: Path) -> None:
    source = _huge(write_ct_series(tmp_path / "in", n=1)[0])
    expected = f"pixel data holds 8192 bytes, {NEEDS} = 16384 x 16384 x 1 x 2 x 1 needs 536870912"
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageReadError) as error:
        SimpleITKReader().read(str(source))
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(error.value) == f"{source}: {expected} (truncated or corrupt file)"
    assert elapsed < 5 and peak < 16 * 2**20, (elapsed, peak)  # the volume would be 512 MiB
    digest, output = tree_digest(source), tmp_path / "out" / "restored.nii.gz"
    start = time.perf_counter()
    result = run_cli(bundle, source, output)  # a real subprocess
    assert time.perf_counter() - start < 60
    problem = assert_failed_cleanly(result.returncode, result.stderr.splitlines(), source, output, digest)
    assert problem.startswith(expected)


def test_huge_slice_inside_a_series(bundle: Path, tmp_path: Path, capsys) -> None:
    paths = write_ct_series(tmp_path / "series", n=5)
    _huge(paths[3])
    start = time.perf_counter()
    problem = _refused(capsys, bundle, tmp_path, tmp_path / "series", paths[3])
    assert time.perf_counter() - start < 30
    assert problem.startswith("pixel data holds 8192 bytes, ") and " needs 536870912 " in problem
    tracemalloc.start()
    with pytest.raises(ImageReadError, match="needs 536870912"):
        SimpleITKReader().read(str(tmp_path / "series"))
    assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    tracemalloc.stop()


def test_multi_frame_file_claiming_more_frames(bundle: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "enhanced.dcm"
    write_enhanced_ct(source, n=4, rows=12, columns=10)
    _edit(source, NumberOfFrames=6)
    problem = _refused(capsys, bundle, tmp_path, source, source)
    assert (
        problem == f"pixel data holds 960 bytes, {NEEDS} = 12 x 10 x 1 x 2 x 6 needs 1440 (truncated or corrupt file)"
    )


def test_8_bit_slices(bundle: Path, tmp_path: Path, capsys) -> None:
    """Odd sizes are padded to an even length (accepted); a value one row short is refused."""
    path = write_ct_series(tmp_path / "in", n=1)[0]
    _edit(path, Rows=15, Columns=15, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    _edit(path, PixelData=np.arange(225, dtype=np.uint8).tobytes() + b"\0")
    image = SimpleITKReader().read(str(path))
    np.testing.assert_array_equal(image.array[:, :, 0].T, np.arange(225).reshape(15, 15) - 1024)
    _edit(path, PixelData=np.arange(210, dtype=np.uint8).tobytes())
    problem = _refused(capsys, bundle, tmp_path, path, path)
    assert problem == f"pixel data holds 210 bytes, {NEEDS} = 15 x 15 x 1 x 1 x 1 needs 225 (truncated or corrupt file)"


def test_bit_packed_length_is_rounded_up(tmp_path: Path) -> None:
    path = write_ct_series(tmp_path / "in", n=1)[0]
    _edit(path, Rows=10, Columns=10, BitsAllocated=1, BitsStored=1, HighBit=0, PixelRepresentation=0)
    _edit(path, PixelData=b"\xff" * 14)  # 100 bits: 13 bytes, padded to 14
    assert pixel_data_problem(read_slice_header(path)) == ""
    _edit(path, PixelData=b"\xff" * 12)
    assert pixel_data_problem(read_slice_header(path)) == (
        "pixel data holds 12 bytes, Rows x Columns x SamplesPerPixel x frames / 8 (BitsAllocated 1, bit-packed) "
        "= 10 x 10 x 1 x 1 / 8 needs 13 (truncated or corrupt file)"
    )


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"Rows": 0}, r"^Rows 0 x Columns 16: no image matrix \(corrupt header\)$"),
        ({"Columns": 0}, r"^Rows 16 x Columns 0: no image matrix"),
        ({"BitsAllocated": 12}, r"^BitsAllocated 12 is not one of 1, 8, 16, 32, 64 \(corrupt header\)$"),
    ],
)
def test_absurd_headers(values: dict, expected: str, bundle: Path, tmp_path: Path, capsys) -> None:
    paths = write_ct_series(tmp_path / "series", n=3)
    _edit(paths[0], **values)
    problem = _refused(capsys, bundle, tmp_path, tmp_path / "series", paths[0])
    assert re.search(expected, problem), problem


def _recode(path: Path, syntax: str) -> Path:
    """The same slice in another native transfer syntax (big endian: pixel bytes swapped)."""
    ds = pydicom.dcmread(path)
    if syntax == ExplicitVRBigEndian:
        ds.PixelData = np.frombuffer(ds.PixelData, "<i2").astype(">i2").tobytes()
    ds.file_meta.TransferSyntaxUID = syntax
    out = path.with_name(f"{path.stem}_{syntax}.dcm")
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_native_syntaxes(syntax: str, tmp_path: Path) -> None:
    source = write_ct_series(tmp_path / "in", n=1)[0]
    _edit(source, Rows=64, Columns=64, PixelData=np.arange(4096, dtype="<i2").tobytes())  # deferred (> 4 KB)
    good = _recode(source, syntax)
    assert pixel_data_problem(read_slice_header(good)) == ""
    if syntax != ExplicitVRBigEndian:  # GDCM decodes these; big endian is only checked from the header here
        np.testing.assert_array_equal(
            SimpleITKReader().read(str(good)).array[:, :, 0].T.ravel(), np.arange(4096) - 1024
        )
    cut = tmp_path / "cut.dcm"
    if syntax == DeflatedExplicitVRLittleEndian:  # the deflate stream cut short
        cut.write_bytes(good.read_bytes()[:-200])
        with pytest.raises(ImageReadError, match=r"cut.dcm: deflated data set is cut short or corrupt \(.*truncated"):
            read_slice_header(cut)
    else:  # the file cut inside the (deferred) value
        cut.write_bytes(good.read_bytes()[:-2000])
        assert pixel_data_problem(read_slice_header(cut)).startswith(
            "pixel data holds 6192 bytes (the element declares 8192, the file ends after 6192)"
        )
    _edit(source, PixelData=np.arange(1000, dtype="<i2").tobytes())  # the declared length short
    assert pixel_data_problem(read_slice_header(_recode(source, syntax))).startswith("pixel data holds 2000 bytes, ")


# --- encapsulated (compressed) transfer syntaxes -----------------------------------------------------------------


@pytest.mark.parametrize("compressor", ["JPEG", "JPEG2000"])
def test_compressed_slice_cut_inside_encapsulated_data(compressor: str, bundle: Path, tmp_path: Path, capsys) -> None:
    paths = write_ct_series(tmp_path / "series", n=4)
    for path in paths:
        compress_slice(path, compressor)
    assert SimpleITKReader().read(str(tmp_path / "series")).array.shape == (16, 16, 4)  # all valid
    paths[2].write_bytes(paths[2].read_bytes()[:-60])
    problem = _refused(capsys, bundle, tmp_path, tmp_path / "series", paths[2])
    assert problem.startswith("the file ends inside its pixel data (JPEG ")
    assert problem.endswith("): no sequence delimiter after the encapsulated fragments (truncated file)")
    single = tmp_path / "single.dcm"
    shutil.copy2(paths[2], single)
    assert _refused(capsys, bundle, tmp_path, single, single) == problem


def test_compressed_slice_cut_inside_a_fragment_before_a_delimiter(bundle: Path, tmp_path: Path, capsys) -> None:
    """A fragment whose length runs past the end of the file, even though a sequence delimiter follows."""
    paths = write_ct_series(tmp_path / "series", n=3)
    for path in paths:
        compress_slice(path, "JPEG")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-60] + DELIMITER)
    problem = _refused(capsys, bundle, tmp_path, tmp_path / "series", paths[1])
    assert problem.startswith("the file ends inside its encapsulated pixel data: fragment 1 needs bytes up to ")
    assert problem.endswith(f", the file holds {len(data) - 52} (truncated file)")


def _multi_frame_jpeg(tmp_path: Path, fragments: int, frames: int = 4) -> Path:
    """An enhanced CT of ``frames`` 16 x 16 frames whose JPEG lossless data holds ``fragments`` frames."""
    paths = write_ct_series(tmp_path / "slices", n=fragments)
    encoded, syntax = [], None
    for path in paths:
        syntax = compress_slice(path, "JPEG")
        encoded.append(next(generate_fragmented_frames(pydicom.dcmread(path).PixelData))[0])
    source = tmp_path / "in" / "enhanced.dcm"
    write_enhanced_ct(source, n=frames, rows=16, columns=16)
    ds = pydicom.dcmread(source)
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(source)
    shutil.rmtree(tmp_path / "slices")
    return source


def test_compressed_multi_frame_file(bundle: Path, tmp_path: Path, capsys) -> None:
    assert SimpleITKReader().read(str(_multi_frame_jpeg(tmp_path / "good", 4))).array.shape == (16, 16, 4)
    source = _multi_frame_jpeg(tmp_path, 2)  # NumberOfFrames 4, two frames of data
    problem = _refused(capsys, bundle, tmp_path, source, source)
    assert problem == (
        "encapsulated pixel data holds 2 fragment(s) for NumberOfFrames 4 "
        "(each frame needs at least one; truncated or corrupt file)"
    )


def test_decoded_frames_must_match_the_header(bundle: Path, tmp_path: Path, capsys) -> None:
    """Compressed data of another matrix size than Rows x Columns: refused after decoding, before restoring."""
    source = _multi_frame_jpeg(tmp_path, 4)
    _edit(source, Rows=20)
    problem = _refused(capsys, bundle, tmp_path, source, source)
    assert problem.startswith("decoded pixel data has frames x rows x columns = ")
    assert problem.endswith(
        "the header claims NumberOfFrames x Rows x Columns = 4 x 20 x 16 (truncated or corrupt file)"
    )
    single = write_ct_series(tmp_path / "single", n=1)[0]
    compress_slice(single, "JPEG")
    _edit(single, Rows=20)
    problem = _refused(capsys, bundle, tmp_path, single, single)
    assert problem == (
        "decoded pixel data has frames x rows x columns = 1 x 16 x 16, the header claims NumberOfFrames x Rows x "
        "Columns = 1 x 20 x 16 (truncated or corrupt file)"
    )


def test_valid_inputs_still_read(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "series", n=3)
    assert SimpleITKReader().read(str(tmp_path / "series")).array.shape == (16, 16, 3)
    hu = write_enhanced_ct(tmp_path / "enhanced.dcm")
    np.testing.assert_array_equal(SimpleITKReader().read(str(tmp_path / "enhanced.dcm")).array, hu.transpose(2, 1, 0))
    ds = template_slice()
    assert pixel_data_problem(ds) == ""  # a dataset read in full (no deferred values)
