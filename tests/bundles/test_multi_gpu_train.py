"""
Every bundle's ``configs/multi_gpu_train.json`` (merged over inference.json and train.json) run by ``torchrun`` with
two CPU processes (the ``gloo`` backend): tiny network, tiny synthetic data, 2 epochs of 2 iterations.

A test-only config added last makes each process record what it did (:func:`record_saves`, :func:`write_record`):
its trainer's epoch and iteration, its last local loss, its network's parameters and gradients, its validation
items and metrics, and every file it wrote with ``torch.save``. The test checks that both processes trained, that
their gradients (all-reduced) and parameters agree, that each validated its own part of the validation set and both
got the metrics of the whole set (as one process computes them), and that rank 0 alone wrote one checkpoint, the
best model and one log row per epoch. Run again with one more epoch, both processes resume from that checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_rwkv.data import write_nifti
from tests.bundles.test_ct_train import AFFINE, _clean_dataset
from tests.bundles.utils import REPO, TINY_NETWORK, phantom_ct_volume

EPOCHS, ITERATIONS = 2, 2

# -- run inside the torchrun processes (imported there by the test-only config) ----------------------------------

_SAVED: list[str] = []


def record_saves() -> None:
    """Make ``torch.save`` note every file path this process writes."""
    save = torch.save

    def recording_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, (str, os.PathLike)):
            _SAVED.append(os.fspath(f))
        save(obj, f, *args, **kwargs)

    torch.save = recording_save


def write_record(folder: str, trainer: Any, network: torch.nn.Module, evaluator: Any, val_sampler: Any) -> None:
    """After training: what this process did, to ``<folder>/rank<r>.pt``."""
    rank = torch.distributed.get_rank()
    record = {
        "epoch": trainer.state.epoch,
        "iteration": trainer.state.iteration,
        "loss": float(trainer.state.output["loss"]),
        "params": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.detach().cpu().clone() for k, p in network.named_parameters()},
        "val_items": list(val_sampler),
        "val_iterations": evaluator.state.iteration,
        "metrics": dict(evaluator.state.metrics),
        "saved": list(_SAVED),
    }
    torch.save(record, Path(folder) / f"rank{rank}.pt")


# -- tiny datasets in the format each train.json reads -----------------------------------------------------------


def _ct_dataset(root: Path, seed: int) -> Path:
    """test_ct_train's clean volumes, with a second validation volume: one per process."""
    _clean_dataset(root, seed)
    write_nifti(phantom_ct_volume(np.random.default_rng(seed + 1), 2), root / "w.nii.gz", AFFINE, dtype="int16")
    lists = json.loads((root / "datalist.json").read_text())
    lists["validation"].append({"label": "w.nii.gz"})
    (root / "datalist.json").write_text(json.dumps(lists))
    return root


