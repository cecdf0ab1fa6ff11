"""Smoke test of the CT training recipe on a tiny real-file dataset: trains, validates, saves, resumes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_rwkv.data import write_nifti
from monai_rwkv.networks.nets import RestoreRWKV
from tests.bundles.utils import phantom_ct_volume

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_ct_denoise.py"
TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}


def _dataset(tmp_path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    data = tmp_path / "ct"
    affine = np.diag([-0.9, 0.9, 1.5, 1.0])
    splits = {}
    for name, n in (("train", 3), ("val", 2)):
        write_nifti(phantom_ct_volume(rng, n), data / f"{name}.nii.gz", affine, dtype="int16")
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


@pytest.mark.slow
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
