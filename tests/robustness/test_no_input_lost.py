"""
No input is ever lost and no wrong image is restored without a word: outputs that alias, contain or lie inside an
input; ``--overwrite`` over something that is not an earlier output of the same kind; SIGTERM / SIGHUP while a
series is written; inputs the model was not made for (this program's own outputs among them); batch inputs whose
names or links collide.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_rwkv.apps.cli import main
from tests.bundles.utils import REPO, TINY_BUNDLE_ARGS, TINY_CLI_ARGS
from tests.robustness.conftest import (
    assert_changes_within,
    error_lines,
    leftovers,
    run_bundle,
    run_main,
    template_slice,
    tree_digest,
    tree_state,
    write_ct_series,
)

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _nifti(path: Path, shape=(16, 16, 2), low: float = -1000, high: float = 1500) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).integers(low, high, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _refused(capsys, bundle: Path, source: Path, output: str | Path, *args: str) -> str:
    """Run with --overwrite (and ``args``); it must fail with one line about the output, the input untouched."""
    digest = tree_digest(source)
    code, lines, _ = run_main(capsys, bundle, source, output, "--overwrite", *args)
    errors = error_lines(lines)
    assert code == 1 and len(errors) == 1, lines
    assert tree_digest(source) == digest
    assert not any("Traceback" in line for line in lines)
    return errors[0]


# ----------------------------------------------------------------------------------------------------------------
# outputs that alias the input


@pytest.mark.parametrize("spelling", ["dotdot", "symlinked_folder", "hard_link", "link_to_input", "dot_slash"])
def test_output_that_is_the_input_under_another_name_is_refused(spelling, bundle, tmp_path, capsys) -> None:
    source = _nifti(tmp_path / "data" / "in.nii.gz")
    (tmp_path / "data" / "sub").mkdir()
    if spelling == "dotdot":
        output = tmp_path / "data" / "sub" / ".." / "in.nii.gz"
    elif spelling == "symlinked_folder":
        (tmp_path / "alias").symlink_to(tmp_path / "data", target_is_directory=True)
        output = tmp_path / "alias" / "in.nii.gz"
    elif spelling == "hard_link":
        output = tmp_path / "hard.nii.gz"
        os.link(source, output)
    elif spelling == "link_to_input":
        output = tmp_path / "link.nii.gz"
        output.symlink_to(source)
    else:
        output = f"{tmp_path}/data/./in.nii.gz"
    before = tree_state(tmp_path)
    line = _refused(capsys, bundle, source, output)
    assert line.startswith(f"error: {Path(output)}: is the input {source}"), line
    assert tree_state(tmp_path) == before


def _study(tmp_path: Path) -> tuple[Path, Path]:
    study = tmp_path / "study"
    series = study / "series"
    write_ct_series(series, n=3)
    (study / "report.txt").write_text("the radiologist's report")
    return study, series


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("study", "contains the input"),  # the study folder holding the input series
        ("study/series/.", "is the input"),
        ("study/../study/series", "is the input"),
        ("study/series/restored", "lies inside the input"),
        ("alias_of_study", "contains the input"),  # a symbolic link to the study folder
    ],
)
def test_dicom_output_that_holds_or_is_the_input_series_is_refused(output, problem, bundle, tmp_path, capsys) -> None:
    study, series = _study(tmp_path)
    (tmp_path / "alias_of_study").symlink_to(study, target_is_directory=True)
    before = tree_state(tmp_path)
    line = _refused(capsys, bundle, series, f"{tmp_path}/{output}")
    assert problem in line, line
    assert tree_state(tmp_path) == before  # the series, report.txt and everything else are still there


def test_nifti_output_inside_the_input_series_folder_is_refused(bundle, tmp_path, capsys) -> None:
    _, series = _study(tmp_path)
    line = _refused(capsys, bundle, series, series / "restored.nii.gz")
    assert "lies inside the input" in line


# ----------------------------------------------------------------------------------------------------------------
# --overwrite replaces only an earlier output of the same kind


def test_overwrite_never_replaces_a_folder_by_a_nifti_file(bundle, tmp_path, capsys) -> None:
    source = _nifti(tmp_path / "in.nii.gz")
    folder = tmp_path / "out.nii.gz"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    before = tree_state(tmp_path)
    line = _refused(capsys, bundle, source, folder)
    assert line == (
        f"error: {folder}: is a folder, not a file; a NIfTI output never replaces a folder: remove it or choose "
        "another name"
    )
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("existing", ["file", "foreign_folder", "hidden_file", "link_to_folder"])
def test_overwrite_replaces_only_a_series_this_program_wrote(existing, bundle, tmp_path, capsys) -> None:
    _, series = _study(tmp_path)
    output = tmp_path / "restored"
    if existing == "file":
        output.write_text("not a series")
    elif existing == "link_to_folder":
        (tmp_path / "elsewhere").mkdir()
        output.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    else:
        assert run_main(capsys, bundle, series, output)[0] == 0  # our own earlier series ...
        extra = output / (".DS_Store" if existing == "hidden_file" else "report.txt")
        extra.write_text("someone else's file")  # ... that now holds something else
    before = tree_state(tmp_path)
    line = _refused(capsys, bundle, series, output)
    assert line.startswith(f"error: {output}: is "), line
    assert tree_state(tmp_path) == before


def test_overwrite_replaces_an_earlier_series_and_an_empty_folder(bundle, tmp_path, capsys) -> None:
    _, series = _study(tmp_path)
    earlier, empty = tmp_path / "earlier", tmp_path / "empty"
    assert run_main(capsys, bundle, series, earlier)[0] == 0
    empty.mkdir()
    old = {p.name: pydicom.dcmread(p).SOPInstanceUID for p in earlier.iterdir()}
    for output in (earlier, empty):
        code, lines, _ = run_main(capsys, bundle, series, output, "--overwrite")
        assert code == 0, lines
        assert sorted(p.name for p in output.iterdir()) == ["IM000001.dcm", "IM000002.dcm", "IM000003.dcm"]
    assert all(pydicom.dcmread(earlier / name).SOPInstanceUID != uid for name, uid in old.items())
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["OUT.NII.GZ", "Out.Nii.Gz", "OUT.NII"])
def test_output_suffixes_in_any_case(name, bundle, tmp_path, capsys) -> None:
    source = _nifti(tmp_path / "in.nii.gz")
    output = tmp_path / name
    code, lines, _ = run_main(capsys, bundle, source, output)
    assert code == 0, lines
    compressed = output.read_bytes()[:2] == b"\x1f\x8b"
    assert compressed == name.lower().endswith(".gz")
    raw = gzip.decompress(output.read_bytes()) if compressed else output.read_bytes()
    assert int.from_bytes(raw[:4], "little") == 348  # a NIfTI-1 header, whatever the suffix's case
    assert nib.Nifti1Image.from_bytes(raw).shape == (16, 16, 2)
    code, lines, _ = run_main(capsys, bundle, source, output)  # and an existing one is seen as existing
    assert code == 1 and error_lines(lines) == [f"error: {output}: output exists; pass --overwrite to replace it"]


# ----------------------------------------------------------------------------------------------------------------
# SIGTERM and SIGHUP while a DICOM series is written

_KILL_WHILE_WRITING = """
import os, signal, sys
from monai_rwkv.data import dicom_writer
from monai_rwkv.apps.cli import main

