"""scripts/prepare_natural_images.py: grey-level images from scikit-image's bundled samples (no download), written
atomically with a licence and a manifest, idempotent; readable by ``RandNaturalCT``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_rwkv.transforms import RandNaturalCT
from tests.scripts import load_script

pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def prep() -> object:
    return load_script("prepare_natural_images")


def test_writes_grey_images_licence_and_manifest_once(prep: object, tmp_path: Path, seed: int) -> None:
    out = tmp_path / "natural"
    assert prep.main(["--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(f"{name}.npy" for name in prep.IMAGES)
    for name, entry in manifest["files"].items():
        image = np.load(out / name)
        assert image.dtype == np.float32 and image.ndim == 2 and list(image.shape) == entry["shape"]
        assert 0.0 <= image.min() < image.max() <= 1.0
    licence = (out / "LICENSE.txt").read_text()
    assert all(f"{name}.npy: {text}" in licence for name, text in prep.IMAGES.items())
    assert not list(out.glob(".*.tmp"))  # no temporary files left
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prep.main(["--out", str(out)]) == 0  # complete: nothing rewritten
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "camera.npy").write_bytes(b"changed")
    assert prep.main(["--out", str(out)]) == 0  # a changed file: written again
    assert np.load(out / "camera.npy").shape == (512, 512)
    generator = RandNaturalCT(sorted(str(p) for p in out.glob("*.npy")), spatial_size=(64, 64), pixel_size=4.0)
    assert generator.set_random_state(seed)().shape == (1, 64, 64)


def test_colour_becomes_luma(prep: object) -> None:
    colour = np.zeros((20, 20, 3), dtype=np.uint8)
    colour[..., 1] = 255  # pure green
    np.testing.assert_allclose(prep.grey_levels(colour), 0.7154, rtol=1e-6)
    np.testing.assert_allclose(prep.grey_levels(np.full((20, 20), 51, dtype=np.uint8)), 0.2, rtol=1e-6)
