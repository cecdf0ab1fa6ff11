"""
Where the output goes wrong: it exists, its folder is read-only, the disk fills up, the user presses Ctrl-C.
In every case the input is untouched and nothing partial is left: no file under the output name, no temporary file.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_rwkv.data import nifti_writer
from tests.bundles.utils import REPO, TINY_CLI_ARGS
from tests.robustness.conftest import error_lines, leftovers, run_main, tree_digest, write_ct_series


def _nifti(path: Path, shape=(16, 16, 2)) -> Path:
    data = np.random.default_rng(0).integers(-1000, 1500, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), path)
    return path


def test_existing_output_is_refused_without_overwrite(bundle: Path, tmp_path: Path, capsys) -> None:
    source, series = _nifti(tmp_path / "in.nii.gz"), tmp_path / "series"
    write_ct_series(series, n=2)
    old_file, old_folder = tmp_path / "old.nii.gz", tmp_path / "old_series"
    old_file.write_bytes(b"previous result")
    assert run_main(capsys, bundle, series, old_folder)[0] == 0  # an earlier result: a series this program wrote
    before = tree_digest(tmp_path)
    for source_, output in ((source, old_file), (series, old_folder)):
        code, lines, _ = run_main(capsys, bundle, source_, output)
        assert code == 1 and error_lines(lines) == [f"error: {output}: output exists; pass --overwrite to replace it"]
    assert tree_digest(tmp_path) == before
    code, lines, _ = run_main(capsys, bundle, source, old_file, "--overwrite")
    assert code == 0 and nib.load(old_file).shape == (16, 16, 2) and leftovers(tmp_path) == []
    code, lines, _ = run_main(capsys, bundle, series, old_folder, "--overwrite")
    assert code == 0 and len(list(old_folder.iterdir())) == 2 and leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_output_folder(bundle: Path, tmp_path: Path, capsys) -> None:
    source = _nifti(tmp_path / "in.nii.gz")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code, lines, _ = run_main(capsys, bundle, source, locked / "sub" / "out.nii.gz")
    finally:
        locked.chmod(0o700)
    assert code == 1 and list(locked.iterdir()) == []
    assert error_lines(lines) == [
        f"error: {locked / 'sub' / 'out.nii.gz'}: cannot write the output: {locked} is not a writable folder "
        "(permission denied)"
    ]


def _disk_full(partial: Path) -> OSError:
    partial.write_bytes(b"\0" * 100)  # what a real full disk leaves: a truncated temporary file
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial))


def test_full_disk_while_writing_nifti(bundle: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Simulated: nibabel's save writes 100 bytes then fails with ENOSPC."""
    source = _nifti(tmp_path / "in.nii.gz")
    digest, output = tree_digest(source), tmp_path / "out" / "deep" / "restored.nii.gz"

    def full(image, path):
        raise _disk_full(Path(path))

    monkeypatch.setattr(nifti_writer.nib, "save", full)
    code, lines, _ = run_main(capsys, bundle, source, output)
    assert code == 1 and error_lines(lines) == [f"error: {output}: cannot write the output (No space left on device)"]
    assert not (tmp_path / "out").exists()  # neither the file, its temporary, nor the folders made for it
    assert tree_digest(source) == digest


def test_full_disk_while_writing_a_dicom_series(bundle: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Simulated: the third slice file is cut short by ENOSPC."""
    series = tmp_path / "series"
    write_ct_series(series, n=5)
    digest, output = tree_digest(series), tmp_path / "restored"
    save_as, calls = pydicom.Dataset.save_as, []

    def full_at_third(self, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 3:
            raise _disk_full(Path(filename))
        return save_as(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", full_at_third)
    code, lines, _ = run_main(capsys, bundle, series, output)
    assert code == 1 and error_lines(lines) == [f"error: {output}: cannot write the output (No space left on device)"]
    assert len(calls) == 3 and not output.exists() and leftovers(tmp_path) == []
    assert tree_digest(series) == digest


def test_ctrl_c_while_writing_a_dicom_series(bundle: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Simulated: KeyboardInterrupt (what SIGINT raises) while the second slice file is written."""
    series = tmp_path / "series"
    write_ct_series(series, n=4)
    digest, output = tree_digest(series), tmp_path / "restored"
    save_as, calls = pydicom.Dataset.save_as, []

    def interrupted_at_second(self, filename, *args, **kwargs):
        calls.append(filename)
        save_as(self, filename, *args, **kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pydicom.Dataset, "save_as", interrupted_at_second)
    code, lines, _ = run_main(capsys, bundle, series, output)
    assert code == 130 and error_lines(lines) == [f"error: {series}: interrupted (Ctrl-C); no output was written"]
    assert not output.exists() and leftovers(tmp_path) == [] and tree_digest(series) == digest


def test_sigint_while_restoring_exits_130_and_leaves_nothing(bundle: Path, tmp_path: Path) -> None:
    """A real Ctrl-C: SIGINT to the subprocess once its progress bar shows that restoring has started."""
    source = _nifti(tmp_path / "big.nii.gz", shape=(256, 256, 160))  # restoring takes seconds, not a blink
    digest, output = tree_digest(source), tmp_path / "out" / "restored.nii.gz"
    args = [a for a in TINY_CLI_ARGS if a != "--no-progress"]
    # a slice in a few patches: the first one is done within seconds, on a loaded machine too
    roi = args.index("--roi")
    args[roi + 1 : roi + 3] = ["64", "64"]
    command = [sys.executable, "-m", "monai_rwkv.apps.cli", "restore", "--bundle", str(bundle), str(source)]
    process = subprocess.Popen(
        [*command, str(output), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a runner started in the background (`cmd &` without job control) ignores SIGINT and its children inherit
        # that, so Python would never see the signal: give the child the default disposition, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    # wait for a finished slice, not just the bar: a fresh install first compiles the numba kernels (~1 min)
    started = re.compile(r"\b[1-9]\d*/\d+")
    while not started.search("".join(stderr)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "".join(stderr)  # still restoring: the input is big enough
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    reader.join(timeout=10)
    assert error_lines("".join(stderr).replace("\r", "\n")) == [
        f"error: {source}: interrupted (Ctrl-C); no output was written"
    ]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert tree_digest(source) == digest
