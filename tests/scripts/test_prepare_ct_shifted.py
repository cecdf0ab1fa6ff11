"""scripts/prepare_ct_shifted.py's ``fine_volume``: the head on a clinical head scan's grid keeps its field of view,
world position and HU, on random volumes and oblique affines."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

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