derive, SIGNAL = dicom_writer._derive_slice, getattr(signal, sys.argv[1])


def derive_then_signal(src, pixels, index, ctx):
    if index == 2:  # two slices are already in the temporary folder
        os.kill(os.getpid(), SIGNAL)
    return derive(src, pixels, index, ctx)


dicom_writer._derive_slice = derive_then_signal
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_termination_signal_while_writing_a_series_leaves_nothing(name, bundle, tmp_path) -> None:
    series = tmp_path / "series"
    write_ct_series(series, n=5)
    output = tmp_path / "out" / "restored"
    before = tree_state(tmp_path)
    command = [sys.executable, "-c", _KILL_WHILE_WRITING, name, "restore", "--bundle", str(bundle)]
    result = subprocess.run(
        [*command, str(series), str(output), *TINY_CLI_ARGS], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    signum = getattr(signal, name)
    assert result.returncode == 128 + signum, result.stderr
    assert error_lines(result.stderr) == [f"error: {series}: terminated ({name}); no output was written"]
    assert tree_state(tmp_path) == before  # no partial series, no temporary folder, no folder made for it


def test_sigterm_stops_a_bundle_run_cleanly(bundle, tmp_path) -> None:
    dataset = tmp_path / "data"
    write_ct_series(dataset / "a", n=5)
    output = tmp_path / "out"
    script = _KILL_WHILE_WRITING.replace(
        "sys.exit(main(sys.argv[2:]))",
        "import runpy; sys.argv = ['monai.bundle'] + sys.argv[2:]\n"
        "runpy.run_module('monai.bundle', run_name='__main__')",
    )
    before = tree_state(tmp_path)
    command = [sys.executable, "-c", script, "SIGTERM", "run", "--config_file", str(bundle / "configs/inference.json")]
    command += ["--dataset_dir", str(dataset), "--output_dir", str(output), "--device", "cpu", *TINY_BUNDLE_ARGS]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 143, result.stderr
    assert f"error: {dataset}: terminated (SIGTERM)" in result.stderr
    assert_changes_within(tmp_path, before, tree_state(tmp_path), [output])
    assert leftovers(tmp_path) == [] and not any(output.rglob("*.dcm"))


# ----------------------------------------------------------------------------------------------------------------
# inputs the model was not made for


def _mixed_series(folder: Path) -> list[Path]:
    """A CT series in which one slice (same SeriesInstanceUID) is an MR image."""
    files = write_ct_series(folder, n=5)
    ds = pydicom.dcmread(files[2])
    ds.Modality = "MR"
    ds.save_as(files[2])
    return files


def test_mr_slices_in_a_ct_series_are_refused(bundle, tmp_path, capsys) -> None:
    files = _mixed_series(tmp_path / "series")
    line = _refused(capsys, bundle, tmp_path / "series", tmp_path / "out.nii.gz")
    assert "not an input for this model (it expects CT, 1 channel, values in [-1024, 3072] (hounsfield))" in line
    assert f"1 of 5 slices: Modality MR, not CT (e.g. {files[2].name})" in line
    assert "--allow-mismatch" in line and not (tmp_path / "out.nii.gz").exists()


def test_allow_mismatch_restores_with_a_warning(bundle, tmp_path, capsys) -> None:
    _mixed_series(tmp_path / "series")
    code, lines, _ = run_main(capsys, bundle, tmp_path / "series", tmp_path / "out.nii.gz", "--allow-mismatch")
    assert code == 0, lines
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and "Modality MR, not CT" in warnings[0] and "restored anyway" in warnings[0]
    assert nib.load(tmp_path / "out.nii.gz").shape == (16, 16, 5)


def _rgb_dicom(path: Path) -> Path:
    ds = template_slice()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8).tobytes()
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    return path


