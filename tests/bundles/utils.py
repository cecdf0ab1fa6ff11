"""Test helpers: a copy of the CT denoising bundle with a tiny randomly initialised network (plumbing only)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.networks.nets import RestoreRWKV

REPO = Path(__file__).resolve().parents[2]
CT_BUNDLE = REPO / "bundles" / "restore_rwkv_ct_denoise"
#: the tiny network every bundle test uses instead of the trained `light` model (dim 16, blocks 2-2-2-2, refinement 2).
TINY_NETWORK = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}
#: the same as `monai.bundle run` command-line overrides, with a small sliding-window ROI for speed.
TINY_BUNDLE_ARGS = [
    "--network_def#dim",
    "8",
    "--network_def#num_blocks",
    "[1,1,1,1]",
    "--network_def#num_refinement_blocks",
    "1",
    "--roi_size",
    "[16,16]",
    "--progress",
    "False",
]
#: ... and as `monai-rwkv restore` options.
TINY_CLI_ARGS = [
    "--set",
    "network_def#dim=8",
    "--set",
    "network_def#num_blocks=[1,1,1,1]",
    "--set",
    "network_def#num_refinement_blocks=1",
    "--roi",
    "16",
    "16",
    "--no-progress",
]


def make_tiny_bundle(dest: Path, seed: int = 0, bundle: Path = CT_BUNDLE) -> Path:
    """Copy a bundle's configs and docs to ``dest`` and save a tiny random network as ``models/model.pt`` (with the
    bundle network's channels: image, output and conditioning)."""
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("models", "sample", "__pycache__"))
    (dest / "models").mkdir()
    torch.manual_seed(seed)
    torch.save(RestoreRWKV(**TINY_NETWORK, **network_channels(bundle)).state_dict(), dest / "models" / "model.pt")
    return dest


def network_channels(bundle: Path) -> dict:
    """The channel arguments of the bundle's ``network_def`` (those it sets; defaults otherwise)."""
    network_def = json.loads((bundle / "configs" / "inference.json").read_text()).get("network_def", {})
    keys = ("in_channels", "out_channels", "conditioning_channels")
    return {key: network_def[key] for key in keys if isinstance(network_def.get(key), int)}


def input_spec(bundle: Path) -> dict:
    """The bundle's ``network_data_format.inputs.image`` (modality, value_range, ...)."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return meta["network_data_format"]["inputs"]["image"]


def random_volume(bundle: Path, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """float32 values the bundle accepts: uniform over its value range, cut to [-1100, 2400]."""
    low, high = input_spec(bundle).get("value_range", (-1100, 2400))
    low, high = max(float(low), -1100.0), min(float(high), 2400.0)
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def python() -> str:
    return sys.executable


def phantom_ct_volume(rng: np.random.Generator, slices: int, size: int = 48) -> np.ndarray:
    """``(i, j, k)`` int16 HU: per slice a water disc with a bone ring and a random soft-tissue blob, in air."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx) * 48 / size
    vol = np.full((size, size, slices), -1000.0)
    for k in range(slices):
        img = np.where(r < 20, 1000.0, -1000.0)
        img[r < 17] = rng.uniform(20, 60)
        blob = np.hypot(yy - rng.uniform(-6, 6) * size / 48, xx - rng.uniform(-6, 6) * size / 48) * 48 / size < 4
        img[blob] = rng.uniform(-100, 100)
        vol[..., k] = img.T
    return vol.astype(np.int16)


def tiny_inference_bundle(folder: Path, bundle: Path) -> tuple[Path, Path]:
    """``folder``: ``bundle``'s inference.json and metadata.json with the tiny network and a 32 x 32 window, and the
    path of that network's random weights (saved as ``folder/model.pt``, outside ``models/``: pass it explicitly).

    The weights are drawn from a fixed seed (without touching the caller's random state): with unseeded ones a few
    draws saturate the output to a constant, and assertions that compare two restorations varied between runs."""
    from monai_rwkv.apps import load_bundle_config

    configs = folder / "configs"
    configs.mkdir(parents=True)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["network_def"].update(TINY_NETWORK)
    config["roi_size"] = [32, 32]
    (configs / "inference.json").write_text(json.dumps(config))
    (configs / "metadata.json").write_text((bundle / "configs" / "metadata.json").read_text())
    weights = folder / "model.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = load_bundle_config(folder, "inference.json").get_parsed_content("network_def")
    torch.save(network.state_dict(), weights)
    return folder, weights
