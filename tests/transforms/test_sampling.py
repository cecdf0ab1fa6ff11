"""Random 2D slices of volumes along any axis (monai_rwkv/transforms/sampling.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_rwkv.transforms.sampling import RandPixelSized, RandSliced, slice_candidates


def test_slices_come_from_every_axis_with_the_same_cut_for_every_key(seed: int) -> None:
    rng = np.random.default_rng(seed)
    volume = torch.from_numpy(rng.uniform(0.1, 1, (1, 9, 11, 13)).astype(np.float32))
    other = volume * 2 + 1
    transform = RandSliced(["a", "b"], spatial_axes=(0, 1, 2)).set_random_state(seed)
    shapes = set()
    for _ in range(40):
        out = transform({"a": volume, "b": other})
        axis, index = transform._axis, transform._index
        np.testing.assert_array_equal(out["a"].numpy(), volume.select(axis + 1, index).numpy())
        np.testing.assert_array_equal(out["b"].numpy(), other.select(axis + 1, index).numpy())
        shapes.add(tuple(out["a"].shape))
    assert shapes == {(1, 11, 13), (1, 9, 13), (1, 9, 11)}
    again = RandSliced(["a", "b"]).set_random_state(seed)
    first = RandSliced(["a", "b"]).set_random_state(seed)
    np.testing.assert_array_equal(again({"a": volume, "b": other})["a"], first({"a": volume, "b": other})["a"])


def test_empty_slices_are_not_drawn() -> None:
    volume = torch.zeros(1, 6, 6, 10)
    volume[:, 1:5, 1:5, 3:6] = 1.0  # slices 3..5 along k hold the object
    assert list(slice_candidates(volume, 2, min_foreground=0.1)) == [3, 4, 5]
    assert list(slice_candidates(torch.zeros(1, 2, 2, 4), 2, 0.1)) == [0, 1, 2, 3]  # nothing qualifies: all
    transform = RandSliced("a", spatial_axes=(2,), min_foreground=0.1).set_random_state(0)
    for _ in range(20):
        transform({"a": volume})
        assert transform._index in (3, 4, 5)


def test_bad_arguments_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="spatial_axes"):
        RandSliced("a", spatial_axes=(3,))
    with pytest.raises(ValueError, match="min_foreground"):
        RandSliced("a", min_foreground=1.0)
    with pytest.raises(ValueError, match=r"\(C, i, j, k\)"):
        RandSliced("a")({"a": torch.ones(1, 4, 4)})
    with pytest.raises(ValueError, match="shape"):
        RandSliced(["a", "b"])({"a": torch.ones(1, 4, 4, 4), "b": torch.ones(1, 4, 4, 3)})


def test_slices_of_a_metatensor_keep_their_pixel_size(seed: int) -> None:
    volume = MetaTensor(
        torch.rand(1, 6, 7, 8), affine=torch.diag(torch.tensor([-0.8, 0.9, 1.5, 1.0], dtype=torch.float64))
    )
    transform = RandSliced("a", min_foreground=0.0).set_random_state(seed)
    expected = {0: [0.9, 1.5], 1: [0.8, 1.5], 2: [0.8, 0.9]}
    for _ in range(12):
        out = transform({"a": volume})["a"]
        assert isinstance(out, MetaTensor)
        np.testing.assert_allclose(out.pixdim.numpy(), expected[transform._axis])


def test_pixel_size_resampling_keeps_the_physical_size_and_the_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    level = float(rng.uniform(-500, 500))
    image = MetaTensor(
        torch.full((1, 40, 30), level), affine=torch.diag(torch.tensor([0.9, 1.5, 1.0], dtype=torch.float64))
    )
    transform = RandPixelSized(["a", "b"], pixel_size=(0.6, 1.2)).set_random_state(seed)
    for _ in range(10):
        out = transform({"a": image, "b": image * 2})
        pixel = transform._pixel
        a, b = out["a"], out["b"]
        assert a.shape == b.shape and a.shape[1:] == (round(36 / pixel), round(45 / pixel))
        np.testing.assert_allclose(a.pixdim.numpy() * np.array(a.shape[1:]), [36.0, 45.0])  # field of view kept
        np.testing.assert_allclose(a.numpy(), level, rtol=1e-5, atol=1e-3)  # a flat image stays flat
        np.testing.assert_allclose(b.numpy(), 2 * level, rtol=1e-5, atol=1e-3)


def test_pixel_size_resampling_is_capped_and_needs_a_spacing() -> None:
    image = MetaTensor(torch.rand(1, 100, 50), affine=torch.diag(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)))
    out = RandPixelSized("a", pixel_size=(0.1, 0.1), max_size=64)({"a": image})["a"]
    assert max(out.shape[1:]) == 64 and out.shape[1:] == (64, 32)
    plain = RandPixelSized("a", pixel_size=(2.0, 2.0), spacing=(1.0, 1.0))({"a": torch.rand(1, 10, 20)})["a"]
    assert plain.shape == (1, 5, 10)
    with pytest.raises(ValueError, match="pixel size"):
        RandPixelSized("a")({"a": torch.rand(1, 10, 10)})
    with pytest.raises(ValueError, match="pixel_size"):
        RandPixelSized("a", pixel_size=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandPixelSized("a", spacing=(1, 1))({"a": torch.rand(1, 4, 4, 4)})
