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
Write a restored volume as a new, derived DICOM series that mirrors a source series slice by slice.

Each output slice copies its source slice's header (patient, study, geometry tags), gets new Series and SOP
Instance UIDs, ``ImageType = DERIVED\\SECONDARY``, a SeriesDescription / DerivationDescription naming the
model, 16-bit pixel data with a RescaleSlope/Intercept chosen for the physical values, and is stored
uncompressed (Explicit VR Little Endian), whatever the source's transfer syntax.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import os
import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from monai_rwkv.data.atomic import atomic_output_dir
from monai_rwkv.data.dicom_series import DicomSliceHeader, build_series, load_dicom_series
from monai_rwkv.data.provenance import RESTORED_MARK, restoration_note
from monai_rwkv.data.sitk_reader import DICOM_SOURCE_FILES

__all__ = [
    "Rescale",
    "check_dicom_source",
    "choose_rescale",
    "is_restored_series",
    "sanitize_filename",
    "source_files_from_meta",
    "write_dicom_series",
]

#: header elements that no longer describe the new pixel data (or that a modification invalidates).
_DROPPED_KEYWORDS = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "NumberOfFrames",
    "PlanarConfiguration",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "ModalityLUTSequence",
    "IconImageSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "DigitalSignaturesSequence",
    "EncryptedAttributesSequence",
    "PixelDataProviderURL",
)
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.203",  # HTJ2K (lossy or lossless)
}
#: names of the files of a written series.
_SLICE_NAME = re.compile(r"^IM\d{6}\.dcm$")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


@dataclass(frozen=True)
class Rescale:
    """
    Stored integer type and the DICOM Modality LUT: ``physical = stored * slope + intercept``.

    ``slope`` and ``intercept`` are exactly the values their DS strings (``slope_ds``, ``intercept_ds``) encode.
    """

    dtype: np.dtype
    slope_ds: str
    intercept_ds: str

    @property
    def slope(self) -> float:
        return float(self.slope_ds)

    @property
    def intercept(self) -> float:
        return float(self.intercept_ds)

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """Physical values -> stored integers (rounded, clipped to the dtype's range)."""
        info = np.iinfo(self.dtype)
        stored = np.rint((np.asarray(values, dtype=np.float64) - self.intercept) / self.slope)
        return np.clip(stored, info.min, info.max).astype(self.dtype)


def _ds(value: float) -> str:
    """A DS string (at most 16 characters) for ``value``; integers without a decimal point."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format_number_as_ds(value)


def _fits(vmin: float, vmax: float, slope: float, intercept: float, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    lo, hi = np.rint((vmin - intercept) / slope), np.rint((vmax - intercept) / slope)
    return info.min <= lo and hi <= info.max


#: fewest whole units a value range must span to be stored in whole units without a rescale (rounding <= range / 512).
_MIN_LEVELS = 256


def choose_rescale(
    vmin: float, vmax: float, modality: str = "", dtype: str | np.dtype = "int16", integer_units: bool = False
) -> Rescale:
    """
    Pick RescaleSlope/Intercept so that physical values in ``[vmin, vmax]`` fit the stored integer type.

    - CT: slope 1 (integer HU, quantisation error <= 0.5 HU) with intercept -1024 when the range allows,
      else 0, else the intercept that shifts ``vmin`` to the type's minimum.
    - Other modalities: slope 1, intercept 0 when ``[vmin, vmax]`` are integers that fit, or, with
      ``integer_units``, when the rounded range fits and spans at least 256 whole units (values are rounded to
      whole units, as a source that stores its units directly, e.g. most MR, quantises them; a narrower range would
      lose precision); otherwise a linear map of ``[vmin, vmax]`` onto (nearly)
      the full integer range, quantisation error <= slope / 2.

    Args:
        vmin, vmax: finite physical value range of the data.
        modality: DICOM Modality of the source (``"CT"`` selects integer HU).
        dtype: ``"int16"`` or ``"uint16"``.
        integer_units: the source stores whole units with no rescale: keep that representation when it fits.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.int16), np.dtype(np.uint16)):
        raise ValueError(f"stored dtype must be int16 or uint16, got {dtype}.")
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmin > vmax:
        raise ValueError(f"invalid value range [{vmin}, {vmax}].")
    info = np.iinfo(dtype)
    if modality.upper() == "CT":
        for intercept in (-1024.0, 0.0, np.floor(vmin) - info.min):
            if _fits(vmin, vmax, 1.0, intercept, dtype):
                return Rescale(dtype, "1", _ds(intercept))
    elif float(vmin).is_integer() and float(vmax).is_integer() and _fits(vmin, vmax, 1.0, 0.0, dtype):
        return Rescale(dtype, "1", "0")
    elif (
        integer_units
        and vmax - vmin >= _MIN_LEVELS
        and _fits(float(np.rint(vmin)), float(np.rint(vmax)), 1.0, 0.0, dtype)
    ):
        return Rescale(dtype, "1", "0")
    span = vmax - vmin
    slope = float(_ds(span / (float(info.max) - float(info.min) - 2.0)))  # 2 levels of margin for DS rounding
    if not slope > 0:  # constant image (or a span below float resolution)
        return Rescale(dtype, "1", _ds(vmin))
    intercept = float(_ds(vmin - (float(info.min) + 1.0) * slope))
    return Rescale(dtype, _ds(slope), _ds(intercept))


