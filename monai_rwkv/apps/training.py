"""
Helpers for the bundles' ``train.json``: the datalists and the network to train; for a bundle that trains one
network on several tasks (the all-in-one bundle), each task's datasets and metrics taken from the task's own bundle;
and for ``multi_gpu_train.json`` (merged over it, started by ``torchrun``): the process group, each process's
device, the ``DistributedDataParallel`` network and the samplers.

The training loop itself is MONAI's (``SupervisedTrainer`` / ``SupervisedEvaluator`` with ignite handlers); these
functions only do what a JSON config cannot say in one readable line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.metrics import Metric, MetricsLambda
from monai.bundle import ConfigParser
from monai.data import DistributedSampler, MetaTensor, load_decathlon_datalist
from torch import nn
from torch.utils.data import Dataset, RandomSampler, WeightedRandomSampler

from monai_rwkv.apps.bundle import task_config
from monai_rwkv.handlers import SliceMetric
from monai_rwkv.inference import resolve_device
from monai_rwkv.networks.nets.restore_rwkv import _unwrap_state_dict

__all__ = [
    "TaskDataset",
    "bundle_datalist",
    "datalist",
    "distributed_device",
    "distributed_network",
    "finalize_distributed",
    "init_distributed",
    "quiet_other_ranks",
    "rank",
    "rank_sampler",
    "task_configs",
    "task_datasets",
    "task_mean_metric",
    "task_metrics",
    "task_sampler",
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
        init_weights: a state_dict file to start from (fine-tuning), loaded with ``weights_only=True``; a network
            with a ``checkpoint_filter_fn`` adapts it first (``RestoreRWKV``: the weights of a network without its
            conditioning channels start it as that network, see :meth:`RestoreRWKV.checkpoint_filter_fn`).
        zero_output: without ``init_weights``, zero the last convolution (``network.output``) so that the
            untrained network is the identity and training starts from the input instead of from noise added to it.
    """
    if init_weights is not None:
        state = _unwrap_state_dict(init_weights, "cpu")
        adapt = getattr(network, "checkpoint_filter_fn", None)
        network.load_state_dict(adapt(state) if callable(adapt) else state)
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


# -- one network, several tasks (the all-in-one bundle) ------------------------------------------------------------


class TaskDataset(Dataset):
    """
    ``dataset`` whose items say which task they come from: ``item["label"].meta[key] = task``. The tag rides on the
    label's metadata because MONAI's engines keep only ``image``, ``label`` and ``pred`` in their output, where the
    metrics look. An item may be a dict or a list of dicts (the patches of one slice from a ``...Samplesd`` crop).
    """

    def __init__(self, dataset: Dataset, task: str, key: str = "task") -> None:
        self.dataset, self.task, self.key = dataset, str(task), key

    def __len__(self) -> int:
        return len(self.dataset)

    def _tag(self, item: dict) -> dict:
        label = item["label"]
        label = label if isinstance(label, MetaTensor) else MetaTensor(label)
        label.meta[self.key] = self.task
        return {**item, "label": label}

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return [self._tag(patch) for patch in item] if isinstance(item, list) else self._tag(item)


def task_configs(
    tasks: Mapping[str, str],
    task_data: Mapping[str, Mapping[str, Any] | None],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, ConfigParser]:
    """
    ``inference.json`` and ``train.json`` of the bundle of every task in ``task_data`` (see
    :func:`~monai_rwkv.apps.bundle.task_config`), each with ``overrides`` (settings shared by all tasks, such as
    ``patch_size``) and then ``task_data[task]`` (the task's own: ``dataset_dir``, ...) applied.
    """
    if not task_data:
        raise SystemExit("error: task_data: no task to train on")
    return {
        name: task_config(
            tasks, name, ("inference.json", "train.json"), {**dict(overrides or {}), **dict(settings or {})}
        )
        for name, settings in task_data.items()
    }


