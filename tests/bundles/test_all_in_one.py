"""
The all-in-one bundle: one network, each task (``--task ct | mri | pet``) read, normalised, restored and written by
its own bundle's pipeline; training on the union of the tasks' datasets with each task's own validation metric.

Tiny random networks and tiny synthetic data exercise the plumbing; nothing here is a restoration result.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import ConcatDataset

from monai_rwkv.apps import (
    TaskRouter,
    TaskSpecs,
    bundle_metadata,
    load_bundle_config,
    model_name_version,
    read_volume,
    task_config,
)
from monai_rwkv.apps.cli import main
from monai_rwkv.apps.restore import InputImage, check_input
from monai_rwkv.apps.training import TaskDataset, _task_items, task_mean_metric, task_metrics, task_sampler
from monai_rwkv.data import InputSpec
from monai_rwkv.handlers import SliceMetric
from monai_rwkv.networks.nets import RestoreRWKV
from tests.bundles.test_ct_bundle import bundle_run
from tests.bundles.test_multi_gpu_train import _ct_dataset, _mri_dataset, _pet_dataset, _records, _torchrun
from tests.bundles.test_pipeline import TINY
from tests.bundles.utils import REPO, TINY_CLI_ARGS, TINY_NETWORK, make_tiny_bundle
from tests.data.conftest import tree_digest
from tests.robustness.conftest import write_ct_series, write_mr_series, write_pet_series

AIO = REPO / "bundles" / "restore_rwkv_all_in_one"
TASK_BUNDLES = {
    "ct": REPO / "bundles" / "restore_rwkv_ct_denoise",
    "mri": REPO / "bundles" / "restore_rwkv_mri_sr",
    "pet": REPO / "bundles" / "restore_rwkv_pet_synthesis",
}


@pytest.fixture(scope="module")
def tiny_aio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("aio") / AIO.name, seed=5, bundle=AIO)


def _volume(task: str, rng: np.random.Generator, shape: tuple[int, ...] = (21, 18, 2)) -> np.ndarray:
    if task == "ct":
        return rng.uniform(-1024, 1500, shape).astype(np.float32)
    return (rng.gamma(2.0, 300.0 if task == "mri" else 1.5, shape)).astype(np.float32)


@pytest.mark.parametrize("task", ["ct", "mri", "pet"])
def test_each_task_restores_as_its_own_bundle_with_the_shared_weights(task: str, tiny_aio: Path, seed: int) -> None:
    """Same weights in the task's own bundle and in the all-in-one with --task: the same volume, to the bit."""
    rng = np.random.default_rng(seed)
    volume = torch.from_numpy(_volume(task, rng))[None]
    weights = str(tiny_aio / "models" / "model.pt")
    aio = load_bundle_config(tiny_aio, "inference.json", {**TINY, "task": task}).get_parsed_content("restorer")
    own = load_bundle_config(TASK_BUNDLES[task], "inference.json", {**TINY, "weights": weights})
    own = own.get_parsed_content("restorer")
    expected = own(volume.clone())
    assert not torch.equal(expected, volume)  # the tiny network changes the image
    torch.testing.assert_close(aio(volume.clone()), expected, rtol=0, atol=0)


def test_the_post_processing_switches_reach_the_task_that_has_them(tiny_aio: Path) -> None:
    """``coarse_fusion`` and ``residual_smoothing`` of the all-in-one config are the CT task's (its bundle defines
    them, on by default); the MRI task has none; the recorded version names what the restorations get."""
    version = json.loads((AIO / "configs" / "metadata.json").read_text())["version"]
    cases = {  # overrides -> (fusion and smoothing in the restorer, recorded version)
        (("task", "ct"),): ((True, True), f"{version} coarse fusion residual smoothing"),
        (("task", "ct"), ("residual_smoothing", "false")): ((True, False), f"{version} coarse fusion"),
        (("task", "ct"), ("coarse_fusion", False), ("residual_smoothing", False)): ((False, False), version),
        (("task", "mri"),): ((False, False), version),
        (("task", "mri"), ("coarse_fusion", True)): ((False, False), version),
    }
    for overrides, (steps, recorded) in cases.items():
        parser = load_bundle_config(tiny_aio, "inference.json", {**TINY, **dict(overrides)})
        restorer = parser.get_parsed_content("restorer")
        assert (restorer.coarse_fusion is not None, restorer.residual_smoothing is not None) == steps, overrides
        assert model_name_version(bundle_metadata(parser), parser)[1] == recorded, overrides
    for switch, recorded in (("true", f"{version} (ct: coarse fusion residual smoothing)"), ("false", version)):
        overrides = {**TINY, "task": "auto", "coarse_fusion": switch, "residual_smoothing": switch}
        parser = load_bundle_config(tiny_aio, "inference.json", overrides)
        assert model_name_version(bundle_metadata(parser), parser)[1] == recorded
        router = parser.get_parsed_content("restorer")
        assert (router.restorers["ct"].residual_smoothing is not None) == (switch == "true")
        assert router.restorers["pet"].residual_smoothing is None


