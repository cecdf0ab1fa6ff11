# Copyright (c) MONAI Consortium and the monai_rwkv authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
DICOM series discovery and geometry, from headers only (no pixel data is decoded here).

Conventions used throughout ``monai_rwkv.data``:

- Patient coordinates are DICOM/ITK **LPS** millimetres here; readers convert to RAS for MONAI.
- A volume array is indexed ``[i, j, k]``: ``i`` = column index (along the row direction cosine,
  ``ImageOrientationPatient[:3]``), ``j`` = row index (along ``ImageOrientationPatient[3:]``),
  ``k`` = slice index, increasing along the slice normal ``row_cosine x column_cosine``.
  This matches MONAI's ``ITKReader`` and ``NibabelReader`` (for NIfTI converted from DICOM).
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom

from monai_rwkv.data.errors import ImageReadError, MultipleSeriesError, one_line

__all__ = [
    "DicomSliceHeader",
    "DicomSeries",
    "read_slice_header",
    "pixel_data_problem",
    "scan_dicom_folder",
    "select_series",
    "build_series",
    "load_dicom_series",
]

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)+$")
#: SOP classes that never hold pixel data worth reading as an image (for messages only).
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
#: tolerances for geometry checks
_ORIENTATION_ATOL = 1e-3  # direction cosines
_TILT_TOL_DEG = 0.05  # in-plane drift of slice positions tolerated before a sheared affine is used
#: pixel data checks
_PIXEL_DATA_TAG = 0x7FE00010
_ITEM_TAG, _SEQUENCE_DELIMITER_TAG = 0xFFFEE000, 0xFFFEE0DD
_UNDEFINED_LENGTH = 0xFFFFFFFF
_BITS_ALLOCATED = (1, 8, 16, 32, 64)
_MAX_ENCAPSULATED_ITEMS = 1_000_000  # walk at most this many items of encapsulated pixel data (then trust the rest)