def sanitize_filename(text: str, max_length: int = 100) -> str:
    """
    Make a safe single path component from arbitrary text (e.g. a DICOM tag value).

    Non-ASCII letters are transliterated or dropped, path separators, ``..``, NUL and other unsafe characters
    become ``_``, leading dots/dashes are removed (no hidden or option-like names), Windows device names are
    prefixed, and names longer than ``max_length`` are cut and suffixed with a short hash of the full text
    (so distinct long inputs stay distinct). The result is never empty.

    Args:
        text: any text.
        max_length: maximal length of the result (>= 16).
    """
    if max_length < 16:
        raise ValueError("max_length must be at least 16.")
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    name = re.sub(r"\.{2,}", "_", name).strip("._- ") or "unnamed"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = f"_{name}"
    if len(name) > max_length:
        digest = hashlib.sha1(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: max_length - 9].rstrip('._-')}_{digest}"
    return name


def source_files_from_meta(meta: Mapping[str, Any]) -> list[str]:
    """
    The per-slice source DICOM files recorded by :class:`~monai_rwkv.data.SimpleITKReader` in ``meta``.

    Accepts a plain meta dict or one collated by a MONAI DataLoader with batch size 1
    (``[[f0], [f1], ...]`` or ``[(f0,), ...]``).
    """
    if DICOM_SOURCE_FILES not in meta:
        raise ValueError(f"meta has no '{DICOM_SOURCE_FILES}': was the image read from DICOM by SimpleITKReader?")
    files = []
    for item in meta[DICOM_SOURCE_FILES]:
        if isinstance(item, (list, tuple)):
            if len(item) != 1:
                raise ValueError("meta holds several images' source files (batch > 1); decollate first.")
            item = item[0]
        files.append(os.fspath(item))
    return files


