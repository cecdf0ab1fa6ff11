"""
Ignite metrics and handlers for training restoration networks with MONAI engines.

- :class:`SliceMetric`: PSNR, SSIM or RMSE of every 2D slice with the paper's protocol (physical units,
  optional window, per-slice data range), averaged over an evaluation run: a ``key_val_metric`` for
  ``monai.engines.SupervisedEvaluator``.
- :class:`TrainingLogCSV`: one CSV row per training epoch with the iteration, learning rate, mean training
  loss and the validator's metrics: the learning curves, written as training goes.
- :class:`BestModelSaver`: writes the network's plain state_dict whenever the validation metric improves.
- :class:`ResumableCheckpoint`: saves the whole training state (network, optimizer, scheduler, trainer, best
  metric) every epoch and, when a run is started again, continues from the latest one.

Distributed training (``torchrun``, a ``torch.distributed`` process group): every process keeps the same state
(a resume loads the checkpoint in every process), only rank 0 writes files, and :class:`SliceMetric` adds up the
slices of all processes (each validating its part of the validation set).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_rwkv.inference import CT_INTENSITY_RANGE, denormalize_intensity
from monai_rwkv.metrics import slice_metrics

__all__ = [
    "BestModelSaver",
    "ResumableCheckpoint",
    "SliceMetric",
    "TrainingLogCSV",
    "is_main_process",
    "latest_checkpoint",
]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True without a ``torch.distributed`` process group, and in its rank 0: the process that writes files."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _as_slices(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B * C, H, W)``; ``(B, C, H, W, D)`` -> ``(B * C * D, H, W)`` (slices along D)."""
    if x.ndim == 4:
        return x.reshape(-1, *x.shape[-2:])
    if x.ndim == 5:
        return x.movedim(-1, 2).reshape(-1, *x.shape[2:4])
    raise ValueError(f"expected (B, C, H, W) or (B, C, H, W, D) images, got shape {tuple(x.shape)}.")


class SliceMetric(Metric):
    """
    Mean per-slice PSNR (dB), SSIM or RMSE (physical units) of normalised predictions, as in the paper's protocol.

    ``pred`` and ``label`` are network-scale images (``intensity_range`` mapped to [0, 1]); they are mapped back to
    physical units, truncated to ``window`` and compared slice by slice with
    :func:`~monai_rwkv.metrics.slice_metrics`. Slices whose windowed label is constant (air above the head) have
    no PSNR and are skipped; the value is the mean over the remaining slices of the whole run. In a distributed
    run (each process evaluating a part of the data), the sums and counts of all processes are added up, so every
    process gets the mean over all slices.

    Args:
        metric: ``"psnr"``, ``"ssim"`` or ``"rmse"``.
        window: physical-unit window, e.g. ``(-160, 240)`` HU for CT, or None.
        intensity_range: the physical range that the network's [0, 1] stands for.
        output_transform: engine output -> ``(pred, label)``, each ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
    """

    def __init__(
        self,
        metric: str = "psnr",
        window: Sequence[float] | None = None,
        intensity_range: Sequence[float] = CT_INTENSITY_RANGE,
        output_transform: Callable[[Any], Any] = lambda output: output,
    ) -> None:
        if metric not in ("psnr", "ssim", "rmse"):
            raise ValueError(f"metric must be 'psnr', 'ssim' or 'rmse', got {metric!r}.")
        self.metric = metric
        self.window = None if window is None else tuple(float(w) for w in window)
        self.intensity_range = tuple(float(v) for v in intensity_range)
        super().__init__(output_transform=output_transform)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        pred, label = (
            _as_slices(denormalize_intensity(x.detach().float().cpu(), self.intensity_range)) for x in output
        )
        reference = label if self.window is None else label.clamp(*self.window)
        keep = reference.amax(dim=(1, 2)) > reference.amin(dim=(1, 2))
        if keep.any():
            values = slice_metrics(pred[keep], label[keep], self.window)[self.metric]
            self._sum += values.double().sum().item()
            self._count += values.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if not self._count:
            raise RuntimeError("SliceMetric: no slice with a non-constant label was seen.")
        return self._sum / self._count


class TrainingLogCSV:
    """
    Append one CSV row per training epoch: ``epoch, iteration, seconds, lr, train_loss`` and the metrics
    ``metric_names`` of ``validator`` (empty cells when it did not run that epoch). Attach it after the
    ``ValidationHandler`` so that a row holds the validation of its epoch. An existing file with the same columns
    (a resumed run) is appended to; ``seconds`` counts from the start of the current run. In a distributed run only
    rank 0 writes (the training loss of its own batches; the validation metrics of all processes).

    Args:
        path: the CSV file.
        validator: the evaluator whose ``state.metrics`` are logged, or None.
        metric_names: names of the validator's metrics to log, in column order.
        optimizer: whose first parameter group's ``lr`` is logged, or None.
        loss_key: key of the loss in the trainer's output dict (MONAI: ``"loss"``).

    Raises:
        ValueError: ``path`` exists with other columns.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        validator: Engine | None = None,
        metric_names: Sequence[str] = (),
        optimizer: torch.optim.Optimizer | None = None,
        loss_key: str = "loss",
    ) -> None:
        self.path = Path(path)
        self.validator = validator
        self.columns = ["epoch", "iteration", "seconds", "lr", "train_loss", *metric_names]
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise ValueError(f"{self.path}: existing log has columns {header}, expected {self.columns}.")
        self.optimizer = optimizer
        self.loss_key = loss_key
        self._loss_sum, self._loss_count, self._start = 0.0, 0, time.monotonic()
        self._validated = False

    def attach(self, engine: Engine) -> None:
        """Log the epochs of ``engine`` (the trainer)."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._mark_validated)

    def _mark_validated(self, _: Engine) -> None:
        self._validated = True

    def _loss(self, output: Any) -> float | None:
        if isinstance(output, dict) and self.loss_key in output:
            return float(torch.as_tensor(output[self.loss_key]).detach())
        if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
            return float(
                torch.as_tensor(output[0][self.loss_key]).detach()
            )  # decollated output: every item holds the batch loss
        return None

    def _accumulate(self, engine: Engine) -> None:
        loss = self._loss(engine.state.output)
        if loss is not None:
            self._loss_sum += loss
            self._loss_count += 1

    def _write(self, engine: Engine) -> None:
        metrics = self.validator.state.metrics if self._validated else {}
        self._validated = False
        row = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        row["seconds"] = f"{time.monotonic() - self._start:.1f}"
        if self.optimizer is not None:
            row["lr"] = f"{self.optimizer.param_groups[0]['lr']:.3e}"
        if self._loss_count:
            row["train_loss"] = f"{self._loss_sum / self._loss_count:.6f}"
        row.update({name: f"{metrics[name]:.6g}" for name in self.columns[5:] if name in metrics})
        self._loss_sum, self._loss_count = 0.0, 0
        if not is_main_process():
            return
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)