def _rgb_nifti(path: Path) -> Path:
    rgb = np.zeros((16, 16, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for channel in "RGB":
        rgb[channel] = np.random.default_rng(0).integers(0, 255, (16, 16, 2))
    nib.save(nib.Nifti1Image(rgb, AFFINE), path)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_rgb_dicom, "the file: 3 samples per pixel, 1 expected"),
        (_rgb_nifti, "3 values per voxel (a colour or vector image), 1 expected"),
    ],
)
def test_colour_images_are_refused(make, problem, bundle, tmp_path, capsys) -> None:
    source = make(tmp_path / ("rgb.dcm" if make is _rgb_dicom else "rgb.nii.gz"))
    line = _refused(capsys, bundle, source, tmp_path / "out.nii.gz")
    assert problem in line, line


def test_palette_colour_dicom_is_refused(bundle, tmp_path, capsys) -> None:
    ds = template_slice()
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(tmp_path / "palette.dcm", enforce_file_format=True)
    line = _refused(capsys, bundle, tmp_path / "palette.dcm", tmp_path / "out.nii.gz")
    assert "PhotometricInterpretation PALETTE COLOR, not a grey-level image" in line


def test_values_outside_the_model_range_are_refused_unless_allowed(bundle, tmp_path, capsys) -> None:
    source = _nifti(tmp_path / "far.nii.gz", low=10000, high=30000)  # not HU
    line = _refused(capsys, bundle, source, tmp_path / "out.nii.gz")
    assert "100% of the voxels lie outside [-1024, 3072] (hounsfield): is the image in the model's units?" in line
    code, lines, _ = run_main(capsys, bundle, source, tmp_path / "out.nii.gz", "--allow-mismatch")
    assert code == 0 and len([x for x in lines if x.startswith("warning: ")]) == 1, lines


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_restoring_an_output_again_is_refused_unless_allowed(kind, bundle, tmp_path, capsys) -> None:
    if kind == "nifti":
        source, first = _nifti(tmp_path / "scan.nii.gz"), tmp_path / "once.nii.gz"
    else:
        write_ct_series(tmp_path / "scan", n=3)
        source, first = tmp_path / "scan", tmp_path / "once"
    code, lines, _ = run_main(capsys, bundle, source, first)
    assert code == 0, lines
    # the output carries the note that marks it (NIfTI descrip, DICOM DerivationDescription)
    if kind == "nifti":
        note = nib.load(first).header["descrip"].item().decode()
    else:
        note = str(pydicom.dcmread(sorted(first.iterdir())[0]).DerivationDescription)
    prefix = "Restored by Restore-RWKV CT" if kind == "nifti" else "Image restoration by Restore-RWKV CT"
    assert note.startswith(prefix) and note.endswith(" (monai_rwkv)"), note
    line = _refused(capsys, bundle, first, tmp_path / "twice.nii.gz")
    assert f"{first}: not an input for this model" in line and f"already restored ({note})" in line, line
    assert "restore the original scan" in line and "--allow-mismatch" in line
    assert not (tmp_path / "twice.nii.gz").exists()
    code, lines, _ = run_main(capsys, bundle, first, tmp_path / "twice.nii.gz", "--allow-mismatch")
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert code == 0 and len(warnings) == 1 and "already restored" in warnings[0], lines
    assert (tmp_path / "twice.nii.gz").is_file()


