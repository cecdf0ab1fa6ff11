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
"""A SimpleITK-backed MONAI ``ImageReader`` for NIfTI, single DICOM files and DICOM series folders."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pydicom
from monai.config import KeysCollection, PathLike
from monai.data.image_reader import ImageReader
from monai.data.utils import is_no_channel, orientation_ras_lps
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple
from pydicom.misc import is_dicom

from monai_rwkv.data.dicom_series import (
    VOLUME_FILE_SUFFIXES,
    DicomSeries,
    DicomSliceHeader,
    build_series,
    load_dicom_series,
    read_slice_header,
)
from monai_rwkv.data.errors import ImageReadError, one_line
from monai_rwkv.data.pet_units import suv_bw_factor
from monai_rwkv.data.provenance import DICOM_SLICE_DERIVATIONS

__all__ = [
    "SimpleITKReader",
    "SitkImage",
    "DEFAULT_MAX_VOXELS",
    "DICOM_MODALITY",
    "DICOM_SOURCE_FILES",
    "PET_SUV_FACTOR",
    "PET_SUV_PROBLEM",
    "sitk_load_image",
    "sitk_load_imaged",
]

if TYPE_CHECKING:
    import SimpleITK as sitk
    from monai.transforms import LoadImage, LoadImaged


def _sitk() -> ModuleType:
    """SimpleITK, imported on the first read, so that importing monai_rwkv (the bundle helpers, the CLI's
    ``--help``) does not load its large native library."""
    import SimpleITK

    return SimpleITK


#: default refusal threshold: 2**30 voxels (4 GiB as float32).
DEFAULT_MAX_VOXELS = 2**30
#: meta key holding the per-slice source DICOM files, in volume slice order.
DICOM_SOURCE_FILES = "dicom_source_files"
#: meta key of the series' DICOM Modality (its first slice's; ``""`` when absent).
DICOM_MODALITY = "dicom_modality"
#: meta keys of per-slice header facts (lists parallel to ``DICOM_SOURCE_FILES``): Modality, SamplesPerPixel,
#: PhotometricInterpretation.
DICOM_SLICE_MODALITIES = "dicom_slice_modalities"
DICOM_SLICE_SAMPLES = "dicom_slice_samples_per_pixel"
DICOM_SLICE_PHOTOMETRIC = "dicom_slice_photometric"
#: meta key of a PET series' body-weight SUV factor (``SUVbw = factor * value``), and of why it has none.
PET_SUV_FACTOR = "pet_suv_factor"
PET_SUV_PROBLEM = "pet_suv_problem"
_FILE_SUFFIXES = (*VOLUME_FILE_SUFFIXES, ".dcm", ".dicom", ".ima")


@dataclass
class SitkImage:
    """
    What :meth:`SimpleITKReader.read` returns for one input.

    Attributes:
        array: image data ``(i, j[, k][, channel])``, in physical units (DICOM rescale applied).
        affine_lps: ``(r + 1, r + 1)`` voxel to LPS mm, ``r`` = spatial rank (2 or 3).
        meta: extra metadata (DICOM tags, source files, ...).
    """

    array: np.ndarray
    affine_lps: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes (the first ``r`` axes of ``array``)."""
        return tuple(int(x) for x in self.array.shape[: self.affine_lps.shape[0] - 1])


def _check_voxels(path: str, shape: Sequence[int], components: int, max_voxels: int) -> None:
    """Refuse, before allocating, an image whose header claims more than ``max_voxels`` voxels."""
    count = math.prod(int(s) for s in shape) * max(int(components), 1)
    if count > max_voxels:
        dims = "x".join(str(int(s)) for s in shape) + (f"x{components}" if components > 1 else "")
        raise ImageReadError(
            path,
            f"header claims {dims} = {count} voxels ({count * 4 / 2**30:.3g} GiB as float32), "
            f"more than the limit of {max_voxels} voxels (max_voxels)",
        )


