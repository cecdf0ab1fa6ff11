"""
Helpers for the bundles' ``train.json``: the datalists and the network to train.

The training loop itself is MONAI's (``SupervisedTrainer`` / ``SupervisedEvaluator`` with ignite handlers); these
functions only do what a JSON config cannot say in one readable line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from monai.data import load_decathlon_datalist
from torch import nn

from monai_rwkv.inference import resolve_device
from monai_rwkv.networks.nets.restore_rwkv import _unwrap_state_dict

__all__ = ["bundle_datalist", "datalist", "training_network"]

logger = logging.getLogger(__name__)


def datalist(dataset_dir: str | os.PathLike, split: str, datalist_file: str | os.PathLike | None = None) -> list[dict]:
    """
    The items of one split of a Decathlon-style datalist (``{"training": [...], "validation": [...]}``), with paths
    made absolute relative to ``dataset_dir``.

    An item is ``{"label": clean.nii.gz}`` (a full-dose volume: the low-dose input is simulated) or
    ``{"image": low.nii.gz, "label": full.nii.gz}`` (a real low-dose / full-dose pair).

    Args:
        dataset_dir: folder the datalist's relative paths start from.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        datalist_file: the JSON file (default ``<dataset_dir>/datalist.json``).

    Raises:
        FileNotFoundError: no datalist file, or a file it lists is missing.
        ValueError: the split is missing or empty.
    """
    path = Path(datalist_file) if datalist_file is not None else Path(dataset_dir) / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no datalist (JSON with 'training' and 'validation' lists)")
    try:
        items = load_decathlon_datalist(os.fspath(path), True, split, base_dir=os.fspath(dataset_dir))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: no usable {split!r} list ({e})") from None
    if not items:
        raise ValueError(f"{path}: the {split!r} list is empty")
    for item in items:
        for key in ("image", "label"):
            if key in item and not os.path.exists(item[key]):
                raise FileNotFoundError(f"{path}: {split} item {key!r}: no such file {item[key]}")
    return items


def bundle_datalist(
    dataset_dir: str | os.PathLike, split: str, datalist_file: str | os.PathLike | None = None
) -> list[dict]:
    """:func:`datalist` for bundle configs: a missing or bad datalist exits with one line ``error: <file>: ...``."""
    try:
        return datalist(dataset_dir, split, datalist_file)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def training_network(
    network: nn.Module,
    device: str | torch.device | None = "auto",
    init_weights: str | os.PathLike | None = None,
    zero_output: bool = True,
) -> nn.Module:
    """
    Prepare a restoration network for training: on ``device``, channels-last (fast convolutions on CPU).

    Args:
        network: e.g. ``RestoreRWKV`` (global residual ``output(features) + input``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        init_weights: a state_dict file to start from (fine-tuning), loaded with ``weights_only=True``.
        zero_output: without ``init_weights``, zero the last convolution (``network.output``) so that the
            untrained network is the identity and training starts from the input instead of from noise added to it.
    """
    if init_weights is not None:
        network.load_state_dict(_unwrap_state_dict(init_weights, "cpu"))
        logger.info("initial weights: %s", init_weights)
    elif zero_output:
        output = getattr(network, "output", None)
        if not isinstance(output, (nn.Conv2d, nn.Conv3d)):
            raise ValueError(f"zero_output needs a network with an `output` convolution, got {type(network).__name__}")
        nn.init.zeros_(output.weight)
        if output.bias is not None:
            nn.init.zeros_(output.bias)
    network = network.to(resolve_device(device))
    return network.to(memory_format=torch.channels_last) if _is_2d(network) else network


def _is_2d(network: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in network.modules())