def test_bundle_run_fails_only_the_mismatched_study(bundle, tmp_path) -> None:
    dataset = tmp_path / "data"
    _mixed_series(dataset / "mixed")
    _nifti(dataset / "good.nii.gz")
    output = tmp_path / "out"
    result = run_bundle(bundle, dataset, output)
    assert result.returncode == 1
    assert "error: 1 input(s) failed:" in result.stderr and "Modality MR, not CT" in result.stderr
    assert (output / "good_restored.nii.gz").is_file() and not (output / "mixed_restored.nii.gz").exists()
    result = run_bundle(bundle, dataset, output, "--allow_mismatch", "true")
    assert result.returncode == 0, result.stderr
    assert (output / "mixed_restored.nii.gz").is_file() and (output / "mixed_restored").is_dir()
    # the outputs given back as a dataset: every one of them (NIfTI files, the DICOM series) is refused
    again = tmp_path / "again"
    result = run_bundle(bundle, output, again)
    assert result.returncode == 1 and "error: 3 input(s) failed:" in result.stderr, result.stderr
    assert result.stderr.count("already restored (") == 3 and result.stderr.count(" (monai_rwkv)): ") == 3
    assert not list(again.glob("*_restored*"))


# ----------------------------------------------------------------------------------------------------------------
# batch runs: one bad entry never stops the others


def _batch(bundle: Path, tmp_path: Path, dataset: Path, output: Path, capsys, *args: str) -> tuple[int, str, str]:
    """``monai-rwkv batch`` in-process; only ``output`` may change under ``tmp_path``."""
    before = tree_state(tmp_path)
    code = main(["batch", "--bundle", str(bundle), str(dataset), str(output), *args, *TINY_CLI_ARGS])
    out, err = capsys.readouterr()
    assert_changes_within(tmp_path, before, tree_state(tmp_path), [output])
    return code, out, err


