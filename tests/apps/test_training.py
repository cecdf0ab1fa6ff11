"""Helpers of the bundles' train.json: datalists and the network to train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_rwkv.apps.training import bundle_datalist, datalist, training_network
from monai_rwkv.networks.nets import RestoreRWKV

TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}


def test_datalist_resolves_paths_against_the_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "low.nii.gz").write_bytes(b"x")
    lists = {"training": [{"label": "a.nii.gz"}], "validation": [{"image": "low.nii.gz", "label": "a.nii.gz"}]}
    (tmp_path / "datalist.json").write_text(json.dumps(lists))
    assert datalist(tmp_path, "training") == [{"label": str(tmp_path / "a.nii.gz")}]
    assert datalist(tmp_path, "validation")[0]["image"] == str(tmp_path / "low.nii.gz")
    with pytest.raises(ValueError, match="'test'"):
        datalist(tmp_path, "test")
    (tmp_path / "other.json").write_text(json.dumps({"training": [{"label": "gone.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        datalist(tmp_path, "training", tmp_path / "other.json")
    with pytest.raises(SystemExit, match=r"^error: .*missing.json: no datalist"):
        bundle_datalist(tmp_path, "training", tmp_path / "missing.json")


def test_training_network_starts_as_the_identity_or_from_given_weights(tmp_path: Path, seed: int) -> None:
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 3 - 1
    net = training_network(RestoreRWKV(**TINY), "cpu")
    assert net(x).sub(x).abs().max() == 0  # zero output conv + global residual
    assert net.patch_embed.weight.is_contiguous(memory_format=torch.channels_last)
    trained = RestoreRWKV(**TINY)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded = training_network(RestoreRWKV(**TINY), "cpu", init_weights=tmp_path / "w.pt")
    torch.testing.assert_close(loaded(x), trained(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output"):
        training_network(torch.nn.Identity(), "cpu")
