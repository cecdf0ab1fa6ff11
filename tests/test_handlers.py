"""Training handlers: the per-slice metric, the CSV learning curves, best-model saving and resumable checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_rwkv.handlers import BestModelSaver, SliceMetric, TrainingLogCSV, latest_checkpoint
from monai_rwkv.inference import denormalize_intensity
from monai_rwkv.metrics import CT_EVAL_WINDOW, slice_metrics


def _batches(gen: torch.Generator, n: int, shape: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised (pred, label) pairs with wide value ranges (both beyond [0, 1])."""
    out = []
    for _ in range(n):
        label = torch.rand(shape, generator=gen) * 1.4 - 0.2
        out.append((label + 0.05 * torch.randn(shape, generator=gen), label))
    return out


def _hu_slices(x: torch.Tensor) -> torch.Tensor:
    """Normalised (B, 1, H, W) or (B, 1, H, W, D) -> float64 HU slices (N, H, W)."""
    x = denormalize_intensity(x.double())
    return (x.movedim(-1, 2) if x.ndim == 5 else x).reshape(-1, *x.shape[2:4])


@pytest.mark.parametrize("metric", ["psnr", "ssim", "rmse"])
@pytest.mark.parametrize("shape", [(2, 1, 24, 20), (1, 1, 24, 20, 3)])
def test_slice_metric_is_the_mean_over_all_slices_of_the_run(metric: str, shape: tuple, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(gen, 3, shape)
    m = SliceMetric(metric, window=None)
    m.reset()
    for b in batches:
        m.update(b)
    slices = [slice_metrics(_hu_slices(p), _hu_slices(t))[metric] for p, t in batches]
    expected = torch.cat(slices).mean().item()
    assert m.compute() == pytest.approx(expected, rel=1e-5)


def test_slice_metric_skips_slices_with_a_constant_windowed_label(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ((pred, label),) = _batches(gen, 1, (3, 1, 16, 16))
    label[1] = 0.0  # -1024 HU everywhere: constant in the CT window, no PSNR
    m = SliceMetric("psnr", window=CT_EVAL_WINDOW)
    m.reset()
    m.update((pred, label))
    keep = [0, 2]
    expected = slice_metrics(denormalize_intensity(pred[keep]), denormalize_intensity(label[keep]), CT_EVAL_WINDOW)
    assert m.compute() == pytest.approx(expected["psnr"].mean().item(), rel=1e-5)
    empty = SliceMetric("psnr", window=CT_EVAL_WINDOW)
    empty.reset()
    empty.update((pred[1:2], label[1:2]))
    with pytest.raises(RuntimeError, match="no slice"):
        empty.compute()
    with pytest.raises(ValueError, match="metric"):
        SliceMetric("mae")


def _validator(values: list[float]) -> Engine:
    """An evaluator whose successive runs report ``values`` as metric ``val_psnr``."""
    run = iter(values)
    validator = Engine(lambda e, b: None)

    @validator.on(Events.COMPLETED)
    def _(engine: Engine) -> None:
        engine.state.metrics["val_psnr"] = next(run)

    return validator


def test_training_log_has_one_row_per_epoch_and_validation_only_where_it_ran(tmp_path: Path) -> None:
    validator = _validator([30.0, 31.5])
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = Engine(lambda e, b: {"loss": torch.tensor(float(b), requires_grad=True)})

    @trainer.on(Events.EPOCH_COMPLETED(every=2))
    def _(_: Engine) -> None:
        validator.run([0])

    log = tmp_path / "log.csv"
    TrainingLogCSV(log, validator, ["val_psnr"], opt).attach(trainer)
    trainer.run([1, 2, 3], max_epochs=4)
    rows = list(csv.DictReader(log.open()))
    assert [r["iteration"] for r in rows] == ["3", "6", "9", "12"]
    assert [r["val_psnr"] for r in rows] == ["", "30", "", "31.5"]
    assert {r["train_loss"] for r in rows} == {"2.000000"} and {r["lr"] for r in rows} == {"1.000e-01"}
    with pytest.raises(ValueError, match="columns"):
        TrainingLogCSV(log, validator, ["val_ssim"])  # a resumed run must not mix column layouts


def test_best_model_saver_keeps_the_best_and_survives_a_resume(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "model.pt"
    saver = BestModelSaver(path, net, "val_psnr")
    validator = _validator([30.0, 29.0, 32.0])
    saver.attach(validator)
    saved = []
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        validator.run([0])
        saved.append(torch.load(path, weights_only=True)["weight"].clone())
    assert torch.equal(saved[0], saved[1]) and not torch.equal(saved[1], saved[2])
    assert saver.state_dict() == {"best": 32.0, "best_epoch": 1}
    resumed = BestModelSaver(path, torch.nn.Linear(3, 2), "val_psnr")
    resumed.load_state_dict(saver.state_dict())
    other = _validator([31.0])
    resumed.attach(other)
    other.run([0])
    assert torch.equal(torch.load(path, weights_only=True)["weight"], saved[2])  # 31 < 32: not replaced
    assert not list(tmp_path.glob(".*tmp"))


def test_latest_checkpoint_picks_the_largest_step(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for name in ("state_checkpoint_epoch=9.pt", "state_checkpoint_epoch=10.pt", "notes.pt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "state_checkpoint_epoch=10.pt"
