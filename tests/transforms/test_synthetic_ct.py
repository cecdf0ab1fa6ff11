"""Synthetic CT slices (monai_rwkv/transforms/synthetic_ct.py): tissue values, reproducibility, the transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms import RandLowDoseCT, RandSyntheticCT, RandSyntheticCTd, synthetic_ct


def _fraction(image: torch.Tensor, low: float, high: float) -> float:
    return float(((image >= low) & (image <= high)).float().mean())


@pytest.mark.parametrize("region", ["head", "thorax", "abdomen"])
def test_each_region_holds_its_tissues_within_the_hu_range(region: str, seed: int) -> None:
    image = synthetic_ct((160, 160), 1.6, region, np.random.RandomState(seed), blur=0.0)
    assert image.shape == (160, 160) and image.dtype == torch.float32
    assert image.min() >= -1024 and image.max() <= 3071
    assert _fraction(image, -1000, -1000) > 0.1  # air around the body
    assert _fraction(image, 150, 3071) > 0.002  # bone
    if region == "head":
        assert _fraction(image, 20, 50) > 0.15  # brain
    if region == "thorax":
        assert _fraction(image, -900, -820) > 0.05  # lung parenchyma
    if region == "abdomen":
        body = _fraction(image, -999, 3071)  # fat, and organs, bowel and muscle, as fractions of the body
        assert _fraction(image, -120, -70) > 0.05 * body and _fraction(image, 20, 200) > 0.12 * body
        assert _fraction(image, -900, -820) == 0.0  # no lungs


def test_a_body_shrunk_to_the_field_of_view_keeps_its_proportions(seed: int) -> None:
    """A 260-380 mm wide thorax in a 100 mm field of view is a small patient, not a fat blob: fat, muscle and bones
    shrink with it, so the lungs keep a share of the body like that of a thorax at full size (1000 seeds: at least
    14 %, fat at most 54 %; fat and muscle at full thickness left under 1 % lung in half the slices)."""
    for size in (100, 400):
        image = synthetic_ct((size, size), 1.0, "thorax", np.random.RandomState(seed), blur=0.0)
        body = _fraction(image, -999, 3071)
        assert _fraction(image, -900, -820) > 0.1 * body and _fraction(image, -120, -70) < 0.6 * body


def test_the_anatomy_is_sized_in_millimetres_and_reproducible(seed: int) -> None:
    coarse = synthetic_ct((100, 100), 3.0, "head", np.random.RandomState(seed), blur=0.0)
    fine = synthetic_ct((100, 100), 2.4, "head", np.random.RandomState(seed), blur=0.0)
    # the same head on finer pixels covers the same area in mm^2 (more pixels)
    area_coarse, area_fine = float((coarse > -500).float().sum()) * 9, float((fine > -500).float().sum()) * 2.4**2
    assert area_fine == pytest.approx(area_coarse, rel=0.05)
    assert 0.7 * np.pi * 65 * 65 * 1.1 < area_fine < 1.3 * np.pi * 80 * 80 * 1.3  # an adult head's cross-section
    squeezed = synthetic_ct((100, 100), 1.0, "abdomen", np.random.RandomState(seed), blur=0.0)
    # a 240-400 mm wide abdomen in a 100 mm field of view is shrunk to about its width, not cut off: mostly air on
    # the border (its offset and rough outline may touch the edge)
    body = squeezed > -500
    width = int(body.any(dim=0).sum())
    assert 80 <= width <= 100 and body[:, [0, -1]].float().mean() < 0.4 and body[[0, -1], :].float().mean() < 0.4
    again = synthetic_ct((100, 100), 2.4, "head", np.random.RandomState(seed), blur=0.0)
    torch.testing.assert_close(fine, again)
    blurred = synthetic_ct((100, 100), 2.0, "abdomen", np.random.RandomState(seed), blur=1.0)
    assert blurred.diff(dim=1).abs().max() < fine.diff(dim=1).abs().max()  # partial volume softens the edges


def test_random_slices_carry_their_pixel_size_for_the_simulator(seed: int) -> None:
    generator = RandSyntheticCT(spatial_size=(48, 64), pixel_size=(5.0, 6.0), couch_prob=1.0).set_random_state(seed)
    image = generator()
    assert isinstance(image, MetaTensor) and image.shape == (1, 48, 64)
    pixel = float(image.pixdim[0])
    assert 5.0 <= pixel <= 6.0 and float(image.pixdim[1]) == pixel
    assert RandLowDoseCT(n_views=64).set_random_state(seed).geometry(image).spacing == (pixel, pixel)
    again = RandSyntheticCT(spatial_size=(48, 64), pixel_size=(5.0, 6.0), couch_prob=1.0).set_random_state(seed)
    torch.testing.assert_close(again().as_tensor(), image.as_tensor())


def test_the_dictionary_transform_replaces_all_keys_with_one_slice_at_the_given_rate(seed: int) -> None:
    data = {"label": torch.zeros(1, 8, 8), "other": torch.ones(1, 8, 8)}
    assert RandSyntheticCTd(["label", "other"], prob=0.0)(data)["label"] is data["label"]
    transform = RandSyntheticCTd(["label", "other"], prob=1.0, spatial_size=(32, 32), pixel_size=8.0)
    out = transform.set_random_state(seed)(data)
    assert out["label"].shape == (1, 32, 32)
    torch.testing.assert_close(out["label"].as_tensor(), out["other"].as_tensor())
    half = RandSyntheticCTd("label", prob=0.5, spatial_size=(16, 16), pixel_size=12.0).set_random_state(seed)
    replaced = sum(half(data)["label"].shape[-1] == 16 for _ in range(60))
    assert 15 < replaced < 45


def test_a_scan_gives_each_new_slice_a_scanners_noise(seed: int) -> None:
    data = {"label": torch.zeros(1, 8, 8), "image": torch.zeros(1, 8, 8)}
    settings = {"prob": 1.0, "spatial_size": (96, 96), "pixel_size": 4.0}
    clean = RandSyntheticCTd(["label", "image"], **settings).set_random_state(seed)(data)["label"]

    def scanned() -> dict:
        scan = RandLowDoseCT(dose_fraction=1.0, incident_photons=(1e5, 4e5), electronic_noise_var=0.0)
        return RandSyntheticCTd(["label", "image"], scan=scan, **settings).set_random_state(seed)(data)

    out = scanned()
    assert out["label"].shape == clean.shape and out["label"].pixdim.tolist()[:2] == clean.pixdim.tolist()[:2]
    torch.testing.assert_close(out["label"].as_tensor(), out["image"].as_tensor())  # one scanned slice for all keys
    body = clean > -500
    noise = float((out["label"] - clean)[body].std())
    assert 2.0 < noise < 200.0, noise  # HU: the same anatomy with a scan's noise on it
    torch.testing.assert_close(scanned()["label"].as_tensor(), out["label"].as_tensor())  # seeded from the transform


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="region"):
        synthetic_ct((32, 32), 1.0, "knee")
    with pytest.raises(ValueError, match="shape"):
        synthetic_ct((8, 32), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        synthetic_ct((32, 32), 0.0)
    with pytest.raises(ValueError, match="pixel_size"):
        RandSyntheticCT(pixel_size=(2.0, 1.0))
    with pytest.raises(ValueError, match="regions"):
        RandSyntheticCT(regions=("knee",))