def _sitk_affine_lps(img: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """(r + 1, r + 1) LPS affine of a SimpleITK image (or a reader's image information), r = min(dimension, 3)."""
    dim = img.GetDimension()
    rank = min(dim, 3)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:rank, :rank]
    affine = np.eye(rank + 1)
    affine[:rank, :rank] = direction @ np.diag(np.asarray(img.GetSpacing(), dtype=np.float64)[:rank])
    affine[:rank, rank] = np.asarray(img.GetOrigin(), dtype=np.float64)[:rank]
    return affine


def _sitk_array(img: sitk.Image) -> np.ndarray:
    """Array ``(i, j[, k][, t])`` (plus a last channel axis for vector pixels) from a SimpleITK image."""
    arr = _sitk().GetArrayFromImage(img)  # (..., k, j, i[, c])
    if img.GetNumberOfComponentsPerPixel() == 1:
        arr = arr.T
    else:
        arr = np.moveaxis(arr.T, 0, -1)
    return _native_dtype(np.ascontiguousarray(arr))


def _native_dtype(arr: np.ndarray) -> np.ndarray:
    """float64 (SimpleITK's type for non-integer DICOM rescale) becomes float32."""
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


def _sitk_metadata(reader: sitk.ImageFileReader) -> dict[str, Any]:
    """String metadata of a file (NIfTI header fields etc.), without ITK-internal keys."""
    return {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys() if not k.startswith("ITK_")}


def read_with_sitk(path: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> SitkImage:
    """
    Read a single image file (NIfTI, NRRD, MetaImage, a multi-frame DICOM, ...) with SimpleITK.

    Raises:
        ImageReadError: unreadable header, too many voxels, or truncated / corrupt data.
    """
    if not os.path.isfile(path):
        raise ImageReadError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "file is empty")
    header = _nifti_raw_header(path) if _is_nifti_name(path) else None
    if header is not None:  # refuse huge images from the raw header, whatever ITK makes of it
        _check_voxels(path, header.get_data_shape(), 1, max_voxels)
        if isinstance(header, nib.Nifti2Header):
            return _read_nifti2(path)
    reader = _sitk().ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ImageReadError(path, f"not a readable image ({_itk_reason(e)})") from None
    _check_voxels(path, reader.GetSize(), reader.GetNumberOfComponents(), max_voxels)
    _check_nifti_complete(path)
    float_nifti = _float_nifti_data(path, reader)
    if float_nifti is not None:  # NaN / inf kept (ITK's NIfTI reader silently turns them into 0)
        meta = _sitk_metadata(reader)
        if float_nifti.ndim == 2:
            return SitkImage(float_nifti[:, :, None], _nifti_affine_lps(path), meta)
        return SitkImage(float_nifti, _sitk_affine_lps(reader), meta)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        if _is_dicom_file(path):
            raise ImageReadError(
                path, f"cannot decode the pixel data ({_transfer_syntax(path)}; {_itk_reason(e)})"
            ) from None
        raise ImageReadError(path, f"truncated or corrupt image data ({_itk_reason(e)})") from None
    meta = _sitk_metadata(reader)
    if img.GetDimension() == 2 and img.GetNumberOfComponentsPerPixel() == 1 and _is_nifti_name(path):
        return SitkImage(_sitk_array(img)[:, :, None], _nifti_affine_lps(path), meta)
    return SitkImage(_sitk_array(img), _sitk_affine_lps(img), meta)


def _float_nifti_data(path: str, reader: sitk.ImageFileReader) -> np.ndarray | None:
    """
    The data of a scalar floating-point NIfTI file read with nibabel (``(i, j[, k[, t]])``, the array SimpleITK
    gives, scaling applied), or None for other files. ITK's NIfTI reader replaces NaN and infinite values by 0
    without a word; nibabel keeps them, so that the restorer can warn about them.
    """
    if not _is_nifti_name(path) or reader.GetNumberOfComponents() != 1 or reader.GetDimension() > 4:
        return None
    try:
        image = nib.load(path)
        if not np.issubdtype(image.get_data_dtype(), np.floating):
            return None
        data = np.asarray(image.dataobj)
    except Exception as e:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise ImageReadError(path, f"truncated or corrupt image data ({one_line(e)})") from None
    size = tuple(int(s) for s in reader.GetSize())
    return _native_dtype(np.ascontiguousarray(data)) if data.shape == size else None


