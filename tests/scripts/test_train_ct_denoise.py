"""Smoke test of the CT training recipe on a tiny real-file dataset: trains, validates, saves, resumes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.data import write_nifti
from monai_rwkv.networks.nets import RestoreRWKV

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_ct_denoise.py"
TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}


def _phantom_volume(rng: np.random.Generator, slices: int) -> np.ndarray:
    """(i, j, k) int16 HU: a water disc with a bone ring and random soft-tissue blobs, in air."""
    yy, xx = np.mgrid[:48, :48] - 23.5
    r = np.hypot(yy, xx)
    vol = np.full((48, 48, slices), -1000.0)
    for k in range(slices):
        img = np.where(r < 20, 1000.0, -1000.0)
        img[r < 17] = rng.uniform(20, 60)
        img[(np.hypot(yy - rng.uniform(-6, 6), xx - rng.uniform(-6, 6)) < 4)] = rng.uniform(-100, 100)
        vol[..., k] = img.T
    return vol.astype(np.int16)


def _dataset(tmp_path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    data = tmp_path / "ct"
    affine = np.diag([-0.9, 0.9, 1.5, 1.0])
    splits = {}
    for name, n in (("train", 3), ("val", 2)):
        write_nifti(_phantom_volume(rng, n), data / f"{name}.nii.gz", affine, dtype="int16")
        splits[name] = {"file": f"{name}.nii.gz", "slices": [0, n]}
    (data / "split.json").write_text(json.dumps({"splits": splits}))
    return data


def _train(data: Path, out: Path, iterations: int) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--data-dir",
        str(data),
        "--out",
        str(out),
        "--net",
        json.dumps(TINY),
        "--iterations",
        str(iterations),
        "--val-every",
        "2",
        "--patch",
        "32",
        "--batch",
        "2",
        "--realisations",
        "1",
        "--threads",
        "1",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_trains_saves_and_resumes(tmp_path: Path, seed: int) -> None:
    data = _dataset(tmp_path, seed)
    out = tmp_path / "run" / "model.pt"
    first = _train(data, out, iterations=2)
    assert first.returncode == 0, first.stderr[-2000:]
    state = torch.load(out, weights_only=True)
    model = RestoreRWKV.from_preset("light", **TINY)
    model.load_state_dict(state)  # a plain state dict in our (official) layout
    rows = list(csv.DictReader((out.parent / "train_log.csv").open()))
    assert [r["iteration"] for r in rows] == ["0", "2"]
    assert all(np.isfinite(float(r["val_psnr"])) for r in rows)
    second = _train(data, out, iterations=4)  # same run, longer: resumes from iteration 2
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed at iteration 2" in second.stdout
    rows = list(csv.DictReader((out.parent / "train_log.csv").open()))
    assert [r["iteration"] for r in rows] == ["0", "2", "4"]
