"""scripts/prepare_ct_shifted.py: ``fine_volume`` (the head on a clinical head scan's grid keeps its field of view,
world position and HU, on random volumes and oblique affines) and ``head_pairs`` scanning each slice with its
recorded scanner, ``body_pairs`` references being full-dose scans. That the scanners lie outside the training
ranges: tests/bundles/test_ct_train.py."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def prep() -> object:
    return load_script("prepare_ct_shifted")


def random_affine(rng: np.random.Generator) -> np.ndarray:
    """An oblique affine with random pixel sizes, rotation and origin."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(rng.uniform(0.4, 2.0, size=3))
    affine[:3, 3] = rng.uniform(-200, 200, size=3)
    return affine


def test_fine_volume_keeps_the_field_of_view_and_position(prep, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(12, 24)), int(rng.integers(12, 24)), 3)
    affine, matrix = random_affine(rng), int(rng.integers(25, 50))
    fine = prep.fine_volume(nib.Nifti1Image(rng.uniform(-1024, 2000, shape).astype(np.float32), affine), matrix)
    assert fine.shape == (matrix, matrix, 3) and fine.get_fdata().dtype == np.float64
    assert np.asarray(fine.dataobj).dtype == np.float32
    # the outer pixel edges (corners of the field of view) land on the same world points
    for old, new in (((-0.5, -0.5), (-0.5, -0.5)), ((shape[0] - 0.5, shape[1] - 0.5), (matrix - 0.5, matrix - 0.5))):
        np.testing.assert_allclose(affine @ [*old, 1, 1], fine.affine @ [*new, 1, 1], atol=1e-9)
    np.testing.assert_allclose(fine.affine[:3, 2], affine[:3, 2])  # slices untouched
    # pixel size in each in-plane direction scaled by old/new matrix
    old_zooms, new_zooms = np.linalg.norm(affine[:3, :2], axis=0), np.linalg.norm(fine.affine[:3, :2], axis=0)
    np.testing.assert_allclose(new_zooms, old_zooms * np.array(shape[:2]) / matrix)


def test_fine_volume_keeps_hu(prep, seed: int) -> None:
    """A constant slice stays that constant; air stays at or above -1024 HU (the cubic kernel's undershoot is cut);
    a linear ramp lands on the new pixel centres (no half-pixel shift)."""
    rng = np.random.default_rng(seed)
    level = float(rng.uniform(-1000, 3000))
    const = prep.fine_volume(nib.Nifti1Image(np.full((16, 16, 2), level, np.float32), np.eye(4)), 40).get_fdata()
    np.testing.assert_allclose(const, level, rtol=1e-6)
    edge = np.full((16, 16, 1), -1024.0, np.float32)
    edge[5:11, 5:11] = float(rng.uniform(1000, 3000))
    assert prep.fine_volume(nib.Nifti1Image(edge, np.eye(4)), 37).get_fdata().min() >= -1024.0
    x = np.linspace(-1, 1, 20)
    slope = rng.uniform(50, 300, size=2)
    ramp = (slope[0] * x[:, None] + slope[1] * x[None, :])[..., None].astype(np.float32)
    fine = prep.fine_volume(nib.Nifti1Image(ramp, np.eye(4)), 60).get_fdata()[..., 0]
    centres = (np.arange(60) + 0.5) / 3 - 0.5  # fine pixel centres in old pixel coordinates
    x_fine = -1 + 2 * centres / 19
    expected = slope[0] * x_fine[:, None] + slope[1] * x_fine[None, :]
    error = (fine - expected)[6:-6, 6:-6]  # interior: 48 x 48, whole periods of the 3-pixel phase pattern
    per_pixel = slope.sum() * 2 / 19  # HU per old pixel along the diagonal
    assert abs(error.mean()) < 1e-6 * per_pixel  # no shift: the cubic kernel's error averages out
    assert np.abs(error).max() < 0.05 * per_pixel  # and stays under 1/20 of an old pixel


def test_head_pairs_scan_each_slice_with_its_scanner(prep, seed: int) -> None:
    """Slice k of the low-dose volume is ``scan`` of slice k (rows j, columns i) by ``scanners[k % len]`` with seed
    ``seed + k``; the full-dose volume is the input, untouched."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 28)), int(rng.integers(20, 28)), 3)
    hu = np.full(shape, -1000.0, np.float32)
    hu[3:-3, 3:-3] = rng.uniform(-100, 1500, (shape[0] - 6, shape[1] - 6, 3)).astype(np.float32)
    affine = np.diag([0.75, 1.25, 3.0, 1.0])  # exact in the header's float32
    full, low, used = prep.head_pairs(nib.Nifti1Image(hu, affine), seed, ("quiet", "sharp"))
    assert used == ["quiet", "sharp", "quiet"]
    np.testing.assert_array_equal(full, hu)
    for k, scanner in enumerate(used):
        expected = prep.scan(torch.from_numpy(hu[:, :, k].T.copy()), (1.25, 0.75), scanner, seed + k).numpy().T
        np.testing.assert_array_equal(low[:, :, k], expected)
        assert not np.array_equal(low[:, :, k], hu[:, :, k])


def test_body_pairs_reference_is_a_scan_and_low_dose_scans_it(prep, seed: int) -> None:
    """Slice k of the full-dose volume is the ``reference`` scan of synthetic slice k (seed ``seed + 5000 + k``), not
    the noise-free image; slice k of the low-dose volume is that reference scanned by ``soft`` / ``sharp``
    (alternating)."""
    from monai_rwkv.transforms import SYNTHETIC_CT_REGIONS, synthetic_ct  # noqa: PLC0415

    shape, pixel = (72, 64), 4.0
    full, low, slices = prep.body_pairs(2, seed, shape, pixel)
    assert full.shape == low.shape == (64, 72, 2)
    assert [s["scanner"] for s in slices] == ["soft", "sharp"]
    for k in range(2):
        rng = np.random.RandomState(seed + k)
        region = SYNTHETIC_CT_REGIONS[(k + 1) % len(SYNTHETIC_CT_REGIONS)]
        assert slices[k]["region"] == region
        contrast, couch = bool(rng.uniform() < 0.5), bool(rng.uniform() < 0.5)
        hu = synthetic_ct(shape, pixel, region, rng, contrast, couch, blur=float(rng.uniform(0.3, 0.9)))
        reference = prep.scan(hu, (pixel, pixel), "reference", seed + 5000 + k)
        np.testing.assert_array_equal(full[:, :, k], reference.numpy().T)
        grain = (reference - hu.float())[hu > -500]  # inside the body: the scan's noise and kernel
        assert 1.0 < float(grain.std()) < 200.0
        expected = prep.scan(reference, (pixel, pixel), slices[k]["scanner"], seed + 500 + k)
        np.testing.assert_array_equal(low[:, :, k], expected.numpy().T)
