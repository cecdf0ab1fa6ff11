"""
Values the CT model's range cannot hold pass through restoration unchanged (``keep_outside``, on by default): a
scanner's padding outside its reconstruction circle (-3024 HU) and metal on an extended HU scale, in the NIfTI and
the derived DICOM output alike, through ``monai-rwkv restore`` and the model-zoo keys MONAI Label runs. Values above
a model's range that are clipped instead (PET above 20 SUV; CT metal with ``keep_outside`` off) are named in one
warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.apps.bundle import load_bundle_config
from monai_rwkv.apps.restore import InputImage, read_volume
from monai_rwkv.transforms import KeepOutside, KeepOutsided
from tests.bundles.test_pipeline import TINY, _monai_label_way
from tests.bundles.utils import REPO, make_tiny_bundle
from tests.robustness.conftest import (
    leftovers,
    run_bundle,
    run_main,
    tree_digest,
    write_ct_series,
    write_pet_series,
)

PADDING, METAL = -3024.0, 7976.0


def _scan(seed: int, size: int = 24, slices: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(volume in HU, padding mask, metal mask): in-range random values, the corners outside an inscribed circle
    at -3024 HU and a small metal insert at 7976 HU."""
    rng = np.random.default_rng(seed)
    volume = rng.uniform(-1100.0, 2400.0, (size, size, slices)).astype(np.float32)
    i, j = np.mgrid[:size, :size] - (size - 1) / 2
    padding = np.repeat(((i**2 + j**2) > (size / 2) ** 2)[..., None], slices, axis=2)
    metal = np.zeros_like(padding)
    metal[size // 2 - 2 : size // 2 + 1, size // 2 : size // 2 + 2, 1:] = True
    volume[padding], volume[metal] = PADDING, METAL
    return volume, padding, metal


def test_keep_outside_array_and_dictionary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = torch.as_tensor(rng.uniform(-5000.0, 9000.0, (1, 9, 8, 3)), dtype=torch.float32)
    source[0, 2, 3, 1] = float("nan")
    source[0, 4, 4, 0] = float("-inf")
    restored = MetaTensor(torch.as_tensor(rng.uniform(-1024.0, 3072.0, source.shape), dtype=torch.float32))
    restored.meta["probe"] = 7
    keep = KeepOutside(-1500.0, 3072.0)
    out = keep(restored, source)
    outside = ((source < -1500.0) | (source > 3072.0)) & torch.isfinite(source)  # NaN, inf: as restored
    assert 0 < int(outside.sum()) < source.numel() and not bool(outside[0, 4, 4, 0])
    torch.testing.assert_close(out[outside], source[outside], rtol=0, atol=0)
    torch.testing.assert_close(out[~outside], restored.as_tensor()[~outside], rtol=0, atol=0)
    assert isinstance(out, MetaTensor) and out.meta["probe"] == 7
    assert restored.as_tensor()[outside].abs().max() <= 3072.0  # the input was not changed in place
    # one bound only
    only_low = KeepOutside(low=-1500.0)(restored, source)
    high = source > 3072.0
    torch.testing.assert_close(only_low[high], restored.as_tensor()[high], rtol=0, atol=0)
    # the dictionary version reads the input from its own key
    d = KeepOutsided("pred", "image_source", -1500.0, 3072.0)({"pred": restored, "image_source": source})
    torch.testing.assert_close(d["pred"], out, rtol=0, atol=0)


def test_keep_outside_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="need low < high"):
        KeepOutside(3072.0, -1500.0)
    with pytest.raises(ValueError, match="differ in shape"):
        KeepOutside(-1500.0, 3072.0)(torch.zeros(1, 4, 4, 2), torch.zeros(1, 8, 8, 2))


