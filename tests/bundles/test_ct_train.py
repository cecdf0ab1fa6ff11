"""The CT bundle's ``configs/train.json`` run by the real ``python -m monai.bundle run`` on tiny phantom datasets.

Tiny network, 2-3 epochs of 2 iterations: this checks the recipe's plumbing (simulated and paired data, validation,
best model, CSV log, resume), not a denoising result.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_rwkv.data import write_nifti
from monai_rwkv.networks.nets import RestoreRWKV
from monai_rwkv.transforms import RandDegradationScaled, RandLowDoseCTd, RandNaturalCTd, RandSyntheticCTd
from tests.bundles.utils import CT_BUNDLE, TINY_NETWORK, phantom_ct_volume

CONFIGS = CT_BUNDLE / "configs"
AFFINE = np.diag([-0.9, 0.9, 1.5, 1.0])


def _clean_dataset(root: Path, seed: int) -> Path:
    """Two training volumes and one validation volume (clean), with a datalist.json."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list] = {"training": [], "validation": []}
    for split, name, n in (("training", "a", 3), ("training", "b", 2), ("validation", "v", 2)):
        write_nifti(phantom_ct_volume(rng, n), root / f"{name}.nii.gz", AFFINE, dtype="int16")
        lists[split].append({"label": f"{name}.nii.gz"})
    (root / "datalist.json").write_text(json.dumps(lists))
    return root


def _paired_dataset(root: Path, seed: int) -> Path:
    """Low-dose / full-dose pairs (the low-dose scans here: the clean ones plus Gaussian noise), with a datalist."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list] = {"training": [], "validation": []}
    for split, name in (("training", "p1"), ("validation", "p2")):
        clean = phantom_ct_volume(rng, 2)
        noisy = clean + rng.normal(0, 30, clean.shape)
        write_nifti(clean, root / f"{name}_full.nii.gz", AFFINE, dtype="int16")
        write_nifti(noisy.astype(np.float32), root / f"{name}_low.nii.gz", AFFINE, dtype="float32")
        lists[split].append({"image": f"{name}_low.nii.gz", "label": f"{name}_full.nii.gz"})
    (root / "datalist.json").write_text(json.dumps(lists))
    return root


def _train(data: Path, out: Path, epochs: int, *extra: str) -> subprocess.CompletedProcess:
    configs = f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'train.json'}']"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    cmd += ["--dataset_dir", str(data), "--output_dir", str(out), "--max_epochs", str(epochs), "--epoch_length", "2"]
    cmd += ["--patch_size", "[32,32]", "--roi_size", "[32,32]", "--num_workers", "0", "--progress", "false"]
    cmd += ["--device", "cpu", "--seed", "3"]
    for key, value in TINY_NETWORK.items():
        cmd += [f"--network_def#{key}", json.dumps(value)]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=600)


def _log(out: Path) -> list[dict[str, str]]:
    with (out / "train_log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _tiny_network() -> RestoreRWKV:
    return RestoreRWKV(spatial_dims=2, in_channels=1, out_channels=1, **TINY_NETWORK)


def test_train_config_is_merged_over_inference_json() -> None:
    train = json.loads((CONFIGS / "train.json").read_text())
    assert "network_def" not in train  # one network definition per bundle: inference.json's
    assert train["dose_fraction"] == [0.1, 0.5] and train["eval_window"] == [-160.0, 240.0]


def test_the_shifted_scanners_lie_outside_the_training_ranges() -> None:
    """scripts/prepare_ct_shifted.py's scanners must stay unseen: every view count (the streaks) outside train.json's
    range, and the filter windows of the soft and quiet scanners and of the synthetic bodies' reference scan not among
    training's."""
    from tests.scripts import load_script  # noqa: PLC0415

    shifted = load_script("prepare_ct_shifted")
    train = json.loads((CONFIGS / "train.json").read_text())
    views_lo, views_hi = train["n_views"]
    assert set(shifted.SCANNERS) == {"soft", "sharp", "quiet", "reference"}
    for name, scanner in shifted.SCANNERS.items():
        assert not views_lo <= scanner["n_views"] <= views_hi, name
    for name in ("soft", "quiet", "reference"):
        assert shifted.SCANNERS[name]["window"] not in train["filter_windows"], name


def test_loss_is_l1_plus_an_ssim_term_in_the_evaluation_window() -> None:
    from monai.bundle import ConfigParser  # noqa: PLC0415

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
    loss = parser.get_parsed_content("loss")
    assert loss.ssim_weight == 0.03  # the shipped weights' recipe
    # [-160, 240] HU in the network's units ([-1024, 3072] HU -> [0, 1])
    assert (loss.low, loss.high) == pytest.approx(((-160 + 1024) / 4096, (240 + 1024) / 4096))
    parser["ssim_weight"] = 0.0
    assert parser.get_parsed_content("loss", lazy=False).ssim_weight == 0.0  # plain L1


