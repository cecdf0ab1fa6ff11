"""Input checks against a bundle's metadata (monai_rwkv/data/spec.py) use what the reader recorded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monai_rwkv.data import sitk_load_image
from monai_rwkv.data.sitk_reader import DICOM_SLICE_MODALITIES, DICOM_SLICE_PHOTOMETRIC, DICOM_SLICE_SAMPLES
from monai_rwkv.data.spec import InputSpec
from tests.data.conftest import CT5N, copy_series


def test_the_reader_records_per_slice_facts_and_the_check_uses_them(tmp_path: Path) -> None:
    series = copy_series(CT5N, tmp_path / "ct")
    image = sitk_load_image(image_only=True, ensure_channel_first=True)(series)
    n = image.shape[-1]
    assert image.meta[DICOM_SLICE_MODALITIES] == ["CT"] * n
    assert image.meta[DICOM_SLICE_SAMPLES] == [1] * n
    assert image.meta[DICOM_SLICE_PHOTOMETRIC] == ["MONOCHROME2"] * n
    spec = InputSpec(modality="CT", num_channels=1)
    assert spec.problems(image, image.meta, series) == []
    # the headers are not read again: the facts come from the meta (here with the files gone)
    for file in os.listdir(series):
        os.remove(os.path.join(series, file))
    meta = dict(image.meta)
    meta[DICOM_SLICE_MODALITIES] = ["CT"] * (n - 1) + ["MR"]
    meta[DICOM_SLICE_PHOTOMETRIC] = ["RGB"] + ["MONOCHROME2"] * (n - 1)
    problems = spec.problems(image, meta, series)
    assert len(problems) == 2
    assert problems[0].startswith(f"1 of {n} slices: PhotometricInterpretation RGB")
    assert problems[1].startswith(f"1 of {n} slices: Modality MR, not CT")
    assert InputSpec(value_range=(-1024, 3072)).problems(np.full((1, 2, 2, 1), -3000.0), {}, series)


def test_channels_the_pipeline_derives_are_not_expected_in_the_file() -> None:
    image = {"format": "hounsfield", "modality": "CT", "num_channels": 2, "derived_channels": 1}
    spec = InputSpec.from_metadata({"network_data_format": {"inputs": {"image": image}}})
    assert spec.num_channels == 1 and spec.describe().startswith("CT, 1 channel")
    assert (
        InputSpec.from_metadata({"network_data_format": {"inputs": {"image": {"num_channels": 3}}}}).num_channels == 3
    )
