"""
Helpers for the bundles' ``train.json``: the datalists and the network to train; and for ``multi_gpu_train.json``
(merged over it, started by ``torchrun``): the process group, each process's device, the
``DistributedDataParallel`` network and the samplers.

The training loop itself is MONAI's (``SupervisedTrainer`` / ``SupervisedEvaluator`` with ignite handlers); these
functions only do what a JSON config cannot say in one readable line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
from monai.data import DistributedSampler, load_decathlon_datalist
from torch import nn
from torch.utils.data import Dataset, RandomSampler

from monai_rwkv.inference import resolve_device
from monai_rwkv.networks.nets.restore_rwkv import _unwrap_state_dict

__all__ = [
    "bundle_datalist",
    "datalist",
    "distributed_device",
    "distributed_network",
    "finalize_distributed",
    "init_distributed",
    "quiet_other_ranks",
    "rank",
    "rank_sampler",
    "training_network",
    "validation_sampler",
]

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


# -- distributed training (multi_gpu_train.json, started by torchrun) --------------------------------------------


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def distributed_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed(device: str | torch.device | None = "auto") -> torch.device:
    """
    Join the process group that ``torchrun`` set up (its ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` variables): the
    ``nccl`` backend for a CUDA ``device`` (made this process's current device), ``gloo`` for the CPU. Nothing to
    do when the group exists already. Returns the resolved device.
    """
    device = resolve_device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def finalize_distributed() -> None:
    """Wait for every process (rank 0 may still be writing a checkpoint), then leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def distributed_network(network: nn.Module, device: str | torch.device) -> nn.Module:
    """
    ``network`` (already on ``device``, e.g. from :func:`training_network`) in ``DistributedDataParallel``: the
    gradients are averaged over the processes in every backward pass, so that all copies stay identical. Give the
    wrapper to the trainer only: the evaluator, the checkpoints and the best-model file use ``network`` itself.
    """
    device = torch.device(device)
    return nn.parallel.DistributedDataParallel(network, device_ids=[device] if device.type == "cuda" else None)


def rank_sampler(dataset: Dataset, num_samples: int, seed: int = 0) -> RandomSampler:
    """
    The training sampler of one process: ``num_samples`` items drawn with replacement (as the single-process
    ``train.json``), from a generator seeded with ``seed`` and the rank, so that every process draws its own
    items; each epoch continues the same generator. Drawing with replacement, independent draws per process are
    what a ``DistributedSampler`` over one long list drawn with replacement would give, without an epoch to set.
    """
    generator = torch.Generator().manual_seed(int(seed) * 1000 + rank())
    return RandomSampler(dataset, replacement=True, num_samples=int(num_samples), generator=generator)


def validation_sampler(dataset: Dataset) -> DistributedSampler:
    """
    This process's part of the validation set: every item once over all the processes, none twice (MONAI's
    ``DistributedSampler`` with ``even_divisible=False``); the metrics add up the parts. Exits with one line
    when there are fewer items than processes.
    """
    if len(dataset) < _world_size():
        raise SystemExit(
            f"error: the validation list has {len(dataset)} item(s), fewer than the {_world_size()} processes"
        )
    return DistributedSampler(dataset, even_divisible=False, shuffle=False)


def quiet_other_ranks() -> None:
    """Only rank 0 logs progress and metrics: the other processes log warnings and errors only."""
    if rank() > 0:
        logging.disable(logging.INFO)
