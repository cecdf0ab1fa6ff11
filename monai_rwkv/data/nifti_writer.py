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
"""Atomic NIfTI-1 writing that keeps the given affine (as sform, and as qform when it is rigid + scaling)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from monai_rwkv.data.atomic import atomic_output_file

__all__ = ["write_nifti"]

_DTYPES = {"float32": np.dtype(np.float32), "int16": np.dtype(np.int16)}
#: characters of the header's 80-byte ``descrip`` field (one byte is left for the terminating NUL).
DESCRIP_LENGTH = 79


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 as is; int16 rounded, refusing values outside [-32768, 32767] (no silent clipping)."""
    if not np.all(np.isfinite(data)):
        raise ValueError("data contains NaN or infinite values.")
    if dtype == np.float32:
        return data.astype(np.float32)
    rounded = np.rint(data.astype(np.float64))
    info = np.iinfo(np.int16)
    if data.size and (rounded.min() < info.min or rounded.max() > info.max):
        raise ValueError(f"values {rounded.min()}..{rounded.max()} do not fit int16; write float32 instead.")
    return rounded.astype(np.int16)


def _embed_2d(affine: np.ndarray) -> np.ndarray:
    """A 2D image's (3, 3) affine as the (4, 4) NIfTI needs (the plane at z = 0, 1 mm thick); others unchanged."""
    if affine.shape != (3, 3):
        return affine
    full = np.eye(4)
    full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
    return full


def _image(data: np.ndarray, affine: np.ndarray, description: str | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image with sform = ``affine`` (code 1, scanner), a matching qform where one exists, and
    ``description`` in the header's ``descrip`` field."""
    img = nib.Nifti1Image(data, affine)
    if description is not None:
        img.header["descrip"] = description.encode("ascii")
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    if not np.allclose(img.header.get_qform(), affine, atol=1e-4):  # shear: a qform cannot represent it
        img.header.set_qform(affine, code=0)
    img.header.set_xyzt_units("mm", "sec")
    return img


def write_nifti(
    data: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    affine: np.ndarray | torch.Tensor | None = None,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
    channel_first: bool = False,
    description: str | None = None,
) -> Path:
    """
    Write ``data`` to ``path`` (``.nii`` or ``.nii.gz``) atomically: a hidden temporary file beside it is renamed
    on success; nothing is left under ``path`` on error.

    Args:
        data: image ``(i, j, k[, t/channel])`` as returned by MONAI's NIfTI / SimpleITK readers; a MetaTensor's
            affine is used when ``affine`` is None.
        path: output file; the suffix may be in any case (``OUT.NII.GZ`` is a compressed NIfTI).
        affine: (4, 4) voxel to RAS mm (MONAI's ``meta["affine"]``); stored exactly up to NIfTI's float32.
            A 2D image's (3, 3) affine is placed at z = 0.
        dtype: ``"float32"`` or ``"int16"`` (values rounded; out-of-range values are an error).
        overwrite: replace an existing file; otherwise ``FileExistsError``.
        channel_first: ``data`` is ``(C, i, j, k)``: the channel axis is moved last (dropped when C == 1).
        description: the header's ``descrip`` field (ASCII, at most 79 characters), e.g. the note that marks a
            restored image (:func:`~monai_rwkv.data.provenance.restoration_note`); None leaves it empty.

    Returns:
        the written path.
    """
    path = Path(path)
    suffix = _nifti_suffix(path.name)
    if suffix is None:
        raise ValueError(f"{path}: NIfTI file names end with .nii or .nii.gz.")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    if description is not None and not (description.isascii() and len(description) <= DESCRIP_LENGTH):
        raise ValueError(f"description must be ASCII of at most {DESCRIP_LENGTH} characters, got {description!r}.")
    if affine is None:
        if not hasattr(data, "affine"):
            raise ValueError("affine is required unless data is a MetaTensor.")
        affine = data.affine
    affine = _embed_2d(_to_numpy(affine).astype(np.float64))
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite, invertible 4x4 matrix, got\n{affine}")
    arr = _to_numpy(data)
    if channel_first:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    img = _image(_cast(arr, _DTYPES[dtype]), affine, description)
    with atomic_output_file(path, overwrite=overwrite) as tmp:
        # nibabel picks the format from a lower-case (or all upper-case) suffix: save under the lower-case one
        lower = tmp.with_name(tmp.name[: -len(suffix)] + suffix.lower())
        try:
            nib.save(img, lower)
            if lower != tmp:
                os.replace(lower, tmp)
        finally:
            if lower != tmp:
                lower.unlink(missing_ok=True)
    return path.absolute()


def _nifti_suffix(name: str) -> str | None:
    """The ``.nii`` / ``.nii.gz`` suffix of ``name`` as spelled there (any case), or None."""
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[-len(suffix) :]
    return None
