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
The note that marks an image as restored by this program, written into every output and recognised in an input.

A derived DICOM series carries it as DerivationDescription (0008,2111), a NIfTI file in its header's ``descrip``
field (80 bytes). Both end with :data:`RESTORED_MARK`; :func:`restored_note` finds it in the meta of an image read
by :class:`~monai_rwkv.data.SimpleITKReader`, so that an output given back as an input is recognised (a second pass
of a restoration network is not a restoration of the scan: it sharpens and smooths what the first pass made).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai_rwkv.data.nifti_writer import DESCRIP_LENGTH

__all__ = [
    "DICOM_SLICE_DERIVATIONS",
    "NIFTI_DESCRIP_KEY",
    "RESTORED_MARK",
    "nifti_restoration_note",
    "restoration_note",
    "restored_note",
]

#: the end of every restoration note.
RESTORED_MARK = "(monai_rwkv)"
#: the meta key of a NIfTI header's ``descrip`` field (as ITK's NIfTI reader names it).
NIFTI_DESCRIP_KEY = "descrip"
#: the meta key of the source slices' DerivationDescription, one per slice (``SimpleITKReader`` for DICOM input).
DICOM_SLICE_DERIVATIONS = "dicom_slice_derivations"


def restoration_note(model_name: str, model_version: str, max_length: int = 1024) -> str:
    """
    ``"Image restoration by <model_name> version <model_version> (monai_rwkv)"`` (a derived DICOM series'
    DerivationDescription), at most ``max_length`` characters: a longer note is cut at a word and marked ``...``,
    never the mark.
    """
    return _note(f"Image restoration by {model_name} version {model_version}", max_length)


def nifti_restoration_note(model_name: str, model_version: str) -> str:
    """
    ``"Restored by <model_name> <model_version> (monai_rwkv)"`` for a NIfTI header's ``descrip`` field: ASCII (other
    characters become ``?``) and at most 79 characters (a longer note is cut at a word and marked ``...``, never the
    mark), as :func:`~monai_rwkv.data.write_nifti`'s ``description`` takes it.
    """
    name, version = (str(v).encode("ascii", "replace").decode() for v in (model_name, model_version))
    return _note(f"Restored by {name} {version}", DESCRIP_LENGTH)


def _note(body: str, max_length: int) -> str:
    if max_length < len(RESTORED_MARK):
        raise ValueError(f"max_length must be at least {len(RESTORED_MARK)}, got {max_length}.")
    body = " ".join(body.split())
    room = max_length - len(RESTORED_MARK) - 1
    if room <= 0:
        return RESTORED_MARK
    if len(body) > room:  # cut at a word, say so
        cut = body[: max(room - 4, 0)]
        cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
        body = f"{cut.rstrip()} ..." if room >= 4 else body[:room]
    return f"{body} {RESTORED_MARK}"


def restored_note(meta: Mapping[str, Any]) -> str | None:
    """
    The restoration note of an image read with its meta (a DICOM series: its slices' DerivationDescription; NIfTI:
    its ``descrip``), or None when the image is not an output of this program.
    """
    notes = [str(note or "").strip() for note in meta.get(DICOM_SLICE_DERIVATIONS, ())]
    notes.append(str(meta.get(NIFTI_DESCRIP_KEY, "") or "").strip())
    return next((note for note in notes if note.endswith(RESTORED_MARK)), None)