def test_bundle_run_ct_task_records_and_applies_its_residual_smoothing(tiny_aio: Path, tmp_path: Path) -> None:
    """``monai.bundle run --task ct --residual_smoothing false|true`` on the all-in-one: the switch reaches the CT
    task (with the smoothing forced on every slice through ``task_settings``, the two restorations differ) and the
    resume records name it."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = np.random.default_rng(6).normal(0.0, 40.0, size=(40, 36, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 2.0, 1.0])), folder / "scan.nii.gz")
    # the tiny random network leaves no flat soft tissue: the whole slice is the flat region here
    smoothing_def = {"_target_": "monai_rwkv.inferers.ResidualSmoothing", "scale": 1.0, "threshold": 0.0}
    smoothing_def.update({"patch_radius": 1, "search_radius": 2, "flat_gradient": 1.0, "value_range": [0.0, 1.0]})
    forced = ["--task_settings#residual_smoothing_def", json.dumps(smoothing_def)]
    outputs = {}
    for smoothing in ("false", "true"):
        out = tmp_path / smoothing
        args = ["--dataset_dir", folder, "--output_dir", out, "--task", "ct", "--residual_smoothing", smoothing]
        result = bundle_run(str(tiny_aio / "configs" / "inference.json"), tmp_path, *args, *forced)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[smoothing] = nib.load(out / "scan_restored.nii.gz").get_fdata()
        manifest = json.loads((out / ".scan_restored.restore.json").read_text())
        assert manifest["model"]["version"].endswith("coarse fusion" + " residual smoothing" * (smoothing == "true"))
        assert (manifest["settings"]["residual_smoothing"] is not None) == (smoothing == "true")
    assert np.abs(outputs["true"] - outputs["false"]).max() > 0.1


def test_the_task_is_named_in_one_line_when_unknown(tiny_aio: Path) -> None:
    parser = load_bundle_config(tiny_aio, "inference.json", {**TINY, "task": "xray"})
    with pytest.raises(SystemExit, match=r"^error: --task 'xray': expected one of ct, mri, pet$"):
        parser.get_parsed_content("restorer")
    assert task_config({"ct": "restore_rwkv_ct_denoise"}, " CT ").get("bundle_root") == str(TASK_BUNDLES["ct"])
    with pytest.raises(SystemExit, match=r"^error: task 'x': nowhere: no such bundle folder or bundle name"):
        task_config({"x": "nowhere"}, "x")


def test_bundle_run_pet_dicom_series_in_derived_series_out(tiny_aio: Path, tmp_path: Path) -> None:
    """The real ``monai.bundle run`` with --task pet on a DICOM PET series writes what the PET bundle writes with the
    same weights (NIfTI in the series' units, a derived PET series), naming this bundle; the input untouched."""
    series = tmp_path / "in" / "pet_series"
    activity = np.random.default_rng(2).gamma(2.0, 2.0, (16, 16, 3))
    write_pet_series(series, activity)
    digest = tree_digest(series.parent)
    outputs = {}
    for name, configs, extra in (
        ("aio", tiny_aio / "configs", ["--task", "pet"]),
        ("pet", TASK_BUNDLES["pet"] / "configs", ["--weights", tiny_aio / "models" / "model.pt"]),
    ):
        outputs[name] = tmp_path / name
        result = bundle_run(
            [configs / "inference.json"],
            tmp_path,
            "--meta_file",
            configs / "metadata.json",
            *extra,
            "--dataset_dir",
            series.parent,
            "--output_dir",
            outputs[name],
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert tree_digest(series.parent) == digest
    restored, expected = (nib.load(outputs[k] / "pet_series_restored.nii.gz") for k in ("aio", "pet"))
    assert restored.shape == activity.shape
    np.testing.assert_array_equal(restored.get_fdata(), expected.get_fdata())
    np.testing.assert_array_equal(restored.affine, expected.affine)
    written = sorted((outputs["aio"] / "pet_series_restored").iterdir())
    assert len(written) == 3
    first, theirs = (pydicom.dcmread(sorted((outputs[k] / "pet_series_restored").iterdir())[0]) for k in ("aio", "pet"))
    assert first.Modality == "PT" and first.Units == theirs.Units
    described = " ".join(str(first.get(k, "")) for k in ("SeriesDescription", "DerivationDescription"))
    assert "all-in-one" in described.lower(), described


def test_task_sampler_draws_each_task_by_its_weight(seed: int) -> None:
    datasets = {
        "a": TaskDataset([{"label": torch.zeros(1)}] * 2, "a"),
        "b": TaskDataset([{"label": torch.zeros(1)}] * 30, "b"),
    }
    torch.manual_seed(seed)
    draws = list(task_sampler(datasets, {"a": 3.0, "b": 1.0}, 4000))
    share_a = np.mean([i < 2 for i in draws])
    assert abs(share_a - 0.75) < 0.04  # 3:1 whatever the 2 vs 30 items
    assert set(draws) == set(range(32))
    with pytest.raises(SystemExit, match="no weight for task"):
        task_sampler(datasets, {"a": 1.0}, 10)
    with pytest.raises(SystemExit, match="positive sum"):
        task_sampler(datasets, {"a": 0.0, "b": 0.0}, 10)
    concat = ConcatDataset(list(datasets.values()))
    assert concat[1]["label"].meta["task"] == "a" and concat[2]["label"].meta["task"] == "b"


def test_task_items_and_the_mean_over_tasks(seed: int) -> None:
    """A batch mixing tasks is split by the label's tag; the key metric is the mean of the task means."""
    rng = np.random.default_rng(seed)
    label = MetaTensor(torch.from_numpy(rng.uniform(0, 1, (3, 1, 16, 16)).astype(np.float32)))
    label.meta["task"] = ["a", "b", "a"]
    pred = label.as_tensor() + torch.from_numpy(rng.normal(0, 0.05, (3, 1, 16, 16)).astype(np.float32))
    output = {"pred": pred, "label": label}
    p, lab = _task_items("a")(output)
    assert torch.equal(p, pred[[0, 2]]) and torch.equal(lab, label.as_tensor()[[0, 2]])
    assert _task_items("c")(output)[0].shape[0] == 0

    class Parser:
        def get_parsed_content(self, _: str) -> SliceMetric:
            return SliceMetric("psnr", None, (0.0, 1.0))

    configs = {"a": Parser(), "b": Parser()}
    metrics = task_metrics(configs, ["psnr"])
    mean = task_mean_metric(metrics, "psnr")  # built first: a MetricsLambda resets its parts when it is made
    assert list(mean.args) == list(metrics.values())  # the same objects: each slice is scored once
    per_task = {}
    for name, metric in metrics.items():
        metric.reset()
        metric.update(metric._output_transform(output))
        per_task[name] = metric.compute()
    assert mean.compute() == pytest.approx((per_task["val_psnr_a"] + per_task["val_psnr_b"]) / 2)
    with pytest.raises(ValueError, match="RMSEs of different units"):
        task_mean_metric(metrics, "rmse")


def test_train_on_the_union_of_the_tasks(tmp_path: Path) -> None:
    """train.json over inference.json: the three tasks' tiny datasets, each validated in its own units; the log has
    the mean and the per-task columns; resumable checkpoint and best model written."""
    data = {}
    for task, make in (("ct", _ct_dataset), ("mri", _mri_dataset), ("pet", _pet_dataset)):
        data[task] = tmp_path / "data" / task
        data[task].mkdir(parents=True)
        make(data[task], 3)
    out = tmp_path / "train"
    configs = AIO / "configs"
    overrides = {
        "task_data": {task: {"dataset_dir": str(folder)} for task, folder in data.items()},
        "output_dir": str(out),
        "max_epochs": 2,
        "epoch_length": 3,
        "patch_size": [32, 32],
        "num_workers": 0,
        "device": "cpu",
    }
    args = [arg for key, value in overrides.items() for arg in (f"--{key}", json.dumps(value))]
    result = bundle_run([configs / "inference.json", configs / "train.json"], tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "train_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["3", "6"]
    for row in rows:
        tasks = [float(row[f"val_psnr_{t}"]) for t in ("ct", "mri", "pet")]
        assert all(np.isfinite(tasks))
        assert float(row["val_psnr"]) == pytest.approx(np.mean(tasks), abs=1e-3)
        assert float(row["val_rmse_ct"]) > 1  # CT in HU, as the CT bundle validates
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(RestoreRWKV(**TINY_NETWORK).state_dict())
    assert list((out / "checkpoints").iterdir())


def test_cli_restore_takes_the_task_and_checks_inputs_against_it(
    tiny_aio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``monai-rwkv restore --bundle all_in_one --task mri`` writes what the MRI bundle writes with the same
    weights; a PET series under the default task (ct) is refused before any model is loaded, naming the series."""
    source = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(_volume("mri", np.random.default_rng(4)), np.diag([0.9, 0.9, 1.2, 1.0])), source)
    weights = tiny_aio / "models" / "model.pt"
    outputs = {name: tmp_path / f"{name}.nii.gz" for name in ("aio", "mri")}
    args = {
        "aio": ["--bundle", str(tiny_aio), "--task", "mri"],
        "mri": ["--bundle", "mri_sr", "--set", f"weights={weights}"],
    }
    for name, extra in args.items():
        assert main(["restore", str(source), str(outputs[name]), *extra, *TINY_CLI_ARGS]) == 0
    aio, mri = (nib.load(outputs[k]).get_fdata() for k in ("aio", "mri"))
    np.testing.assert_array_equal(aio, mri)
    series = tmp_path / "pet_series"
    write_pet_series(series, np.random.default_rng(5).gamma(2.0, 2.0, (16, 16, 2)))
    capsys.readouterr()
    assert main(["restore", "--bundle", str(tiny_aio), str(series), str(tmp_path / "pet.nii.gz"), *TINY_CLI_ARGS]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(series) in err[0] and "Modality PT" in err[0], err
    assert not (tmp_path / "pet.nii.gz").exists()
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        main(["restore", "--bundle", "ct_denoise", "--task", "pet", str(series), str(tmp_path / "x.nii.gz")])
    assert usage.value.code == 2
    assert "serves one task" in capsys.readouterr().err


def test_evaluate_runs_the_task_bundles_protocol(tiny_aio: Path, tmp_path: Path) -> None:
    """``evaluate.json --task pet`` scores the PET bundle's sample with the PET protocol (its pairs and window):
    the same per-slice metrics as the PET bundle's own evaluation with the same weights."""
    outputs = {}
    for name, configs, extra in (
        ("aio", tiny_aio / "configs", ["--task", "pet"]),
        ("pet", TASK_BUNDLES["pet"] / "configs", ["--weights", tiny_aio / "models" / "model.pt"]),
    ):
        outputs[name] = tmp_path / name
        files = [configs / "inference.json", configs / "evaluate.json"]
        result = bundle_run(
            files, tmp_path, "--meta_file", configs / "metadata.json", *extra, "--output_dir", outputs[name]
        )
        assert result.returncode == 0, result.stderr[-3000:]
    aio, pet = ((outputs[k] / "metrics.csv").read_text() for k in ("aio", "pet"))
    assert aio == pet and len(aio.splitlines()) == 1 + 4  # the 4 slices of the PET sample


def test_batch_with_two_workers_builds_the_tasks_pipeline_in_each(
    tiny_aio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``monai-rwkv batch --task pet --workers 2``: each worker process rebuilds the task's pipeline from the
    config; the volumes equal those of one process."""
    data = tmp_path / "in"
    data.mkdir()
    rng = np.random.default_rng(6)
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(_volume("pet", rng), np.diag([2.0, 2.0, 2.0, 1.0])), data / f"{name}.nii.gz")
    outputs = {}
    for workers in ("1", "2"):
        outputs[workers] = tmp_path / f"out{workers}"
        argv = ["batch", "--bundle", str(tiny_aio), "--task", "pet", str(data), str(outputs[workers])]
        assert main([*argv, "--workers", workers, *TINY_CLI_ARGS]) == 0
    for name in ("a", "b"):
        one, two = (nib.load(outputs[w] / f"{name}_restored.nii.gz").get_fdata() for w in ("1", "2"))
        np.testing.assert_array_equal(one, two)
    capsys.readouterr()


@pytest.mark.slow
def test_multi_gpu_train_two_processes(tmp_path: Path, seed: int) -> None:
    """multi_gpu_train.json with 2 CPU processes (gloo): each draws its own task-balanced batches, the gradients are
    averaged (same weights in both), each validates its part of the three tasks' validation sets and both get the
    metrics of the whole; rank 0 alone writes the best model and the log."""
    data = {}
    for task, make in (("ct", _ct_dataset), ("mri", _mri_dataset), ("pet", _pet_dataset)):
        data[task] = tmp_path / "data" / task
        data[task].mkdir(parents=True)
        make(data[task], seed)
    out, records = tmp_path / "run", tmp_path / "records"
    extra = {"task_data": {task: {"dataset_dir": str(folder)} for task, folder in data.items()}}
    result = _torchrun(AIO.name, tmp_path / "data", out, records, extra=extra)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    ranks = _records(records)
    assert ranks[0]["loss"] != ranks[1]["loss"], "both processes saw the same batch"
    for key, value in ranks[0]["params"].items():
        torch.testing.assert_close(ranks[1]["params"][key], value, rtol=0, atol=0, msg=key)
    n_val = sum(len(json.loads((d / "datalist.json").read_text())["validation"]) for d in data.values())
    assert sorted(ranks[0]["val_items"] + ranks[1]["val_items"]) == list(range(n_val))
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    assert {f"val_psnr_{t}" for t in data} <= set(ranks[0]["metrics"])
    assert ranks[1]["saved"] == []
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "model.pt", "train_log.csv"]


def _mixed_folder(root: Path) -> dict[str, Path]:
    """A PACS-like export: a CT, an MR and a PET series side by side, and a NIfTI file (which names no modality)."""
    series = {"ct": root / "ct_series", "mri": root / "mr_series", "pet": root / "pet_series"}
    write_ct_series(series["ct"], n=3, seed=1)
    write_mr_series(series["mri"], n=3, seed=2)
    write_pet_series(series["pet"], np.random.default_rng(3).gamma(2.0, 2.0, (16, 16, 3)))
    nib.save(nib.Nifti1Image(_volume("ct", np.random.default_rng(4)), np.eye(4)), root / "scan.nii.gz")
    return series


def test_auto_task_restores_each_series_as_its_modalitys_task(
    tiny_aio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch --task auto`` over a CT, an MR and a PET series writes, for each, what ``--task <its task>`` writes
    (NIfTI and derived series); the NIfTI file fails alone with one line saying to name the task; inputs untouched."""
    data = tmp_path / "in"
    series = _mixed_folder(data)
    digest = tree_digest(data)
    auto = tmp_path / "auto"
    assert main(["batch", "--bundle", str(tiny_aio), "--task", "auto", str(data), str(auto), *TINY_CLI_ARGS]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 2, err  # the NIfTI study's line, then the count
    assert "scan.nii.gz: no DICOM Modality to choose the task by" in err[0] and "--task ct, mri or pet" in err[0]
    assert not (auto / "scan_restored.nii.gz").exists()
    with (auto / "restore_summary.csv").open(newline="") as f:
        status = {row["name"]: row["status"] for row in csv.DictReader(f)}
    assert status == {"ct_series": "written", "mr_series": "written", "pet_series": "written", "scan": "failed"}
    for task, folder in series.items():
        own = tmp_path / task  # the same folder under the fixed task: only that task's series fits
        main(["batch", "--bundle", str(tiny_aio), "--task", task, str(data), str(own), *TINY_CLI_ARGS])
        name = f"{folder.name}_restored"
        expected = nib.load(own / f"{name}.nii.gz")
        restored = nib.load(auto / f"{name}.nii.gz")
        np.testing.assert_array_equal(restored.get_fdata(), expected.get_fdata())
        np.testing.assert_array_equal(restored.affine, expected.affine)
        ours, theirs = (sorted((out / name).iterdir()) for out in (auto, own))
        assert [p.name for p in ours] == [p.name for p in theirs]
        first = pydicom.dcmread(ours[0])
        assert first.Modality == pydicom.dcmread(sorted(folder.iterdir())[0]).Modality
        np.testing.assert_array_equal(first.pixel_array, pydicom.dcmread(theirs[0]).pixel_array)
    capsys.readouterr()
    assert tree_digest(data) == digest


def test_bundle_run_auto_task_with_two_workers(tiny_aio: Path, tmp_path: Path) -> None:
    """The real ``monai.bundle run`` with ``--task auto --workers 2``: each worker routes by Modality; the outputs
    equal those of one process; without --dataset_dir it stops with one line (no task, no sample to default to)."""
    data = tmp_path / "in"
    series = _mixed_folder(data)
    (data / "scan.nii.gz").unlink()
    configs = tiny_aio / "configs"
    outputs = {}
    for workers in ("1", "2"):
        outputs[workers] = tmp_path / f"out{workers}"
        args = ["--meta_file", configs / "metadata.json", "--task", "auto", "--workers", workers]
        result = bundle_run(
            [configs / "inference.json"], tmp_path, *args, "--dataset_dir", data, "--output_dir", outputs[workers]
        )
        assert result.returncode == 0, result.stderr[-3000:]
    for folder in series.values():
        one, two = (nib.load(outputs[w] / f"{folder.name}_restored.nii.gz").get_fdata() for w in ("1", "2"))
        np.testing.assert_array_equal(one, two)
    result = bundle_run(
        [configs / "inference.json"], tmp_path, "--meta_file", configs / "metadata.json", "--task", "auto"
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: dataset_dir is required: pass --dataset_dir <folder, NIfTI file or DICOM series>"
    )


def test_task_specs_choose_by_modality_and_check_against_that_task(tiny_aio: Path, tmp_path: Path, seed: int) -> None:
    """The input check under --task auto is the chosen task's own; modalities come from the task bundles."""
    tasks = load_bundle_config(tiny_aio, "inference.json").get_parsed_content("tasks")
    specs = TaskSpecs.from_tasks(tasks)
    assert specs.tasks == {"CT": "ct", "MR": "mri", "PT": "pet"}
    folder = tmp_path / "ct"
    write_ct_series(folder, n=2, seed=seed)
    volume = read_volume(InputImage(folder, folder.name))
    assert specs.problems(volume, volume.meta, folder) == []
    check_input(specs, volume, folder)
    outside = volume * 0 + 20000.0  # far above the CT range on every voxel: the CT task's own value check
    outside.meta = volume.meta
    assert any("hounsfield" in p or "range" in p for p in specs.problems(outside, volume.meta, folder))
    with pytest.raises(ValueError, match=r"^x.dcm: Modality US: no task of this bundle takes it \(CT -> ct, MR -> mri"):
        specs.task_for({"dicom_modality": "US"}, "x.dcm")
    nifti = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_volume("ct", np.random.default_rng(seed)), np.eye(4)), nifti)
    no_modality = read_volume(InputImage(nifti, nifti.name))
    with pytest.raises(ValueError, match=r"scan.nii.gz: no DICOM Modality to choose the task by"):
        check_input(specs, no_modality, nifti, allow_mismatch=True)  # no task to restore it with, even so
    with pytest.raises(ValueError, match="both take Modality CT"):
        TaskSpecs({"a": InputSpec(modality="CT"), "b": InputSpec(modality="ct".upper())})
    with pytest.raises(ValueError, match="names no input modality"):
        TaskSpecs({"a": InputSpec()})
    router = TaskRouter.from_tasks(
        tasks,
        {
            "network": RestoreRWKV(**TINY_NETWORK).eval(),
            **{k: v for k, v in TINY.items() if not k.startswith("network_def")},
        },
    )
    assert router.output_dtype == "float32" and set(router.describe()["tasks"]) == {"ct", "mri", "pet"}
    assert router.task_for(volume) == "ct"
    with pytest.raises(ValueError, match="no DICOM Modality"):
        router(torch.zeros(1, 8, 8, 1))