def test_training_target_has_the_reconstruction_kernel_of_the_simulated_scan(seed: int) -> None:
    """With a soft filter drawn, the target is the clean slice through that kernel (not the sharp slice): the network
    learns to denoise, not to change the kernel; with the default Ram-Lak the target is the clean slice itself."""
    from monai.bundle import ConfigParser  # noqa: PLC0415

    from monai_rwkv.transforms import reconstruction_kernel  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    clean = torch.from_numpy(rng.normal(0.0, 300.0, (1, 64, 64))).float()
    for windows, soft in ((["hann"], True), (["ram-lak"], False)):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
        parser["filter_windows"], parser["filter_cutoff"] = windows, 0.8
        scan = next(
            t for t in parser.get_parsed_content("train#load_clean", lazy=False) if isinstance(t, RandLowDoseCTd)
        )
        scan.set_random_state(seed)
        out = scan({"image": clean.clone(), "label": clean.clone()})
        expected = reconstruction_kernel(clean, (1.0, 1.0), 0.5, windows[0], 0.8) if soft else clean
        assert torch.allclose(out["label"], expected, atol=1e-3)
        assert soft == (not torch.allclose(out["label"], clean, atol=1.0))


def test_trains_on_simulated_low_dose_validates_saves_and_resumes(tmp_path: Path, seed: int) -> None:
    data, out = _clean_dataset(tmp_path / "data", seed), tmp_path / "run"
    first = _train(data, out, epochs=2)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = _log(out)
    assert [(r["epoch"], r["iteration"]) for r in rows] == [("1", "2"), ("2", "4")]
    for row in rows:
        assert 10 < float(row["val_psnr"]) < 80 and 0 < float(row["val_ssim"]) <= 1 and float(row["val_rmse"]) > 0
        assert float(row["train_loss"]) > 0
    state = torch.load(out / "model.pt", weights_only=True)  # plain state dict of the best epoch
    _tiny_network().load_state_dict(state)
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["state_checkpoint_epoch=2.pt"]

    second = _train(data, out, epochs=3)  # the same command with more epochs continues the run
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    assert [(r["epoch"], r["iteration"]) for r in _log(out)] == [("1", "2"), ("2", "4"), ("3", "6")]
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["state_checkpoint_epoch=3.pt"]


def test_trains_on_real_pairs_by_override(tmp_path: Path, seed: int) -> None:
    data, out = _paired_dataset(tmp_path / "data", seed), tmp_path / "run"
    result = _train(data, out, 1, "--paired", "true", "--resume", "false", "--ssim_weight", "0.05")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = _log(out)
    assert float(row["val_psnr"]) > 10
    _tiny_network().load_state_dict(torch.load(out / "model.pt", weights_only=True))