@dataclass(frozen=True)
class DicomSliceHeader:
    """
    The header facts of one DICOM image file needed to assemble and later re-write a volume.

    Attributes:
        path: file path.
        series_uid: SeriesInstanceUID.
        sop_class_uid / sop_instance_uid: SOPClassUID / SOPInstanceUID.
        modality: Modality (e.g. ``"CT"``), ``""`` if absent.
        series_description: SeriesDescription, ``""`` if absent.
        instance_number: InstanceNumber or None (never used for ordering).
        rows / columns: matrix size; frames: NumberOfFrames (1 if absent).
        samples_per_pixel: 1 for grey-level images.
        photometric: PhotometricInterpretation (e.g. ``"MONOCHROME2"``), ``""`` if absent.
        position: ImagePositionPatient, shape (3,), LPS mm, or None.
        orientation: ImageOrientationPatient, shape (6,) (row cosine, column cosine), or None.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm, or None.
        slice_thickness / spacing_between_slices: mm, or None.
        study_uid / patient_id: StudyInstanceUID / PatientID, ``""`` if absent (one volume never mixes them).
        pixel_data_problem: why the pixel data cannot be read as the header describes it (see
            :func:`pixel_data_problem`), ``""`` if it can or was not checked.
        derivation_description: DerivationDescription, ``""`` if absent (names the program of a derived image).
    """

    path: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str = ""
    series_description: str = ""
    instance_number: int | None = None
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    photometric: str = ""
    position: np.ndarray | None = field(default=None, compare=False)
    orientation: np.ndarray | None = field(default=None, compare=False)
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    study_uid: str = ""
    patient_id: str = ""
    pixel_data_problem: str = field(default="", compare=False)
    derivation_description: str = field(default="", compare=False)

    @classmethod
    def from_dataset(
        cls, path: str | os.PathLike, ds: pydicom.Dataset, check_pixel_data: bool = False
    ) -> DicomSliceHeader:
        """
        Build from a pydicom dataset (read with or without pixel data).

        Args:
            path: the file ``ds`` was read from.
            ds: its dataset.
            check_pixel_data: also run :func:`pixel_data_problem` (header only, nothing decoded) and keep its
                answer in ``pixel_data_problem``; :func:`build_series` refuses such a slice.
        """
        return cls(
            path=os.fspath(path),
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            modality=str(ds.get("Modality", "") or ""),
            series_description=str(ds.get("SeriesDescription", "") or ""),
            instance_number=_as_int(ds.get("InstanceNumber")),
            rows=_as_int(ds.get("Rows")) or 0,
            columns=_as_int(ds.get("Columns")) or 0,
            frames=_as_int(ds.get("NumberOfFrames")) or 1,
            samples_per_pixel=_as_int(ds.get("SamplesPerPixel")) or 1,
            photometric=str(ds.get("PhotometricInterpretation", "") or "").strip().upper(),
            position=_as_vector(ds.get("ImagePositionPatient"), 3),
            orientation=_as_vector(ds.get("ImageOrientationPatient"), 6),
            pixel_spacing=_as_pair(ds.get("PixelSpacing")),
            slice_thickness=_as_float(ds.get("SliceThickness")),
            spacing_between_slices=_as_float(ds.get("SpacingBetweenSlices")),
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            pixel_data_problem=pixel_data_problem(ds, path) if check_pixel_data else "",
            derivation_description=str(ds.get("DerivationDescription", "") or ""),
        )

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``row_cosine x column_cosine``, shape (3,), LPS."""
        if self.orientation is None:
            raise ValueError(f"{self.path}: no ImageOrientationPatient")
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)


@dataclass
class DicomSeries:
    """
    One geometrically sorted DICOM series.

    Attributes:
        folder: where it was found (or the single file's path).
        slices: headers in volume order (``slices[k]`` is slice ``k`` of the volume).
        affine_lps: (4, 4) voxel ``(i, j, k)`` to LPS mm.
        uniform: False if slice steps differ (gaps, uneven spacing); the affine then uses the median step
            and the true positions are in ``positions``.
        positions: ImagePositionPatient of each slice, shape (n, 3), LPS mm.
    """

    folder: str
    slices: list[DicomSliceHeader]
    affine_lps: np.ndarray
    uniform: bool
    positions: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape ``(columns, rows, slices)``."""
        return self.slices[0].columns, self.slices[0].rows, len(self.slices)

    @property
    def files(self) -> list[str]:
        """Source file paths in volume order."""
        return [s.path for s in self.slices]


def _as_int(value) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _as_float(value) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _as_vector(value, length: int) -> np.ndarray | None:
    try:
        vec = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (length,) and np.all(np.isfinite(vec)) else None


def _as_pair(value) -> tuple[float, float] | None:
    vec = _as_vector(value, 2)
    return None if vec is None or np.any(vec <= 0) else (float(vec[0]), float(vec[1]))


def read_slice_header(path: str | os.PathLike) -> pydicom.Dataset | None:
    """
    Read a DICOM header without decoding pixel data (large values are deferred, the file is opened read-only).

    Files without the 128-byte preamble are accepted when they parse to a dataset with valid SOP UIDs.

    Returns:
        the dataset, or None if ``path`` is not a DICOM file.

    Raises:
        ImageReadError: a DICOM file whose header reads but whose data ends inside the pixel data (a truncated
            file: pydicom finds no end of the encapsulated fragments), or whose deflated data set is cut or corrupt.
    """
    try:
        ds = _read_header(path, force=False)
    except zlib.error as e:  # Deflated Explicit VR Little Endian: the whole data set is one deflate stream
        raise ImageReadError(
            path, f"deflated data set is cut short or corrupt ({one_line(e)}) (truncated file)"
        ) from None
    except EOFError:  # pydicom in its "raise" validation mode
        _refuse_cut_pixel_data(path, force=False)
    except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    else:
        if len(ds) == 0:  # pydicom drops every element when it reaches the end of the file inside a value
            _refuse_cut_pixel_data(path, force=False)
        return ds
    try:  # raw DICOM without preamble: accept only if it looks like a real SOP instance
        ds = _read_header(path, force=True)
    except EOFError:
        _refuse_cut_pixel_data(path, force=True)
        return None
    except Exception:  # noqa: BLE001 - arbitrary bytes can fail anywhere inside the parser
        return None
    if len(ds) == 0:
        _refuse_cut_pixel_data(path, force=True)
    return ds if _has_sop_uids(ds) else None


def _read_header(path: str | os.PathLike, force: bool) -> pydicom.Dataset:
    """``dcmread`` with values over 4 KB deferred; pydicom's warning about a file cut inside a value is dropped
    (an empty data set results, see :func:`_refuse_cut_pixel_data`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="End of file reached before delimiter")
        return pydicom.dcmread(path, defer_size="4 KB", force=force)


def _has_sop_uids(ds: pydicom.Dataset) -> bool:
    try:
        uids = (str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
    except Exception:  # noqa: BLE001 - values of arbitrary bytes can fail to convert
        return False
    return all(_UID_RE.match(u) for u in uids)


def _refuse_cut_pixel_data(path: str | os.PathLike, force: bool) -> None:
    """
    pydicom reached the end of the file inside a value (in practice: encapsulated pixel data without its sequence
    delimiter, where pydicom gives an empty data set). If the header before the pixel data reads as a DICOM image,
    the file is truncated: raise.
    """
    try:
        if not force and not is_dicom(path):
            return
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except Exception:  # noqa: BLE001 - the header itself is broken: not recognised as DICOM
        return
    if not _has_sop_uids(ds) or "Rows" not in ds:
        return
    syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    where = "no sequence delimiter after the encapsulated fragments" if _is_encapsulated(syntax) else "data set cut"
    raise ImageReadError(path, f"the file ends inside its pixel data ({_syntax_name(ds)}): {where} (truncated file)")


def _syntax_name(ds: pydicom.Dataset) -> str:
    uid = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    if uid is None:
        return "no transfer syntax in the file meta"
    return f"{uid.name} ({uid})" if uid.name != str(uid) else f"transfer syntax {uid}"


def pixel_data_problem(ds: pydicom.Dataset, path: str | os.PathLike | None = None) -> str:
    """
    Whether the pixel data of a DICOM image can hold what its header describes, from the header only (no pixel
    data is decoded or read into memory); ``""`` if it can, else the problem in words.

    - Rows and Columns must be at least 1, BitsAllocated one of 1, 8, 16, 32, 64, SamplesPerPixel 1 to 4.
    - Native (uncompressed) transfer syntaxes (Implicit / Explicit VR Little Endian, Explicit VR Big Endian,
      Deflated): PixelData must hold ``Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames``
      bytes (bit-packed: rounded up to whole bytes; YBR_FULL_422: 2 samples per pixel), both as the element's
      declared length and as the bytes really present after the value's offset (a truncated file declares the
      full length but ends early). Deflated files are inflated whole by pydicom while reading the header, so the
      bytes present are counted in the inflated data set; a cut deflate stream already fails the header read.
    - Encapsulated (compressed) transfer syntaxes: the items are walked from their offsets and lengths, without
      reading the fragments: every fragment must end inside the file, the sequence delimiter must be reached,
      and there must be at least one fragment per frame. The decoded frame count and shape are checked after
      decoding by the reader.

    Args:
        ds: a dataset read by :func:`read_slice_header` (deferred values keep their file offsets).
        path: the file it was read from (default: ``ds.filename``).
    """
    rows, columns = _as_int(ds.get("Rows")), _as_int(ds.get("Columns"))
    if not rows or not columns or rows < 1 or columns < 1:
        return f"Rows {rows} x Columns {columns}: no image matrix (corrupt header)"
    bits = _as_int(ds.get("BitsAllocated"))
    if bits not in _BITS_ALLOCATED:
        return f"BitsAllocated {bits} is not one of {', '.join(map(str, _BITS_ALLOCATED))} (corrupt header)"
    samples = _as_int(ds.get("SamplesPerPixel"))
    samples = 1 if samples is None else samples
    if not 1 <= samples <= 4:
        return f"SamplesPerPixel {samples} is not 1 to 4 (corrupt header)"
    frames = max(_as_int(ds.get("NumberOfFrames")) or 1, 1)
    elem = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    if elem is None:
        return ""
    syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    encapsulated = _is_encapsulated(syntax)
    if isinstance(elem, RawDataElement):
        length, value, value_tell = elem.length, elem.value, elem.value_tell
    else:  # already converted (the value was accessed): no file offset left
        value = elem.value if isinstance(elem.value, bytes) else None
        length = _UNDEFINED_LENGTH if elem.is_undefined_length else len(value or b"")
        value_tell = None
    if encapsulated is None:  # unknown transfer syntax: its data tell
        encapsulated = length == _UNDEFINED_LENGTH
    if length == _UNDEFINED_LENGTH:
        if not encapsulated:
            return f"undefined-length PixelData in a native transfer syntax ({_syntax_name(ds)}) (corrupt file)"
        if value_tell is None:
            return ""
        return _encapsulated_problem(ds, path, value_tell, frames)
    if encapsulated:
        return ""  # not standard; left to the decoders, whose frame count and shape are checked
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    needed, formula = _native_length(rows, columns, samples, bits, frames, photometric)
    if value is not None:
        present = min(length, len(value))
    else:
        size = _source_size(ds, path)
        present = length if size is None or value_tell is None else max(0, min(length, size - value_tell))
    if length < needed:
        held = f"{length} bytes"
    elif present < needed:
        held = f"{present} bytes (the element declares {length}, the file ends after {present})"
    else:
        return ""
    return f"pixel data holds {held}, {formula} needs {needed} (truncated or corrupt file)"


def _is_encapsulated(syntax: pydicom.uid.UID | None) -> bool | None:
    """Whether a transfer syntax encapsulates its pixel data; None if absent or unknown."""
    try:
        return None if syntax is None else bool(syntax.is_encapsulated)
    except ValueError:  # not a known transfer syntax
        return None


def _native_length(rows: int, columns: int, samples: int, bits: int, frames: int, photometric: str) -> tuple:
    """Bytes native pixel data needs, and the formula in words (for the message)."""
    if photometric == "YBR_FULL_422" and samples == 3:
        names, values = "Rows x Columns x 2 (YBR_FULL_422)", [rows, columns, 2]
    else:
        names, values = "Rows x Columns x SamplesPerPixel", [rows, columns, samples]
    count = math.prod(values) * frames
    if bits == 1:
        formula = f"{names} x frames / 8 (BitsAllocated 1, bit-packed) = {' x '.join(map(str, values))} x {frames} / 8"
        return (count + 7) // 8, formula
    values.append(bits // 8)
    formula = f"{names} x BitsAllocated/8 x frames = {' x '.join(map(str, values))} x {frames}"
    return count * (bits // 8), formula


def _source_size(ds: pydicom.Dataset, path: str | os.PathLike | None) -> int | None:
    """Bytes of what ``ds`` was read from: the inflated buffer of a deflated file, else the file; None if unknown."""
    buffer = getattr(ds, "buffer", None)
    if buffer is not None and not getattr(buffer, "closed", False):
        position = buffer.tell()
        size = buffer.seek(0, os.SEEK_END)
        buffer.seek(position)
        return int(size)
    name = path or getattr(ds, "filename", None)
    try:
        return os.path.getsize(name) if name else None
    except OSError:
        return None


def _encapsulated_problem(ds: pydicom.Dataset, path: str | os.PathLike | None, start: int, frames: int) -> str:
    """Walk the items of encapsulated pixel data (tags and lengths only) from file offset ``start``."""
    buffer = getattr(ds, "buffer", None)
    name = path or getattr(ds, "filename", None)
    little_endian = ds.original_encoding[1] is not False
    if buffer is not None and not getattr(buffer, "closed", False):
        position = buffer.tell()
        try:
            return _walk_items(buffer, start, frames, little_endian)
        finally:
            buffer.seek(position)
    if not name:
        return ""
    with open(name, "rb") as f:
        return _walk_items(f, start, frames, little_endian)


def _walk_items(f, start: int, frames: int, little_endian: bool) -> str:
    size = f.seek(0, os.SEEK_END)
    item = struct.Struct("<HHL" if little_endian else ">HHL")
    position, items = start, 0
    while items < _MAX_ENCAPSULATED_ITEMS:
        f.seek(position)
        raw = f.read(8)
        if len(raw) < 8:
            return (
                f"the file ends inside its encapsulated pixel data after {max(items - 1, 0)} fragment(s), before the "
                f"sequence delimiter (file of {size} bytes; truncated file)"
            )
        group, element, length = item.unpack(raw)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER_TAG:
            break
        if tag != _ITEM_TAG or length == _UNDEFINED_LENGTH:
            return (
                f"encapsulated pixel data is corrupt: ({group:04X},{element:04X}) of length {length} at byte "
                f"{position} where an item or the sequence delimiter should be"
            )
        position += 8 + length
        if position > size:
            what = "basic offset table" if items == 0 else f"fragment {items}"
            return (
                f"the file ends inside its encapsulated pixel data: {what} needs bytes up to {position}, "
                f"the file holds {size} (truncated file)"
            )
        items += 1
    else:
        return ""  # too many items to walk cheaply: left to the decoders
    fragments = items - 1  # the first item is the basic offset table
    if fragments < frames:
        return (
            f"encapsulated pixel data holds {fragments} fragment(s) for NumberOfFrames {frames} "
            "(each frame needs at least one; truncated or corrupt file)"
        )
    return ""


def _has_pixels(ds: pydicom.Dataset) -> bool:
    return "PixelData" in ds and str(ds.get("SOPClassUID", "")) != _DIRECTORY_SOP_CLASS


#: file suffixes (lower case) of the single-file volume formats read besides DICOM; a folder given as a DICOM series
#: that holds such files gets them named in its error.
VOLUME_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def scan_dicom_folder(folder: str | os.PathLike) -> list[DicomSliceHeader]:
    """
    Find the DICOM image files directly inside ``folder`` (not recursive; hidden files are ignored).

    Non-image DICOM objects (no PixelData: RTSTRUCT, SR, DICOMDIR, ...) are skipped with a warning.

    Raises:
        ImageReadError: the folder is empty, holds no DICOM files, or only non-image DICOM objects.
    """
    folder = Path(folder)
    names = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not names:
        raise ImageReadError(folder, "folder is empty (no files to read)")
    images, skipped = [], []
    for name in names:
        ds = read_slice_header(name)
        if ds is None:
            continue
        if _has_pixels(ds):
            images.append(DicomSliceHeader.from_dataset(name, ds, check_pixel_data=True))
        else:
            skipped.append(f"{name.name} ({ds.get('Modality', '') or _sop_name(ds)})")
    if not images and not skipped:
        others = [p.name for p in names if p.name.lower().endswith(VOLUME_FILE_SUFFIXES)]
        hint = ""
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            hint = (
                f"; it holds {len(others)} image file(s) of another format ({shown}): a folder is read as one DICOM "
                "series, give such a file by its own path"
            )
        raise ImageReadError(folder, f"no DICOM files among {len(names)} file(s){hint}")
    if not images:
        raise ImageReadError(folder, f"only non-image DICOM objects (no PixelData): {', '.join(skipped)}")
    if skipped:
        warnings.warn(f"{folder}: skipped {len(skipped)} non-image DICOM file(s): {', '.join(skipped)}", stacklevel=2)
    return images


def _sop_name(ds: pydicom.Dataset) -> str:
    uid = ds.get("SOPClassUID", "")
    return getattr(uid, "name", str(uid)) or "unknown SOP class"


def select_series(
    folder: str | os.PathLike, headers: Sequence[DicomSliceHeader], series_uid: str | None = None
) -> list[DicomSliceHeader]:
    """
    Keep the files of one SeriesInstanceUID (slices of different series are never mixed).

    Args:
        folder: for messages.
        headers: image files found in the folder.
        series_uid: the series to select; required when the folder holds several series.

    Raises:
        MultipleSeriesError: several series and no (or an unknown) ``series_uid``; the message lists them all.
    """
    groups: dict[str, list[DicomSliceHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    if series_uid is not None:
        if series_uid in groups:
            return groups[series_uid]
        raise MultipleSeriesError(
            folder, f"series_uid {series_uid} not found; series present: {_describe(groups)}", _descriptions(groups)
        )
    if len(groups) > 1:
        raise MultipleSeriesError(
            folder,
            f"{len(groups)} DICOM series in one folder, pass series_uid=... to pick one: {_describe(groups)}",
            _descriptions(groups),
        )
    return next(iter(groups.values()))


def _descriptions(groups: dict[str, list[DicomSliceHeader]]) -> dict[str, str]:
    """``{uid: "[CT 'Head', 5 file(s)]"}`` for each series."""
    out = {}
    for uid, items in groups.items():
        desc = " ".join(x for x in (items[0].modality, repr(items[0].series_description)) if x)
        out[uid] = f"[{desc}, {len(items)} file(s)]"
    return out


def _describe(groups: dict[str, list[DicomSliceHeader]]) -> str:
    return "; ".join(f"{uid or '<no SeriesInstanceUID>'} {desc}" for uid, desc in _descriptions(groups).items())


def _check_consistent(folder: str, slices: Sequence[DicomSliceHeader]) -> None:
    """Raise if slices cannot form one grey-level volume (patients, studies, sizes, spacing, orientation, frames)."""
    first = slices[0]
    for attribute, tag in (("patient_id", "PatientID"), ("study_uid", "StudyInstanceUID")):
        values = sorted({getattr(s, attribute) for s in slices})
        if len(values) > 1:
            odd = next(s for s in slices if getattr(s, attribute) != getattr(first, attribute))
            raise ImageReadError(
                folder,
                f"slices of one SeriesInstanceUID differ in {tag} ({len(values)} values, e.g. "
                f"{os.path.basename(first.path)} and {os.path.basename(odd.path)}): different scans are never mixed "
                "into one volume",
            )
    if any(s.samples_per_pixel != 1 for s in slices):
        raise ImageReadError(
            folder, "colour DICOM series (SamplesPerPixel != 1) are not supported; read files one by one"
        )
    if len(slices) > 1 and any(s.frames != 1 for s in slices):
        raise ImageReadError(folder, "series mixes several multi-frame files; read each file on its own")
    sizes = {(s.rows, s.columns) for s in slices}
    if len(sizes) > 1:
        raise ImageReadError(folder, f"slices differ in matrix size (Rows, Columns): {sorted(sizes)}")
    if any(s.position is None or s.orientation is None or s.pixel_spacing is None for s in slices):
        if len(slices) > 1:
            raise ImageReadError(
                folder, "slices lack ImagePositionPatient/ImageOrientationPatient/PixelSpacing: cannot order them"
            )
        return
    spacings = np.asarray([s.pixel_spacing for s in slices])
    if np.max(np.abs(spacings - spacings[0])) > 1e-4 * np.max(spacings[0]):
        raise ImageReadError(folder, f"slices differ in PixelSpacing: {sorted({tuple(x) for x in spacings})}")
    cosines = np.asarray([s.orientation for s in slices])
    if np.max(np.abs(cosines - first.orientation)) > _ORIENTATION_ATOL:
        angles = [np.degrees(np.arccos(np.clip(abs(first.normal @ s.normal), 0.0, 1.0))) for s in slices]
        raise ImageReadError(
            folder,
            f"slices are not parallel (ImageOrientationPatient varies, normals up to {max(angles):.1f} deg apart, "
            "e.g. a localizer or radial stack): not one volume; read the files one by one",
        )


def _inplane_affine(first: DicomSliceHeader) -> np.ndarray:
    """(4, 4) LPS affine with the in-plane columns and the origin of ``first``; column 2 left as the unit normal."""
    affine = np.eye(4)
    if first.orientation is None or first.position is None or first.pixel_spacing is None:
        return affine  # geometry unknown: identity, 1 mm
    row_spacing, col_spacing = first.pixel_spacing
    affine[:3, 0] = first.orientation[:3] * col_spacing
    affine[:3, 1] = first.orientation[3:] * row_spacing
    affine[:3, 2] = first.normal
    affine[:3, 3] = first.position
    return affine


def _single_slice_step(first: DicomSliceHeader) -> float:
    """
    Slice spacing for a one-slice volume: SpacingBetweenSlices, else 1 mm (ITK/GDCM's convention, so the
    affine matches a NIfTI written by ITK; SliceThickness is not a spacing).
    """
    value = first.spacing_between_slices
    return float(value) if value is not None and value > 0 else 1.0


def _slice_step(folder: str, slices: Sequence[DicomSliceHeader], rtol: float, on_irregular: str):
    """
    The affine's third column (LPS mm per slice) and whether the steps are uniform.

    Uniform steps: the mean step vector (first to last slice), which keeps a gantry tilt as a shear.
    Non-uniform steps (gaps, uneven spacing): the median step along the normal, with a warning or an error.
    """
    normal = slices[0].normal
    positions = np.asarray([s.position for s in slices])
    distances = positions @ normal
    steps = np.diff(distances)
    median = float(np.median(steps))
    if np.any(steps <= max(1e-4, 1e-3 * median)):
        n_dup = int(np.sum(steps <= max(1e-4, 1e-3 * median))) + 1
        raise ImageReadError(
            folder,
            f"{n_dup} slices share a position along the normal (several stacks, e.g. echoes or phases, "
            "in one series): cannot form one volume",
        )
    if np.max(np.abs(steps - median)) > max(1e-3, rtol * median):
        missing = int(np.sum(np.maximum(np.rint(steps / median) - 1, 0)))
        msg = (
            f"non-uniform slice spacing: steps {steps.min():.4g}..{steps.max():.4g} mm (median {median:.4g} mm, "
            f"~{missing} slice(s) missing); the affine uses the median step (a NIfTI output misplaces the slices "
            "after a gap), a DICOM output keeps each slice's true position (meta['dicom_image_position_patient'])"
        )
        if on_irregular == "raise":
            raise ImageReadError(folder, msg)
        warnings.warn(f"{folder}: {msg}", stacklevel=3)
        return normal * median, False
    mean_step = (positions[-1] - positions[0]) / (len(slices) - 1)
    along = float(mean_step @ normal)
    drift = np.linalg.norm(mean_step - along * normal)
    if np.degrees(np.arctan2(drift, along)) <= _TILT_TOL_DEG:
        return normal * along, True
    warnings.warn(
        f"{folder}: slice positions drift in-plane by {drift:.3g} mm per slice (gantry tilt?): the affine is sheared",
        stacklevel=3,
    )
    return mean_step, True


def build_series(
    folder: str | os.PathLike,
    slices: Sequence[DicomSliceHeader],
    spacing_rtol: float = 0.01,
    on_irregular: str = "warn",
) -> DicomSeries:
    """
    Check and sort the slices of one series by position along the slice normal (ImagePositionPatient
    projected on ``row_cosine x column_cosine``; InstanceNumber is ignored) and compute the geometry.

    Args:
        folder: for messages.
        slices: the files of one series, any order.
        spacing_rtol: relative tolerance on slice steps before the spacing is called non-uniform.
        on_irregular: ``"warn"`` (default) or ``"raise"`` on gaps / uneven spacing.

    Raises:
        ImageReadError: slices that cannot form one volume (see ``_check_consistent``), duplicate positions,
            or non-uniform spacing with ``on_irregular="raise"``.
    """
    if on_irregular not in ("warn", "raise"):
        raise ValueError(f"on_irregular must be 'warn' or 'raise', got {on_irregular!r}.")
    folder = os.fspath(folder)
    for s in slices:  # header-only pixel data checks (scan_dicom_folder), before anything is decoded
        if s.pixel_data_problem:
            raise ImageReadError(s.path, s.pixel_data_problem)
    _check_consistent(folder, slices)
    if len(slices) == 1:
        affine = _inplane_affine(slices[0])
        affine[:3, 2] *= _single_slice_step(slices[0])
        pos = slices[0].position if slices[0].position is not None else np.zeros(3)
        return DicomSeries(folder, list(slices), affine, True, pos[None].copy())
    normal = slices[0].normal
    ordered = sorted(slices, key=lambda s: float(s.position @ normal))
    affine = _inplane_affine(ordered[0])
    affine[:3, 2], uniform = _slice_step(folder, ordered, spacing_rtol, on_irregular)
    positions = np.asarray([s.position for s in ordered])
    return DicomSeries(folder, ordered, affine, uniform, positions)


def load_dicom_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    spacing_rtol: float = 0.01,
    on_irregular: str = "warn",
) -> DicomSeries:
    """
    Scan ``folder`` for DICOM images, select one series and sort it geometrically (headers only).

    See :func:`scan_dicom_folder`, :func:`select_series` and :func:`build_series` for the arguments and errors.
    """
    headers = scan_dicom_folder(folder)
    chosen = select_series(folder, headers, series_uid)
    return build_series(folder, chosen, spacing_rtol=spacing_rtol, on_irregular=on_irregular)
