"""CT-like slices from photographs (monai_rwkv/transforms/natural_ct.py): tissue values, boundaries that follow the
photograph, body size in mm, rims, reproducibility, the transforms and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms import (
    TISSUE_LADDER_HU,
    RandLowDoseCT,
    RandNaturalCT,
    RandNaturalCTd,
    load_grey_image,
    natural_ct,
)
from monai_rwkv.transforms._util import gaussian_blur


def _photo(seed: int, size: int = 160) -> np.ndarray:
    """A stand-in photograph: smooth random blobs plus fine grain, grey levels 0-255."""
    rng = np.random.default_rng(seed)
    blobs = gaussian_blur(torch.from_numpy(rng.normal(size=(size, size))), [6.0, 6.0]).numpy()
    grain = rng.normal(size=(size, size))
    image = blobs / blobs.std() + 0.2 * grain
    return 255 * (image - image.min()) / (image.max() - image.min())


def _body(hu: torch.Tensor) -> torch.Tensor:
    return hu > -990


def test_each_body_pixel_holds_a_ladder_tissue_and_the_median_grey_level_a_soft_one(seed: int) -> None:
    for k in range(8):
        hu = natural_ct(_photo(seed + k), (96, 96), 3.0, np.random.RandomState(seed + k), blur=0.0)
        assert hu.shape == (96, 96) and hu.dtype == torch.float32
        assert hu.min() >= -1024 and hu.max() <= 3071
        assert bool((hu[[0, -1], :] == -1000).all()) and bool((hu[:, [0, -1]] == -1000).all())  # air around the body
        inside = hu[_body(hu)].double()
        nearest = (inside[:, None] - torch.tensor(TISSUE_LADDER_HU, dtype=torch.float64)).abs().min(dim=1).values
        # within half the texture amplitude (80 HU, bone and lung 240) of a tissue of the ladder
        assert float(nearest.max()) <= 120.0 + 1e-6
    # a grey ramp: the body's median grey level runs through its centre, which is fat, water, soft tissue or muscle
    ramp = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))
    for k in range(8):
        hu = natural_ct(ramp, (63, 63), 4.0, np.random.RandomState(seed + k), blur=0.0)
        assert -140.0 <= float(hu[31, 31]) <= 100.0


def test_the_edges_of_the_photograph_become_tissue_boundaries(seed: int) -> None:
    """A photograph of vertical stripes: the slice holds stripes of different tissues, straight along one axis (the
    crop may be turned and flipped)."""
    stripes = np.zeros((64, 64))
    stripes[:, (np.arange(64) // 4) % 2 == 1] = 200.0
    for k in range(6):
        hu = natural_ct(stripes, (64, 64), 5.0, np.random.RandomState(seed + k), blur=0.0)
        centre = hu[24:40, 24:40].double()  # inside every body: at least 160 x 96 mm of the 320 mm field of view
        assert bool(_body(centre).all())
        along_columns = torch.allclose(centre, centre[:1].expand_as(centre), atol=1e-4)
        along_rows = torch.allclose(centre, centre[:, :1].expand_as(centre), atol=1e-4)
        assert along_columns or along_rows
        # a step between stripes: different tissues, or where one class holds both grey levels, its texture (an
        # amplitude of 5 HU or more)
        assert float(centre.max() - centre.min()) >= 4.9


def test_the_body_is_sized_in_millimetres_and_reproducible(seed: int) -> None:
    widths = []
    for k in range(10):
        hu = natural_ct(_photo(seed + k, 64), (128, 128), 4.0, np.random.RandomState(seed + k), blur=0.0)
        body = _body(hu)
        widths.append(int(body.any(dim=0).sum()) * 4.0)
        depth = int(body.any(dim=1).sum()) * 4.0
        assert depth <= widths[-1] + 8.0  # 60-100 % as deep as wide
    assert 150.0 <= min(widths) and max(widths) <= 458.0  # 160-450 mm, a head to a large abdomen
    small = natural_ct(_photo(seed, 64), (64, 64), 1.0, np.random.RandomState(seed), blur=0.0)
    body = _body(small)
    assert int(body.any(dim=0).sum()) <= 62 and not bool(body[0, 0])  # shrunk to 95 % of a 64 mm field of view
    again = natural_ct(_photo(seed, 64), (64, 64), 1.0, np.random.RandomState(seed), blur=0.0)
    torch.testing.assert_close(small, again)
    other = natural_ct(_photo(seed, 64), (64, 64), 1.0, np.random.RandomState(seed + 1), blur=0.0)
    assert not torch.equal(small, other)
    blurred = natural_ct(_photo(seed, 64), (64, 64), 1.0, np.random.RandomState(seed), blur=1.0)
    assert blurred.diff(dim=1).abs().max() < small.diff(dim=1).abs().max()  # partial volume softens the edges


@pytest.mark.parametrize(("rim", "low", "high"), [("fat", -120.0, -80.0), ("bone", 600.0, 1800.0)])
def test_a_rim_surrounds_the_body(rim: str, low: float, high: float, seed: int) -> None:
    hu = natural_ct(_photo(seed), (128, 128), 2.0, np.random.RandomState(seed), rim=rim, blur=0.0)
    body = _body(hu)
    # the outermost body pixel of every row through the body is rim
    rows = body.any(dim=1).nonzero()[:, 0]
    first = body[rows].float().argmax(dim=1)
    edge = hu[rows, first]
    assert bool(((edge >= low) & (edge <= high)).all())


def test_random_slices_carry_their_pixel_size_and_read_npy_files(tmp_path: Path, seed: int) -> None:
    files = []
    for k in range(3):
        files.append(tmp_path / f"photo{k}.npy")
        np.save(files[-1], _photo(seed + k, 48).astype(np.float32))
    generator = RandNaturalCT([str(f) for f in files], spatial_size=(40, 56), pixel_size=(5.0, 6.0))
    image = generator.set_random_state(seed)()
    assert isinstance(image, MetaTensor) and image.shape == (1, 40, 56)
    pixel = float(image.pixdim[0])
    assert 5.0 <= pixel <= 6.0 and float(image.pixdim[1]) == pixel
    assert RandLowDoseCT(n_views=64).set_random_state(seed).geometry(image).spacing == (pixel, pixel)
    again = RandNaturalCT(files, spatial_size=(40, 56), pixel_size=(5.0, 6.0)).set_random_state(seed)
    torch.testing.assert_close(again().as_tensor(), image.as_tensor())
    used = {int(generator.R.randint(3)) for _ in range(30)}
    assert used == {0, 1, 2}  # every photograph is drawn


def test_the_dictionary_transform_replaces_all_keys_and_scans_them(seed: int) -> None:
    data = {"label": torch.zeros(1, 8, 8), "image": torch.ones(1, 8, 8)}
    assert RandNaturalCTd(["label", "image"], images=[], prob=0.0)(data)["label"] is data["label"]
    settings = {"images": [_photo(seed)], "prob": 1.0, "spatial_size": (96, 96), "pixel_size": 4.0}
    clean = RandNaturalCTd(["label", "image"], **settings).set_random_state(seed)(data)
    assert clean["label"].shape == (1, 96, 96)
    torch.testing.assert_close(clean["label"].as_tensor(), clean["image"].as_tensor())
    scan = RandLowDoseCT(dose_fraction=1.0, incident_photons=(4e6, 1.6e7), electronic_noise_var=0.0)
    scanned = RandNaturalCTd(["label", "image"], scan=scan, **settings).set_random_state(seed)(data)["label"]
    body = clean["label"] > -500
    noise = float((scanned - clean["label"])[body].std())
    assert 2.0 < noise < 200.0, noise  # the same slice with a full-dose scan's noise on it


def test_bad_images_and_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        load_grey_image(np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="16 x 16"):
        load_grey_image(np.arange(80.0).reshape(8, 10))
    with pytest.raises(ValueError, match="NaN"):
        load_grey_image(np.full((20, 20), np.nan))
    with pytest.raises(ValueError, match="constant"):
        load_grey_image(np.ones((20, 20)))
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not an array")
    with pytest.raises(ValueError, match="broken.npy"):
        load_grey_image(broken)
    with pytest.raises(ValueError, match="prepare_natural_images"):
        RandNaturalCTd("label", images=[], prob=0.25)
    with pytest.raises(ValueError, match="no photographs"):
        RandNaturalCT([])()
    with pytest.raises(ValueError, match="rim"):
        natural_ct(_photo(0, 32), (32, 32), 1.0, rim="skin")
    with pytest.raises(ValueError, match="shape"):
        natural_ct(_photo(0, 32), (8, 32), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        natural_ct(_photo(0, 32), (32, 32), 0.0)
    with pytest.raises(ValueError, match="rims"):
        RandNaturalCT([_photo(0, 32)], rims=("skin",))
    with pytest.raises(ValueError, match="pixel_size"):
        RandNaturalCT([_photo(0, 32)], pixel_size=(2.0, 1.0))