def _blob(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A positive ellipsoid with noisy texture in an empty background."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum((g / rng.uniform(0.6, 0.9)) ** 2 for g in grid) < 1
    return (inside * scale * rng.gamma(4.0, 0.25, shape)).astype(np.float32)


def _mri_dataset(root: Path, seed: int) -> Path:
    """Reference MR volumes (the low-resolution input is simulated): two for training, two for validation."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list] = {"training": [], "validation": []}
    for split, name in (("training", "a"), ("training", "b"), ("validation", "v"), ("validation", "w")):
        write_nifti(_blob(rng, (24, 24, 4), 500.0), root / f"{name}.nii.gz", np.eye(4))
        lists[split].append({"label": f"{name}.nii.gz"})
    (root / "datalist.json").write_text(json.dumps(lists))
    return root


def _pet_dataset(root: Path, seed: int) -> Path:
    """Low-count / full-count SUV pairs: two for training, two for validation."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list] = {"training": [], "validation": []}
    for split, name in (("training", "a"), ("training", "b"), ("validation", "v"), ("validation", "w")):
        full = _blob(rng, (24, 24, 4), 2.0)
        low = np.clip(full + rng.normal(0, 0.3, full.shape) * (full > 0), 0, None).astype(np.float32)
        write_nifti(full, root / f"{name}_full.nii.gz", np.eye(4))
        write_nifti(low, root / f"{name}_low.nii.gz", np.eye(4))
        lists[split].append({"image": f"{name}_low.nii.gz", "label": f"{name}_full.nii.gz"})
    (root / "datalist.json").write_text(json.dumps(lists))
    return root


DATASETS = {
    "restore_rwkv_ct_denoise": _ct_dataset,
    "restore_rwkv_mri_sr": _mri_dataset,
    "restore_rwkv_pet_synthesis": _pet_dataset,
}
#: the CT bundle in the default run, the others (the same multi_gpu_train.json over other train.json) with -m slow.
BUNDLES = [pytest.param(name, marks=() if "ct" in name else pytest.mark.slow, id=name) for name in DATASETS]


def _overrides(data: Path, out: Path, epochs: int = EPOCHS) -> dict[str, Any]:
    return {
        "dataset_dir": str(data),
        "output_dir": str(out),
        "max_epochs": epochs,
        "epoch_length": ITERATIONS,
        "patch_size": [32, 32],
        "roi_size": [32, 32],
        "num_workers": 0,
        "progress": False,
        "seed": 3,
        **{f"network_def#{k}": v for k, v in TINY_NETWORK.items()},
    }


def _configs(name: str) -> list[Path]:
    configs = REPO / "bundles" / name / "configs"
    return [configs / "inference.json", configs / "train.json", configs / "multi_gpu_train.json"]


def _torchrun(
    name: str, data: Path, out: Path, records: Path, epochs: int = EPOCHS, extra: dict[str, Any] | None = None
) -> subprocess.CompletedProcess:
    """Run the bundle's multi_gpu_train.json with 2 CPU processes; ``extra``: more config overrides."""
    records.mkdir()
    recorder = records / "record.json"
    recorder.write_text(
        json.dumps(
            {
                "+imports": ["$import tests.bundles.test_multi_gpu_train as recorder"],
                "+initialize": ["$recorder.record_saves()"],
                "+run": [
                    f"$recorder.write_record({str(records)!r}, @train#trainer, "
                    "@train#network, @validate#evaluator, @validate#sampler)"
                ],
            }
        )
    )
    configs = [*_configs(name), recorder]
    configs_dir = configs[0].parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", str([str(c) for c in configs])]
    cmd += ["--meta_file", str(configs_dir / "metadata.json"), "--logging_file", str(configs_dir / "logging.conf")]
    for key, value in {**_overrides(data, out, epochs), **(extra or {})}.items():
        cmd += [f"--{key}", json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path (gloo) even on a machine with GPUs
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def _records(records: Path) -> list[dict]:
    return [torch.load(records / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _log(out: Path) -> list[tuple[str, str]]:
    with (out / "train_log.csv").open(newline="") as f:
        return [(r["epoch"], r["iteration"]) for r in csv.DictReader(f)]


def _single_process_metrics(name: str, data: Path, out: Path, params: dict) -> dict[str, float]:
    """The validation metrics of ``params`` computed by train.json's evaluator in this one process."""
    parser = ConfigParser()
    parser.read_config([str(c) for c in _configs(name)[:2]])
    parser.read_meta(str(_configs(name)[0].parent / "metadata.json"))
    parser.update({**_overrides(data, out), "device": "cpu", "bundle_root": str(REPO / "bundles" / name)})
    parser.get_parsed_content("train#network").load_state_dict(params)
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return dict(evaluator.state.metrics)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_two_processes_train_in_step_and_rank_zero_writes_once(name: str, tmp_path: Path, seed: int) -> None:
    (tmp_path / "data").mkdir()
    data = DATASETS[name](tmp_path / "data", seed)
    out, records = tmp_path / "run", tmp_path / "records"
    result = _torchrun(name, data, out, records)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    ranks = _records(records)

    # both processes trained every iteration, on their own batches
    for record in ranks:
        assert (record["epoch"], record["iteration"]) == (EPOCHS, EPOCHS * ITERATIONS)
    assert ranks[0]["loss"] != ranks[1]["loss"], "both processes saw the same batch"

    # DistributedDataParallel averaged the gradients: the same gradients and weights in both, and they moved
    assert None not in ranks[0]["grads"].values()  # every parameter has a gradient
    for key, grad in ranks[0]["grads"].items():
        torch.testing.assert_close(ranks[1]["grads"][key], grad, rtol=0, atol=0, msg=key)
    for key, value in ranks[0]["params"].items():
        torch.testing.assert_close(ranks[1]["params"][key], value, rtol=0, atol=0, msg=key)
    assert ranks[0]["params"]["output.weight"].abs().sum() > 0  # zero at the start (training_network)

    # each process validated its own part of the validation set; both got the metrics of the whole set
    n_val = len(json.loads((data / "datalist.json").read_text())["validation"])
    assert sorted(ranks[0]["val_items"] + ranks[1]["val_items"]) == list(range(n_val))
    assert all(r["val_iterations"] == len(r["val_items"]) > 0 for r in ranks)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    expected = _single_process_metrics(name, data, tmp_path / "check", ranks[0]["params"])
    for metric, value in expected.items():
        assert ranks[0]["metrics"][metric] == pytest.approx(value, rel=1e-5), metric

    # rank 0 alone wrote: one checkpoint per epoch (the last one kept), the best model, one log row per epoch
    assert ranks[1]["saved"] == []
    written = [Path(p) for p in ranks[0]["saved"] if Path(p).parent in (out, out / "checkpoints")]
    checkpoints = [p.name for p in written if p.parent == out / "checkpoints"]
    assert checkpoints == [f"state_checkpoint_epoch={e}.pt" for e in range(1, EPOCHS + 1)]
    assert 1 <= sum(p.name.endswith("model.pt.tmp") for p in written) <= EPOCHS
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "model.pt", "train_log.csv"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"state_checkpoint_epoch={EPOCHS}.pt"]
    assert _log(out) == [(str(e), str(e * ITERATIONS)) for e in range(1, EPOCHS + 1)]  # one row per epoch
    with (out / "train_log.csv").open(newline="") as f:
        assert list(csv.DictReader(f))[-1]["val_psnr"] == f"{ranks[0]['metrics']['val_psnr']:.6g}"

    # the same command with one more epoch: both processes continue from the checkpoint, still in step
    resumed = _torchrun(name, data, out, tmp_path / "records_resumed", epochs=EPOCHS + 1)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    ranks = _records(tmp_path / "records_resumed")
    for record in ranks:
        assert (record["epoch"], record["iteration"]) == (EPOCHS + 1, (EPOCHS + 1) * ITERATIONS)
    for key, value in ranks[0]["params"].items():
        torch.testing.assert_close(ranks[1]["params"][key], value, rtol=0, atol=0, msg=key)
    assert ranks[1]["saved"] == []
    assert _log(out) == [(str(e), str(e * ITERATIONS)) for e in range(1, EPOCHS + 2)]
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"state_checkpoint_epoch={EPOCHS + 1}.pt"]
