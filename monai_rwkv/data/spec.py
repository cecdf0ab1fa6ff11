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
What a model accepts as input, read from a bundle's metadata, and the check of an image against it.

A bundle's ``metadata.json`` declares its input in ``network_data_format.inputs.image`` (model-zoo form):
``modality`` (the DICOM Modality, e.g. ``"CT"``), ``num_channels`` (values per voxel: 1 for a grey-level image)
and ``value_range`` (the physical values the model was trained on). :class:`InputSpec` holds these and
:meth:`InputSpec.problems` says, from the file headers and the values, why an image does not fit: DICOM slices of
another modality (also a few MR slices mixed into a CT series), colour or palette images, a vector / RGB NIfTI,
values mostly outside the range (an image in other units; checked after a unit conversion the reader found in
the headers, such as a PET series' Bq/ml to SUV), or an image this program restored already
(:mod:`monai_rwkv.data.provenance`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import torch

from monai_rwkv.data.errors import one_line
from monai_rwkv.data.provenance import restored_note
from monai_rwkv.data.sitk_reader import (
    DICOM_SLICE_MODALITIES,
    DICOM_SLICE_PHOTOMETRIC,
    DICOM_SLICE_SAMPLES,
    DICOM_SOURCE_FILES,
    PET_SUV_FACTOR,
    PET_SUV_PROBLEM,
)

__all__ = ["InputSpec", "UNIT_FACTOR_KEYS"]

#: meta keys of unit conversions a reader derived from the headers (``value * factor`` is in the model's units, e.g.
#: a PET series in Bq/ml to SUV); the value range is checked after the conversion, and a reader's explanation of why
#: it could not convert (the ``*_problem`` key beside it) is a problem of the input.
UNIT_FACTOR_KEYS = {PET_SUV_FACTOR: PET_SUV_PROBLEM}

_GREY = ("MONOCHROME1", "MONOCHROME2")
_DICOM_TAGS = ["Modality", "SamplesPerPixel", "PhotometricInterpretation"]


@dataclass(frozen=True)
class InputSpec:
    """
    What a model accepts.

    Attributes:
        modality: DICOM Modality every source slice must have (``"CT"``); None accepts any.
        num_channels: values per voxel (1: grey level; colour images have 3). Extra volumes of a 4D image (time
            frames) are not channels: each frame is restored on its own.
        value_range: physical values the model knows; None: any.
        max_outside: largest fraction of finite voxels outside ``value_range`` that is accepted.
        units: name of the values' units for messages (``"hounsfield"``).
    """

    modality: str | None = None
    num_channels: int = 1
    value_range: tuple[float, float] | None = None
    max_outside: float = 0.5
    units: str = ""

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], key: str = "image") -> InputSpec:
        """
        The spec of input ``key`` in a bundle's metadata (``network_data_format.inputs.<key>``); missing
        fields accept anything (a missing ``num_channels`` means 1). Channels the pipeline derives from the image
        (``derived_channels``, e.g. a noise-level map) are not expected in the input file.
        """
        fmt = metadata.get("network_data_format", {}).get("inputs", {}).get(key, {}) if metadata else {}
        value_range = fmt.get("value_range")
        return cls(
            modality=str(fmt["modality"]).upper() if fmt.get("modality") else None,
            num_channels=int(fmt.get("num_channels", 1)) - int(fmt.get("derived_channels", 0)),
            value_range=(float(value_range[0]), float(value_range[1])) if value_range else None,
            units=str(fmt.get("format", "")),
        )

    def describe(self) -> str:
        """What this spec expects, in a few words: ``"CT, 1 channel, values in [-1024, 3072] (hounsfield)"``."""
        parts = [self.modality] if self.modality else []
        parts.append(f"{self.num_channels} channel{'s' if self.num_channels != 1 else ''}")
        if self.value_range is not None:
            units = f" ({self.units})" if self.units else ""
            parts.append(f"values in [{self.value_range[0]:g}, {self.value_range[1]:g}]{units}")
        return ", ".join(parts)

    def problems(self, image: torch.Tensor | np.ndarray, meta: Mapping[str, Any], path: str | os.PathLike) -> list[str]:
        """
        Why ``image`` does not fit this spec, one short phrase per problem ([] when it fits).

        Args:
            image: the image as read, channel first ``(C, i, j[, k])``, in physical units.
            meta: its meta dict (``SimpleITKReader``'s: DICOM source files, ``original_channel_dim``, unit factors).
            path: the input file or folder (its headers are read for NIfTI and other single files).
        """
        problems = []
        if DICOM_SOURCE_FILES in meta:
            problems += self._dicom_problems([os.fspath(f) for f in meta[DICOM_SOURCE_FILES]], meta)
        elif os.path.isfile(path):
            components = _file_components(os.fspath(path))
            if components is not None and components != self.num_channels:
                problems.append(
                    f"{components} values per voxel (a colour or vector image), {self.num_channels} expected"
                )
        note = restored_note(meta)
        if note is not None:
            problems.append(f"already restored ({note}): restore the original scan")
        factor = 1.0
        for key, problem_key in UNIT_FACTOR_KEYS.items():
            if meta.get(problem_key):
                problems.append(str(meta[problem_key]))
            factor *= float(meta.get(key, 1.0))
        problems += self._value_problems(image, factor)
        return problems

    def _dicom_problems(self, files: Sequence[str], meta: Mapping[str, Any]) -> list[str]:
        odd: dict[str, list[str]] = {}
        for file, facts in zip(files, _slice_facts(files, meta)):
            if isinstance(facts, str):
                odd.setdefault(facts, []).append(file)
                continue
            modality, samples, photometric = facts
            if self.modality is not None and modality != self.modality:
                odd.setdefault(f"Modality {modality or '<none>'}, not {self.modality}", []).append(file)
            if samples != self.num_channels:
                odd.setdefault(f"{samples} samples per pixel, {self.num_channels} expected", []).append(file)
            elif self.num_channels == 1 and photometric and photometric not in _GREY:
                odd.setdefault(f"PhotometricInterpretation {photometric}, not a grey-level image", []).append(file)
        lines = []
        for problem, bad in odd.items():
            count = f"{len(bad)} of {len(files)} slices" if len(files) > 1 else "the file"
            lines.append(f"{count}: {problem} (e.g. {os.path.basename(bad[0])})")
        return lines

    def _value_problems(self, image: torch.Tensor | np.ndarray, factor: float = 1.0) -> list[str]:
        if self.value_range is None:
            return []
        data = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        data = data * factor if factor != 1.0 else data
        low, high = self.value_range
        finite = torch.isfinite(data) if data.is_floating_point() else torch.ones_like(data, dtype=torch.bool)
        count = int(finite.sum())
        outside = int((finite & ((data < low) | (data > high))).sum())
        if count and outside > self.max_outside * count:
            units = f" ({self.units})" if self.units else ""
            return [
                f"{outside / count:.0%} of the voxels lie outside [{low:g}, {high:g}]{units}: "
                "is the image in the model's units?"
            ]
        return []


