"""scripts/experiments/ct_noise_level.json, the noise-level-conditioned variant of the CT bundle's pipeline (an
ablation of the bundle README), merged over the bundle's own configs as ``monai.bundle run`` merges them: every
input reaches the network with its per-slice level channel, in inference (whole slices) and in training (before the
crop), and the blind weights start it as the blind network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from monai_rwkv.inference import SliceWiseRestorer
from monai_rwkv.networks.nets import RestoreRWKV
from monai_rwkv.transforms import estimate_noise_level, noise_level_channel
from tests.bundles.utils import CT_BUNDLE, REPO, TINY_NETWORK

EXPERIMENTS = REPO / "scripts" / "experiments"


def _parser(weights: Path | None = None, training: bool = False) -> ConfigParser:
    configs = CT_BUNDLE / "configs"
    files = [configs / "inference.json", EXPERIMENTS / "ct_noise_level.json"]
    if training:
        files += [configs / "train.json", EXPERIMENTS / "ct_noise_level_train.json"]
    parser = ConfigParser(ConfigParser.load_config_files([str(f) for f in files]))
    parser["bundle_root"] = str(CT_BUNDLE)
    parser["device"] = "cpu"
    parser["progress"] = False
    parser["roi_size"] = [32, 32]
    for key, value in TINY_NETWORK.items():
        parser[f"network_def#{key}"] = value
    if weights is not None:
        parser["weights"] = str(weights)
    return parser


def test_conditioned_pipeline_starts_as_the_blind_network(tmp_path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    parser = _parser()  # the bundle's network_def with conditioning; the blind network beside it
    plain = RestoreRWKV(
        **{k: v for k, v in parser["network_def"].items() if k not in ("_target_", "conditioning_channels")}
    )
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.02 * torch.randn_like(p))
    conditioned = parser.get_parsed_content("network_def")
    torch.save(conditioned.checkpoint_filter_fn(plain.state_dict()), tmp_path / "model.pt")
    restorer = _parser(tmp_path / "model.pt").get_parsed_content("restorer")
    assert restorer.describe()["network_input"] == "NoiseLevelMap"
    rng = np.random.default_rng(seed)
    volume = torch.from_numpy(rng.uniform(-1000, 1500, (1, 40, 36, 3)).astype(np.float32))
    reference = SliceWiseRestorer(plain.eval(), roi_size=(32, 32), device="cpu", progress=False)(volume)
    torch.testing.assert_close(restorer(volume), reference, rtol=0, atol=0.05)  # HU: float summation order only


def test_training_and_validation_inputs_carry_the_level_of_the_whole_slice(seed: int) -> None:
    parser = _parser(training=True)
    rng = np.random.default_rng(seed)
    low, high = parser["intensity_range"]
    image = torch.from_numpy(rng.uniform(-200, 200, (1, 120, 100)).astype(np.float32))
    item = {"image": image, "label": image.clone()}
    out = Compose(parser.get_parsed_content("train#patches"))(item)  # random crops: a list of patches
    first = out[0]
    expected = noise_level_channel(estimate_noise_level((image - low) / (high - low)), 0.01)
    assert first["image"].shape[0] == 2 and first["label"].shape[0] == 1
    assert torch.allclose(first["image"][1], expected[0].expand_as(first["image"][1]))
    volume = image[..., None].expand(1, 120, 100, 2).clone()
    validation = parser.get_parsed_content("noise_level_keys")({"image": (volume - low) / (high - low)})
    assert validation["image"].shape == (2, 120, 100, 2)
    assert torch.allclose(validation["image"][1, :, :, 0], expected[0].expand(120, 100), atol=1e-5)