def test_padding_and_metal_pass_through_nifti(bundle: Path, tmp_path: Path, capsys) -> None:
    volume, padding, metal = _scan(3)
    source = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1.0])), source)
    digest = tree_digest(source)
    code, lines, _ = run_main(capsys, bundle, source, tmp_path / "out.nii.gz")
    assert code == 0, lines
    out = nib.load(tmp_path / "out.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(out[padding], PADDING)
    np.testing.assert_array_equal(out[metal], METAL)
    inside = ~(padding | metal)
    assert out[inside].min() >= -1024.0 and out[inside].max() <= 3072.0
    # the model-zoo keys (MONAI Label's way) give the same volume
    np.testing.assert_array_equal(_monai_label_way(bundle, source)[0], out)
    # switched off: restored as the network sees them, clipped to its range; the rest as before
    code, lines, _ = run_main(capsys, bundle, source, tmp_path / "off.nii.gz", "--set", "keep_outside=false")
    assert code == 0, lines
    off = nib.load(tmp_path / "off.nii.gz").get_fdata(dtype=np.float32)
    assert off.min() >= -1024.0 and off.max() <= 3072.0
    np.testing.assert_array_equal(off[inside], out[inside])
    np.testing.assert_array_equal(_monai_label_way(bundle, source, keep_outside=False)[0], off)
    assert tree_digest(source) == digest and leftovers(tmp_path) == []


def test_padding_and_metal_pass_through_monai_bundle_run(bundle: Path, tmp_path: Path) -> None:
    volume, padding, metal = _scan(4)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1.0])), tmp_path / "in" / "scan.nii.gz")
    result = run_bundle(bundle, tmp_path / "in", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = nib.load(tmp_path / "out" / "scan_restored.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(out[padding], PADDING)
    np.testing.assert_array_equal(out[metal], METAL)


def test_padding_and_metal_pass_through_dicom(bundle: Path, tmp_path: Path, capsys) -> None:
    series = tmp_path / "series"
    paths = write_ct_series(series, n=3)
    _, padding, metal = _scan(0, size=16, slices=3)
    for path in paths:  # stored int16, HU = stored - 1024
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int16)
        stored[padding[..., 0]] = int(PADDING) + 1024
        stored[metal[..., 1]] = int(METAL) + 1024
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    digest = tree_digest(series)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = read_volume(InputImage(series, "s", is_dicom=True))[0].numpy()
    kept = (source < -1500.0) | (source > 3072.0)
    assert kept.any()
    code, lines, _ = run_main(capsys, bundle, series, tmp_path / "out_series")
    assert code == 0, lines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = read_volume(InputImage(tmp_path / "out_series", "o", is_dicom=True))[0].numpy()
    np.testing.assert_allclose(written[kept], source[kept], atol=0.5)  # the derived series' integer grid
    assert written[~kept].min() >= -1024.5 and written[~kept].max() <= 3072.5
    assert tree_digest(series) == digest and leftovers(tmp_path) == []


def test_the_all_in_one_ct_task_keeps_them_too(tmp_path: Path) -> None:
    """The all-in-one bundle's CT task runs the CT bundle's pipeline, ``keep_outside`` included."""
    aio = make_tiny_bundle(tmp_path / "aio", seed=5, bundle=REPO / "bundles" / "restore_rwkv_all_in_one")
    volume, padding, metal = _scan(1)
    restorer = load_bundle_config(aio, "inference.json", {**TINY, "task": "ct"}).get_parsed_content("restorer")
    out = restorer(torch.from_numpy(volume)[None])[0].numpy()
    np.testing.assert_array_equal(out[padding], PADDING)
    np.testing.assert_array_equal(out[metal], METAL)
    off = {**TINY, "task": "ct", "task_settings#keep_outside": False}
    restorer = load_bundle_config(aio, "inference.json", off).get_parsed_content("restorer")
    clipped = restorer(torch.from_numpy(volume)[None])[0].numpy()
    assert clipped.min() >= -1024.0 and clipped.max() <= 3072.0
    np.testing.assert_array_equal(clipped[~(padding | metal)], out[~(padding | metal)])


def _clipping_warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("warning: ") and "the top of its range" in line]


def test_clipped_values_above_the_range_are_named(bundle: Path, tmp_path: Path, capsys) -> None:
    volume, _, metal = _scan(5)
    source = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1.0])), source)
    code, lines, _ = run_main(capsys, bundle, source, tmp_path / "kept.nii.gz")
    assert code == 0 and _clipping_warnings(lines) == [], lines  # handed through: nothing lost
    code, lines, _ = run_main(capsys, bundle, source, tmp_path / "off.nii.gz", "--set", "keep_outside=false")
    assert code == 0, lines
    assert _clipping_warnings(lines) == [
        f"warning: scan.nii.gz: {int(metal.sum())} voxel(s) above 3072 in the model's units (up to 7976) restored "
        "as at most 3072, the top of its range"
    ], lines


def test_pet_above_20_suv_is_named(tmp_path: Path, capsys) -> None:
    pet = make_tiny_bundle(tmp_path / "pet", bundle=REPO / "bundles" / "restore_rwkv_pet_synthesis")
    rng = np.random.default_rng(6)
    suv = rng.gamma(2.0, 1.5, (20, 18, 3)).clip(0, 19).astype(np.float32)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(suv, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "in" / "brain.nii.gz")
    suv[8:10, 8:10, 1] = [[45.0, 30.5], [22.0, 21.0]]  # a bladder-like hot spot
    nib.save(nib.Nifti1Image(suv, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "in" / "hot.nii.gz")
    code, lines, _ = run_main(capsys, pet, tmp_path / "in" / "brain.nii.gz", tmp_path / "brain_out.nii.gz")
    assert code == 0 and _clipping_warnings(lines) == [], lines
    code, lines, _ = run_main(capsys, pet, tmp_path / "in" / "hot.nii.gz", tmp_path / "hot_out.nii.gz")
    assert code == 0, lines
    assert _clipping_warnings(lines) == [
        "warning: hot.nii.gz: 4 voxel(s) above 20 in the model's units (up to 45) restored as at most 20, the top "
        "of its range"
    ], lines
    assert nib.load(tmp_path / "hot_out.nii.gz").get_fdata().max() <= 20.0
    # a DICOM series in Bq/ml: counted in SUV, through the header's factor
    series = tmp_path / "series"
    write_pet_series(series, suv[:16, :16])
    code, lines, _ = run_main(capsys, pet, series, tmp_path / "series_out.nii.gz")
    assert code == 0, lines
    (warning,) = _clipping_warnings(lines)
    assert ": 4 voxel(s) above 20 in the model's units (up to 45" in warning, warning
