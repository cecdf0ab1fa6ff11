"""``monai-rwkv batch``, run as a subprocess with a tiny random network in a bundle copy."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.bundles.utils import REPO, TINY_CLI_ARGS, make_tiny_bundle
from tests.data.conftest import CT5N, copy_series


def batch(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai_rwkv.apps.cli", "batch", *map(str, args), *TINY_CLI_ARGS]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)


def test_batch_restores_a_folder_resumably_and_reports_each_study(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle")
    data = tmp_path / "data"
    data.mkdir()
    volume = np.random.default_rng(0).integers(-1000, 1500, size=(20, 12, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.9, 0.9, 2.0, 1.0])), data / "a.nii.gz")
    (data / "b.nii.gz").write_bytes(b"not an image")
    copy_series(CT5N, data / "c")
    out = tmp_path / "out"

    first = batch("--bundle", bundle, data, out)
    assert first.returncode == 1, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: {data / 'b.nii.gz'}: ") and len(errors) == 2
    assert errors[1] == f"error: 1 input(s) failed (see {out / 'restore_summary.csv'})"
    lines = first.stdout.splitlines()
    assert lines[0].startswith("a: written (") and lines[1].startswith("c: written (")
    assert lines[-1] == f"3 studies: 2 written, 0 skipped, 0 redone, 1 failed; summary: {out / 'restore_summary.csv'}"
    assert nib.load(out / "a_restored.nii.gz").shape == volume.shape and len(list((out / "c_restored").iterdir())) == 5

    (data / "b.nii.gz").unlink()
    (out / "a_restored.nii.gz").write_bytes((out / "a_restored.nii.gz").read_bytes()[:100])  # truncated
    summary = tmp_path / "summary.csv"
    second = batch("--bundle", bundle, data, out, "--summary", summary)
    assert second.returncode == 0, second.stderr
    with open(summary, newline="") as f:
        rows = [(r["name"], r["status"], r["detail"]) for r in csv.DictReader(f)]
    assert rows == [("a", "redone", "a_restored.nii.gz: size changed (truncated?)"), ("c", "skipped", "")]