def task_datasets(configs: Mapping[str, ConfigParser], section: str = "train") -> dict[str, TaskDataset]:
    """Each task's ``<section>#dataset`` (``"train"`` or ``"validate"``) as its bundle builds it, items tagged."""
    return {
        name: TaskDataset(parser.get_parsed_content(f"{section}#dataset"), name) for name, parser in configs.items()
    }


def task_sampler(
    datasets: Mapping[str, Dataset], weights: Mapping[str, float] | None, num_samples: int, seed: int | None = None
) -> WeightedRandomSampler:
    """
    Sampler of ``ConcatDataset(list(datasets.values()))``: each of the ``num_samples`` draws (with replacement)
    picks a task with probability ``weights[task] / sum(weights)`` (equal when ``weights`` is None), then one of
    its items uniformly, so a task weighs what its weight says whatever the number of its volumes. With ``seed``
    (``multi_gpu_train.json``) the draws come from a generator seeded with ``seed`` and the rank, as in
    :func:`rank_sampler`, so that every process draws its own items; without, from torch's global generator.
    """
    weights = {name: 1.0 for name in datasets} if weights is None else weights
    missing = [name for name in datasets if name not in weights]
    if missing:
        raise SystemExit(f"error: task_weights: no weight for task(s) {', '.join(missing)}")
    total = sum(float(weights[name]) for name in datasets)
    if not total > 0 or any(float(weights[name]) < 0 for name in datasets):
        raise SystemExit(f"error: task_weights: expected non-negative weights with a positive sum, got {dict(weights)}")
    per_item = [float(weights[name]) / total / len(ds) for name, ds in datasets.items() for _ in range(len(ds))]
    generator = None if seed is None else torch.Generator().manual_seed(int(seed) * 1000 + rank())
    return WeightedRandomSampler(per_item, int(num_samples), replacement=True, generator=generator)


def _task_items(task: str, key: str = "task") -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]:
    """Engine output -> ``(pred, label)`` of the items of ``task`` (tagged by :class:`TaskDataset`; may be empty)."""

    def select(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        names = output["label"].meta[key]
        names = [names] if isinstance(names, str) else list(names)
        keep = torch.tensor([name == task for name in names], dtype=torch.bool)
        pred, label = (torch.as_tensor(output[k]).as_subclass(torch.Tensor) for k in ("pred", "label"))
        return pred[keep.to(pred.device)], label[keep.to(label.device)]

    return select


def _task_metric(parser: ConfigParser, task: str, metric: str) -> SliceMetric:
    """``metric`` on the items of ``task``, with the window and intensity range of the task's own validation."""
    own = parser.get_parsed_content("validate#evaluator#key_val_metric#val_psnr")
    return SliceMetric(metric, own.window, own.intensity_range, output_transform=_task_items(task))


def task_metrics(configs: Mapping[str, ConfigParser], metrics: Sequence[str] = ("psnr", "ssim", "rmse")) -> dict:
    """
    ``{"val_<metric>_<task>": SliceMetric}`` for every task and metric: each task scored in its own units and
    window, as its own bundle validates (CT in HU within [-160, 240], ...), on its validation items only.
    """
    return {f"val_{m}_{name}": _task_metric(parser, name, m) for name, parser in configs.items() for m in metrics}


def task_mean_metric(metrics: Mapping[str, Metric], metric: str = "psnr") -> Metric:
    """
    The mean over tasks of each task's mean ``metric`` (``"psnr"`` or ``"ssim"``: RMSEs in different units do not
    average), from the ``val_<metric>_<task>`` entries of :func:`task_metrics`: every task weighs the same whatever
    its number of validation slices. It reuses those metric objects, so attached beside them (ignite registers a
    metric's handlers once) every slice is still scored once.
    """
    if metric not in ("psnr", "ssim"):
        raise ValueError(f"metric must be 'psnr' or 'ssim' (RMSEs of different units do not average), got {metric!r}.")
    parts = [value for name, value in metrics.items() if name.startswith(f"val_{metric}_")]
    if not parts:
        raise ValueError(f"no val_{metric}_<task> metric to average in {sorted(metrics)}.")
    return MetricsLambda(lambda *values: sum(values) / len(values), *parts)


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
