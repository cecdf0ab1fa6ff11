"""``python -m monai.bundle run`` on a dataset mixing good, bad and awkward inputs (one real run)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from tests.data.conftest import pydicom_file
from tests.robustness.conftest import error_lines, leftovers, run_bundle, tree_digest, write_ct_series


def test_bundle_restores_what_it_can_and_reports_each_bad_input_once(bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Nifti1Image(np.full((16, 16, 2), 40, np.int16), np.eye(4)), data / "good.nii.gz")
    nan = np.zeros((16, 16, 2), np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), data / "nan.nii.gz")
    raw = gzip.decompress((data / "good.nii.gz").read_bytes())
    (data / "truncated.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    (data / "fake.nii.gz").write_text("not an image\n" * 10)
    write_ct_series(data / "pair", n=3, series_uid="1.2.826.0.1.3680043.10.2.1", prefix="A")
    write_ct_series(data / "pair", n=4, series_uid="1.2.826.0.1.3680043.10.2.2", prefix="B", seed=1)
    (data / "structures").mkdir()
    shutil.copy2(pydicom_file("rtstruct.dcm"), data / "structures" / "rtstruct.dcm")
    digest = tree_digest(data)
    output = tmp_path / "output"
    output.mkdir()
    result = run_bundle(bundle, data, output)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    summary = error_lines(result.stderr)[-1]  # the exit line lists every failed input (up to 3) with its problem
    assert summary.startswith("error: 2 input(s) failed: "), summary
    assert f"{data / 'truncated.nii.gz'}: truncated or corrupt NIfTI: header needs" in summary
    assert f"{data / 'fake.nii.gz'}: not a readable image" in summary
    assert nib.load(output / "good_restored.nii.gz").shape == (16, 16, 2)
    assert np.isfinite(nib.load(output / "nan_restored.nii.gz").get_fdata()).all()
    assert "NaN/infinite voxel" in result.stderr
    for index, (prefix, count) in enumerate((("A", 3), ("B", 4)), start=1):  # each series on its own, never mixed
        folder = output / f"pair_series{index}_restored"
        written = [pydicom.dcmread(p) for p in folder.iterdir()]
        sources = {pydicom.dcmread(p).SOPInstanceUID for p in (data / "pair").glob(f"{prefix}*")}
        assert {d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in written} == sources
        assert nib.load(output / f"pair_series{index}_restored.nii.gz").shape == (16, 16, count)
    assert not any(p.name.startswith(("truncated", "fake", "structures")) for p in output.iterdir())
    assert leftovers(output) == [] and tree_digest(data) == digest
