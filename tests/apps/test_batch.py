"""Batch restoration on real files: resume with verified outputs, failures isolated, the per-study summary."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from torch import nn

from monai_rwkv.apps import restore_dataset, run_restore
from monai_rwkv.apps.batch import SUMMARY_COLUMNS, fingerprint, manifest_path, write_manifest
from monai_rwkv.inference import SliceWiseRestorer
from tests.data.conftest import CT5N, copy_series, tree_digest

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def identity_restorer() -> SliceWiseRestorer:
    return SliceWiseRestorer(nn.Identity(), roi_size=(16, 16), device="cpu", progress=False)


def write_volume(path: Path, shape=(12, 10, 2), seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return data


def summary_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        return list(reader)


def statuses(report) -> dict[str, str]:
    return {s.name: s.status for s in report.studies}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_volume(data / "a.nii.gz", seed=1)
    copy_series(CT5N, data / "b")
    write_volume(data / "c.nii", seed=3)
    return data


def test_rerun_skips_verified_studies_and_writes_the_summary(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    digest = tree_digest(dataset)
    first = restore_dataset(identity_restorer(), dataset, out, "m", "1")
    assert first.ok and statuses(first) == {"a": "written", "b": "written", "c": "written"}
    assert first.summary == out / "restore_summary.csv"
    rows = summary_rows(first.summary)
    assert [(r["name"], r["status"], r["detail"]) for r in rows] == [(n, "written", "") for n in "acb"]
    assert rows[2]["outputs"] == f"{out / 'b_restored.nii.gz'};{out / 'b_restored'}"
    assert rows[0]["input"] == str(dataset / "a.nii.gz") and all(float(r["seconds"]) > 0 for r in rows)
    outputs = tree_digest(out / "b_restored") | tree_digest(out / "a_restored.nii.gz")

    second = restore_dataset(identity_restorer(), dataset, out, "m", "1")
    assert second.ok and statuses(second) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert second.written == [] and sorted(second.skipped) == sorted(first.written)
    assert [r["status"] for r in summary_rows(second.summary)] == ["skipped"] * 3
    assert tree_digest(out / "b_restored") | tree_digest(out / "a_restored.nii.gz") == outputs  # not rewritten
    assert tree_digest(dataset) == digest

    third = restore_dataset(identity_restorer(), dataset, out, "m", "1", overwrite=True)
    assert statuses(third) == {"a": "redone", "b": "redone", "c": "redone"}
    assert {s.detail for s in third.studies} == {"overwrite"}


def test_incomplete_or_stale_outputs_are_redone(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    restore_dataset(identity_restorer(), dataset, out, "m", "1")
    good = nib.load(out / "c_restored.nii").get_fdata()
    # a truncated .nii.gz (as left by a copy or a crash of a version without atomic writes)
    blob = (out / "a_restored.nii.gz").read_bytes()
    (out / "a_restored.nii.gz").write_bytes(blob[: len(blob) // 2])
    # a DICOM series output missing a slice
    sorted((out / "b_restored").iterdir())[-1].unlink()
    # an input changed since its output was written
    write_volume(dataset / "c.nii", seed=30)

    report = restore_dataset(identity_restorer(), dataset, out, "m", "1")
    assert report.ok and statuses(report) == {"a": "redone", "b": "redone", "c": "redone"}
    details = {s.name: s.detail for s in report.studies}
    assert details == {
        "a": "a_restored.nii.gz: size changed (truncated?)",
        "b": "b_restored: 4 file(s), 5 expected",
        "c": "input changed",
    }
    with gzip.open(out / "a_restored.nii.gz") as f:
        assert len(f.read()) > 0  # complete again
    assert len(list((out / "b_restored").iterdir())) == 5
    assert not np.array_equal(nib.load(out / "c_restored.nii").get_fdata(), good)
    assert statuses(restore_dataset(identity_restorer(), dataset, out, "m", "1")) == dict.fromkeys("abc", "skipped")

    # same size, other content; a study interrupted after claiming its outputs; another model
    data = bytearray((out / "c_restored.nii").read_bytes())
    data[-1] ^= 0xFF
    (out / "c_restored.nii").write_bytes(bytes(data))
    claim = (manifest_path([out / "a_restored.nii.gz"]), fingerprint(dataset / "a.nii.gz", recursive=False))
    write_manifest(*claim, [], ("m", "1"))  # what a run leaves when it stops before recording the outputs
    report = restore_dataset(identity_restorer(), dataset, out, "m", "1")
    details = {s.name: (s.status, s.detail) for s in report.studies}
    assert details["a"] == ("redone", "interrupted (outputs claimed, never recorded)")
    assert details["b"] == ("skipped", "") and details["c"] == ("redone", "c_restored.nii: content changed")
    report = restore_dataset(identity_restorer(), dataset, out, "other model", "2")
    assert {s.detail for s in report.studies} == {"written by another model (m 1)"}


def test_an_output_this_program_did_not_write_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_volume(data / "vol.nii.gz", shape=(8, 8, 1))
    write_volume(data / "other.nii.gz", shape=(8, 8, 1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "vol_restored.nii.gz").write_bytes(b"someone else's file")
    report = restore_dataset(identity_restorer(), data, out, "m", "0")
    assert statuses(report) == {"vol": "failed", "other": "written"}
    (error,) = report.errors
    assert error.startswith(f"{data / 'vol.nii.gz'}: output {out / 'vol_restored.nii.gz'} exists and no manifest")
    assert "overwrite" in error
    assert (out / "vol_restored.nii.gz").read_bytes() == b"someone else's file"
    report = restore_dataset(identity_restorer(), data, out, "m", "0", overwrite=True)
    assert statuses(report) == {"vol": "redone", "other": "redone"}
    assert nib.load(out / "vol_restored.nii.gz").shape == (8, 8, 1)


def test_a_corrupt_study_in_the_middle_fails_alone(dataset: Path, tmp_path: Path) -> None:
    shutil.rmtree(dataset / "b")
    (dataset / "b.nii.gz").write_bytes(gzip.compress(b"\0" * 400)[:50])  # truncated gzip between a and c
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_restore(identity_restorer(), dataset, out, {"name": "m", "version": "1"})
    message = str(exit_info.value.code)
    assert message.startswith(f"error: 1 input(s) failed: {dataset / 'b.nii.gz'}: ") and "\n" not in message
    rows = summary_rows(out / "restore_summary.csv")
    assert [(r["name"], r["status"]) for r in rows] == [("a", "written"), ("b", "failed"), ("c", "written")]
    assert rows[1]["detail"].startswith(f"{dataset / 'b.nii.gz'}: ") and rows[1]["outputs"] == ""
    assert rows[1]["detail"] == message.split("failed: ", 1)[1]
    assert (out / "a_restored.nii.gz").is_file() and (out / "c_restored.nii").is_file()
    assert not (out / "b_restored.nii.gz").exists() and not manifest_path([out / "b_restored.nii.gz"]).exists()


def test_fingerprint_sees_every_change(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x").write_bytes(b"1")
    (folder / "y").write_bytes(b"2")
    base = fingerprint(folder)
    assert base["files"] == 2 and base["bytes"] == 2
    (folder / "y").rename(folder / "z")
    assert fingerprint(folder) != base
    (folder / "z").rename(folder / "y")
    assert fingerprint(folder) == base
    (folder / ".hidden").write_bytes(b"")
    assert fingerprint(folder) != base and fingerprint(folder, recursive=False) == {**base}


def test_an_output_folder_inside_the_dataset_is_not_read_as_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_volume(data / "vol.nii.gz")
    out = data / "restored"
    assert statuses(restore_dataset(identity_restorer(), data, out, "m", "1")) == {"vol": "written"}
    assert statuses(restore_dataset(identity_restorer(), data, out, "m", "1")) == {"vol": "skipped"}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "restore_summary.csv",
        "vol_restored.nii.gz",
    ]