@pytest.mark.parametrize("problem", ["no datalist", "empty training list", "missing volume"])
def test_bad_dataset_fails_with_one_line_naming_the_file(tmp_path: Path, problem: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if problem == "empty training list":
        (data / "datalist.json").write_text(json.dumps({"training": [], "validation": []}))
    if problem == "missing volume":
        (data / "datalist.json").write_text(json.dumps({"training": [{"label": "gone.nii.gz"}], "validation": []}))
    result = _train(data, tmp_path / "run", 1)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {data / 'datalist.json'}: ") and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_starts_a_wider_network_from_narrower_weights(tmp_path: Path, seed: int) -> None:
    """``--network_def#dim`` of a multiple of the checkpoint's width: ``init_weights`` are widened
    (``RestoreRWKV.checkpoint_filter_fn``), so the wide network starts as the narrow one."""
    data, out = _clean_dataset(tmp_path / "data", seed), tmp_path / "run"
    narrow = _tiny_network().eval()
    with torch.no_grad():
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    torch.save(narrow.state_dict(), tmp_path / "narrow.pt")
    wide_dim = 2 * TINY_NETWORK["dim"]
    extra = ["--init_weights", str(tmp_path / "narrow.pt"), "--learning_rate", "1e-12", "--network_def#dim"]
    result = _train(data, out, 1, *extra, str(wide_dim))
    assert result.returncode == 0, result.stderr[-3000:]
    wide = RestoreRWKV.from_official(out / "model.pt").eval()
    assert wide.config["dim"] == wide_dim
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = narrow(x)
        # the copies' perturbation (0.01 of each weight's spread) changes the output at second order only (seen: up
        # to 1.1e-3 of it); a start that is not the widened narrow network would differ by the whole output
        assert (wide(x) - expected).abs().max() < 1e-2 * expected.abs().max()


def test_synthetic_target_photons_scan_each_synthetic_slice_at_full_dose(seed: int) -> None:
    """``synthetic_target_photons``: a synthetic training slice is scanned at full dose before the low-dose
    simulation copies it, so its target carries a scan's noise as a real full-dose slice does; ``null`` (the
    default) keeps the noise-free slice."""
    from monai.bundle import ConfigParser  # noqa: PLC0415

    voxels = torch.from_numpy(np.random.default_rng(seed).uniform(-100, 100, (1, 48, 48, 6)).astype(np.float32))
    volume = MetaTensor(voxels, affine=torch.diag(torch.tensor([1.0, 1.0, 1.5, 1.0], dtype=torch.float64)))
    labels = {}
    for photons in (None, [1e5, 4e5]):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
        parser.update({"synthetic_fraction": 1.0, "synthetic_size": [64, 64], "synthetic_target_photons": photons})
        steps = parser.get_parsed_content("train#load_clean")
        synthetic = next(t for t in steps if isinstance(t, RandSyntheticCTd))
        assert (synthetic.scan is None) == (photons is None)
        pipeline = Compose(steps[2:])  # without the file reader: the volume is in memory
        pipeline.set_random_state(seed)
        out = pipeline({"label": volume})
        assert out["label"].shape == out["image"].shape == (1, 64, 64)
        labels[photons is None] = out["label"]
    clean, scanned = labels[True], labels[False]
    body = clean > -500  # HU
    noise = float((scanned - clean)[body].std())
    assert 2.0 < noise < 200.0, noise  # the same synthetic anatomy, with a full-dose scan's noise


def test_natural_fraction_draws_photograph_slices_from_natural_dir(tmp_path: Path, seed: int) -> None:
    """``natural_fraction``: that share of the training slices is built from the photographs in ``natural_dir``
    (``RandNaturalCTd``), scanned at full dose like the synthetic ones; 0 (the default) needs no photographs."""
    from monai.bundle import ConfigParser  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    for k in range(2):
        np.save(tmp_path / f"photo{k}.npy", rng.uniform(0, 1, (40, 40)).astype(np.float32))
    voxels = torch.from_numpy(rng.uniform(-100, 100, (1, 48, 48, 6)).astype(np.float32))
    volume = MetaTensor(voxels, affine=torch.diag(torch.tensor([1.0, 1.0, 1.5, 1.0], dtype=torch.float64)))
    for fraction, folder in ((0.0, tmp_path / "missing"), (1.0, tmp_path)):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
        parser.update({"natural_fraction": fraction, "natural_dir": str(folder), "synthetic_fraction": 0.0})
        parser.update({"synthetic_size": [64, 64], "synthetic_target_photons": [4e6, 8e6]})
        steps = parser.get_parsed_content("train#load_clean")
        natural = next(t for t in steps if isinstance(t, RandNaturalCTd))
        assert len(natural.generator.images) == (2 if fraction else 0) and natural.scan is not None
        pipeline = Compose(steps[2:])  # without the file reader: the volume is in memory
        pipeline.set_random_state(seed)
        out = pipeline({"label": volume})
        assert out["label"].shape == out["image"].shape
        # a photograph's slice (64 x 64, air around the body) or a real one (no air in this volume)
        assert (out["label"].shape == (1, 64, 64) and float(out["label"].min()) < -900) == bool(fraction)


def test_degradation_scale_strengthens_the_simulated_scan_against_its_target(seed: int) -> None:
    """``degradation_scale_prob``: that share of the training inputs has its simulated noise and streaks scaled by a
    factor from ``degradation_scale`` (the same scan, stronger); 0 (the default) leaves every input as scanned."""
    from monai.bundle import ConfigParser  # noqa: PLC0415

    voxels = torch.from_numpy(np.random.default_rng(seed).uniform(-100, 100, (1, 48, 48, 6)).astype(np.float32))
    volume = MetaTensor(voxels, affine=torch.diag(torch.tensor([1.0, 1.0, 1.5, 1.0], dtype=torch.float64)))
    outputs = []
    for prob in (0.0, 1.0):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
        parser.update({"synthetic_fraction": 0.0, "degradation_scale": [2.5, 2.5], "degradation_scale_prob": prob})
        steps = parser.get_parsed_content("train#load_clean")
        assert isinstance(steps[-1], RandDegradationScaled) and isinstance(steps[-2], RandLowDoseCTd)
        pipeline = Compose(steps[2:])  # without the file reader: the volume is in memory
        pipeline.set_random_state(seed)  # the scaling comes last: the scan before it draws the same either way
        outputs.append(pipeline({"label": volume}))
    scanned, scaled = outputs
    assert torch.equal(scanned["label"], scaled["label"])
    noise = scanned["image"] - scanned["label"]
    assert float(noise.abs().mean()) > 1.0  # HU: a real simulated scan, not a copy
    torch.testing.assert_close(scaled["image"] - scaled["label"], 2.5 * noise, rtol=1e-4, atol=1e-2)
    assert json.loads((CONFIGS / "train.json").read_text())["degradation_scale_prob"] == 0.0


def test_streak_scale_reaches_the_simulated_scan() -> None:
    """``streak_scale`` is the scan's (``RandLowDoseCT(streak_scale=...)``): 1 by default, a range by override."""
    from monai.bundle import ConfigParser  # noqa: PLC0415

    for value, expected in ((None, (1.0, 1.0)), ([1.0, 2.0], (1.0, 2.0))):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
        if value is not None:
            parser["streak_scale"] = value
        scan = next(t for t in parser.get_parsed_content("train#load_clean") if isinstance(t, RandLowDoseCTd))
        assert scan.transform.streak_range == expected
