"""
Resumable batch restoration: what makes an output "finished", and the per-study summary of a batch.

**Manifests.** After all outputs of a study are written (each atomically), a small JSON manifest is written
atomically beside them, hidden: ``<dir>/.<name>_restored.restore.json``. It records

* the input's fingerprint: number of files, total bytes and a sha256 (of the file, or for a DICOM series folder of
  the names and sha256 of every visible file directly in the folder);
* each output's fingerprint, the same way (a DICOM series output folder: every file in it);
* the model name and version (and, for information only, the restorer's settings).

A later run (without ``overwrite``) skips a study only when its manifest exists, the input and model are unchanged
and every output is still there with the recorded fingerprint. Anything else that this program wrote is redone
(outputs replaced atomically) with the reason in the summary: an output missing, truncated, with a missing DICOM
file or otherwise changed; the input changed; another model; a study interrupted half-way. Before a study's outputs
are written, its manifest is replaced by one that lists no outputs: it claims them, so an interruption between
two outputs is redone next time. An existing output with no manifest at all was not written by this program (or
by a version before manifests): it is never replaced without ``overwrite``; the study fails with a one-line error
and the other studies go on.

**Summary.** :func:`write_summary` writes ``restore_summary.csv`` with one row per study (see
:data:`SUMMARY_COLUMNS`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_rwkv.data.atomic import atomic_output_file

__all__ = [
    "MANIFEST_SUFFIX",
    "MANIFEST_VERSION",
    "STATUSES",
    "SUMMARY_COLUMNS",
    "SUMMARY_NAME",
    "StudyOutcome",
    "fingerprint",
    "manifest_path",
    "read_manifest_problem",
    "study_file",
    "write_manifest",
    "write_summary",
]

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".restore.json"
#: default name of the summary, in the output folder.
SUMMARY_NAME = "restore_summary.csv"
#: columns of the summary: the study's output name, its input, what happened, seconds spent, outputs (``;``-joined),
#: and a detail: why it was redone, or the one-line error of a failure.
SUMMARY_COLUMNS = ("name", "input", "status", "seconds", "outputs", "detail")
#: the outcomes of a study (``claimed``: being restored by another live process, left to it; see
#: :mod:`monai_rwkv.apps.claims`).
STATUSES = ("written", "skipped", "redone", "failed", "claimed")
_CHUNK = 1 << 20


@dataclass
class StudyOutcome:
    """
    What happened to one study (one input) of a batch.

    Attributes:
        name: the input's output base name (unique in a batch).
        input: the input path.
        status: ``"written"`` (new), ``"skipped"`` (verified finished), ``"redone"`` (an existing output was not
            verified finished, or ``overwrite``), ``"failed"``, ``"claimed"`` (another live process holds the
            study's claim: left to it by this run, not a failure).
        seconds: wall time spent on the study (verification included).
        outputs: the study's outputs (written, or skipped).
        detail: why it was redone, the one-line error of a failure, who holds a claimed study, or which stale
            claim was taken over; "" otherwise.
    """

    name: str
    input: Path
    status: str
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    detail: str = ""

    def row(self) -> dict[str, str]:
        """The summary row (see :data:`SUMMARY_COLUMNS`)."""
        return {
            "name": self.name,
            "input": os.fspath(self.input),
            "status": self.status,
            "seconds": f"{self.seconds:.3f}",
            "outputs": ";".join(os.fspath(p) for p in self.outputs),
            "detail": self.detail,
        }

    def line(self) -> str:
        """One log line: ``<name>: <status> (<seconds> s)[: <detail>]``."""
        text = f"{self.name}: {self.status} ({self.seconds:.1f} s)"
        return f"{text}: {self.detail}" if self.detail else text


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(path: Path, recursive: bool) -> list[Path]:
    if recursive:
        return sorted(p for p in path.rglob("*") if p.is_file())
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def fingerprint(path: str | os.PathLike, recursive: bool = True) -> dict[str, Any]:
    """
    Content fingerprint of a file or folder: ``{"files": n, "bytes": total, "sha256": hex}``.

    A file's sha256 is that of its bytes; a folder's is the sha256 of ``name NUL sha256-of-file NUL`` over its files
    sorted by relative POSIX name (so renaming, removing, adding or changing any file changes it).

    Args:
        path: a file or folder.
        recursive: for a folder, every file below it (an output folder); False: only the visible files directly
            in it (a DICOM series input folder, as :func:`~monai_rwkv.apps.restore.find_inputs` reads it).

    Raises:
        OSError: ``path`` cannot be read.
    """
    path = Path(path)
    if not path.is_dir():
        return {"files": 1, "bytes": path.stat().st_size, "sha256": _sha256_file(path)}
    digest, total = hashlib.sha256(), 0
    files = _files(path, recursive)
    for file in files:
        total += file.stat().st_size
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + _sha256_file(file).encode() + b"\0")
    return {"files": len(files), "bytes": total, "sha256": digest.hexdigest()}


def manifest_path(outputs: Sequence[Path]) -> Path:
    """
    The manifest of a study with these outputs: ``<dir>/.<base>.restore.json`` beside the first output, where
    ``<base>`` is its name without ``.nii`` / ``.nii.gz`` (so a study's NIfTI and DICOM outputs share one).
    """
    return study_file(outputs, MANIFEST_SUFFIX)


def study_file(outputs: Sequence[Path], suffix: str) -> Path:
    """The hidden file ``<dir>/.<base><suffix>`` of a study beside its first output, ``<base>`` being that output's
    name without ``.nii`` / ``.nii.gz`` (the study's manifest, its claim)."""
    first = Path(outputs[0])
    base = first.name
    for extension in (".nii.gz", ".nii"):
        if base.lower().endswith(extension):
            base = base[: -len(extension)]
            break
    return first.with_name(f".{base}{suffix}")


def write_manifest(
    path: Path,
    input_fingerprint: Mapping[str, Any],
    outputs: Sequence[Path],
    model: tuple[str, str],
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Write (atomically, replacing) the manifest of a finished study: input, outputs' fingerprints, model."""
    record = {
        "version": MANIFEST_VERSION,
        "input": dict(input_fingerprint),
        "outputs": {Path(p).name: fingerprint(p) for p in outputs},
        "model": {"name": model[0], "version": model[1]},
        "settings": dict(settings or {}),
    }
    with atomic_output_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def read_manifest_problem(
    path: Path, input_fingerprint: Mapping[str, Any], outputs: Sequence[Path], model: tuple[str, str]
) -> str | None:
    """
    None when the study is finished (see the module docstring), else why not, in a few words.

    Outputs are fingerprinted only after the cheaper checks pass (a size mismatch is found without hashing).
    """
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as e:
        return f"manifest unreadable ({type(e).__name__})"
    if not isinstance(record, dict) or record.get("version") != MANIFEST_VERSION:
        return "manifest of another version"
    recorded_model = record.get("model")
    if recorded_model != {"name": model[0], "version": model[1]}:
        if isinstance(recorded_model, dict):
            return f"written by another model ({recorded_model.get('name')} {recorded_model.get('version')})"
        return "written by another model"
    if record.get("input") != dict(input_fingerprint):
        return "input changed"
    recorded = record.get("outputs")
    if recorded == {}:
        return "interrupted (outputs claimed, never recorded)"
    if not isinstance(recorded, dict) or sorted(recorded) != sorted(Path(p).name for p in outputs):
        return "outputs differ from the manifest"
    for output in outputs:
        output = Path(output)
        if not (output.exists() or output.is_symlink()):
            return f"{output.name} missing"
        expected = recorded[output.name]
        if not isinstance(expected, dict):
            return "manifest unreadable"
        if output.is_dir():
            files = _files(output, recursive=True)
            if len(files) != expected.get("files"):
                return f"{output.name}: {len(files)} file(s), {expected.get('files')} expected"
        elif output.stat().st_size != expected.get("bytes"):
            return f"{output.name}: size changed (truncated?)"
        if fingerprint(output) != expected:
            return f"{output.name}: content changed"
    return None


def write_summary(path: str | os.PathLike, outcomes: Sequence[StudyOutcome]) -> Path:
    """Write (atomically, replacing) the CSV summary of a batch: a header and one row per study."""
    path = Path(path)
    with atomic_output_file(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(outcome.row() for outcome in outcomes)
    return path.absolute()
