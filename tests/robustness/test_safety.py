"""
Safety: checkpoints are never unpickled into code, names from files and DICOM tags cannot escape the output folder,
and a derived DICOM series can never be mistaken for its source (new UIDs, DERIVED, references to the source).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
import torch

from monai_rwkv.apps.restore import find_inputs, plan_tasks
from monai_rwkv.data import sanitize_filename
from tests.robustness.conftest import error_lines, run_bundle, run_cli, run_main, tree_digest, write_ct_series


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the marker proves that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_bundle(bundle: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = Path(shutil.copytree(bundle, tmp_path / "evil_bundle"))
    marker = tmp_path / "PWNED"
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    state["payload"] = _Payload(marker)
    torch.save(state, copy / "models" / "model.pt")
    return copy, marker


def test_malicious_checkpoint_is_refused_by_the_cli(evil_bundle, tmp_path: Path) -> None:
    bundle, marker = evil_bundle
    series = tmp_path / "series"
    write_ct_series(series, n=2)
    result = run_cli(bundle, series, tmp_path / "out.nii.gz")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"error: {bundle / 'models' / 'model.pt'}: refused to load: not a plain state dict of tensors, loading it "
        "could run code (it imports io.open); save weights with torch.save(model.state_dict())"
    ]
    assert not marker.exists() and not (tmp_path / "out.nii.gz").exists()


def test_malicious_checkpoint_is_refused_by_the_bundle(evil_bundle, tmp_path: Path) -> None:
    bundle, marker = evil_bundle
    write_ct_series(tmp_path / "data" / "series", n=2)
    output = tmp_path / "output"
    output.mkdir()
    result = run_bundle(bundle, tmp_path / "data", output)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert lines and lines[-1].startswith(f"error: {bundle / 'models' / 'model.pt'}: refused to load: "), lines
    assert not marker.exists() and list(output.iterdir()) == []


def test_a_file_that_is_not_a_checkpoint(bundle: Path, tmp_path: Path, capsys) -> None:
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    (copy / "models" / "model.pt").write_bytes(b"<html>404 Not Found</html>")
    write_ct_series(tmp_path / "series", n=2)
    code, lines, _ = run_main(capsys, copy, tmp_path / "series", tmp_path / "out.nii.gz")
    assert code == 1 and len(error_lines(lines)) == 1, lines
    assert error_lines(lines)[0].startswith(f"error: {copy / 'models' / 'model.pt'}: not a readable PyTorch checkpoint")


HOSTILE = ["../../etc/passwd", "a/b\\c", "nul\0byte", "x" * 300, "Ünïcödé 患者 name", "..", ".hidden", "CON", "-rf"]


@pytest.mark.parametrize("text", HOSTILE)
def test_sanitize_filename_gives_one_safe_component(text: str, tmp_path: Path) -> None:
    name = sanitize_filename(text)
    assert name and len(name) <= 100 and name.isascii() and name not in (".", "..")
    assert not set(name) & set("/\\\0 ") and not name.startswith((".", "-"))
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert sanitize_filename("x" * 300) != sanitize_filename("x" * 299)  # long names stay distinct


def test_batch_output_names_stay_inside_the_output_folder(tmp_path: Path) -> None:
    """Names on disk (non-ASCII, 250 characters, dots) and DICOM tags (SeriesDescription, PatientName) that
    look like paths never leave ``output_dir``."""
    data = tmp_path / "data"
    weird = [data / "Ünïcödé 患者", data / ("y" * 250), data / "a..b..", data / "-rf"]
    for k, folder in enumerate(weird):
        write_ct_series(folder, n=1, seed=k, description="../../../../tmp/escape")
    for path in (data / "-rf").iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.StudyDescription = "../../evil/../", "/etc/cron.d/x"
        ds.save_as(path)
    output = tmp_path / "out"
    tasks = plan_tasks(find_inputs(data), output)
    assert len(tasks) == len(weird)
    for task in tasks:
        for path in task.outputs:
            resolved = Path(os.path.normpath(path))
            assert resolved.is_relative_to(output) and resolved.name.isascii(), path
            assert all(len(part) <= 120 for part in resolved.relative_to(output).parts)


def test_derived_series_never_reuses_source_uids(bundle: Path, tmp_path: Path, capsys) -> None:
    series = tmp_path / "series"
    write_ct_series(series, n=3)
    sources = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in series.iterdir()}
    digest = tree_digest(series)
    code, lines, _ = run_main(capsys, bundle, series, tmp_path / "restored")
    assert code == 0, lines
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "restored").iterdir())]
    first = next(iter(sources.values()))
    assert {d.SeriesInstanceUID for d in written} != {first.SeriesInstanceUID}
    assert len({d.SeriesInstanceUID for d in written}) == 1
    assert not {d.SOPInstanceUID for d in written} & set(sources) and len({d.SOPInstanceUID for d in written}) == 3
    for ds in written:
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert "restoration" in ds.DerivationDescription.lower() and ds.SeriesDescription.startswith("RESTORED")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        (ref,) = ds.SourceImageSequence
        source = sources[ref.ReferencedSOPInstanceUID]
        assert ref.ReferencedSOPClassUID == source.SOPClassUID
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert ds.SeriesNumber != source.SeriesNumber
    assert tree_digest(series) == digest
