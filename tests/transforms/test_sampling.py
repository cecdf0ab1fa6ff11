"""Random 2D slices of volumes along any axis (monai_rwkv/transforms/sampling.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_rwkv.transforms.sampling import RandSliced, slice_candidates


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