def _is_dicom_file(path: str) -> bool:
    try:
        return is_dicom(path)
    except OSError:
        return False


def _is_nifti_name(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def _nifti_affine_lps(path: str) -> np.ndarray:
    """
    (4, 4) LPS affine of a NIfTI file from its header (nibabel's sform/qform choice): a 2D NIfTI still places
    its plane in 3D (z offset, tilt), which SimpleITK drops when it reads the file as a 2D image.
    """
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(nib.load(path).affine, dtype=np.float64)


def _nifti_raw_header(path: str) -> nib.Nifti1Header | None:
    """
    The NIfTI-1 or NIfTI-2 header of a file, parsed from its first bytes (no data read); None if it is not one.
    Works on a damaged gzip stream as long as the header itself can be decompressed.
    """
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
        sizes = (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
        if 540 in sizes:
            return nib.Nifti2Header(raw[:540], check=False)
        return nib.Nifti1Header(raw[:348], check=False) if 348 in sizes else None
    except Exception:  # noqa: BLE001 - any parsing failure just means there is no usable header
        return None


def _nifti_data_end(path: str) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (data offset + voxel data), from its raw header; None if unknown."""
    header = _nifti_raw_header(path)
    try:
        itemsize = header.get_data_dtype().itemsize
        return int(header.get_data_offset()) + math.prod(int(d) for d in header.get_data_shape()) * itemsize
    except Exception:  # noqa: BLE001 - any parsing failure just means the size is unknown
        return None


def _read_nifti2(path: str) -> SitkImage:
    """
    A NIfTI-2 file (64-bit dimensions), which SimpleITK cannot read, with nibabel: the same ``(i, j, k[, t])``
    array and LPS affine as SimpleITK gives for NIfTI-1 (a 2D image becomes one slice).
    """
    _check_nifti_complete(path)
    try:
        image = nib.load(path)
        data = _native_dtype(np.ascontiguousarray(np.asarray(image.dataobj)))
    except Exception as e:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise ImageReadError(path, f"truncated or corrupt NIfTI-2 data ({one_line(e)})") from None
    affine = _nifti_affine_lps(path)
    return SitkImage(data[:, :, None] if data.ndim == 2 else data, affine, {})


def _gunzipped_size(path: str, expected: int | None) -> int:
    """Uncompressed size of a gzip file: the trailer's ISIZE if it agrees with ``expected``, else by streaming."""
    if expected is not None:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if int.from_bytes(f.read(4), "little") == expected % 2**32:
                return expected
    total = 0
    with gzip.open(path, "rb") as g:
        while chunk := g.read(1 << 22):
            total += len(chunk)
    return total


def _check_nifti_complete(path: str) -> None:
    """
    Refuse a NIfTI file holding fewer data bytes than its header claims, or a broken gzip stream
    (ITK would zero-fill the missing voxels silently).

    Raises:
        ImageReadError: truncated file or broken gzip stream.
    """
    lower = path.lower()
    if not lower.endswith((".nii", ".nii.gz")):
        return
    expected = _nifti_data_end(path)
    try:
        actual = _gunzipped_size(path, expected) if lower.endswith(".gz") else os.path.getsize(path)
    except (EOFError, OSError, zlib.error) as e:
        raise ImageReadError(path, f"truncated or corrupt gzip stream ({one_line(e)})") from None
    if expected is not None and actual < expected:
        raise ImageReadError(
            path, f"truncated or corrupt NIfTI: header needs {expected} bytes, the file holds {actual} (uncompressed)"
        )


def _itk_reason(error: Exception) -> str:
    """The informative part of an ITK exception text (the lines after the file/line banner)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/", "sitk::ERROR: Exception"))]
    return one_line(" ".join(useful or lines), max_length=240)


def _transfer_syntax(path: str) -> str:
    """``"<name> (<uid>)"`` of a DICOM file's transfer syntax, or ``"unknown transfer syntax"``."""
    try:
        uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    except Exception:  # noqa: BLE001 - only used to describe a failure
        return "unknown transfer syntax"
    return f"{uid.name} ({uid})" if uid.name != str(uid) else f"transfer syntax {uid}"


def _decode_with_pydicom(path: str, itk_error: RuntimeError) -> np.ndarray:
    """
    Second chance for pixel data SimpleITK/GDCM cannot decode: pydicom with whatever decoder plugins are installed
    (numpy, Pillow, pylibjpeg, ...). Returns ``(rows, columns)`` in physical units (rescale applied).

    Raises:
        ImageReadError: neither can decode it; the message names the transfer syntax and pydicom's reason, which
            lists the packages that would decode it (e.g. ``pylibjpeg-openjpeg``).
    """
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - pydicom raises RuntimeError, NotImplementedError, ValueError...
        raise ImageReadError(
            path,
            f"cannot decode the pixel data ({_transfer_syntax(path)}): SimpleITK/GDCM failed "
            f"({_itk_reason(itk_error)}) and so did pydicom ({one_line(e, max_length=400)})",
        ) from None
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept.is_integer():
        return arr.astype(np.int32) + int(intercept) if intercept else arr
    return (arr * slope + intercept).astype(np.float32)


def _read_slice_pixels(header: DicomSliceHeader) -> np.ndarray:
    """Pixels of one single-frame DICOM file, ``(columns, rows)``, rescale slope/intercept applied."""
    try:
        sitk = _sitk()
        arr = sitk.GetArrayFromImage(sitk.ReadImage(header.path))
    except RuntimeError as e:
        arr = _decode_with_pydicom(header.path, e)
    arr = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and arr.shape[0] == 1 else arr
    if arr.shape != (header.rows, header.columns):
        frames, shape = (arr.shape[0], arr.shape[1:]) if arr.ndim == 3 else (1, arr.shape)
        raise ImageReadError(header.path, _decoded_mismatch(frames, shape, header))
    return arr.T


def _decoded_mismatch(frames: int, shape: Sequence[int], header: DicomSliceHeader) -> str:
    """The message for decoded pixel data whose frame count or frame shape differs from the header."""
    decoded = " x ".join(str(int(n)) for n in (frames, *shape))
    return (
        f"decoded pixel data has frames x rows x columns = {decoded}, the header claims NumberOfFrames x Rows x "
        f"Columns = {header.frames} x {header.rows} x {header.columns} (truncated or corrupt file)"
    )


def _check_decoded(header: DicomSliceHeader, image: SitkImage) -> None:
    """
    Refuse a multi-frame or colour DICOM file whose decoded image (``(i, j[, k])`` plus a channel axis for
    colour) does not hold NumberOfFrames x Rows x Columns pixels of SamplesPerPixel samples.
    """
    shape = list(image.array.shape)
    if header.samples_per_pixel > 1 and len(shape) > 2 and shape[-1] == header.samples_per_pixel:
        shape.pop()
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    columns, rows = (shape + [0, 0])[:2]
    frames = math.prod(shape[2:])
    if (columns, rows, frames) != (header.columns, header.rows, header.frames) or len(shape) > 3:
        raise ImageReadError(header.path, _decoded_mismatch(frames, (rows, columns), header))


def read_dicom_series_pixels(series: DicomSeries, max_voxels: int = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """
    Decode every slice of a sorted series (any transfer syntax SimpleITK/GDCM supports) into one volume.

    Returns:
        array of shape ``(columns, rows, slices)`` in physical units (e.g. CT in HU); float32 when any
        slice has a non-integer rescale, else the integer type SimpleITK gives.
    """
    _check_voxels(series.folder, series.shape, 1, max_voxels)
    planes = [_read_slice_pixels(h) for h in series.slices]
    dtype = np.result_type(*planes)
    volume = np.empty(series.shape, dtype=dtype)
    for k, plane in enumerate(planes):
        volume[:, :, k] = plane
    return _native_dtype(volume)


def _slice_facts(headers: Sequence[DicomSliceHeader]) -> dict[str, list]:
    """Per-slice header facts that input checks need (``monai_rwkv.data.spec``), so nothing is read twice."""
    return {
        DICOM_SLICE_MODALITIES: [h.modality for h in headers],
        DICOM_SLICE_SAMPLES: [h.samples_per_pixel for h in headers],
        DICOM_SLICE_PHOTOMETRIC: [h.photometric for h in headers],
        DICOM_SLICE_DERIVATIONS: [h.derivation_description for h in headers],
    }


def _pet_units(first: DicomSliceHeader) -> dict[str, Any]:
    """For a PET series: ``{PET_SUV_FACTOR: s}`` with ``SUVbw = s * value`` (:func:`~monai_rwkv.data.pet_units.
    suv_bw_factor`), or ``{PET_SUV_PROBLEM: why not}``; nothing for other modalities."""
    if first.modality.upper() != "PT":
        return {}
    try:
        ds = read_slice_header(first.path)
        return {PET_SUV_FACTOR: suv_bw_factor(ds) if ds is not None else 1.0}
    except ValueError as e:
        return {PET_SUV_PROBLEM: f"{first.path}: {one_line(e)}"}


def _dicom_meta(series: DicomSeries) -> dict[str, Any]:
    """Meta entries that let a derived series be written later (see ``monai_rwkv.data.dicom_writer``)."""
    first = series.slices[0]
    return {
        **_pet_units(first),
        **_slice_facts(series.slices),
        DICOM_SOURCE_FILES: series.files,
        "dicom_series_instance_uid": first.series_uid,
        "dicom_sop_instance_uids": [s.sop_instance_uid for s in series.slices],
        DICOM_MODALITY: first.modality,
        "dicom_series_description": first.series_description,
        "dicom_image_position_patient": series.positions.copy(),
        "dicom_uniform_spacing": bool(series.uniform),
    }


def _is_nifti_like(path: str) -> bool:
    lower = path.lower()
    return lower.endswith(VOLUME_FILE_SUFFIXES)


class SimpleITKReader(ImageReader):
    """
    Load NIfTI (and other SimpleITK file formats), a single DICOM file, or a DICOM series folder.

    The returned array is indexed ``(i, j, k)`` like MONAI's ``ITKReader``/``NibabelReader``; the affine is
    RAS by default, so ``LoadImage(reader=SimpleITKReader())`` of a DICOM series gives the same array and
    affine as ``NibabelReader`` on the same image converted to NIfTI. DICOM intensities are in physical
    units (RescaleSlope/Intercept applied, CT in HU).

    DICOM series folders: files are grouped by SeriesInstanceUID (never mixed) and sorted by position along
    the slice normal (not by InstanceNumber). Gaps / uneven spacing give a warning (or an error with
    ``on_irregular="raise"``); the affine then uses the median step and the true per-slice positions stay in
    ``meta["dicom_image_position_patient"]``. Non-image DICOM objects (RTSTRUCT, SR) are skipped with a warning.
    ``meta["dicom_source_files"]`` lists the source file of each slice, for
    :func:`monai_rwkv.data.write_dicom_series`.

    A 2D NIfTI file is read as a one-slice volume ``(i, j, 1)`` with its header's full 4x4 affine (like a single
    DICOM slice), so the plane's position in 3D is kept. A DICOM file whose pixel data SimpleITK/GDCM cannot
    decode gets a second try with pydicom's decoders; if that fails too the error names the transfer syntax and
    the missing decoder packages.

    Args:
        channel_dim: the channel dimension of the input image, default None (as in MONAI's readers).
        series_uid: SeriesInstanceUID to load when a folder holds several series; without it such a
            folder is an error that lists the series found.
        affine_lps_to_ras: convert the affine from ITK/DICOM LPS to RAS (default, consistent with
            ``NibabelReader``); False keeps LPS and sets ``meta["space"] = "LPS"``.
        max_voxels: refuse, before allocating, images whose header claims more voxels than this.
        spacing_rtol: relative tolerance on DICOM slice steps before they are called non-uniform.
        on_irregular: ``"warn"`` or ``"raise"`` on DICOM gaps / uneven slice spacing.

    Raises (from ``read``):
        ImageReadError: any unreadable input, with a one-line reason.
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_uid: str | None = None,
        affine_lps_to_ras: bool = True,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        spacing_rtol: float = 0.01,
        on_irregular: str = "warn",
    ):
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_uid = series_uid
        self.affine_lps_to_ras = affine_lps_to_ras
        self.max_voxels = int(max_voxels)
        self.spacing_rtol = float(spacing_rtol)
        self.on_irregular = on_irregular

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """
        True if every name is a folder (DICOM series), has a supported suffix
        (``.nii``, ``.nii.gz``, ``.dcm``, ``.nrrd``, ``.mha``, ...) or is a file with the DICOM preamble.

        Args:
            filename: file name or a list of file names to read.
        """
        return all(self._supported(f"{name}") for name in ensure_tuple(filename))

    @staticmethod
    def _supported(name: str) -> bool:
        if os.path.isdir(name) or name.lower().endswith(_FILE_SUFFIXES):
            return True
        try:
            return os.path.isfile(name) and is_dicom(name)
        except OSError:
            return False

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> SitkImage | list[SitkImage]:
        """
        Read one input or a list of inputs (stacked as channels by :meth:`get_data`).

        Args:
            data: a file, a DICOM series folder, or a list of them.
            kwargs: ``series_uid`` may be given here to override the constructor's value.

        Raises:
            ImageReadError: with a one-line reason.
        """
        names = ensure_tuple(data)
        series_uid = kwargs.get("series_uid", self.series_uid)
        images = []
        for name in names:
            image = self._read_one(f"{name}", series_uid)
            image.meta[ImageMetaKey.FILENAME_OR_OBJ] = f"{name}"
            images.append(image)
        return images if len(names) > 1 else images[0]

    def _read_one(self, path: str, series_uid: str | None) -> SitkImage:
        if os.path.isdir(path):
            return self._read_dicom_folder(path, series_uid)
        if not os.path.exists(path):
            raise ImageReadError(path, "no such file or folder")
        if _is_nifti_like(path):
            return read_with_sitk(path, self.max_voxels)
        return self._read_dicom_file(path)

    def _read_dicom_folder(self, path: str, series_uid: str | None) -> SitkImage:
        series = load_dicom_series(path, series_uid, self.spacing_rtol, self.on_irregular)
        if len(series.slices) == 1 and series.slices[0].frames > 1:
            return self._read_dicom_file(series.slices[0].path)
        return self._series_image(series)

    def _read_dicom_file(self, path: str) -> SitkImage:
        ds = read_slice_header(path)
        if ds is None:
            return read_with_sitk(path, self.max_voxels)  # not DICOM after all: let SimpleITK try
        if "PixelData" not in ds:
            raise ImageReadError(path, f"DICOM object without pixel data (Modality {ds.get('Modality', '?')})")
        header = DicomSliceHeader.from_dataset(path, ds, check_pixel_data=True)
        if header.pixel_data_problem:  # refused from the header, before anything is allocated or decoded
            raise ImageReadError(path, header.pixel_data_problem)
        if header.frames > 1 or header.samples_per_pixel != 1:
            img = read_with_sitk(path, self.max_voxels)  # multi-frame / colour: SimpleITK's own geometry
            _check_decoded(header, img)
            img.meta.update({DICOM_SOURCE_FILES: [path], DICOM_MODALITY: header.modality, **_slice_facts([header])})
            img.meta.update(_pet_units(header))
            return img
        return self._series_image(build_series(path, [header]))

    def _series_image(self, series: DicomSeries) -> SitkImage:
        volume = read_dicom_series_pixels(series, self.max_voxels)
        return SitkImage(volume, series.affine_lps.copy(), _dicom_meta(series))

    def get_data(self, img: SitkImage | Sequence[SitkImage]) -> tuple[np.ndarray, dict]:
        """
        Extract the data array and MONAI metadata (``affine``, ``original_affine``, ``spatial_shape``,
        ``original_channel_dim``, ``space``, ``spacing``, ``filename_or_obj`` where known, plus DICOM entries).
        Several images are stacked on a new first (channel) axis; they must share shape and affine.

        Args:
            img: one or several objects returned by :meth:`read`.
        """
        arrays, metas = [], []
        for item in ensure_tuple(img):
            arrays.append(item.array)
            metas.append(self._meta(item))
        return _stack(arrays, metas)

    def _meta(self, item: SitkImage) -> dict:
        header = dict(item.meta)
        affine = orientation_ras_lps(item.affine_lps) if self.affine_lps_to_ras else item.affine_lps.copy()
        header[MetaKeys.ORIGINAL_AFFINE] = affine
        header[MetaKeys.AFFINE] = affine.copy()
        header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
        header[MetaKeys.SPATIAL_SHAPE] = np.asarray(item.spatial_shape)
        header["spacing"] = np.linalg.norm(item.affine_lps[:-1, :-1], axis=0)
        if self.channel_dim is None:
            extra = item.array.ndim > len(item.spatial_shape)
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if extra else float("nan")
        else:
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
        return header


def _stack(arrays: list[np.ndarray], metas: list[dict]) -> tuple[np.ndarray, dict]:
    """Stack images as channels (the first image's meta is kept) after checking shapes and affines agree."""
    meta = metas[0]
    if len(arrays) == 1:
        return arrays[0], meta
    for other in metas[1:]:
        if not np.array_equal(other[MetaKeys.SPATIAL_SHAPE], meta[MetaKeys.SPATIAL_SHAPE]):
            raise ValueError(
                f"cannot stack images of spatial shapes {meta['spatial_shape']} and {other['spatial_shape']}."
            )
        if not np.allclose(other[MetaKeys.AFFINE], meta[MetaKeys.AFFINE], atol=1e-4):
            raise ValueError("cannot stack images with different affines as channels.")
    channel_dim = meta[MetaKeys.ORIGINAL_CHANNEL_DIM]
    if is_no_channel(channel_dim):
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta
    return np.concatenate(arrays, axis=int(channel_dim)), meta


def _only_reader(loader: LoadImage, reader: SimpleITKReader) -> LoadImage:
    """Make ``loader`` use ``reader`` alone and call it directly, so its errors are not masked by fallbacks."""
    loader.readers = [reader]
    loader.auto_select = True
    return loader


def sitk_load_image(reader: SimpleITKReader | None = None, **kwargs) -> LoadImage:
    """
    ``monai.transforms.LoadImage`` that uses only :class:`SimpleITKReader`.

    ``LoadImage(reader=SimpleITKReader())`` also works, but when our reader refuses an input (for example a
    folder with two series) MONAI silently retries with its default readers, which may then mix series or
    order slices by InstanceNumber. This loader never falls back, and raises :class:`ImageReadError` as is.

    Args:
        reader: the reader (default ``SimpleITKReader()``).
        kwargs: other ``LoadImage`` arguments (``image_only``, ``ensure_channel_first``, ``dtype``, ...).
    """
    from monai.transforms import LoadImage  # deferred: importing monai.transforms is slow

    reader = reader or SimpleITKReader()
    return _only_reader(LoadImage(reader=reader, **kwargs), reader)


def sitk_load_imaged(keys: KeysCollection, reader: SimpleITKReader | None = None, **kwargs) -> LoadImaged:
    """``monai.transforms.LoadImaged`` that uses only :class:`SimpleITKReader` (see :func:`sitk_load_image`)."""
    from monai.transforms import LoadImaged  # deferred: importing monai.transforms is slow

    reader = reader or SimpleITKReader()
    transform = LoadImaged(keys, reader=reader, **kwargs)
    _only_reader(transform._loader, reader)
    return transform