def _resolve_source(source: Any, source_series_uid: str | None) -> list[str]:
    """Source files in volume slice order from a meta dict, a list of files, or a series folder."""
    if isinstance(source, Mapping):
        return source_files_from_meta(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isdir(source):
            return [os.fspath(source)]
        return load_dicom_series(source, series_uid=source_series_uid).files
    return [os.fspath(f) for f in source]


def _as_volume(volume: Any, expected: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """
    ``volume`` as float64 numpy ``(columns, rows, slices)`` (a leading singleton channel is dropped) and its in-plane
    refinement ``(along columns i, along rows j)``: ``(1, 1)`` on the source grid, integers > 1 on a finer one.
    """
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().numpy()
    arr = np.asarray(volume, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 and expected[2] == 1:
        arr = arr[:, :, None]
    refine = (arr.shape[0] // expected[0], arr.shape[1] // expected[1]) if arr.ndim == 3 else (0, 0)
    if (
        arr.ndim != 3
        or arr.shape[2] != expected[2]
        or min(refine) < 1
        or arr.shape[:2]
        != (
            expected[0] * refine[0],
            expected[1] * refine[1],
        )
    ):
        raise ValueError(
            f"volume shape {arr.shape} does not match the source series (columns, rows, slices) {expected} "
            "(or an integer multiple of its columns and rows); pass the array indexed as SimpleITKReader returns it"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("volume contains NaN or infinite values.")
    return arr, refine


def _check_affine(affine: Any, source_affine_ras: np.ndarray) -> None:
    """Refuse a volume whose (RAS) affine differs from the source series' geometry."""
    if affine is None:
        return
    if isinstance(affine, torch.Tensor):
        affine = affine.detach().cpu().numpy()
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.allclose(affine, source_affine_ras, atol=1e-3, rtol=1e-4):
        raise ValueError(
            "volume affine differs from the source series geometry (was it reoriented or resampled? "
            f"invert that first):\n{np.round(affine, 4)}\nvs source\n{np.round(source_affine_ras, 4)}"
        )


def _source_geometry(files: Sequence[str], datasets: Sequence[Dataset]) -> np.ndarray:
    """RAS affine of the source slices taken in the given order (no re-sorting)."""
    headers = [DicomSliceHeader.from_dataset(f, ds) for f, ds in zip(files, datasets)]
    with warnings.catch_warnings():  # the reader already warned about gaps in this series
        warnings.simplefilter("ignore")
        series = build_series(os.path.dirname(files[0]) or ".", headers, on_irregular="warn")
    if [s.path for s in series.slices] != [h.path for h in headers]:
        raise ValueError("source files are not in geometric slice order; pass them as SimpleITKReader lists them.")
    affine = series.affine_lps.copy()
    affine[:2] *= -1
    return affine


def _now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _describe(model_name: str, model_version: str, source_desc: str, custom: str | None) -> tuple[str, str]:
    """(SeriesDescription <= 64 chars, DerivationDescription <= 1024 chars)."""
    tag = f"{model_name} {model_version}".strip()
    series_desc = custom if custom is not None else f"RESTORED {tag}" + (f" {source_desc}" if source_desc else "")
    return series_desc[:64], restoration_note(model_name, model_version, 1024)


@dataclass(frozen=True)
class _SeriesContext:
    """Values shared by every slice of the output series."""

    series_uid: str
    series_number: int
    series_description: str
    derivation_description: str
    rescale: Rescale
    date: str
    time: str
    refine: tuple[int, int] = (1, 1)


def _decoded_copy(src: Dataset) -> Dataset:
    """
    A deep copy of ``src`` whose elements are all decoded (no raw bytes in the source's byte order), so that it
    can be written as Explicit VR Little Endian whatever the source's encoding (implicit VR, big endian).
    """
    ds = Dataset()
    for elem in src:  # iterating decodes raw elements with the source's encoding
        if elem.VR == "SQ":
            ds.add_new(elem.tag, "SQ", [_decoded_copy(item) for item in elem.value])
        else:
            ds.add(copy.deepcopy(elem))
    return ds


def _derive_slice(src: Dataset, pixels: np.ndarray, index: int, ctx: _SeriesContext) -> Dataset:
    """
    A new single-frame dataset: ``src``'s header with new UIDs, derived-image tags and ``pixels``.

    Args:
        src: source slice header (pixel data not needed).
        pixels: stored values, shape ``(rows, columns)``, ``ctx.rescale.dtype``.
        index: 0-based slice index (InstanceNumber is ``index + 1``).
        ctx: series-wide values.
    """
    ds = _decoded_copy(src)
    for keyword in _DROPPED_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    sop_uid = generate_uid()
    source_ts = str(getattr(getattr(src, "file_meta", None), "TransferSyntaxUID", ""))
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = ctx.series_uid
    ds.SeriesNumber = ctx.series_number
    ds.InstanceNumber = index + 1
    ds.ImageType = ["DERIVED", "SECONDARY", *list(src.get("ImageType", []))[2:]]
    ds.SeriesDescription = ctx.series_description
    ds.DerivationDescription = ctx.derivation_description
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = ctx.date
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = ctx.time
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    ds.SourceImageSequence = [ref]
    if source_ts in _LOSSY_SYNTAXES:
        ds.LossyImageCompression = "01"
    _set_pixels(ds, pixels, ctx.rescale)
    if ctx.refine != (1, 1):  # PixelSpacing is (between rows, between columns): along j, then along i
        row_step, column_step = (float(v) for v in src.PixelSpacing)
        ds.PixelSpacing = [_ds(row_step / ctx.refine[1]), _ds(column_step / ctx.refine[0])]
    ds.file_meta = _file_meta(ds)
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, rescale: Rescale) -> None:
    """Image Pixel and Modality LUT modules for 16-bit grey-level ``pixels`` ``(rows, columns)``."""
    ds.SamplesPerPixel = 1
    if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if rescale.dtype == np.dtype(np.int16) else 0
    identity = rescale.slope_ds == "1" and rescale.intercept_ds == "0"
    if identity and "RescaleSlope" not in ds and "RescaleIntercept" not in ds and ds.get("Modality") != "CT":
        return _set_pixel_data(ds, pixels, rescale)  # the source stores its units directly (typical MR): so do we
    ds.RescaleSlope = rescale.slope_ds
    ds.RescaleIntercept = rescale.intercept_ds
    if ds.get("Modality") == "CT":
        ds.RescaleType = "HU"
    _set_pixel_data(ds, pixels, rescale)


def _set_pixel_data(ds: Dataset, pixels: np.ndarray, rescale: Rescale) -> None:
    ds.PixelData = np.ascontiguousarray(pixels, dtype=rescale.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW"


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _series_number(src: Dataset, series_number: int | None) -> int:
    if series_number is not None:
        return int(series_number)
    try:
        return int(src.get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        return 1000


def _default_dtype(src: Dataset) -> str:
    return "uint16" if int(src.get("PixelRepresentation", 1)) == 0 else "int16"


def _check_single_frame_grey(files: Sequence[str], datasets: Sequence[Dataset]) -> None:
    for path, ds in zip(files, datasets):
        frames, samples = int(ds.get("NumberOfFrames") or 1), int(ds.get("SamplesPerPixel") or 1)
        if frames > 1 or samples != 1:
            kind = f"a multi-frame file ({frames} frames)" if frames > 1 else f"a colour image ({samples} samples)"
            raise ValueError(
                f"{path}: a derived DICOM series needs single-frame grey-level source slices, this is {kind}; "
                "write NIfTI (.nii.gz) instead"
            )


def is_restored_series(folder: str | os.PathLike) -> bool:
    """
    True when ``folder`` holds only a derived series that :func:`write_dicom_series` wrote: regular files named
    ``IM000001.dcm``, ... and nothing else (no subfolder, no hidden file), each a DICOM file whose
    DerivationDescription names this program. Only such a folder is replaced by ``overwrite=True``.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    if not entries:
        return False
    for entry in entries:
        if not (_SLICE_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)):
            return False
        try:
            ds = pydicom.dcmread(entry.path, stop_before_pixels=True, specific_tags=["DerivationDescription"])
        except Exception:  # noqa: BLE001 - anything unreadable is not ours
            return False
        if not str(ds.get("DerivationDescription", "")).endswith(RESTORED_MARK):
            return False
    return True


def check_dicom_source(meta: Mapping[str, Any]) -> None:
    """
    Check, from headers only, that :func:`write_dicom_series` can mirror the source of an image read by
    :class:`~monai_rwkv.data.SimpleITKReader` (DICOM, single-frame grey-level slices), before any work is done.

    Raises:
        ValueError: one line naming the problem (not DICOM, multi-frame, colour).
    """
    files = source_files_from_meta(meta)
    _check_single_frame_grey(files, [pydicom.dcmread(f, stop_before_pixels=True) for f in files])


def write_dicom_series(
    volume: np.ndarray | torch.Tensor,
    source: Mapping[str, Any] | Sequence[str | os.PathLike] | str | os.PathLike,
    output_dir: str | os.PathLike,
    model_name: str,
    model_version: str,
    *,
    overwrite: bool = False,
    affine: np.ndarray | torch.Tensor | None = None,
    stored_dtype: str | None = None,
    series_description: str | None = None,
    series_number: int | None = None,
    source_series_uid: str | None = None,
) -> list[Path]:
    """
    Write ``volume`` as a derived DICOM series, one file per slice (``IM000001.dcm``, ...), into ``output_dir``.

    The files are written to a hidden temporary folder beside ``output_dir`` and renamed on success; on any
    error nothing is left under ``output_dir`` (and a replaced output is restored). The source files are only
    read.

    Args:
        volume: restored image in physical units (e.g. HU), shape ``(columns, rows, slices)`` as returned by
            :class:`~monai_rwkv.data.SimpleITKReader` for the source series (a leading channel of size 1 is
            allowed), or on an integer-times finer in-plane grid (e.g. after k-space zero-filling: voxel 0 in place,
            PixelSpacing divided, Rows / Columns multiplied). A MetaTensor's affine is checked against the source
            geometry (refined the same way).
        source: the source series: the reader's meta dict (``meta["dicom_source_files"]``), a list of the
            source files in slice order, or the source series folder (sorted like the reader does).
        output_dir: folder to create (its name is used as given; file names are generated, never taken from tags).
        model_name, model_version: recorded in SeriesDescription and DerivationDescription.
        overwrite: replace an existing ``output_dir`` that is empty or a series this function wrote
            (:func:`is_restored_series`); otherwise ``FileExistsError`` (and never anything else).
        affine: RAS affine of ``volume`` to check against the source geometry (default: the MetaTensor's).
        stored_dtype: ``"int16"`` or ``"uint16"``; default: the source's PixelRepresentation.
        series_description: override the generated SeriesDescription (cut to 64 characters).
        series_number: SeriesNumber of the new series (default: the source's + 1000).
        source_series_uid: series to use when ``source`` is a folder holding several series.

    Returns:
        the written file paths, in slice order.

    Raises:
        FileExistsError: ``output_dir`` exists and ``overwrite`` is False.
        ValueError: shape / geometry mismatch, NaN values, unsupported dtype.
    """
    files = _resolve_source(source, source_series_uid)
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = datasets[0]
    _check_single_frame_grey(files, datasets)
    vol, refine = _as_volume(volume, (int(first.Columns), int(first.Rows), len(datasets)))
    if affine is None and hasattr(volume, "affine"):
        affine = volume.affine
    # a finer in-plane grid (k-space zero-filling): voxel 0 stays, the in-plane steps shrink by the refinement
    _check_affine(affine, _source_geometry(files, datasets) @ np.diag([1.0 / refine[0], 1.0 / refine[1], 1.0, 1.0]))
    modality = str(first.get("Modality", ""))
    stores_units = "RescaleSlope" not in first and "RescaleIntercept" not in first and modality.upper() != "CT"
    rescale = choose_rescale(
        float(vol.min()), float(vol.max()), modality, stored_dtype or _default_dtype(first), integer_units=stores_units
    )
    stored = rescale.quantise(vol)
    date, time = _now()
    series_desc, derivation = _describe(
        model_name, model_version, str(first.get("SeriesDescription", "")), series_description
    )
    ctx = _SeriesContext(
        generate_uid(), _series_number(first, series_number), series_desc, derivation, rescale, date, time, refine
    )
    final = Path(output_dir).absolute()
    names = [f"IM{k + 1:06d}.dcm" for k in range(len(datasets))]
    with atomic_output_dir(final, overwrite=overwrite, replaceable=is_restored_series) as tmp:
        for k, (src, name) in enumerate(zip(datasets, names)):
            ds = _derive_slice(src, stored[:, :, k].T, k, ctx)
            ds.save_as(tmp / name, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return [final / name for name in names]