def test_batch_with_colliding_names_and_bad_links_restores_every_good_input(bundle, tmp_path, capsys) -> None:
    dataset = tmp_path / "data"
    for name in ("über.nii.gz", "uber.nii.gz", "a.nii", "a.nii.gz", "Case.nii.gz", "case.nii.gz"):
        _nifti(dataset / name)
    write_ct_series(dataset / "a", n=2)  # a DICOM folder named like the NIfTI files beside it
    (dataset / "loop.nii.gz").symlink_to(dataset / "loop.nii.gz")
    (dataset / "broken.nii.gz").symlink_to(dataset / "missing.nii.gz")
    (dataset / "cycle").symlink_to(dataset, target_is_directory=True)  # a folder link back to the dataset
    os.mkfifo(dataset / "pipe.nii.gz")  # reading it would block for ever
    _nifti(tmp_path / "elsewhere" / "linked.nii.gz")
    (dataset / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    output = tmp_path / "out"
    code, out, err = _batch(bundle, tmp_path, dataset, output, capsys)
    assert code == 1
    errors = error_lines(err)
    assert any(line.startswith(f"error: {dataset / 'loop.nii.gz'}: symbolic link loop") for line in errors), err
    assert any(line.startswith(f"error: {dataset / 'broken.nii.gz'}: broken symbolic link") for line in errors), err
    assert any(line.startswith(f"error: {dataset / 'pipe.nii.gz'}: not a regular file") for line in errors), err
    assert "11 studies: 8 written, 0 skipped, 0 redone, 3 failed" in out
    nifti = sorted(p.name for p in output.rglob("*_restored*.nii*"))
    assert len(nifti) == len({n.casefold() for n in nifti}) == 8, nifti  # distinct, even ignoring case
    manifests = list(output.rglob(".*.restore.json"))
    assert len(manifests) == len({m.name.casefold() for m in manifests}) == 8
    assert (output / "more" / "linked_restored.nii.gz").is_file()
    code, out, _ = _batch(bundle, tmp_path, dataset, output, capsys)  # resumed: every good study is verified finished
    assert "11 studies: 0 written, 8 skipped, 0 redone, 3 failed" in out


def test_batch_output_inside_an_input_series_is_refused(bundle, tmp_path, capsys) -> None:
    series = tmp_path / "series"
    write_ct_series(series, n=2)
    code, _, err = _batch(bundle, tmp_path, series, series / "out", capsys)
    assert code == 1 and error_lines(err) == [
        f"error: {series / 'out'}: lies inside the input {series}; write outputs outside the input"
    ]


def test_batch_summary_that_is_an_input_is_refused(bundle, tmp_path, capsys) -> None:
    source = _nifti(tmp_path / "data" / "in.nii.gz")
    digest = tree_digest(source)
    args = ("--summary", str(source))
    code, _, err = _batch(bundle, tmp_path, tmp_path / "data", tmp_path / "out", capsys, *args)
    assert code == 1 and "is the input" in err and tree_digest(source) == digest


def test_batch_overwrite_fails_only_the_study_whose_output_is_a_folder(bundle, tmp_path, capsys) -> None:
    dataset, output = tmp_path / "data", tmp_path / "out"
    _nifti(dataset / "a.nii.gz")
    _nifti(dataset / "b.nii.gz")
    (output / "a_restored.nii.gz").mkdir(parents=True)
    (output / "a_restored.nii.gz" / "notes.txt").write_text("precious")
    code, out, err = _batch(bundle, tmp_path, dataset, output, capsys, "--overwrite")
    assert code == 1 and "2 studies: 1 written, 0 skipped, 0 redone, 1 failed" in out
    assert "is a folder, not a file" in err
    assert (output / "a_restored.nii.gz" / "notes.txt").read_text() == "precious"
    assert (output / "b_restored.nii.gz").is_file()


@pytest.mark.parametrize("tag", ["PatientID", "StudyInstanceUID"])
def test_series_mixing_patients_or_studies_is_refused(tag, bundle, tmp_path, capsys) -> None:
    files = write_ct_series(tmp_path / "series", n=4)
    ds = pydicom.dcmread(files[1])
    setattr(ds, tag, "OTHER" if tag == "PatientID" else pydicom.uid.generate_uid())
    ds.save_as(files[1])
    line = _refused(capsys, bundle, tmp_path / "series", tmp_path / "out.nii.gz")
    assert f"slices of one SeriesInstanceUID differ in {tag} (2 values" in line
    assert "different scans are never mixed into one volume" in line


def test_overwrite_never_replaces_a_device_or_a_pipe(bundle, tmp_path, capsys) -> None:
    source = _nifti(tmp_path / "in.nii.gz")
    pipe = tmp_path / "pipe.nii"
    os.mkfifo(pipe)
    line = _refused(capsys, bundle, source, pipe)
    assert line == f"error: {pipe}: is not a regular file (a device, pipe or socket); a NIfTI output never replaces it"
    assert pipe.is_fifo()


def test_input_that_is_a_pipe_is_refused_without_opening_it(bundle, tmp_path, capsys) -> None:
    pipe = tmp_path / "in.nii.gz"
    os.mkfifo(pipe)
    code, lines, _ = run_main(capsys, bundle, pipe, tmp_path / "out.nii.gz")
    assert code == 1 and error_lines(lines) == [
        f"error: {pipe}: not a regular file or folder (a pipe, socket or device)"
    ]


def test_batch_output_that_is_a_file_is_refused(bundle, tmp_path, capsys) -> None:
    _nifti(tmp_path / "data" / "in.nii.gz")
    (tmp_path / "out").write_text("not a folder")
    code, _, err = _batch(bundle, tmp_path, tmp_path / "data", tmp_path / "out", capsys)
    assert code == 1 and error_lines(err) == [
        f"error: {tmp_path / 'out'}: not a folder; OUTPUT_DIR must be a folder (or not exist yet)"
    ]