_STEP = re.compile(r"(\d+)\.pt$")


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The ``*<step>.pt`` file with the largest step in ``folder`` (ignite writes ``*_epoch=<step>.pt``), or None."""
    candidates = [(int(m.group(1)), p) for p in Path(folder).glob("*.pt") if (m := _STEP.search(p.name))]
    return max(candidates)[1] if candidates else None


class BestModelSaver:
    """
    Save ``network.state_dict()`` (plain, loadable with ``weights_only=True``) to ``path`` whenever the evaluator's
    ``metric`` beats the best value so far; the file is written to a temporary name and renamed.

    It has ``state_dict`` / ``load_state_dict`` (the best value and its trainer epoch), so adding it to the objects
    of :class:`ResumableCheckpoint` keeps a resumed run from replacing a better model with a worse one. In a
    distributed run every process keeps track of the best value and only rank 0 writes the file.

    Args:
        path: the model file, e.g. ``<output_dir>/model.pt``.
        network: the network being trained.
        metric: name of the evaluator's metric.
        greater_is_better: True for PSNR / SSIM, False for errors such as RMSE.
    """

    def __init__(
        self, path: str | os.PathLike, network: torch.nn.Module, metric: str, greater_is_better: bool = True
    ) -> None:
        self.path = Path(path)
        self.network = network
        self.metric = metric
        self.sign = 1.0 if greater_is_better else -1.0
        self.best: float | None = None
        self.best_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Attach to the evaluator ``engine``."""
        engine.add_event_handler(Events.COMPLETED, self._maybe_save)

    def _maybe_save(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric])
        if self.best is not None and not self.sign * value > self.sign * self.best:
            return
        self.best, self.best_epoch = value, int(engine.state.epoch)
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(self.network.state_dict(), tmp)
        os.replace(tmp, self.path)
        logger.info("%s: best %s %.6g at epoch %d", self.path, self.metric, value, self.best_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class ResumableCheckpoint:
    """
    Save the training state every ``interval`` epochs to ``save_dir`` (the latest one kept, written atomically by
    ignite) and, when ``resume`` and a checkpoint exists there, restore it when the trainer starts: an interrupted
    run started again with the same command continues where it stopped.

    The trainer itself is added to ``objects`` when this handler is attached to it (its epoch and iteration are
    part of the state), so configs need not refer to the trainer from inside its own handler list.

    In a distributed run every process loads the checkpoint (all of them continue from the same state) and only
    rank 0 writes and removes files (ignite's saver writes on rank 0 only).

    Args:
        save_dir: folder of the checkpoints.
        objects: what to save besides the trainer, e.g. ``{"network": ..., "optimizer": ..., "lr_scheduler": ...}``.
        resume: continue from the latest checkpoint in ``save_dir`` if there is one.
        interval: epochs between checkpoints.
    """

    def __init__(
        self, save_dir: str | os.PathLike, objects: Mapping[str, Any], resume: bool = True, interval: int = 1
    ) -> None:
        self.save_dir = Path(save_dir)
        self.objects = dict(objects)
        self.resume = resume
        self.interval = interval
        self.prefix = "state"

    def _schedule_lengths(self) -> dict[str, int]:
        return {name: obj.T_max for name, obj in self.objects.items() if hasattr(obj, "T_max")}

    def _keep_schedule_lengths(self, _: Engine, lengths: Mapping[str, int]) -> None:
        """After loading: the configured length of a (cosine) schedule wins, so that more epochs extend it."""
        for name, length in lengths.items():
            self.objects[name].T_max = length

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer ``engine``."""
        objects = {**self.objects, "trainer": engine}
        latest = latest_checkpoint(self.save_dir) if self.resume else None
        if latest is not None:
            logger.info("resuming from %s", latest)
            CheckpointLoader(load_path=os.fspath(latest), load_dict=objects, map_location="cpu").attach(engine)
            engine.add_event_handler(Events.STARTED, self._keep_schedule_lengths, dict(self._schedule_lengths()))
        saver = CheckpointSaver(
            os.fspath(self.save_dir), objects, file_prefix=self.prefix, save_interval=self.interval, n_saved=1
        )
        saver.attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._remove_older)

    def _remove_older(self, _: Engine) -> None:
        """Keep only the latest state (ignite forgets the files of a run before a resume)."""
        if not is_main_process():
            return
        latest = latest_checkpoint(self.save_dir)
        for path in self.save_dir.glob(f"{self.prefix}_*.pt"):
            if path != latest:
                path.unlink(missing_ok=True)