def _slice_facts(files: Sequence[str], meta: Mapping[str, Any]) -> list[tuple[str, int, str] | str]:
    """
    ``(Modality, SamplesPerPixel, PhotometricInterpretation)`` of each slice: from the reader's meta when it recorded
    them (``SimpleITKReader`` does), else from the headers; a string where a header cannot be read.
    """
    keys = (DICOM_SLICE_MODALITIES, DICOM_SLICE_SAMPLES, DICOM_SLICE_PHOTOMETRIC)
    if all(key in meta and len(meta[key]) == len(files) for key in keys):
        return [
            (str(m or "").upper(), int(n or 1), str(p or "").upper()) for m, n, p in zip(*(meta[key] for key in keys))
        ]
    facts: list[tuple[str, int, str] | str] = []
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=_DICOM_TAGS)
        except Exception as e:  # noqa: BLE001 - the reader already parsed these files
            facts.append(f"unreadable header ({one_line(e, 80)})")
            continue
        facts.append(
            (
                str(ds.get("Modality", "") or "").upper(),
                int(ds.get("SamplesPerPixel", 1) or 1),
                str(ds.get("PhotometricInterpretation", "") or "").upper(),
            )
        )
    return facts


def _file_components(path: str) -> int | None:
    """Values per voxel of an image file from its header (SimpleITK, then nibabel for NIfTI-2), or None."""
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return int(reader.GetNumberOfComponents())
    except Exception:  # noqa: BLE001 - formats SimpleITK cannot read are tried with nibabel
        pass
    try:
        import nibabel as nib

        header = nib.load(path).header
    except Exception:  # noqa: BLE001 - unknown: the reader accepted it, no claim is made
        return None
    dtype = header.get_data_dtype()
    if dtype.names:  # RGB24 / RGBA32
        return len(dtype.names)
    dims = header["dim"]
    return int(dims[5]) if int(dims[0]) >= 5 and int(dims[5]) > 1 else 1
